import {type ChildProcessWithoutNullStreams} from 'node:child_process'
import {readFileSync} from 'node:fs'
import {mkdir, mkdtemp, readdir, rm, writeFile} from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {APPLICATION_CONTEXT, AbortSource, PduType, encodeAbort, encodeAssociateRq, encodeReleaseRq, pDataHeader} from '../../../src/lib/dimse/pdu.js'
import {spawnCompiledCli} from '../../helpers/compiled-cli.js'
import {type Storescp, echoscu, makeTestDicom, startStorescp, storescu} from '../../helpers/dcmtk.js'
import {freePort} from '../../helpers/ports.js'

const CONNECTIONS = 2000
const TIME_BUDGET_MS = 20_000
const PARALLEL = 32
const RSS_LIMIT_KB = 200 * 1024

/** Small deterministic PRNG (mulberry32), so a failure can be replayed from the seed. */
function prng(seed: number): () => number {
  let a = seed
  return () => {
    a = (a + 0x6d2b79f5) | 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296
  }
}

function memoryOf(pid: number): {rssKb: number; hwmKb: number} {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const field = (name: string) => Number(new RegExp(`${name}:\\s+(\\d+)`).exec(status)?.[1] ?? 0)
  return {rssKb: field('VmRSS'), hwmKb: field('VmHWM')}
}

const validRequest = encodeAssociateRq({
  calledAeTitle: 'DDR_FUZZ',
  callingAeTitle: 'FUZZER',
  applicationContext: APPLICATION_CONTEXT,
  presentationContexts: [
    {id: 1, abstractSyntax: '1.2.840.10008.1.1', transferSyntaxes: ['1.2.840.10008.1.2']},
    {id: 3, abstractSyntax: '1.2.840.10008.5.1.4.1.1.2', transferSyntaxes: ['1.2.840.10008.1.2.1']},
  ],
  userInformation: {maxPduLength: 16_384},
})

/** One hostile payload: a list of writes, each sent as its own chunk. */
function hostilePayload(random: () => number): Buffer[] {
  const int = (max: number) => Math.floor(random() * max)
  const bytes = (n: number) => Buffer.from(Array.from({length: n}, () => int(256)))
  const header = (type: number, length: number) => {
    const head = Buffer.alloc(6)
    head[0] = type
    head.writeUInt32BE(length >>> 0, 2)
    return head
  }

  switch (int(11)) {
    case 0: return [bytes(1 + int(2000))]
    case 1: return [header(1 + int(7), 0xffff_ffff), bytes(int(64))]
    case 2: return [validRequest.subarray(0, 1 + int(validRequest.length - 1))]
    case 3: return [validRequest, bytes(1 + int(500))]
    case 4: return [encodeAbort(AbortSource.serviceUser, 0)]
    case 5: return [pDataHeader(1, true, true, 16), bytes(16)]
    case 6: return [validRequest, header(PduType.pData, 0x7fff_ffff), bytes(4096)]
    case 7: {
      const corrupted = Buffer.from(validRequest)
      for (let flips = 1 + int(8); flips > 0; flips--) corrupted[int(corrupted.length)] = int(256)
      return [corrupted]
    }

    case 8: {
      // Association, then a command PDV of garbage, or a dataset fragment without a command.
      const garbage = bytes(2 + 2 * int(100))
      return [validRequest, pDataHeader(random() < 0.5 ? 1 : 3, random() < 0.5, true, garbage.length), garbage]
    }

    case 9: return [validRequest, encodeReleaseRq(), encodeReleaseRq(), bytes(int(32))]
    default: return []
  }
}

/** Opens a connection, writes the payload, waits a little for the router to answer or close, then goes. */
function attack(port: number, payload: Buffer[]): Promise<void> {
  return new Promise((resolve) => {
    const socket = net.connect({host: '127.0.0.1', port})
    const done = () => {
      clearTimeout(timer)
      socket.destroy()
      resolve()
    }

    const timer = setTimeout(done, 300)
    socket.on('error', done)
    socket.on('close', done)
    socket.on('data', () => {})
    socket.on('connect', () => {
      for (const chunk of payload) socket.write(chunk)
    })
  })
}

describe('hostile input against ddr listen (compiled CLI, child process)', () => {
  let workDir: string
  let backend: Storescp
  let router: ChildProcessWithoutNullStreams
  let routerLog = ''
  let port: number

  beforeAll(async () => {
    workDir = await mkdtemp(path.join(os.tmpdir(), 'ddr-fuzz-'))
    await mkdir(path.join(workDir, 'received'))
    backend = await startStorescp({dir: path.join(workDir, 'received')})
    port = await freePort()
    const config = path.join(workDir, 'ddr.config.json')
    await writeFile(
      config,
      JSON.stringify({
        listen: {host: '127.0.0.1', port, aeTitle: 'DDR_FUZZ', artimTimeoutMs: 2000},
        status: {host: '127.0.0.1', port: await freePort()},
        spool: {dir: path.join(workDir, 'spool'), enabled: false},
        health: {intervalMs: 60_000},
        backends: [{name: 'scp', type: 'dimse', host: '127.0.0.1', port: backend.port, aeTitle: backend.aeTitle, maxAssociations: 1}],
      }),
    )
    router = spawnCompiledCli(['listen', '--config', config])
    router.stdout.setEncoding('utf8').on('data', (chunk: string) => (routerLog = (routerLog + chunk).slice(-50_000)))
    router.stderr.setEncoding('utf8').on('data', (chunk: string) => (routerLog = (routerLog + chunk).slice(-50_000)))
    const deadline = Date.now() + 30_000
    while (!routerLog.includes('listening')) {
      if (router.exitCode !== null || Date.now() > deadline) throw new Error(`router did not start: ${routerLog}`)
      await sleep(50)
    }
  })

  afterAll(async () => {
    if (router !== undefined && router.exitCode === null) {
      const exited = new Promise((resolve) => router.once('exit', resolve))
      router.kill('SIGTERM')
      const timer = setTimeout(() => router.kill('SIGKILL'), 10_000)
      await exited
      clearTimeout(timer)
    }

    await backend?.stop()
    if (workDir) await rm(workDir, {recursive: true, force: true})
  })

  it('survives malformed PDUs on thousands of connections, still answers C-ECHO and routes, with bounded memory', async () => {
    const baseline = memoryOf(router.pid!)
    const seed = Date.now() % 1_000_000
    const random = prng(seed)
    const started = Date.now()
    let sent = 0
    let peakKb = 0
    const worker = async () => {
      while (sent < CONNECTIONS && Date.now() - started < TIME_BUDGET_MS) {
        sent++
        await attack(port, hostilePayload(random))
        if (sent % 200 === 0) peakKb = Math.max(peakKb, memoryOf(router.pid!).rssKb)
      }
    }

    await Promise.all(Array.from({length: PARALLEL}, worker))
    expect({seed, exitCode: router.exitCode}).toEqual({seed, exitCode: null})
    expect(sent).toBeGreaterThan(200)

    const echo = await echoscu(['-aec', 'DDR_FUZZ', '127.0.0.1', String(port)], {timeoutMs: 20_000})
    expect({seed, code: echo.code, stderr: echo.stderr}).toEqual({seed, code: 0, stderr: ''})
    const file = (await makeTestDicom(path.join(workDir, 'good.dcm'))).file
    const store = await storescu(['-aec', 'DDR_FUZZ', '127.0.0.1', String(port), file], {timeoutMs: 20_000})
    expect({seed, code: store.code, stderr: store.stderr}).toEqual({seed, code: 0, stderr: ''})
    expect(await readdir(backend.dir)).toHaveLength(1)

    const memory = memoryOf(router.pid!)
    // The compiled CLI starts at about 120 MB RSS; 2000 hostile connections add about 30 MB (heap not yet collected).
    expect({seed, hwmBelowLimit: memory.hwmKb < RSS_LIMIT_KB, growthBelow100Mb: Math.max(peakKb, memory.rssKb) - baseline.rssKb < 100 * 1024}).toEqual({seed, hwmBelowLimit: true, growthBelow100Mb: true})
    expect(routerLog).not.toMatch(/internal error|uncaught|unhandled/i)
  }, 90_000)
})
