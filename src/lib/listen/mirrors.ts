import {copyFile, link, mkdir, open, readdir, rename, rm} from 'node:fs/promises'
import path from 'node:path'

import {storeSlots} from '../backends/backend.js'
import type {MirrorQueueStats} from '../status/server.js'
import {backoffDelay} from './backoff.js'
import {formatStatus, isStored, isTransientRefusal} from '../dimse/status.js'
import type {Logger} from '../output/logger.js'
import {datasyncFile, syncDir, writeFileAtomic} from '../fs/durable.js'
import {datasetBuffers, readPart10Instance} from '../dicom/received-instance.js'
import type {BackendState} from '../routing/backend-state.js'
import type {ReceivedInstance} from '../dicom/received-instance.js'

export interface MirrorQueueOptions {
  /**
   * Where pending copies are kept on disk: one Part 10 file per copy, `<id>~<backend>.dcm` (hard
   * links of one file when an instance goes to several mirrors). recover() picks up those an
   * earlier run left. Undefined: copies live in memory only.
   */
  dir?: string
  /**
   * Each copy is in `dir` and fsynced before copy() resolves, so it survives a crash or SIGKILL
   * (store-and-forward mode). Otherwise (pass-through) copies are held in memory, or hard-linked
   * into `scratchDir` when the instance is a file, and are lost at a restart.
   */
  durable?: boolean
  /** Non-durable mode: where file-backed instances are hard-linked while pending (the caller empties it at start). */
  scratchDir?: string
  logger: Logger
  failThreshold: number
  /** Copies waiting at most; beyond, the oldest is given up (and logged). Default 10 000, durable 100 000. */
  maxPending?: number
  retryBaseMs?: number
  retryMaxMs?: number
  /** Attempts per copy before it is given up. */
  maxTries?: number
}

/** Counters the queue keeps in the router's counters (and so in /status). */
export interface MirrorCounters {
  mirrored: number
  mirrorFailed: number
  mirrorPending: number
}

interface Job {
  /** The instance, with its bytes in memory or in `file`. */
  instance: ReceivedInstance
  backend: BackendState
  /** This copy's own file (a hard link): deleted once the copy is done or given up. */
  file?: string
  key: string
  tries: number
  notBefore: number
}

/** Copies of one mirror one pump looks at, at most (retrying ones sit at the end). */
const MAX_SCAN = 2000
const COPY_FILE = /^(.+)~([A-Za-z0-9][A-Za-z0-9_.-]*)\.dcm$/

/** `<id>~<backend>`: names a copy, in memory and on disk (backend names never hold "~"). */
function copyKey(instance: ReceivedInstance, backend: BackendState): string {
  return `${instance.id}~${backend.name}`
}

/**
 * Copies instances to mirror backends in the background, after their primary stored them: a
 * mirror's failure never touches the primary delivery. Failed copies are retried with exponential
 * backoff. With `durable`, every pending copy is a file in `dir` before copy() resolves (so before
 * the spool drops the instance), and recover() resumes them after a restart; otherwise the queue
 * lives in memory. Either way it is bounded (maxPending): a copy pushed out by a long mirror
 * outage is lost, and each loss is logged as `mirror-given-up`.
 */
export class MirrorQueue {
  /** Waiting copies, per mirror, oldest first (retries go to the end). */
  private readonly queues = new Map<BackendState, Job[]>()
  private waiting = 0
  private readonly active = new Map<string, number>()
  private readonly pendingKeys = new Set<string>()
  private inFlight = 0
  private readonly timer: NodeJS.Timeout
  private idleWaiters: Array<() => void> = []
  private sequence = 0
  private stopped = false
  private readonly maxPending: number
  private readonly retryBaseMs: number
  private readonly retryMaxMs: number
  private readonly maxTries: number
  private readonly durable: boolean

  constructor(private readonly counters: MirrorCounters, private readonly options: MirrorQueueOptions) {
    this.durable = options.durable === true && options.dir !== undefined
    this.maxPending = options.maxPending ?? (this.durable ? 100_000 : 10_000)
    this.retryBaseMs = options.retryBaseMs ?? 1000
    this.retryMaxMs = options.retryMaxMs ?? 60_000
    this.maxTries = options.maxTries ?? 20
    this.timer = setInterval(() => this.pump(), 200)
    this.timer.unref()
  }

  /**
   * Schedules copies of a stored instance to these mirrors (those it is already pending for are
   * left out). Resolves once the instance's bytes are secured for every copy (durable: on disk and
   * fsynced; the spool may delete the instance right after), not when the copies are done. Never
   * rejects: a copy that cannot be kept is logged and given up, the primary is never failed.
   */
  async copy(instance: ReceivedInstance, mirrors: BackendState[]): Promise<void> {
    const fresh = mirrors.filter((backend) => !this.pendingKeys.has(copyKey(instance, backend)))
    if (fresh.length === 0) return
    let held: Array<Pick<Job, 'instance' | 'file'>> | undefined
    if (this.durable) {
      try {
        held = await this.holdDurable(instance, fresh)
      } catch (error) {
        this.options.logger.warn('mirror-not-durable', {sop: instance.sopInstanceUid, mirrors: fresh.map((m) => m.name).join(',')}, `cannot write the copies to ${this.options.dir}: ${(error as Error).message}; kept until a restart only`)
      }
    }

    if (held === undefined) {
      try {
        held = await this.holdVolatile(instance, fresh)
      } catch (error) {
        this.counters.mirrorFailed += fresh.length
        this.options.logger.error('mirror-given-up', {sop: instance.sopInstanceUid, mirrors: fresh.map((m) => m.name).join(',')}, `cannot keep the bytes for the mirror copies: ${(error as Error).message}`)
        return
      }
    }

    for (const [index, backend] of fresh.entries()) this.add({...held[index], backend, key: copyKey(instance, backend), tries: 0, notBefore: 0})
    this.pump()
  }

  /**
   * Takes up the copies an earlier run left in `dir` (durable ones, or links that were complete
   * when it stopped): each goes to its mirror again. A copy for a backend no longer configured, or
   * a file that cannot be read, is given up (logged). Call once, before new copies.
   */
  async recover(backends: BackendState[]): Promise<{copies: number; givenUp: number}> {
    const dir = this.options.dir
    const result = {copies: 0, givenUp: 0}
    if (dir === undefined) return result
    let names: string[]
    try {
      names = (await readdir(dir)).sort()
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return result
      throw error
    }

    const byName = new Map(backends.map((b) => [b.name, b]))
    for (const name of names) {
      const file = path.join(dir, name)
      // A copy still being written when the process stopped was never promised to anyone.
      if (name.endsWith('.part')) {
        await rm(file, {force: true})
        continue
      }

      const match = COPY_FILE.exec(name)
      if (match === null) continue
      const [, id, backendName] = match
      const backend = byName.get(backendName)
      let why: string | undefined
      let instance: ReceivedInstance | undefined
      if (backend === undefined) {
        why = `no backend named ${backendName} is configured any more`
      } else {
        try {
          instance = await readPart10Instance(file, id)
        } catch (error) {
          why = `unreadable: ${(error as Error).message}`
        }
      }

      if (instance === undefined || backend === undefined) {
        result.givenUp++
        this.counters.mirrorFailed++
        this.options.logger.error('mirror-given-up', {file, backend: backendName}, `pending copy from before the restart: ${why}`)
        await rm(file, {force: true})
        continue
      }

      result.copies++
      this.add({instance, file, backend, key: copyKey(instance, backend), tries: 0, notBefore: 0})
    }

    if (result.copies > 0 || result.givenUp > 0) this.options.logger.info('mirror-recovered', {copies: result.copies, givenUp: result.givenUp})
    this.pump()
    return result
  }

  /** Resolves when no copy is pending (tests, graceful stop). */
  idle(): Promise<void> {
    if (this.waiting === 0 && this.inFlight === 0) return Promise.resolve()
    return new Promise((resolve) => this.idleWaiters.push(resolve))
  }

  stats(): MirrorQueueStats {
    let oldest: number | undefined
    for (const queue of this.queues.values()) for (const job of queue) if (oldest === undefined || job.instance.receivedAt < oldest) oldest = job.instance.receivedAt
    return {durable: this.durable, pending: this.counters.mirrorPending, oldestAgeSeconds: oldest === undefined ? null : Math.round((Date.now() - oldest) / 100) / 10}
  }

  /** Starts no more copies (pending durable ones stay on disk for the next start). */
  stop(): void {
    this.stopped = true
    clearInterval(this.timer)
  }

  private add(job: Job): void {
    if (this.waiting >= this.maxPending) {
      // The oldest copy of the mirror with the longest backlog (the one that is away) goes.
      const longest = [...this.queues.values()].reduce((a, b) => (b.length > a.length ? b : a))
      this.waiting--
      this.giveUp(longest.shift()!, `more than ${this.maxPending} copies pending`)
    }

    this.enqueue(job)
    this.pendingKeys.add(job.key)
    this.counters.mirrorPending++
  }

  private enqueue(job: Job): void {
    let queue = this.queues.get(job.backend)
    if (queue === undefined) {
      queue = []
      this.queues.set(job.backend, queue)
    }

    queue.push(job)
    this.waiting++
  }

  /**
   * One file per copy in `dir`, fsynced with its folder: a hard link of the instance's spool file
   * (already durable), or the meta header and dataset written out once (a journal record, memory)
   * and hard-linked for the other mirrors.
   */
  private async holdDurable(instance: ReceivedInstance, mirrors: BackendState[]): Promise<Array<Pick<Job, 'instance' | 'file'>>> {
    const dir = this.options.dir!
    await mkdir(dir, {recursive: true})
    const files = mirrors.map((backend) => path.join(dir, `${copyKey(instance, backend)}.dcm`))
    const written: string[] = []
    try {
      if (instance.path !== undefined && instance.journal === undefined) {
        await linkOrCopy(instance.path, files[0])
      } else {
        await writePart10(instance, files[0])
      }

      written.push(files[0])
      for (const file of files.slice(1)) {
        await linkOrCopy(files[0], file)
        written.push(file)
      }

      await syncDir(dir)
    } catch (error) {
      await Promise.all(written.map((file) => rm(file, {force: true})))
      throw error
    }

    return files.map((file) => ({file, instance: {...instance, path: file, journal: undefined, dataset: {path: file, offset: instance.metaHeader.length, length: instance.datasetLength}}}))
  }

  private async holdVolatile(instance: ReceivedInstance, mirrors: BackendState[]): Promise<Array<Pick<Job, 'instance' | 'file'>>> {
    const source = instance.dataset
    const bare = {...instance, path: undefined, journal: undefined}
    if (!('path' in source)) return mirrors.map(() => ({instance: bare}))
    const scratch = this.options.scratchDir
    if (scratch === undefined) {
      const buffer = Buffer.alloc(source.length)
      const handle = await open(source.path, 'r')
      try {
        await handle.read(buffer, 0, source.length, source.offset)
      } finally {
        await handle.close()
      }

      return mirrors.map(() => ({instance: {...bare, dataset: {buffer}}}))
    }

    await mkdir(scratch, {recursive: true})
    const held: Array<Pick<Job, 'instance' | 'file'>> = []
    for (const backend of mirrors) {
      const file = path.join(scratch, `${copyKey(instance, backend)}-${++this.sequence}`)
      // A hard link costs nothing and survives the spool deleting its own name for the file.
      await link(source.path, file).catch(async () => copyFile(source.path, file))
      held.push({file, instance: {...bare, dataset: {path: file, offset: source.offset, length: source.length}}})
    }

    return held
  }

  private pump(): void {
    if (this.stopped || this.waiting === 0) return
    const now = Date.now()
    for (const [backend, queue] of this.queues) {
      // A mirror that is down or busy costs nothing, however long its backlog.
      let free = backend.healthy ? storeSlots(backend.backend) - (this.active.get(backend.name) ?? 0) : 0
      if (free <= 0 || queue.length === 0) continue
      const start: number[] = []
      for (let index = 0; index < queue.length && index < MAX_SCAN && free > 0; index++) {
        if (queue[index].notBefore > now) continue
        start.push(index)
        free--
      }

      for (const index of start.reverse()) {
        const [job] = queue.splice(index, 1)
        this.waiting--
        void this.run(job)
      }
    }
  }

  private async run(job: Job): Promise<void> {
    const {backend, instance} = job
    const log = this.options.logger
    this.inFlight++
    this.active.set(backend.name, (this.active.get(backend.name) ?? 0) + 1)
    backend.inFlight++
    job.tries++
    const started = performance.now()
    let retry: string | undefined
    try {
      const response = await backend.backend.store(instance)
      backend.recordLatency(performance.now() - started)
      backend.markSuccess(1)
      if (isStored(response.status)) {
        backend.lastStoredAt = Date.now()
        backend.routed++
        backend.bytes += instance.datasetLength
        this.counters.mirrored++
        log.info('mirrored', {sop: instance.sopInstanceUid, study: instance.studyInstanceUid, backend: backend.name, tries: job.tries})
        await this.release(job)
      } else if (isTransientRefusal(response.status)) {
        backend.failed++
        retry = `${backend.name} answered ${formatStatus(response.status)}`
      } else {
        backend.failed++
        this.giveUp(job, `${backend.name} refused it: ${formatStatus(response.status)}${response.errorComment ? ` (${response.errorComment})` : ''}`, false)
      }
    } catch (error) {
      backend.failed++
      const message = `${backend.name}: ${(error as Error).message}`
      if (backend.markFailure(message, this.options.failThreshold)) log.warn('backend-down', {backend: backend.name}, message)
      retry = message
    } finally {
      backend.inFlight--
      this.inFlight--
      this.active.set(backend.name, (this.active.get(backend.name) ?? 1) - 1)
    }

    if (retry !== undefined) {
      if (job.tries >= this.maxTries) {
        this.giveUp(job, `${job.tries} attempts failed, last: ${retry}`, false)
      } else {
        const delay = backoffDelay(job.tries, this.retryBaseMs, this.retryMaxMs)
        job.notBefore = Date.now() + delay
        this.enqueue(job)
        log.debug('mirror-retry', {sop: instance.sopInstanceUid, backend: backend.name, tries: job.tries, inMs: Math.round(delay)}, retry)
        return
      }
    }

    this.counters.mirrorPending--
    if (this.waiting === 0 && this.inFlight === 0) for (const resolve of this.idleWaiters.splice(0)) resolve()
    this.pump()
  }

  /** The copy is given up (logged); `pending`: it was still waiting, not in flight. */
  private giveUp(job: Job, reason: string, pending = true): void {
    this.counters.mirrorFailed++
    if (pending) this.counters.mirrorPending--
    this.options.logger.error('mirror-given-up', {sop: job.instance.sopInstanceUid, study: job.instance.studyInstanceUid, backend: job.backend.name}, reason)
    void this.release(job)
  }

  private async release(job: Job): Promise<void> {
    this.pendingKeys.delete(job.key)
    if (job.file !== undefined) await rm(job.file, {force: true}).catch(() => undefined)
  }
}

/** A hard link (a name already there is replaced); a durable copy where links do not work. */
async function linkOrCopy(source: string, target: string): Promise<void> {
  try {
    await link(source, target)
    return
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    if (code === 'EEXIST') {
      await rm(target, {force: true})
      return linkOrCopy(source, target)
    }
  }

  const part = `${target}.part`
  await copyFile(source, part)
  await datasyncFile(part)
  await rename(part, target)
}

/** The instance as a Part 10 file: written to `.part`, fdatasync'ed, renamed (the caller fsyncs the folder). */
async function writePart10(instance: ReceivedInstance, target: string): Promise<void> {
  await writeFileAtomic(target, part10Chunks(instance), {temp: `${target}.part`})
}

/** Meta header, then the dataset exactly as received (from memory or a file slice, 1 MB at a time). */
async function* part10Chunks(instance: ReceivedInstance): AsyncGenerator<Buffer> {
  yield instance.metaHeader
  const source = instance.dataset
  const inMemory = datasetBuffers(source)
  if (inMemory !== undefined) {
    yield* inMemory
    return
  }

  if (!('path' in source)) return

  const input = await open(source.path, 'r')
  try {
    for (let done = 0; done < source.length; ) {
      const chunk = Buffer.allocUnsafe(Math.min(source.length - done, 1024 * 1024))
      const {bytesRead} = await input.read(chunk, 0, chunk.length, source.offset + done)
      if (bytesRead === 0) throw new Error(`${source.path} ended ${source.length - done} bytes early`)
      yield chunk.subarray(0, bytesRead)
      done += bytesRead
    }
  } finally {
    await input.close()
  }
}
