/*
 * Spool folders no router owns any more, handed over to one that runs. `listen.workers` gives
 * each worker its own folder (spool.dir/worker-<i>); when an operator changes the number of
 * workers, a folder may be left with acknowledged instances nobody would deliver: the root spool
 * after switching from one process to several, worker-3 after switching from 3 workers to 2, the
 * worker folders after switching back to one. The router that adopts such a folder locks it, reads
 * its queue back, takes each instance through its own intake (checked, durable in its own spool,
 * recorded) and only then releases it from the old folder: bytes unchanged, a crash in between at
 * worst delivers it twice (backends keep the first copy of a SOP Instance UID).
 */
import {readFile, readdir} from 'node:fs/promises'
import path from 'node:path'

import type {DdrConfig} from '../config/schema.js'
import {type ReceivedInstance, datasetBuffers} from '../dicom/received-instance.js'
import {readFileSlice} from '../fs/durable.js'
import type {Logger} from '../output/logger.js'
import {SpoolLock} from '../spool/lock.js'
import {Spool} from '../spool/spool.js'

/** How a worker's spool folder is named inside spool.dir. */
export const workerFolderName = (index: number) => `worker-${index}`
const WORKER_FOLDER = /^worker-(\d+)$/

/** The worker folders (spool.dir/worker-<i>) that exist under a spool folder, with their index. */
export async function workerFolders(root: string): Promise<Array<{index: number; dir: string}>> {
  let names: string[]
  try {
    names = await readdir(root)
  } catch {
    return []
  }

  return names
    .map((name) => ({name, match: WORKER_FOLDER.exec(name)}))
    .filter((entry) => entry.match !== null)
    .map((entry) => ({index: Number(entry.match![1]), dir: path.join(root, entry.name)}))
    .sort((a, b) => a.index - b.index)
}

/** What the adopting router hands each instance to: its intake (RouterService.ingest). */
export type AdoptIngest = (file: Buffer, from: {callingAeTitle: string; source: string}) => Promise<{outcome: 'stored' | 'refused' | 'invalid'; status?: number; reason?: string}>

/** How long a refused hand-over (spool full, ledger refusing) waits before it is tried again. */
const RETRY_MS = 5000

async function part10Bytes(instance: ReceivedInstance): Promise<Buffer> {
  const source = instance.dataset
  const dataset = datasetBuffers(source) ?? ('path' in source ? [await readFileSlice(source.path, source.offset, source.length)] : [])
  if (instance.journal === undefined && instance.path !== undefined && dataset.length === 0) return readFile(instance.path)
  return Buffer.concat([instance.metaHeader, ...dataset])
}

/**
 * Orphan spool folders held by this router: locked at once (start() throws, naming the folder and
 * the holder, when a running process holds one), then emptied in the background into the router's
 * own spool. The locks are kept until close(), so no other router starts on them meanwhile.
 */
export class SpoolAdoption {
  private readonly locks: SpoolLock[] = []
  private closed = false
  private timer?: NodeJS.Timeout
  private running?: Promise<void>
  /** Instances handed over so far, per folder. */
  readonly adopted = new Map<string, number>()

  constructor(private readonly folders: string[], private readonly ingest: AdoptIngest, private readonly config: DdrConfig, private readonly logger: Logger) {}

  /** Locks every folder; throws (releasing what it took) when one is held by a running process. */
  lock(): void {
    try {
      for (const dir of this.folders) this.locks.push(SpoolLock.acquire(dir))
    } catch (error) {
      for (const lock of this.locks) lock.release()
      this.locks.length = 0
      throw error
    }
  }

  /** Starts the hand-over; resolves when every folder was emptied once (for tests). */
  start(): Promise<void> {
    this.running = this.run()
    return this.running
  }

  private async run(): Promise<void> {
    let left = 0
    for (const dir of this.folders) {
      if (this.closed) return
      try {
        left += await this.adoptFolder(dir)
      } catch (error) {
        left++
        this.logger.error('spool-adopt-failed', {folder: dir}, `${(error as Error).message}; tried again in ${RETRY_MS / 1000} s`)
      }
    }

    if (left > 0 && !this.closed) {
      this.timer = setTimeout(() => void this.start(), RETRY_MS)
      this.timer.unref()
    }
  }

  /** Hands one folder's queue over; returns how many instances are still there. */
  private async adoptFolder(dir: string): Promise<number> {
    const spool = new Spool(dir, this.config.spool)
    const {pending, unreadable} = await spool.open()
    let left = 0
    try {
      if (unreadable.length > 0) this.logger.warn('spool-adopt-unreadable', {folder: dir, count: unreadable.length}, `moved to ${spool.deadLetterDir}: ${unreadable.join('; ')}`)
      if (pending.length > 0) this.logger.info('spool-adopting', {folder: dir, queued: pending.length}, 'a spool folder no router owns holds acknowledged instances: handing them over to this router\'s spool')
      let handed = 0
      for (const instance of pending) {
        if (this.closed) return pending.length - handed
        // A spool file's meta header names its sender (SourceApplicationEntityTitle); one without it is recorded as from us.
        const result = await this.ingest(await part10Bytes(instance), {callingAeTitle: instance.callingAeTitle || this.config.listen.aeTitle, source: `${path.join(dir, 'queue')} ${instance.id}`})
        if (result.outcome === 'stored') {
          await spool.remove(instance)
          handed++
          continue
        }

        // Out of resources (A7xx: spool full, ledger refusing): tried again later. Anything else
        // (a rule now drops it, a syntax no backend takes any more): kept as a dead letter there.
        if (result.outcome === 'refused' && ((result.status ?? 0) & 0xff00) === 0xa700) {
          left++
          continue
        }

        await spool.deadLetter(instance, {reason: `not taken over from ${dir}: ${result.reason ?? result.outcome}`, status: result.status, sopInstanceUid: instance.sopInstanceUid, studyInstanceUid: instance.studyInstanceUid, callingAeTitle: instance.callingAeTitle})
        this.logger.warn('spool-adopt-refused', {folder: dir, sop: instance.sopInstanceUid}, `kept in ${spool.deadLetterDir}: ${result.reason ?? result.outcome}`)
      }

      this.adopted.set(dir, (this.adopted.get(dir) ?? 0) + handed)
      if (handed > 0) this.logger.info('spool-adopted', {folder: dir, instances: handed, left: left || undefined}, 'handed over to this router\'s spool')
      const deadLetters = spool.stats().deadLetters
      if (deadLetters > 0) this.logger.warn('spool-adopt-dead-letters', {folder: dir, count: deadLetters}, `dead letters stay in ${spool.deadLetterDir}: no router serves them there (start ddr listen with the number of workers that owns this folder to retry or discard them)`)
      const mirrors = await readdir(path.join(dir, 'mirror')).catch(() => [] as string[])
      if (mirrors.length > 0) this.logger.warn('spool-adopt-mirrors', {folder: dir, files: mirrors.length}, `mirror copies waiting in ${path.join(dir, 'mirror')} are not taken over: start ddr listen with the number of workers that owns this folder until they are sent`)
    } finally {
      await spool.journal.close()
    }

    return left
  }

  /** Stops handing over (what is left stays where it is) and releases the locks. */
  async close(): Promise<void> {
    this.closed = true
    clearTimeout(this.timer)
    await this.running?.catch(() => {})
    for (const lock of this.locks) lock.release()
  }
}
