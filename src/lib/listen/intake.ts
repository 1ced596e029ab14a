import {randomBytes} from 'node:crypto'
import {createReadStream} from 'node:fs'
import {type FileHandle, open, rename, rm} from 'node:fs/promises'
import path from 'node:path'

import {ReceivedDatasetCheck} from '../dicom/dataset-check.js'
import {syncDir} from '../fs/durable.js'
import {buildMetaHeader} from '../dicom/part10.js'
import type {StoreOutcome, StoreRequest, StoreSink} from '../dimse/scp.js'
import {Status} from '../dimse/status.js'
import {ROUTING_TAGS, type ReceivedInstance, routingValues} from '../dicom/received-instance.js'
import type {Journal, JournalRecord} from '../spool/journal.js'


export interface SinkOptions {
  /** Folder for instances that are too large for memory (or all of them, with `durable`). */
  dir: string
  /** Instances up to this size stay in memory (pass-through mode); larger ones stream to a file. */
  memoryLimitBytes: number
  /** Write every instance to disk and fsync it (and its folder) before `deliver` is called. */
  durable: boolean
  /** With `durable`: small instances go into this journal (one shared fdatasync) instead of a file each. */
  journal?: Journal
  /** Called once the whole dataset is in; its outcome is what the sender gets. Must not reject. */
  deliver: (instance: ReceivedInstance) => Promise<StoreOutcome>
  /** Called when an instance could not even be received (disk full): logged by the caller. */
  onReceiveError?: (request: StoreRequest, error: Error) => void
  /**
   * Called when the dataset is refused before Success: it does not walk to its end in its transfer
   * syntax, or it is not the instance the command named. Nothing was kept; logged by the caller.
   */
  onRefused?: (request: StoreRequest, outcome: StoreOutcome, why: string) => void
}

let counter = 0
/** Drawn once per process: it tells apart routers (or restarts) that share a spool disk. */
const processNonce = randomBytes(4).toString('hex')

/** A unique, sortable id: time, process-local counter, a per-process random nonce (several routers may share a disk). */
export function newInstanceId(): string {
  counter = (counter + 1) % 1_000_000
  return `${Date.now().toString(36)}-${counter.toString(36).padStart(4, '0')}-${processNonce}`
}

/** A dataset held in memory in more fragments than this is copied into one buffer. */
const MAX_FRAGMENTS = 32

/** A dataset streamed to its file is written in pieces of about this size. */
const WRITE_BATCH = 256 * 1024

/** Bytes written to a file but not yet confirmed by the OS before the sender is asked to wait. */
const WRITE_HIGH_WATER = 1024 * 1024

/**
 * Receives one instance's dataset bytes: in memory while small, streamed to `<dir>/<id>.dcm.part`
 * (behind a Part 10 meta header) once large, so memory does not grow with instance size. With
 * `durable`, the file is written (one writev for a small instance), fdatasync'ed, renamed to
 * `<id>.dcm` and its folder fsync'ed before `deliver` runs: only then is the instance safe.
 */
export class InstanceSink implements StoreSink {
  private readonly id = newInstanceId()
  private chunks: Buffer[] = []
  /** Fragments of a dataset streamed to its file, not yet handed to a write. */
  private unwritten: Buffer[] = []
  private unwrittenBytes = 0
  private size = 0
  private handle?: Promise<FileHandle>
  private writes: Promise<void> = Promise.resolve()
  private pendingBytes = 0
  private drainWaiters: Array<() => void> = []
  private fileError?: Error
  private readonly metaHeader: Buffer
  private partFile?: string
  private aborted = false
  private readonly check: ReceivedDatasetCheck

  constructor(private readonly request: StoreRequest, private readonly options: SinkOptions) {
    this.check = new ReceivedDatasetCheck(request, ROUTING_TAGS)
    this.metaHeader = buildMetaHeader({
      sopClassUid: request.sopClassUid,
      sopInstanceUid: request.sopInstanceUid,
      transferSyntaxUid: request.transferSyntaxUid,
      sourceAeTitle: request.association.callingAeTitle,
    })
  }

  /** `<dir>/<id>.dcm.part`: named only for an instance that gets a file (most stay in memory). */
  private get partPath(): string {
    this.partFile ??= path.join(this.options.dir, `${this.id}.dcm.part`)
    return this.partFile
  }

  write(chunk: Buffer): boolean {
    this.size += chunk.length
    this.check.push(chunk)
    if (this.handle === undefined) {
      this.chunks.push(chunk)
      if (this.size <= this.options.memoryLimitBytes) return true
      // Too large for memory: from now on the bytes go to the file (the check has read their headers).
      this.openFile()
      this.queueWrite([this.metaHeader, ...this.chunks])
      this.chunks = []
      return this.pendingBytes < WRITE_HIGH_WATER
    }

    // Gathered into writes of WRITE_BATCH: one trip through the thread pool per 256 KB instead
    // of one per PDU (16 KB from most senders).
    this.unwritten.push(chunk)
    this.unwrittenBytes += chunk.length
    if (this.unwrittenBytes >= WRITE_BATCH) this.flushUnwritten()
    return this.pendingBytes < WRITE_HIGH_WATER
  }

  /** Queues the write of the fragments gathered so far. */
  private flushUnwritten(): void {
    if (this.unwritten.length === 0) return
    this.queueWrite(this.unwritten)
    this.unwritten = []
    this.unwrittenBytes = 0
  }

  waitDrain(): Promise<void> {
    if (this.pendingBytes < WRITE_HIGH_WATER) return Promise.resolve()
    return new Promise((resolve) => this.drainWaiters.push(resolve))
  }

  abort(_reason: string): void {
    this.aborted = true
    if (this.handle !== undefined) void this.closeFile().then(() => rm(this.partPath, {force: true}))
  }

  async finish(): Promise<StoreOutcome> {
    let values = new Map<number, string>()
    if (!this.aborted) {
      // Success promises that some backend will take the instance: check it before anything is kept.
      const verdict = await this.check.finish(() => this.reread()).catch((error: Error) => ({ok: false as const, problem: 'malformed' as const, why: error.message}))
      if (!verdict.ok) {
        if (this.handle !== undefined) await this.closeFile().then(() => rm(this.partPath, {force: true}))
        const status = verdict.problem === 'malformed' ? Status.cannotUnderstand : Status.dataSetDoesNotMatchSopClass
        const outcome = {status, errorComment: verdict.why.slice(0, 64)}
        this.options.onRefused?.(this.request, outcome, verdict.why)
        return outcome
      }

      values = verdict.values
    }

    let instance: ReceivedInstance
    try {
      instance = await this.complete(values)
    } catch (error) {
      this.options.onReceiveError?.(this.request, error as Error)
      if (this.handle !== undefined) await this.closeFile().then(() => rm(this.partPath, {force: true}))
      return {status: Status.outOfResources, errorComment: `router could not keep the instance: ${(error as Error).message}`.slice(0, 64)}
    }

    const outcome = await this.options.deliver(instance)
    if (!this.options.durable && instance.path !== undefined) await rm(instance.path, {force: true})
    return outcome
  }

  /** The dataset bytes again, for a check that needs a second read (deflate): from memory or from the file. */
  private async *reread(): AsyncGenerator<Buffer> {
    if (this.handle === undefined) {
      yield* this.chunks
      return
    }

    this.flushUnwritten()
    await this.writes
    if (this.fileError !== undefined) throw this.fileError
    for await (const chunk of createReadStream(this.partPath, {start: this.metaHeader.length})) yield chunk as Buffer
  }

  private openFile(): void {
    this.handle = open(this.partPath, 'wx')
    this.handle.catch((error: Error) => {
      this.fileError ??= error
    })
  }

  private queueWrite(buffers: Buffer[]): void {
    const bytes = buffers.reduce((sum, b) => sum + b.length, 0)
    this.pendingBytes += bytes
    const handle = this.handle!
    this.writes = this.writes
      .then(async () => {
        if (this.fileError === undefined) await (await handle).writev(buffers)
      })
      .catch((error: Error) => {
        this.fileError ??= error
      })
      .finally(() => {
        this.pendingBytes -= bytes
        if (this.pendingBytes < WRITE_HIGH_WATER / 2) for (const resolve of this.drainWaiters.splice(0)) resolve()
      })
  }

  private async closeFile(): Promise<void> {
    await this.writes
    await (await this.handle!.catch(() => undefined))?.close().catch(() => {})
  }

  private async complete(values: Map<number, string>): Promise<ReceivedInstance> {
    if (this.aborted) throw new Error('association ended before the dataset was complete')
    const inMemory = this.handle === undefined
    // The fragments as they arrived (views on the received PDUs): written and sent as they are,
    // not copied together (a copy per instance, and memory the garbage collector has to count).
    // Many tiny fragments (a sender with a small maximum PDU length, or a hostile one) are copied
    // together once, so a queued instance never costs much more memory than its bytes.
    const fragments = this.chunks.length <= MAX_FRAGMENTS ? this.chunks : [Buffer.concat(this.chunks)]
    let filePath: string | undefined
    let journalRecord: JournalRecord | undefined
    if (this.options.durable && inMemory) {
      if (this.options.journal === undefined) {
        this.openFile()
        this.queueWrite([this.metaHeader, ...fragments])
      } else {
        journalRecord = await this.options.journal.append(this.id, [this.metaHeader, ...fragments])
      }
    }

    if (this.handle !== undefined) {
      this.flushUnwritten()
      await this.writes
      if (this.fileError) throw this.fileError
      const handle = await this.handle
      if (this.options.durable) await handle.datasync()
      await handle.close()
      filePath = path.join(this.options.dir, `${this.id}.dcm`)
      await rename(this.partPath, filePath)
      if (this.options.durable) await syncDir(this.options.dir)
    }

    return {
      id: this.id,
      sopClassUid: this.request.sopClassUid,
      sopInstanceUid: this.request.sopInstanceUid,
      transferSyntaxUid: this.request.transferSyntaxUid,
      ...routingValues(values),
      callingAeTitle: this.request.association.callingAeTitle,
      calledAeTitle: this.request.association.calledAeTitle,
      metaHeader: this.metaHeader,
      // Small instances are sent from memory even when spooled; the file is the durable copy.
      dataset: inMemory ? (fragments.length === 1 ? {buffer: fragments[0]} : {buffers: fragments}) : {path: filePath!, offset: this.metaHeader.length, length: this.size},
      path: filePath,
      journal: journalRecord,
      datasetLength: this.size,
      receivedAt: Date.now(),
    }
  }
}

/** Takes a dataset without keeping it, then answers a fixed outcome: refusals and identical re-sends. */
export class DiscardSink implements StoreSink {
  constructor(private readonly outcome: StoreOutcome) {}

  write(): boolean {
    return true
  }

  async waitDrain(): Promise<void> {}

  async finish(): Promise<StoreOutcome> {
    return this.outcome
  }

  abort(): void {}
}
