import {randomBytes} from 'node:crypto'
import {type FileHandle, mkdir, open, rename, rm} from 'node:fs/promises'
import path from 'node:path'

import {readDatasetFromFile, readTopLevelElements} from '../dicom/dataset-reader.js'
import {buildMetaHeader} from '../dicom/part10.js'
import {Tag} from '../dicom/tags.js'
import type {StoreOutcome, StoreRequest, StoreSink} from '../dimse/scp.js'
import {Status} from '../dimse/status.js'
import type {ReceivedInstance} from '../routing/instance.js'
import type {Journal, JournalRecord} from './journal.js'

/** The header elements routing reads from each dataset (the rest is never parsed). */
export const ROUTING_TAGS = [Tag.StudyInstanceUID, Tag.SeriesInstanceUID, Tag.PatientID, Tag.Modality]

/** Bytes of the dataset kept in memory for header parsing, and below which an instance stays in memory. */
const HEADER_PREFIX_BYTES = 64 * 1024

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
  /** Called when the routing header elements could not be read (malformed dataset). */
  onHeaderError?: (request: StoreRequest, error: Error) => void
}

let counter = 0
/** Drawn once per process: it tells apart routers (or restarts) that share a spool disk. */
const processNonce = randomBytes(4).toString('hex')

/** A unique, sortable id: time, process-local counter, a per-process random nonce (several routers may share a disk). */
export function newInstanceId(): string {
  counter = (counter + 1) % 1_000_000
  return `${Date.now().toString(36)}-${counter.toString(36).padStart(4, '0')}-${processNonce}`
}

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
  private size = 0
  private handle?: Promise<FileHandle>
  private writes: Promise<void> = Promise.resolve()
  private pendingBytes = 0
  private drainWaiters: Array<() => void> = []
  private fileError?: Error
  private readonly metaHeader: Buffer
  private readonly partPath: string
  private aborted = false

  constructor(private readonly request: StoreRequest, private readonly options: SinkOptions) {
    this.metaHeader = buildMetaHeader({
      sopClassUid: request.sopClassUid,
      sopInstanceUid: request.sopInstanceUid,
      transferSyntaxUid: request.transferSyntaxUid,
      sourceAeTitle: request.association.callingAeTitle,
    })
    this.partPath = path.join(options.dir, `${this.id}.dcm.part`)
  }

  write(chunk: Buffer): boolean {
    this.size += chunk.length
    if (this.handle === undefined) {
      this.chunks.push(chunk)
      if (this.size <= this.options.memoryLimitBytes) return true
      // Too large for memory: from now on the bytes go to the file; keep only the header prefix.
      this.openFile()
      const prefix = Buffer.concat(this.chunks)
      this.queueWrite([this.metaHeader, prefix])
      this.chunks = [Buffer.from(prefix.subarray(0, HEADER_PREFIX_BYTES))]
      return this.pendingBytes < WRITE_HIGH_WATER
    }

    this.queueWrite([chunk])
    return this.pendingBytes < WRITE_HIGH_WATER
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
    let instance: ReceivedInstance
    try {
      instance = await this.complete()
    } catch (error) {
      this.options.onReceiveError?.(this.request, error as Error)
      if (this.handle !== undefined) await this.closeFile().then(() => rm(this.partPath, {force: true}))
      return {status: Status.outOfResources, errorComment: `router could not keep the instance: ${(error as Error).message}`.slice(0, 64)}
    }

    const outcome = await this.options.deliver(instance)
    if (!this.options.durable && instance.path !== undefined) await rm(instance.path, {force: true})
    return outcome
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

  private async complete(): Promise<ReceivedInstance> {
    if (this.aborted) throw new Error('association ended before the dataset was complete')
    const inMemory = this.handle === undefined
    const prefix = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks)
    let filePath: string | undefined
    let journalRecord: JournalRecord | undefined
    if (this.options.durable && inMemory) {
      if (this.options.journal === undefined) {
        this.openFile()
        this.queueWrite([this.metaHeader, prefix])
      } else {
        journalRecord = await this.options.journal.append(this.id, [this.metaHeader, prefix])
      }
    }

    if (this.handle !== undefined) {
      await this.writes
      if (this.fileError) throw this.fileError
      const handle = await this.handle
      if (this.options.durable) await handle.datasync()
      await handle.close()
      filePath = path.join(this.options.dir, `${this.id}.dcm`)
      await rename(this.partPath, filePath)
      if (this.options.durable) await syncDir(this.options.dir)
    }

    let values = new Map<number, string>()
    try {
      const read = readTopLevelElements(prefix, this.request.transferSyntaxUid, ROUTING_TAGS, {endOfData: inMemory})
      values = read.values
      if (!read.complete && filePath !== undefined) values = (await readDatasetFromFile(filePath, ROUTING_TAGS)).values
    } catch (error) {
      // Routing goes on without the header values (no study affinity); the backend judges the dataset.
      this.options.onHeaderError?.(this.request, error as Error)
    }

    return {
      id: this.id,
      sopClassUid: this.request.sopClassUid,
      sopInstanceUid: this.request.sopInstanceUid,
      transferSyntaxUid: this.request.transferSyntaxUid,
      studyInstanceUid: values.get(Tag.StudyInstanceUID),
      seriesInstanceUid: values.get(Tag.SeriesInstanceUID),
      patientId: values.get(Tag.PatientID),
      modality: values.get(Tag.Modality),
      callingAeTitle: this.request.association.callingAeTitle,
      calledAeTitle: this.request.association.calledAeTitle,
      metaHeader: this.metaHeader,
      // Small instances are sent from memory even when spooled; the file is the durable copy.
      dataset: inMemory ? {buffer: prefix} : {path: filePath!, offset: this.metaHeader.length, length: this.size},
      path: filePath,
      journal: journalRecord,
      datasetLength: this.size,
      receivedAt: Date.now(),
    }
  }
}

const dirSyncs = new Map<string, {running?: Promise<void>; next?: Promise<void>; handle?: FileHandle}>()

/**
 * fsync a folder so the renames in it survive a crash. Concurrent callers share rounds: a caller
 * that arrives while a sync runs waits for the next one (which starts after its rename).
 */
export function syncDir(dir: string): Promise<void> {
  let state = dirSyncs.get(dir)
  if (state === undefined) {
    state = {}
    dirSyncs.set(dir, state)
  }

  const current = state
  if (current.running === undefined) {
    // The folder stays open between rounds: an fsync costs one call, not open + fsync + close.
    current.running = (async () => {
      current.handle ??= await open(dir, 'r')
      try {
        await current.handle.sync()
      } catch (error) {
        const stale = current.handle
        current.handle = undefined
        await stale?.close().catch(() => {})
        throw error
      }
    })().finally(() => {
      current.running = undefined
    })
    return current.running
  }

  current.next ??= current.running
    .catch(() => {})
    .then(() => {
      current.next = undefined
      return syncDir(dir)
    })
  return current.next
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

/** fsync a file or a folder (so a rename inside it survives a crash). */
export async function fsyncPath(target: string): Promise<void> {
  const handle = await open(target, 'r')
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

export async function ensureDir(dir: string): Promise<void> {
  await mkdir(dir, {recursive: true})
}
