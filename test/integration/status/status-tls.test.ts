import {existsSync, readFileSync} from 'node:fs'
import {copyFile, mkdir, mkdtemp, rm, writeFile} from 'node:fs/promises'
import http from 'node:http'
import https from 'node:https'
import os from 'node:os'
import path from 'node:path'

import type {DdrConfig} from '../../../src/lib/config/schema.js'
import {validateConfig} from '../../../src/lib/config/validate.js'
import type {DeadLettersResult} from '../../../src/lib/console/dead-letters.js'
import {type RouterService, startRouterService} from '../../../src/lib/listen/service.js'
import {Logger} from '../../../src/lib/output/logger.js'
import type {BalanceStatusResult} from '../../../src/lib/status/balance.js'
import {runCompiledCli} from '../../helpers/compiled-cli.js'
import {expectDdrError} from '../../helpers/expect.js'
import {fixturePath, goodFixtures} from '../../helpers/fixtures.js'
import {freePort} from '../../helpers/ports.js'
import {type TestCertificates, makeTestCertificates} from '../../helpers/tls.js'
import {waitFor} from '../../helpers/wait.js'

const TOKEN = 'status-tls-test-token-0123'

interface Answer {
  status: number
  headers: http.IncomingHttpHeaders
  body: string
}

/** One request over https (trusting `ca`, when given) or plain http; rejects when no HTTP answer came. */
function request(url: string, options: {method?: string; body?: string; ca?: Buffer; headers?: Record<string, string>} = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const secure = url.startsWith('https:')
    const call = secure
      ? https.request(url, {method: options.method ?? 'GET', ca: options.ca, agent: false, headers: options.headers}, answered)
      : http.request(url, {method: options.method ?? 'GET', agent: false}, answered)
    function answered(response: http.IncomingMessage) {
      let body = ''
      response.setEncoding('utf8').on('data', (chunk: string) => (body += chunk))
      response.on('end', () => resolve({status: response.statusCode ?? 0, headers: response.headers, body}))
      response.on('error', reject)
    }

    call.setTimeout(5000, () => call.destroy(new Error('no answer within 5 s')))
    call.on('error', reject)
    call.end(options.body)
  })
}

/** ddr listen's status server with status.tls, and ddr's commands (the compiled CLI) reaching it over https. */
describe('the status port over TLS (status.tls)', () => {
  let certs: TestCertificates
  let dir: string
  let spoolDir: string
  let service: RouterService | undefined
  let configFile: string
  let base: string
  let ca: Buffer

  /** A router config: one folder backend, the status port on loopback over TLS with the self-signed certificate. */
  const routerConfig = (statusPort: number, status: Record<string, unknown> = {}) => ({
    listen: {host: '127.0.0.1', port: 0, aeTitle: 'DDR_TLS'},
    status: {host: '127.0.0.1', port: statusPort, token: TOKEN, tls: {cert: certs.selfSignedCert, key: certs.selfSignedKey}, ...status},
    spool: {dir: spoolDir},
    backends: [{name: 'archive', type: 'folder', path: path.join(dir, 'archive'), minFreeMb: 0}],
  })

  const logLines: string[] = []
  const start = (config: DdrConfig) => startRouterService(config, {logger: new Logger({write: (line) => logLines.push(line)})})

  beforeAll(async () => {
    certs = await makeTestCertificates()
    ca = readFileSync(certs.selfSignedCert)
    dir = await mkdtemp(path.join(os.tmpdir(), 'ddr-status-tls-'))
    spoolDir = path.join(dir, 'spool')
    // A dead letter for ddr dead-letters to list.
    const entry = goodFixtures[0]
    await mkdir(path.join(spoolDir, 'dead-letter'), {recursive: true})
    await copyFile(fixturePath(entry), path.join(spoolDir, 'dead-letter', 'tls1-0001-aaaa.dcm'))
    await writeFile(path.join(spoolDir, 'dead-letter', 'tls1-0001-aaaa.reason.json'), JSON.stringify({reason: 'refused: 0xA900', sopInstanceUid: entry.sopInstanceUid, studyInstanceUid: entry.studyInstanceUid, callingAeTitle: 'CT1'}))

    const statusPort = await freePort()
    const raw = routerConfig(statusPort)
    configFile = path.join(dir, 'ddr.config.json')
    await writeFile(configFile, JSON.stringify(raw))
    service = await start(validateConfig(raw, configFile))
    base = `https://127.0.0.1:${service.statusPort}`
  })

  afterAll(async () => {
    await service?.stop(1000)
    if (dir) await rm(dir, {recursive: true, force: true})
    await certs?.remove()
  })

  it('serves /status over https to a client that trusts its certificate, and refuses one that does not', async () => {
    const status = await request(`${base}/status`, {ca})
    expect(status.status).toBe(200)
    expect(JSON.parse(status.body)).toMatchObject({listen: {aeTitle: 'DDR_TLS'}, backends: [{name: 'archive'}]})
    expect((await request(`${base}/healthz`, {ca})).body).toBe('ok\n')
    await expect(request(`${base}/status`)).rejects.toMatchObject({code: 'DEPTH_ZERO_SELF_SIGNED_CERT'})
  })

  it('gives plain HTTP on that port no HTTP answer, and keeps serving https', async () => {
    const plain = request(`http://127.0.0.1:${service!.statusPort}/status`)
    await expect(plain).rejects.toThrow(/socket hang up|ECONNRESET/)
    expect((await request(`${base}/status`, {ca})).status).toBe(200)
    // The refused handshake is in the log, with the peer (as the DICOM listener logs its own).
    await waitFor('the status-tls-refused log line', () => logLines.some((line) => line.includes('status-tls-refused') && line.includes('127.0.0.1')), 5000)
  })

  it('sets the console login cookie Secure, with the __Host- prefix, and knows the session by it', async () => {
    const login = await request(`${base}/api/login`, {method: 'POST', body: JSON.stringify({token: TOKEN}), ca})
    expect(login.status).toBe(200)
    const cookie = login.headers['set-cookie']?.[0] ?? ''
    expect(cookie).toMatch(/^__Host-ddr_session=[^;]+; HttpOnly; Secure; SameSite=Strict; Path=\//)
    expect(cookie).not.toContain(TOKEN)
    // The browser sends it back by that name: the session is known.
    const session = await request(`${base}/api/session`, {ca, headers: {cookie: cookie.split(';')[0]}})
    expect(JSON.parse(session.body)).toMatchObject({authRequired: true, loggedIn: true})
  })

  it('ddr dead-letters, balance-status, listen --drain and process reach it over https with the config alone', async () => {
    const listed = await runCompiledCli(['dead-letters', '--json', '--config', configFile])
    expect(listed.stderr).toBe('')
    expect(listed.code).toBe(0)
    expect(JSON.parse(listed.stdout) as DeadLettersResult).toMatchObject({via: 'router', deadLetters: [{id: 'tls1-0001-aaaa', reason: 'refused: 0xA900', from: 'CT1'}]})

    const balance = await runCompiledCli(['balance-status', '--json', '--config', configFile])
    const result = JSON.parse(balance.stdout) as BalanceStatusResult
    expect(result).toMatchObject({routerUrl: base, routerError: null, router: {counters: {received: 0}}})

    const drain = await runCompiledCli(['listen', '--drain', '--config', configFile])
    expect(drain.code).toBe(0)
    expect(drain.stdout).toMatch(/^draining: the router takes no new associations/)

    // ddr process with a module this config has and the running router has not: the router's own answer (405).
    const processFile = path.join(dir, 'process.config.json')
    await writeFile(processFile, JSON.stringify({...routerConfig(service!.statusPort!), processing: {modules: [{name: 'noop', match: {}, command: ['true']}]}}))
    const processed = await runCompiledCli(['process', '1.2.3', '--config', processFile])
    expect(processed.code).toBe(2)
    expect(processed.stderr).toContain(`the router at ${base} runs no processing modules`)
  })

  it('a config without status.tls does not take a TLS router for an absent one: an error, the spool left alone', async () => {
    const plainFile = path.join(dir, 'plain.config.json')
    const {tls: _tls, ...status} = routerConfig(service!.statusPort!).status
    await writeFile(plainFile, JSON.stringify({...routerConfig(service!.statusPort!), status}))
    const discarded = await runCompiledCli(['dead-letters', 'discard', '--all', '--yes', '--config', plainFile])
    expect(discarded.code).toBe(3)
    expect(discarded.stderr).toContain(`no router answers at http://127.0.0.1:${service!.statusPort}: ECONNRESET`)
    expect(discarded.stderr).toContain('give this config the same status.tls')
    expect(existsSync(path.join(spoolDir, 'dead-letter', 'tls1-0001-aaaa.dcm'))).toBe(true)
  })

  it('refuses to start with a status.tls file it cannot read (naming it), or on a non-loopback host without a token', async () => {
    const missing = path.join(dir, 'missing.pem')
    const bad = await expectDdrError(start(validateConfig(routerConfig(0, {tls: {cert: missing, key: certs.selfSignedKey}}), 't')))
    expect(bad).toMatchObject({code: 'CONFIG_INVALID', message: `status.tls.cert: cannot read ${missing} (no such file)`})
    const open = await expectDdrError(start(validateConfig(routerConfig(0, {host: '0.0.0.0', token: undefined}), 't')))
    expect(open).toMatchObject({code: 'CONFIG_INVALID', message: expect.stringContaining('no status.token is set')})
  })
})
