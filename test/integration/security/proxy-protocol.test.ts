import {readFile, mkdtemp, readdir, rm} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {validateConfig} from '../../../src/lib/config/validate.js'
import {readMetaHeader} from '../../../src/lib/dicom/part10.js'
import {ScuAssociation} from '../../../src/lib/dimse/scu.js'
import {clientTlsOptions} from '../../../src/lib/dimse/tls.js'
import {type RouterService, startRouterService} from '../../../src/lib/listen/service.js'
import {Logger} from '../../../src/lib/output/logger.js'
import {makeTestDicom, storescu} from '../../helpers/dcmtk.js'
import {type TestHaproxy, startTestHaproxy} from '../../helpers/haproxy.js'
import {type TestCertificates, makeTestCertificates} from '../../helpers/tls.js'
import {waitFor} from '../../helpers/wait.js'

/**
 * A router behind real HAProxy (TCP mode, send-proxy-v2) with listen.proxyProtocol: its address
 * allow-list and logs see the sender's own address, not HAProxy's. All of 127.0.0.0/8 is loopback
 * on Linux, so a sender connecting from 127.0.0.2 stands for a modality on another host.
 */
describe('listen.proxyProtocol behind HAProxy', () => {
  let workDir: string
  let certs: TestCertificates
  const routers: Array<{service: RouterService; haproxy: TestHaproxy}> = []

  async function startBehindHaproxy(listen: Record<string, unknown>): Promise<{service: RouterService; haproxy: TestHaproxy; logs: string[]; archive: string}> {
    const dir = await mkdtemp(path.join(workDir, 'router-'))
    const archive = path.join(dir, 'archive')
    const config = validateConfig(
      {
        listen: {host: '127.0.0.1', port: 0, aeTitle: 'DDR_PROXY', proxyProtocol: true, allowedAddresses: ['127.0.0.2'], ...listen},
        status: {host: '127.0.0.1', port: 0},
        spool: {dir: path.join(dir, 'spool')},
        backends: [{name: 'archive', type: 'folder', path: archive, minFreeMb: 0}],
      },
      'test',
    )
    const logs: string[] = []
    const service = await startRouterService(config, {logger: new Logger({write: (line) => logs.push(line)})})
    const haproxy = await startTestHaproxy([{port: service.port, checkPort: service.statusPort!}], {sendProxy: true})
    routers.push({service, haproxy})
    await haproxy.waitForServer('router-1', 'UP')
    return {service, haproxy, logs, archive}
  }

  /** C-STORE of one file through `port` from `localAddress`: the status, or the association's refusal. */
  async function storeFrom(localAddress: string, port: number, file: string, tls?: ReturnType<typeof clientTlsOptions>): Promise<string> {
    const bytes = await readFile(file)
    const meta = readMetaHeader(bytes)
    const sopClassUid = meta.mediaStorageSopClassUid!
    const sopInstanceUid = meta.mediaStorageSopInstanceUid!
    let association: ScuAssociation
    try {
      association = await ScuAssociation.connect({host: '127.0.0.1', port, localAddress, callingAeTitle: 'MODALITY', calledAeTitle: 'DDR_PROXY', contexts: [{abstractSyntax: sopClassUid, transferSyntax: meta.transferSyntaxUid}], ...(tls === undefined ? {} : {tls})})
    } catch (error) {
      return `refused: ${(error as Error).message}`
    }

    const response = await association.store({sopClassUid, sopInstanceUid, transferSyntaxUid: meta.transferSyntaxUid, dataset: {buffer: bytes.subarray(meta.datasetOffset)}})
    await association.release()
    return `status ${response.status}`
  }

  const stored = async (archive: string) => (await readdir(archive, {recursive: true}).catch(() => [] as string[])).filter((name) => name.endsWith('.dcm')).length

  beforeAll(async () => {
    workDir = await mkdtemp(path.join(os.tmpdir(), 'ddr-proxy-protocol-'))
    certs = await makeTestCertificates()
  })

  afterAll(async () => {
    for (const {service, haproxy} of routers) {
      await haproxy.stop()
      await service.stop(1000)
    }

    await certs?.remove()
    if (workDir) await rm(workDir, {recursive: true, force: true})
  })

  it("checks the sender's own address against listen.allowedAddresses, logs it, and closes a connection that bypasses HAProxy", async () => {
    const {service, haproxy, logs, archive} = await startBehindHaproxy({})
    const file = (await makeTestDicom(path.join(workDir, 'a.dcm'))).file

    // The allowed sender: through HAProxy from 127.0.0.2, stored and routed.
    expect(await storeFrom('127.0.0.2', haproxy.port, file)).toBe('status 0')
    await waitFor('the instance in the archive', async () => (await stored(archive)) === 1, 10_000)
    expect(logs.some((line) => line.includes('association') && line.includes('127.0.0.2:'))).toBe(true)

    // Another sender through the same HAProxy (which is 127.0.0.1 to the router): refused by address.
    expect(await storeFrom('127.0.0.1', haproxy.port, file)).toMatch(/^refused: .*rejected the association \(result 1/)
    expect(logs.some((line) => line.includes('association-rejected') && line.includes('address 127.0.0.1 is not in listen.allowedAddresses'))).toBe(true)

    // A sender that connects to the router itself sends no PROXY header: closed, and logged.
    const direct = await storescu(['-aec', 'DDR_PROXY', '127.0.0.1', String(service.port), file])
    expect(direct.code).not.toBe(0)
    await waitFor('the proxy-header-refused log line', () => logs.some((line) => line.includes('proxy-header-refused')), 5000)
    expect(await stored(archive)).toBe(1)
  })

  it('takes DICOM TLS after the PROXY header (HAProxy passes the TLS bytes through)', async () => {
    const {haproxy, logs, archive} = await startBehindHaproxy({tls: {cert: certs.serverCert, key: certs.serverKey, ca: certs.ca, requireClientCert: true}})
    const file = (await makeTestDicom(path.join(workDir, 'b.dcm'))).file
    const tls = clientTlsOptions({ca: certs.ca, cert: certs.clientCert, key: certs.clientKey})
    expect(await storeFrom('127.0.0.2', haproxy.port, file, tls)).toBe('status 0')
    await waitFor('the instance in the archive', async () => (await stored(archive)) === 1, 10_000)
    expect(logs.some((line) => line.includes('association') && line.includes('127.0.0.2:'))).toBe(true)

    // Without a client certificate the handshake fails after the header, and the log names the sender.
    expect(await storeFrom('127.0.0.2', haproxy.port, file, clientTlsOptions({ca: certs.ca}))).toMatch(/^refused: /)
    await waitFor('the tls-refused log line', () => logs.some((line) => line.includes('tls-refused') && line.includes('127.0.0.2')), 5000)
  })
})
