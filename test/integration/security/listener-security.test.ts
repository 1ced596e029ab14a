import {type ChildProcess, spawn} from 'node:child_process'
import {readFileSync} from 'node:fs'
import {mkdir, mkdtemp, readdir, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {validateConfig} from '../../../src/lib/config/validate.js'
import {readMetaHeader} from '../../../src/lib/dicom/part10.js'
import {storageSopClasses, transferSyntaxes} from '../../../src/lib/dicom/uids.js'
import {ScuAssociation} from '../../../src/lib/dimse/scu.js'
import {clientTlsOptions} from '../../../src/lib/dimse/tls.js'
import {Logger} from '../../../src/lib/output/logger.js'
import {type RouterService, startRouterService} from '../../../src/lib/listen/service.js'
import {runCompiledCli} from '../../helpers/compiled-cli.js'
import {type Storescp, echoscu, makeTestDicom, startStorescp, storescu} from '../../helpers/dcmtk.js'
import {freePort} from '../../helpers/ports.js'
import {type TestCertificates, makeTestCertificates} from '../../helpers/tls.js'

const CT = '1.2.840.10008.5.1.4.1.1.2'
const EXPLICIT_LE = '1.2.840.10008.1.2.1'

interface Running {
  service: RouterService
  logs: string[]
}

describe('listener security: who may connect, limits, DICOM TLS', () => {
  let workDir: string
  let certs: TestCertificates
  let storescp: Storescp
  let small: string
  const routers: RouterService[] = []
  const children: ChildProcess[] = []

  async function startRouter(listen: Record<string, unknown>, backend: Record<string, unknown> = {}): Promise<Running> {
    const spoolDir = await mkdtemp(path.join(workDir, 'spool-'))
    const config = validateConfig(
      {
        listen: {host: '127.0.0.1', port: 0, aeTitle: 'DDR_SEC', ...listen},
        status: {host: '127.0.0.1', port: 0},
        spool: {dir: spoolDir, enabled: false},
        health: {intervalMs: 60_000, timeoutMs: 3000},
        backends: [{name: 'scp', type: 'dimse', host: '127.0.0.1', port: storescp.port, aeTitle: storescp.aeTitle, maxAssociations: 1, ...backend}],
      },
      'test',
    )
    const logs: string[] = []
    const service = await startRouterService(config, {logger: new Logger({debug: true, write: (line) => logs.push(line)}), statusServer: false})
    routers.push(service)
    return {service, logs}
  }

  async function rejection(port: number, callingAeTitle: string, calledAeTitle = 'DDR_SEC'): Promise<string> {
    try {
      const association = await ScuAssociation.connect({host: '127.0.0.1', port, callingAeTitle, calledAeTitle, contexts: []})
      association.abort()
      return 'accepted'
    } catch (error) {
      return (error as Error).message
    }
  }

  beforeAll(async () => {
    workDir = await mkdtemp(path.join(os.tmpdir(), 'ddr-security-'))
    certs = await makeTestCertificates()
    await mkdir(path.join(workDir, 'received'))
    storescp = await startStorescp({dir: path.join(workDir, 'received')})
    small = (await makeTestDicom(path.join(workDir, 'small.dcm'))).file
  })

  // storescp serves one association at a time: a router left running would keep it busy.
  afterEach(async () => {
    await Promise.all(routers.splice(0).map((r) => r.stop(1000)))
  })

  afterAll(async () => {
    await Promise.all(routers.map((r) => r.stop(1000)))
    for (const child of children) if (child.exitCode === null) child.kill('SIGKILL')
    await storescp?.stop()
    await certs?.remove()
    if (workDir) await rm(workDir, {recursive: true, force: true})
  })

  it('rejects calling AE titles not in allowedCallingAeTitles with result 1, source 1, reason 3, and logs it', async () => {
    const {service, logs} = await startRouter({allowedCallingAeTitles: ['MODALITY1']})
    expect(await rejection(service.port, 'INTRUDER')).toContain('(result 1, source 1, reason 3)')
    expect((await echoscu(['-aet', 'MODALITY1', '-aec', 'ANY-SCP', '127.0.0.1', String(service.port)])).code).toBe(0)
    expect((await echoscu(['-aet', 'INTRUDER', '-aec', 'ANY-SCP', '127.0.0.1', String(service.port)])).code).not.toBe(0)
    expect(logs.some((line) => line.includes('association-rejected') && line.includes('INTRUDER'))).toBe(true)
  })

  it('rejects a wrong called AE title with reason 7 only when requireCalledAeTitle is set', async () => {
    const strict = await startRouter({requireCalledAeTitle: true})
    expect(await rejection(strict.service.port, 'MODALITY1', 'ANY-SCP')).toContain('(result 1, source 1, reason 7)')
    expect(await rejection(strict.service.port, 'MODALITY1', 'DDR_SEC')).toBe('accepted')
    const lenient = await startRouter({})
    expect(await rejection(lenient.service.port, 'MODALITY1', 'ANY-SCP')).toBe('accepted')
  })

  it('rejects addresses outside allowedAddresses (CIDR) and accepts those inside', async () => {
    const outside = await startRouter({allowedAddresses: ['10.0.0.0/8', '192.168.1.7']})
    expect(await rejection(outside.service.port, 'MODALITY1')).toContain('(result 1, source 1, reason 1)')
    const inside = await startRouter({allowedAddresses: ['127.0.0.0/8']})
    expect(await rejection(inside.service.port, 'MODALITY1')).toBe('accepted')
  })

  it('answers A700 for an instance above maxInstanceBytes and keeps the association usable', async () => {
    const {service, logs} = await startRouter({maxInstanceBytes: 4096})
    const association = await ScuAssociation.connect({host: '127.0.0.1', port: service.port, callingAeTitle: 'MODALITY1', calledAeTitle: 'DDR_SEC', contexts: [{abstractSyntax: CT, transferSyntax: EXPLICIT_LE}]})
    try {
      const bytes = readFileSync(small)
      const meta = readMetaHeader(bytes)
      // Dataset trailing padding (FFFC,FFFC) OB makes it large without changing what it is.
      const padding = Buffer.alloc(12 + 8192)
      padding.write('\xfc\xff\xfc\xffOB', 0, 'latin1')
      padding.writeUInt32LE(8192, 8)
      const datasets = [Buffer.concat([bytes.subarray(meta.datasetOffset), padding]), bytes.subarray(meta.datasetOffset)]
      for (const [dataset, expected] of [[datasets[0], 0xa700], [datasets[1], 0]] as const) {
        const response = await association.store({sopClassUid: CT, sopInstanceUid: meta.mediaStorageSopInstanceUid!, transferSyntaxUid: EXPLICIT_LE, dataset: {buffer: dataset}})
        expect(response.status).toBe(expected)
      }
    } finally {
      await association.release()
    }

    expect(logs.some((line) => line.includes('instance-refused'))).toBe(true)
  })

  it("accepts storescu's largest association request (128 contexts × every transfer syntax ddr knows) and stores through it", async () => {
    const {service, logs} = await startRouter({})
    // A dcmtk association profile: 128 storage SOP classes (CT first, for the file), each proposed with all 45 transfer syntaxes.
    const sopClasses = [CT, ...[...storageSopClasses.keys()].filter((uid) => uid !== CT)].slice(0, 128)
    const syntaxes = [...transferSyntaxes.keys()]
    const profile = path.join(workDir, 'many-contexts.cfg')
    await writeFile(
      profile,
      [
        '[[TransferSyntaxes]]',
        '[Every]',
        ...syntaxes.map((uid, index) => `TransferSyntax${index + 1} = ${uid}`),
        '[[PresentationContexts]]',
        '[Many]',
        ...sopClasses.map((uid, index) => `PresentationContext${index + 1} = ${uid}\\Every`),
        '[[Profiles]]',
        '[Big]',
        'PresentationContexts = Many',
        '',
      ].join('\n'),
    )
    expect({contexts: sopClasses.length, syntaxes: syntaxes.length}).toEqual({contexts: 128, syntaxes: 45})
    const before = (await readdir(storescp.dir)).length
    const file = (await makeTestDicom(path.join(workDir, 'many-contexts.dcm'))).file
    const store = await storescu(['-xf', profile, 'Big', '-aec', 'DDR_SEC', '127.0.0.1', String(service.port), file])
    expect({code: store.code, stderr: store.stderr}).toEqual({code: 0, stderr: ''})
    expect((await readdir(storescp.dir)).length).toBe(before + 1)
    expect(logs.join('\n')).not.toContain('protocol error')
  })

  describe('DICOM TLS', () => {
    let tlsRouter: Running

    beforeEach(async () => {
      tlsRouter = await startRouter({tls: {cert: certs.serverCert, key: certs.serverKey, ca: certs.ca, requireClientCert: true}})
    })

    it('serves echoscu and storescu over TLS with a client certificate from the CA', async () => {
      const port = String(tlsRouter.service.port)
      const tlsArgs = ['+tls', certs.clientKey, certs.clientCert, '+cf', certs.ca]
      const echo = await echoscu([...tlsArgs, '-aec', 'DDR_SEC', '127.0.0.1', port])
      expect({code: echo.code, stderr: echo.stderr}).toEqual({code: 0, stderr: ''})
      const before = (await readdir(storescp.dir)).length
      const file = (await makeTestDicom(path.join(workDir, 'over-tls.dcm'))).file
      const store = await storescu([...tlsArgs, '-aec', 'DDR_SEC', '127.0.0.1', port, file])
      expect({code: store.code, stderr: store.stderr}).toEqual({code: 0, stderr: ''})
      expect((await readdir(storescp.dir)).length).toBe(before + 1)
    })

    it('refuses clients without a certificate, with a certificate from another CA, or without TLS', async () => {
      const port = tlsRouter.service.port
      const stranger = await echoscu(['+tls', certs.strangerKey, certs.strangerCert, '+cf', certs.ca, '-aec', 'DDR_SEC', '127.0.0.1', String(port)], {timeoutMs: 20_000})
      expect(stranger.code).not.toBe(0)
      const plain = await echoscu(['-to', '5', '-aec', 'DDR_SEC', '127.0.0.1', String(port)], {timeoutMs: 20_000})
      expect(plain.code).not.toBe(0)
      const noCert = ScuAssociation.connect({host: '127.0.0.1', port, callingAeTitle: 'NOCERT', calledAeTitle: 'DDR_SEC', contexts: [], tls: clientTlsOptions({ca: certs.ca})})
      await expect(noCert).rejects.toThrow()
      expect(tlsRouter.logs.some((line) => line.includes('tls-refused'))).toBe(true)
    })

    it('ddr send --tls delivers to the TLS listener', async () => {
      const before = (await readdir(storescp.dir)).length
      const other = (await makeTestDicom(path.join(workDir, 'send-tls.dcm'))).file
      const result = await runCompiledCli(['send', other, '--host', '127.0.0.1', '--port', String(tlsRouter.service.port), '-aec', 'DDR_SEC', '--tls', '--tls-ca', certs.ca, '--tls-cert', certs.clientCert, '--tls-key', certs.clientKey, '--json'])
      expect({code: result.code, stderr: result.stderr}).toMatchObject({code: 0})
      expect(JSON.parse(result.stdout)).toMatchObject({sent: 1, failed: 0})
      expect((await readdir(storescp.dir)).length).toBe(before + 1)
    })

    it('forwards to a backend over TLS (storescp +tls) and refuses a backend whose certificate it cannot verify', async () => {
      const dir = path.join(workDir, 'tls-received')
      await mkdir(dir)
      const port = await freePort()
      const child = spawn('storescp', ['+tls', certs.serverKey, certs.serverCert, '+cf', certs.ca, '-od', dir, '+xa', '-aet', 'TLSSCP', String(port)], {stdio: 'ignore', env: {...process.env, TCP_NODELAY: '1'}})
      children.push(child)
      for (let attempt = 0; attempt < 100; attempt++) {
        const echo = await echoscu(['+tls', certs.clientKey, certs.clientCert, '+cf', certs.ca, '-aec', 'TLSSCP', '127.0.0.1', String(port)], {timeoutMs: 5000})
        if (echo.code === 0) break
        await sleep(100)
      }

      const router = await startRouter({}, {port, aeTitle: 'TLSSCP', tls: {ca: certs.ca, cert: certs.clientCert, key: certs.clientKey}})
      const store = await storescu(['-aec', 'DDR_SEC', '127.0.0.1', String(router.service.port), small])
      expect({code: store.code, stderr: store.stderr}).toEqual({code: 0, stderr: ''})
      expect(await readdir(dir)).toHaveLength(1)

      // The stranger CA does not sign storescp's certificate: the router must not deliver.
      const wrongCa = await startRouter({}, {port, aeTitle: 'TLSSCP', tls: {ca: certs.strangerCert, cert: certs.clientCert, key: certs.clientKey}})
      const fresh = (await makeTestDicom(path.join(workDir, 'fresh.dcm'))).file
      const refused = await storescu(['-aec', 'DDR_SEC', '127.0.0.1', String(wrongCa.service.port), fresh])
      expect(refused.code === 0 && refused.stderr === '').toBe(false)
      expect(await readdir(dir)).toHaveLength(1)
    })
  })
})
