import {readFileSync} from 'node:fs'
import {mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import type {BackendConfig} from '../../../src/lib/config/schema.js'
import {validateConfig} from '../../../src/lib/config/validate.js'
import {orthancClientFor} from '../../../src/lib/orthanc/client.js'
import {Logger} from '../../../src/lib/output/logger.js'
import {type RouterService, startRouterService} from '../../../src/lib/listen/service.js'
import {sendFiles} from '../../../src/lib/send/send.js'
import {DICOMWEB_PLUGIN} from '../../../src/lib/stack/orthanc-process.js'
import {runCompiledCli} from '../../helpers/compiled-cli.js'
import {makeTestDicom} from '../../helpers/dcmtk.js'
import {expectDdrError} from '../../helpers/expect.js'
import {datasetOf, fixturesDir, goodFixtures, onTheWire, sendFixturesRaw} from '../../helpers/fixtures.js'
import {type TestOrthanc, startTestOrthanc} from '../../helpers/orthanc.js'
import {freePort} from '../../helpers/ports.js'
import {type TestCertificates, makeTestCertificates} from '../../helpers/tls.js'

const ROUTER_AE = 'DDR_HTTPS'
// The test CA is not in Node's store and the server sends only its own certificate.
const UNKNOWN_CA = "TLS: the server's certificate was refused: its certificate is signed by an unknown CA (UNABLE_TO_VERIFY_LEAF_SIGNATURE)"

describe('HTTPS towards Orthanc REST and DICOMweb backends (a real Orthanc over TLS)', () => {
  let workDir: string
  let certs: TestCertificates
  let orthanc: TestOrthanc
  const routers: RouterService[] = []

  /** A pass-through router (the sender's status is the backend's) in this process, with one backend. */
  async function startRouter(backend: Record<string, unknown>): Promise<{service: RouterService; logs: string[]}> {
    const config = validateConfig(
      {
        listen: {host: '127.0.0.1', port: 0, aeTitle: ROUTER_AE},
        status: {host: '127.0.0.1', port: 0},
        spool: {dir: await mkdtemp(path.join(workDir, 'spool-')), enabled: false},
        health: {intervalMs: 60_000, timeoutMs: 3000, failThreshold: 1, recoverThreshold: 1},
        backends: [backend],
      },
      'test',
    )
    const logs: string[] = []
    const service = await startRouterService(config, {logger: new Logger({debug: true, write: (line) => logs.push(line)}), statusServer: false})
    routers.push(service)
    return {service, logs}
  }

  async function sendThroughRouter(service: RouterService, file: string) {
    return sendFiles([file], {target: {protocol: 'dimse', host: '127.0.0.1', port: service.port, calledAeTitle: ROUTER_AE, callingAeTitle: 'MODALITY'}})
  }

  const restBackend = (https?: Record<string, unknown>) => ({name: 'secure', host: '127.0.0.1', port: orthanc.dicomPort, aeTitle: orthanc.aeTitle, url: orthanc.url, transport: 'rest', ...(https ? {https} : {})})

  beforeAll(async () => {
    workDir = await mkdtemp(path.join(os.tmpdir(), 'ddr-https-'))
    certs = await makeTestCertificates()
    orthanc = await startTestOrthanc({
      name: 'secure',
      aeTitle: 'SECURE',
      plugins: [DICOMWEB_PLUGIN],
      extra: {DicomWeb: {Enable: true, Root: '/dicom-web/'}},
      https: {cert: certs.serverCert, key: certs.serverKey, ca: certs.ca},
    })
  })

  afterEach(async () => {
    await Promise.all(routers.splice(0).map((r) => r.stop(2000)))
  })

  afterAll(async () => {
    await orthanc?.stop()
    await certs?.remove()
    if (workDir) await rm(workDir, {recursive: true, force: true})
  })

  it('serves the REST API over HTTPS only (Orthanc itself, or the proxy fallback)', async () => {
    expect(orthanc.url).toMatch(/^https:\/\/127\.0\.0\.1:\d+$/)
    expect(['orthanc', 'proxy']).toContain(orthanc.httpsBy)
    expect((await orthanc.client.system()).Version).toBeDefined()
    // The same port does not speak plain HTTP: the request gets no HTTP answer at all.
    const plain = await fetch(`${orthanc.url.replace(/^https:/, 'http:')}/system`, {signal: AbortSignal.timeout(10_000)}).then(
      (response) => `answered HTTP ${response.status}`,
      (error: Error) => `failed: ${(error.cause as Error | undefined)?.message ?? error.message}`,
    )
    expect(plain).toMatch(/^failed: /)
  })

  it('the REST client trusts the server only with the CA, and says which URL and why when it does not', async () => {
    const backend = validateConfig({backends: [restBackend({ca: certs.ca})]}, 'test').backends[0]
    const trusted = orthancClientFor(backend)
    const untrusted = orthancClientFor({...backend, https: undefined} as BackendConfig)
    try {
      expect((await trusted.statistics()).CountInstances).toBeGreaterThanOrEqual(0)
      const error = await expectDdrError(untrusted.statistics())
      expect(error.code).toBe('BACKEND_UNREACHABLE')
      expect(error.message).toBe(`GET ${orthanc.url}/statistics failed: ${UNKNOWN_CA}`)
      expect(error.hint).toContain('backends[].https.ca of backend secure (or DDR_BACKEND_SECURE_HTTPS_CA)')
    } finally {
      trusted.close()
      untrusted.close()
    }
  })

  it('a rest-transport backend with https.ca gets every fixture through the router, byte-exact', async () => {
    const {service} = await startRouter(restBackend({ca: certs.ca}))
    expect(service.backends[0].healthy).toBe(true)
    const statuses = await sendFixturesRaw(service.port, ROUTER_AE)
    expect(statuses).toEqual(goodFixtures.map(() => 0))
    for (const fixture of goodFixtures) {
      const id = await orthanc.client.lookupInstance(fixture.sopInstanceUid)
      expect({fixture: fixture.path, stored: id !== undefined}).toEqual({fixture: fixture.path, stored: true})
      const expected = onTheWire(datasetOf(readFileSync(path.join(fixturesDir, fixture.path))))
      expect({fixture: fixture.path, identical: datasetOf(await orthanc.client.instanceFile(id!)).equals(expected)}).toEqual({fixture: fixture.path, identical: true})
    }
  })

  it('without the CA the sender is refused, nothing reaches Orthanc, and the log names the URL and the reason', async () => {
    const {service, logs} = await startRouter(restBackend())
    expect(service.backends[0].healthy).toBe(false)
    const {file, sopInstanceUid} = await makeTestDicom(path.join(workDir, 'untrusted.dcm'))
    const result = await sendThroughRouter(service, file)
    expect({sent: result.sent, failed: result.failed, status: result.failures[0]?.status}).toEqual({sent: 0, failed: 1, status: '0xA700'})
    expect(await orthanc.client.lookupInstance(sopInstanceUid)).toBeUndefined()
    const down = logs.find((line) => line.includes('backend-down') || line.includes('health-check-failed') || (line.includes('backend') && line.includes('down')))
    expect(down).toContain(`GET ${orthanc.url}/system failed: ${UNKNOWN_CA}`)
  })

  it('https.rejectUnauthorized false (testing only) skips the check and says so at start', async () => {
    const {service, logs} = await startRouter(restBackend({rejectUnauthorized: false}))
    expect(service.backends[0].healthy).toBe(true)
    expect(logs.some((line) => line.includes('https-unverified') && line.includes('backend=secure'))).toBe(true)
    const {file, sopInstanceUid} = await makeTestDicom(path.join(workDir, 'unverified.dcm'))
    expect((await sendThroughRouter(service, file)).sent).toBe(1)
    expect(await orthanc.client.lookupInstance(sopInstanceUid)).toBeDefined()
  })

  it('a DICOMweb backend with https.ca stores through STOW-RS over HTTPS; without it nothing is stored', async () => {
    const web = (https?: Record<string, unknown>) => ({name: 'web', type: 'dicomweb', url: `${orthanc.url}/dicom-web`, ...(https ? {https} : {})})
    const trusted = await startRouter(web({ca: certs.ca}))
    const good = await makeTestDicom(path.join(workDir, 'stow.dcm'))
    expect((await sendThroughRouter(trusted.service, good.file)).sent).toBe(1)
    const id = await orthanc.client.lookupInstance(good.sopInstanceUid)
    expect(id).toBeDefined()
    expect(datasetOf(await orthanc.client.instanceFile(id!)).equals(onTheWire(datasetOf(await readFile(good.file))))).toBe(true)

    const untrusted = await startRouter(web())
    const bad = await makeTestDicom(path.join(workDir, 'stow-untrusted.dcm'))
    const result = await sendThroughRouter(untrusted.service, bad.file)
    expect({sent: result.sent, failed: result.failed}).toEqual({sent: 0, failed: 1})
    expect(await orthanc.client.lookupInstance(bad.sopInstanceUid)).toBeUndefined()
    expect(untrusted.logs.join('\n')).toContain(`QIDO-RS GET ${orthanc.url}/dicom-web/studies?limit=1 failed: ${UNKNOWN_CA}`)
  })

  it('ddr send --rest https://... --ca stores the file as it is; without --ca it fails clearly, credentials hidden, nothing stored', async () => {
    const good = await makeTestDicom(path.join(workDir, 'cli.dcm'))
    const sent = await runCompiledCli(['send', good.file, '--rest', orthanc.url, '--ca', certs.ca, '--json'])
    expect({code: sent.code, stderr: sent.stderr}).toEqual({code: 0, stderr: ''})
    expect(JSON.parse(sent.stdout)).toMatchObject({target: {protocol: 'rest', url: orthanc.url}, sent: 1, failed: 0})
    const id = await orthanc.client.lookupInstance(good.sopInstanceUid)
    expect((await orthanc.client.instanceFile(id!)).equals(await readFile(good.file))).toBe(true)

    const bad = await makeTestDicom(path.join(workDir, 'cli-untrusted.dcm'))
    const withSecret = orthanc.url.replace('https://', 'https://alice:s3cret@')
    const refused = await runCompiledCli(['send', bad.file, '--rest', withSecret])
    expect(refused.code).toBe(3)
    expect(refused.stderr).toContain(`error [BACKEND_UNREACHABLE]: POST ${orthanc.url}/instances failed: ${UNKNOWN_CA}; nothing was sent`)
    expect(refused.stderr).toContain('--ca FILE')
    expect(refused.stdout + refused.stderr).not.toContain('s3cret')
    expect(await orthanc.client.lookupInstance(bad.sopInstanceUid)).toBeUndefined()
  })

  it('balance-status, inspect and purge --dry-run reach the HTTPS backend with its CA from the file or DDR_BACKEND_<NAME>_HTTPS_CA', async () => {
    const {file, studyInstanceUid} = await makeTestDicom(path.join(workDir, 'ops.dcm'))
    expect((await orthanc.client.uploadInstance(await readFile(file))).status).toBe('Success')
    const backend = {name: 'secure', port: orthanc.dicomPort, aeTitle: orthanc.aeTitle, url: orthanc.url}
    const status = {host: '127.0.0.1', port: await freePort()}
    const withCa = path.join(workDir, 'with-ca.json')
    const withoutCa = path.join(workDir, 'without-ca.json')
    await writeFile(withCa, JSON.stringify({status, backends: [{...backend, https: {ca: certs.ca}}]}))
    await writeFile(withoutCa, JSON.stringify({status, backends: [backend]}))
    const instances = (await orthanc.client.statistics()).CountInstances

    const balance = await runCompiledCli(['balance-status', '--config', withCa, '--json'])
    expect(JSON.parse(balance.stdout).backends[0]).toMatchObject({name: 'secure', reachable: true, instances})

    const inspect = await runCompiledCli(['inspect', '--study', studyInstanceUid, '--config', withoutCa, '--json'], {env: {DDR_BACKEND_SECURE_HTTPS_CA: certs.ca}})
    expect(JSON.parse(inspect.stdout)).toMatchObject({kind: 'locate', found: true, foundOn: ['secure']})

    const purge = await runCompiledCli(['purge', '--dry-run', '--config', withCa, '--json'])
    expect(JSON.parse(purge.stdout).backends[0]).toMatchObject({name: 'secure', state: 'dry-run', before: {instances}})

    const refused = await runCompiledCli(['balance-status', '--config', withoutCa, '--json'])
    const row = JSON.parse(refused.stdout).backends[0]
    // C-ECHO still answers (plain DICOM port); the REST side is refused with the reason.
    expect({healthy: row.healthy, instances: row.instances}).toEqual({healthy: false, instances: null})
    expect(row.healthReason).toContain(`GET ${orthanc.url}/system failed: ${UNKNOWN_CA}`)

    const wrongFile = await runCompiledCli(['balance-status', '--config', withoutCa], {env: {DDR_BACKEND_SECURE_HTTPS_CA: path.join(workDir, 'nope.pem')}})
    expect(wrongFile.code).toBe(2)
    expect(wrongFile.stderr).toContain(`backends[0].https.ca (from DDR_BACKEND_SECURE_HTTPS_CA): cannot read ${path.join(workDir, 'nope.pem')} (no such file)`)
  })
})
