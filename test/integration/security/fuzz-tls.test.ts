import {readFileSync} from 'node:fs'
import {mkdir, mkdtemp, readdir, rm, writeFile} from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import tls from 'node:tls'

import {type Storescp, echoscu, makeTestDicom, startStorescp, storescu} from '../../helpers/dcmtk.js'
import {type RouterChild, hostilePayload, memoryOf, prng, startRouterChild, validAssociateRq} from '../../helpers/hostile.js'
import {freePort} from '../../helpers/ports.js'
import {type TestCertificates, makeTestCertificates} from '../../helpers/tls.js'

// Bounded: a TLS handshake costs the router an RSA signature, and the machine has 2 cores.
const CONNECTIONS = 600
const TIME_BUDGET_MS = 12_000
const PARALLEL = 16
const ATTACK_MS = 400
const RSS_LIMIT_KB = 200 * 1024

const validRequest = validAssociateRq('DDR_FUZZ')

/** The first bytes a TLS client sends (its ClientHello record), captured from Node's own client. */
async function captureClientHello(): Promise<Buffer> {
  const server = net.createServer()
  const hello = new Promise<Buffer>((resolve) =>
    server.once('connection', (socket) =>
      socket.once('data', (chunk: Buffer) => {
        resolve(chunk)
        socket.destroy()
      }),
    ),
  )
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const client = tls.connect({host: '127.0.0.1', port: (server.address() as net.AddressInfo).port, rejectUnauthorized: false})
  client.on('error', () => {})
  const bytes = await hello
  client.destroy()
  server.close()
  return bytes
}

type Attack = {kind: 'tls'; payload: Buffer[]; dropAfterHandshake?: boolean} | {kind: 'raw'; payload: Buffer[]}

/** One hostile connection to a TLS listener. */
function hostileTlsAttack(random: () => number, clientHello: Buffer): Attack {
  const int = (max: number) => Math.floor(random() * max)
  const bytes = (n: number) => Buffer.from(Array.from({length: n}, () => int(256)))
  switch (int(8)) {
    // Garbage and malformed PDUs after a good handshake: the DICOM layer behind TLS must hold.
    case 0:
    case 1: return {kind: 'tls', payload: hostilePayload(random, validRequest)}
    case 2: return {kind: 'tls', payload: [bytes(1 + int(3000))]}
    // A handshake cut short: the listener waits at most artimTimeoutMs for the rest.
    case 3: return {kind: 'raw', payload: [clientHello.subarray(0, 1 + int(clientHello.length - 1))]}
    case 4: {
      const corrupted = Buffer.from(clientHello)
      for (let flips = 1 + int(8); flips > 0; flips--) corrupted[int(corrupted.length)] = int(256)
      return {kind: 'raw', payload: [corrupted]}
    }

    // Plain TCP DICOM (or anything) to the TLS port.
    case 5: return {kind: 'raw', payload: random() < 0.5 ? [validRequest] : hostilePayload(random, validRequest)}
    // A TLS record header announcing a huge record, then noise.
    case 6: return {kind: 'raw', payload: [Buffer.from([0x16, 0x03, 0x01, 0xff, 0xff]), bytes(int(2000))]}
    default: return {kind: 'tls', payload: [], dropAfterHandshake: true}
  }
}

/** Runs one attack; resolves once the router closed the connection or ATTACK_MS passed. Says whether a TLS handshake completed. */
function run(port: number, ca: Buffer, attack: Attack): Promise<boolean> {
  return new Promise((resolve) => {
    let handshake = false
    const socket = attack.kind === 'tls' ? tls.connect({host: '127.0.0.1', port, ca}) : net.connect({host: '127.0.0.1', port})
    const done = () => {
      clearTimeout(timer)
      socket.destroy()
      resolve(handshake)
    }

    const timer = setTimeout(done, ATTACK_MS)
    socket.on('error', done)
    socket.on('close', done)
    socket.on('data', () => {})
    socket.on(attack.kind === 'tls' ? 'secureConnect' : 'connect', () => {
      handshake = attack.kind === 'tls'
      if (attack.kind === 'tls' && attack.dropAfterHandshake) {
        done()
        return
      }

      for (const chunk of attack.payload) socket.write(chunk)
    })
  })
}

describe('hostile input against ddr listen over DICOM TLS (compiled CLI, child process)', () => {
  let workDir: string
  let certs: TestCertificates
  let backend: Storescp
  let router: RouterChild
  let port: number

  beforeAll(async () => {
    workDir = await mkdtemp(path.join(os.tmpdir(), 'ddr-fuzz-tls-'))
    certs = await makeTestCertificates()
    await mkdir(path.join(workDir, 'received'))
    backend = await startStorescp({dir: path.join(workDir, 'received')})
    port = await freePort()
    const config = path.join(workDir, 'ddr.config.json')
    await writeFile(
      config,
      JSON.stringify({
        // No client certificate required: TLS clients reach the DICOM layer, where the garbage goes.
        listen: {host: '127.0.0.1', port, aeTitle: 'DDR_FUZZ', artimTimeoutMs: 2000, tls: {cert: certs.serverCert, key: certs.serverKey, ca: certs.ca}},
        status: {host: '127.0.0.1', port: await freePort()},
        spool: {dir: path.join(workDir, 'spool'), enabled: false},
        health: {intervalMs: 60_000},
        backends: [{name: 'scp', type: 'dimse', host: '127.0.0.1', port: backend.port, aeTitle: backend.aeTitle, maxAssociations: 1}],
      }),
    )
    router = await startRouterChild(config)
  })

  afterAll(async () => {
    await router?.stop()
    await backend?.stop()
    await certs?.remove()
    if (workDir) await rm(workDir, {recursive: true, force: true})
  })

  it('survives garbage after handshakes, truncated and corrupted handshakes and plain TCP on the TLS port; C-ECHO and C-STORE over TLS still work, memory bounded', async () => {
    const pid = router.child.pid!
    const ca = readFileSync(certs.ca)
    const clientHello = await captureClientHello()
    const baseline = memoryOf(pid)
    const seed = Date.now() % 1_000_000
    const random = prng(seed)
    const started = Date.now()
    let sent = 0
    let handshakes = 0
    let peakKb = 0
    const worker = async () => {
      while (sent < CONNECTIONS && Date.now() - started < TIME_BUDGET_MS) {
        sent++
        if (await run(port, ca, hostileTlsAttack(random, clientHello))) handshakes++
        if (sent % 50 === 0) peakKb = Math.max(peakKb, memoryOf(pid).rssKb)
      }
    }

    await Promise.all(Array.from({length: PARALLEL}, worker))
    expect({seed, exitCode: router.child.exitCode}).toEqual({seed, exitCode: null})
    expect({seed, enough: sent >= 200}).toEqual({seed, enough: true})
    // About half the attacks complete a handshake first: the hostile PDUs did reach the DICOM layer behind TLS.
    expect({seed, handshakes: handshakes > sent / 4}).toEqual({seed, handshakes: true})

    const tlsArgs = ['+tls', certs.clientKey, certs.clientCert, '+cf', certs.ca]
    const echo = await echoscu([...tlsArgs, '-aec', 'DDR_FUZZ', '127.0.0.1', String(port)], {timeoutMs: 20_000})
    expect({seed, code: echo.code, stderr: echo.stderr}).toEqual({seed, code: 0, stderr: ''})
    const file = (await makeTestDicom(path.join(workDir, 'good.dcm'))).file
    const store = await storescu([...tlsArgs, '-aec', 'DDR_FUZZ', '127.0.0.1', String(port), file], {timeoutMs: 20_000})
    expect({seed, code: store.code, stderr: store.stderr}).toEqual({seed, code: 0, stderr: ''})
    expect(await readdir(backend.dir)).toHaveLength(1)

    const memory = memoryOf(pid)
    // Measured: about 123 MB at start, under 10 MB more after 600 connections.
    expect({seed, hwmBelowLimit: memory.hwmKb < RSS_LIMIT_KB, growthBelow60Mb: Math.max(peakKb, memory.rssKb) - baseline.rssKb < 60 * 1024}).toEqual({seed, hwmBelowLimit: true, growthBelow60Mb: true})
    expect(router.log()).toContain('tls-refused')
    expect(router.log()).not.toMatch(/internal error|uncaught|unhandled/i)
  }, 60_000)
})
