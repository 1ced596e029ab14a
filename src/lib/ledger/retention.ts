import {closeSync, linkSync, openSync, renameSync, unlinkSync, writevSync} from 'node:fs'
import {mkdir, readdir, rm, stat} from 'node:fs/promises'
import path from 'node:path'

import type {ReceivedInstance} from '../dicom/received-instance.js'
import {readFileSlice} from '../fs/durable.js'

/** Options for RetentionStore. */
export interface RetentionOptions {
  /** Copies older than this are dropped. */
  maxAgeMs: number
  /** Above this many bytes the oldest copies are dropped first. */
  maxBytes: number
}

/**
 * Delivered instances kept for a while (spool.dir/retention/SOP.dcm, the Part 10 file as received),
 * so that a receipt that finds instances missing on a backend can send them again without asking
 * the modality. A cache, not a promise: no fsync, bounded by age and bytes, oldest evicted first.
 */
export class RetentionStore {
  private readonly entries = new Map<string, {bytes: number; at: number}>()
  private bytes = 0

  constructor(readonly dir: string, private readonly options: RetentionOptions) {}

  /** Reads what an earlier run kept. */
  async open(): Promise<void> {
    await mkdir(this.dir, {recursive: true})
    const found: Array<{sop: string; bytes: number; at: number}> = []
    for (const name of await readdir(this.dir)) {
      if (!name.endsWith('.dcm')) {
        await rm(path.join(this.dir, name), {force: true})
        continue
      }

      const info = await stat(path.join(this.dir, name)).catch(() => undefined)
      if (info !== undefined) found.push({sop: name.slice(0, -4), bytes: info.size, at: info.mtimeMs})
    }

    for (const entry of found.sort((a, b) => a.at - b.at)) this.remember(entry.sop, entry.bytes, entry.at)

    await this.evict()
  }

  get size(): {instances: number; bytes: number} {
    return {instances: this.entries.size, bytes: this.bytes}
  }

  /** Keeps a copy of a delivered instance: a hard link to its spool file, or its bytes written out. */
  async keep(instance: ReceivedInstance): Promise<void> {
    const target = this.file(instance.sopInstanceUid)
    const bytes = instance.metaHeader.length + instance.datasetLength
    // Synchronous calls on purpose: for a copy this small they cost a few tens of microseconds,
    // where each promise-based call costs more than that in dispatch alone.
    const linked = instance.path !== undefined && linkReplacing(instance.path, target)
    if (!linked) {
      const source = instance.dataset
      const dataset = 'buffer' in source ? source.buffer : await readFileSlice(source.path, source.offset, source.length)
      // Written beside and renamed: a repair must never send a half-written copy.
      const part = `${target}.part`
      const fd = openSync(part, 'w')
      try {
        writevSync(fd, [instance.metaHeader, dataset])
      } finally {
        closeSync(fd)
      }

      renameSync(part, target)
    }

    this.forget(instance.sopInstanceUid)
    this.remember(instance.sopInstanceUid, bytes, Date.now())
    if (this.bytes > this.options.maxBytes || this.oldestAt() < Date.now() - this.options.maxAgeMs) await this.evict()
  }

  /** The kept Part 10 file of an instance, or undefined. */
  get(sopInstanceUid: string): string | undefined {
    return this.entries.has(sopInstanceUid) ? this.file(sopInstanceUid) : undefined
  }

  /** Drops copies past the age or byte limit, oldest first. */
  async evict(now = Date.now()): Promise<number> {
    let dropped = 0
    for (const [sop, entry] of this.entries) {
      if (now - entry.at <= this.options.maxAgeMs && this.bytes <= this.options.maxBytes) break
      this.forget(sop)
      await rm(this.file(sop), {force: true})
      dropped++
    }

    return dropped
  }

  private oldestAt(): number {
    for (const entry of this.entries.values()) return entry.at
    return Number.POSITIVE_INFINITY
  }

  private file(sopInstanceUid: string): string {
    return path.join(this.dir, `${sopInstanceUid.replaceAll(/[^0-9.]/g, '_')}.dcm`)
  }

  /** Map order is insertion order: kept oldest first. */
  private remember(sop: string, bytes: number, at: number): void {
    this.entries.set(sop, {bytes, at})
    this.bytes += bytes
  }

  private forget(sop: string): void {
    const entry = this.entries.get(sop)
    if (entry === undefined) return
    this.entries.delete(sop)
    this.bytes -= entry.bytes
  }
}

/** Hard-links `source` as `target`, replacing an older `target`; false when links are not possible (another file system). */
function linkReplacing(source: string, target: string): boolean {
  try {
    linkSync(source, target)
    return true
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') return false
  }

  try {
    unlinkSync(target)
    linkSync(source, target)
    return true
  } catch {
    return false
  }
}
