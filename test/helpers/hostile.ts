import {type ChildProcessWithoutNullStreams} from 'node:child_process'
import {readFileSync} from 'node:fs'
import net from 'node:net'
import {setTimeout as sleep} from 'node:timers/promises'

import {APPLICATION_CONTEXT, AbortSource, PduType, encodeAbort, encodeAssociateRq, encodeReleaseRq, pDataHeader} from '../../src/lib/dimse/pdu.js'
import {spawnCompiledCli} from './compiled-cli.js'

/** Small deterministic PRNG (mulberry32), so a failure can be replayed from the seed. */
export function prng(seed: number): () => number {
  let a = seed
  return () => {
    a = (a + 0x6d2b79f5) | 0
    let t = Math.imul(a ^ (a >>> 15), 1 | a)
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296
  }
}

/** Current and peak resident memory of a process, from /proc. */
export function memoryOf(pid: number): {rssKb: number; hwmKb: number} {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8')
  const field = (name: string) => Number(new RegExp(`${name}:\\s+(\\d+)`).exec(status)?.[1] ?? 0)
  return {rssKb: field('VmRSS'), hwmKb: field('VmHWM')}
}

/** A well-formed A-ASSOCIATE-RQ (Verification and CT) calling `calledAeTitle`. */
export function validAssociateRq(calledAeTitle: string): Buffer {
  return encodeAssociateRq({
    calledAeTitle,
    callingAeTitle: 'FUZZER',
    applicationContext: APPLICATION_CONTEXT,
    presentationContexts: [
      {id: 1, abstractSyntax: '1.2.840.10008.1.1', transferSyntaxes: ['1.2.840.10008.1.2']},
      {id: 3, abstractSyntax: '1.2.840.10008.5.1.4.1.1.2', transferSyntaxes: ['1.2.840.10008.1.2.1']},
    ],
    userInformation: {maxPduLength: 16_384},
  })
}

/**
 * One hostile DICOM upper-layer payload, as a list of writes (each its own chunk): random bytes,
 * absurd PDU lengths, truncated or corrupted A-ASSOCIATE-RQs, garbage after a valid request,
 * unexpected A-ABORT, P-DATA before association, huge P-DATA length headers, double release.
 */
export function hostilePayload(random: () => number, validRequest: Buffer): Buffer[] {
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

export interface RouterChild {
  child: ChildProcessWithoutNullStreams
  /** The last 50 000 characters it logged (stdout and stderr). */
  log(): string
  /** SIGTERM, SIGKILL after 10 s; waits for the exit. */
  stop(): Promise<void>
}

/** Starts the compiled `ddr listen --config FILE` and waits for its "listening" line (30 s at most). */
export async function startRouterChild(configFile: string): Promise<RouterChild> {
  const child = spawnCompiledCli(['listen', '--config', configFile])
  let log = ''
  const collect = (chunk: string) => (log = (log + chunk).slice(-50_000))
  child.stdout.setEncoding('utf8').on('data', collect)
  child.stderr.setEncoding('utf8').on('data', collect)
  const handle: RouterChild = {
    child,
    log: () => log,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return
      const exited = new Promise((resolve) => child.once('exit', resolve))
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
      await exited
      clearTimeout(timer)
    },
  }
  const deadline = Date.now() + 30_000
  while (!log.includes('listening')) {
    if (child.exitCode !== null || Date.now() > deadline) {
      await handle.stop()
      throw new Error(`router did not start: ${log}`)
    }

    await sleep(50)
  }

  return handle
}

/** Opens a connection, writes a hostile payload, lingers a little (300 ms) for the router's answer or close, then goes. */
export function hostileConnection(port: number, payload: Buffer[]): Promise<void> {
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
