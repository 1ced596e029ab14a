import {rmSync} from 'node:fs'
import {copyFile, link, mkdir, open, rm} from 'node:fs/promises'
import path from 'node:path'

import {storeSlots} from '../backends/backend.js'
import {formatStatus, isStored, isTransientRefusal} from '../dimse/status.js'
import type {Logger} from '../output/logger.js'
import type {BackendState} from './backend-state.js'
import type {ReceivedInstance} from './instance.js'

export interface MirrorQueueOptions {
  /** Where file-backed instances are hard-linked while copies are pending (undefined: read into memory). */
  dir?: string
  logger: Logger
  failThreshold: number
  /** Copies waiting at most; beyond, the oldest is given up (and logged). */
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

interface Held {
  instance: ReceivedInstance
  /** Copies still pending; the held bytes go when it reaches 0. */
  refs: number
  file?: string
}

interface Job {
  held: Held
  backend: BackendState
  tries: number
  notBefore: number
}

/**
 * Copies instances to mirror backends in the background, after their primary stored them: a
 * mirror's failure never touches the primary delivery. Failed copies are retried with exponential
 * backoff. The queue lives in memory and is bounded (maxPending): copies pending at a restart, or
 * pushed out by a long mirror outage, are lost, and each loss is logged as `mirror-given-up`.
 */
export class MirrorQueue {
  private jobs: Job[] = []
  private readonly active = new Map<string, number>()
  private inFlight = 0
  private readonly timer: NodeJS.Timeout
  private idleWaiters: Array<() => void> = []
  private sequence = 0
  private readonly maxPending: number
  private readonly retryBaseMs: number
  private readonly retryMaxMs: number
  private readonly maxTries: number

  constructor(private readonly counters: MirrorCounters, private readonly options: MirrorQueueOptions) {
    this.maxPending = options.maxPending ?? 10_000
    this.retryBaseMs = options.retryBaseMs ?? 1000
    this.retryMaxMs = options.retryMaxMs ?? 60_000
    this.maxTries = options.maxTries ?? 20
    // Links left by a previous run belong to copies that queue lost when it stopped.
    if (options.dir !== undefined) rmSync(options.dir, {recursive: true, force: true})
    this.timer = setInterval(() => this.pump(), 200)
    this.timer.unref()
  }

  /**
   * Schedules copies of a stored instance to these mirrors. Resolves once the instance's bytes are
   * secured (its spool file may be deleted right after), not when the copies are done.
   */
  async copy(instance: ReceivedInstance, mirrors: BackendState[]): Promise<void> {
    if (mirrors.length === 0) return
    let held: Held
    try {
      held = await this.hold(instance)
    } catch (error) {
      this.counters.mirrorFailed += mirrors.length
      this.options.logger.error('mirror-given-up', {sop: instance.sopInstanceUid, mirrors: mirrors.map((m) => m.name).join(',')}, `cannot keep the bytes for the mirror copies: ${(error as Error).message}`)
      return
    }

    held.refs = mirrors.length
    for (const backend of mirrors) {
      if (this.jobs.length >= this.maxPending) this.giveUp(this.jobs.shift()!, `more than ${this.maxPending} copies pending`)
      this.jobs.push({held, backend, tries: 0, notBefore: 0})
      this.counters.mirrorPending++
    }

    this.pump()
  }

  /** Resolves when no copy is pending (tests, graceful stop). */
  idle(): Promise<void> {
    if (this.jobs.length === 0 && this.inFlight === 0) return Promise.resolve()
    return new Promise((resolve) => this.idleWaiters.push(resolve))
  }

  stop(): void {
    clearInterval(this.timer)
  }

  private async hold(instance: ReceivedInstance): Promise<Held> {
    const source = instance.dataset
    if ('buffer' in source) return {instance: {...instance, path: undefined}, refs: 0}
    if (this.options.dir === undefined) {
      const buffer = Buffer.alloc(source.length)
      const handle = await open(source.path, 'r')
      try {
        await handle.read(buffer, 0, source.length, source.offset)
      } finally {
        await handle.close()
      }

      return {instance: {...instance, path: undefined, dataset: {buffer}}, refs: 0}
    }

    await mkdir(this.options.dir, {recursive: true})
    const file = path.join(this.options.dir, `${instance.id}-${++this.sequence}.dcm`)
    // A hard link costs nothing and survives the spool deleting its own name for the file.
    await link(source.path, file).catch(async () => copyFile(source.path, file))
    return {instance: {...instance, path: undefined, dataset: {path: file, offset: source.offset, length: source.length}}, refs: 0, file}
  }

  private pump(): void {
    const now = Date.now()
    for (const job of [...this.jobs]) {
      if (job.notBefore > now || !job.backend.healthy) continue
      if ((this.active.get(job.backend.name) ?? 0) >= storeSlots(job.backend.backend)) continue
      this.jobs.splice(this.jobs.indexOf(job), 1)
      void this.run(job)
    }
  }

  private async run(job: Job): Promise<void> {
    const {backend, held} = job
    const {instance} = held
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
        await this.release(held)
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
        const delay = Math.min(this.retryMaxMs, this.retryBaseMs * 2 ** (job.tries - 1)) * (0.5 + Math.random() * 0.5)
        job.notBefore = Date.now() + delay
        this.jobs.push(job)
        log.debug('mirror-retry', {sop: instance.sopInstanceUid, backend: backend.name, tries: job.tries, inMs: Math.round(delay)}, retry)
        return
      }
    }

    this.counters.mirrorPending--
    if (this.jobs.length === 0 && this.inFlight === 0) for (const resolve of this.idleWaiters.splice(0)) resolve()
    this.pump()
  }

  private giveUp(job: Job, reason: string, pending = true): void {
    this.counters.mirrorFailed++
    if (pending) this.counters.mirrorPending--
    this.options.logger.error('mirror-given-up', {sop: job.held.instance.sopInstanceUid, study: job.held.instance.studyInstanceUid, backend: job.backend.name}, reason)
    void this.release(job.held)
  }

  private async release(held: Held): Promise<void> {
    held.refs--
    if (held.refs <= 0 && held.file !== undefined) await rm(held.file, {force: true}).catch(() => undefined)
  }
}
