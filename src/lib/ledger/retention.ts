import {closeSync, fstatSync, linkSync, openSync, readdirSync, statSync, unlinkSync, writeSync, writevSync} from 'node:fs'
import {mkdir, rm} from 'node:fs/promises'
import path from 'node:path'

import {type ReceivedInstance, datasetBuffers} from '../dicom/received-instance.js'
import {readFileSlice} from '../fs/durable.js'

/** Options for RetentionStore. */
export interface RetentionOptions {
  /** Copies older than this are dropped (whole files, oldest first). */
  maxAgeMs: number
  /** Above this many bytes the oldest files are dropped first. */
  maxBytes: number
  /** A segment is closed and a new one started beyond this size (default 64 MiB). */
  segmentBytes?: number
}

/**
 * Where a kept copy is: a Part 10 file of its own (`offset` 0, the whole file), or a slice of a
 * retention segment (the Part 10 bytes of one instance, meta header first). The ledger records it
 * with the instance, so it survives a restart.
 */
export interface RetentionLocation {
  file: string
  offset: number
  length: number
}

const SEGMENT = /^r-(\d+)\.seg$/

/**
 * Delivered instances kept for a while in spool.dir/retention, so that a receipt that finds
 * instances missing on a backend can send them again without asking the modality. An instance
 * already on disk is kept by a hard link, so its bytes are not written again: a large one's
 * spool file, or the spool journal segment that holds a small one (linked once, at its first
 * delivered record, as `j-<time><count>-seg-<n>.log`; the record's payload is the meta header and the
 * dataset, so the location is a slice of it). Only an instance that is on neither (or on another
 * file system) is appended to a segment file of retention's own, which stays open (one write per
 * instance: on this kind of disk, creating a file per instance costs more than the rest of the
 * ledger). A cache, not a promise: no fsync, and bounded by age and bytes, the oldest files going first.
 */
export class RetentionStore {
  /** Every retention file with its size and time, oldest first. */
  private files: Array<{name: string; bytes: number; at: number}> = []
  private bytes = 0
  private segment?: {fd: number; name: string; size: number}
  private nextSegment = 1
  /** Spool journal segments linked in here, by their spool path: the link's name, or null when linking failed. */
  private readonly linkedSegments = new Map<string, string | null>()
  /** Links made, so that two links of one segment never get the same name. */
  private links = 0

  constructor(readonly dir: string, private readonly options: RetentionOptions) {}

  /** Reads what an earlier run kept (its locations are in the ledger). */
  async open(): Promise<void> {
    await mkdir(this.dir, {recursive: true})
    for (const name of readdirSync(this.dir)) {
      if (name.endsWith('.part')) {
        await rm(path.join(this.dir, name), {force: true})
        continue
      }

      const info = statSync(path.join(this.dir, name), {throwIfNoEntry: false})
      if (info === undefined) continue
      this.files.push({name, bytes: info.size, at: info.mtimeMs})
      this.bytes += info.size
      const number = SEGMENT.exec(name)
      if (number !== null) this.nextSegment = Math.max(this.nextSegment, Number(number[1]) + 1)
    }

    this.files.sort((a, b) => a.at - b.at)
    this.evict()
  }

  /** Keeps a copy of a delivered instance; returns where. */
  async keep(instance: ReceivedInstance): Promise<RetentionLocation> {
    const length = instance.metaHeader.length + instance.datasetLength
    if (instance.path !== undefined) {
      const name = `${instance.id}.dcm`
      const target = path.join(this.dir, name)
      try {
        linkSync(instance.path, target)
        this.add(name, length)
        this.evict()
        return {file: target, offset: 0, length}
      } catch {
        // another file system, or already linked: append it instead
      }
    }

    if (instance.journal !== undefined) {
      const segmentPath = instance.journal.segment.path
      // The record's payload is the meta header, then the dataset: this instance's Part 10 bytes.
      const offset = instance.journal.payloadOffset
      let name = this.linkSegment(segmentPath)
      if (name !== undefined) {
        this.extend(name, offset + length)
        this.evict()
        // The limits dropped the link this record is in (it was the oldest file): link it anew.
        if (!this.linkedSegments.has(segmentPath)) {
          name = this.linkSegment(segmentPath)
          if (name !== undefined) this.extend(name, offset + length)
        }
      }

      if (name !== undefined) return {file: path.join(this.dir, name), offset, length}
    }

    const source = instance.dataset
    const dataset = datasetBuffers(source) ?? ('path' in source ? [await readFileSlice(source.path, source.offset, source.length)] : [])
    const segment = this.openSegment()
    const offset = segment.size
    // Synchronous on purpose: one write call for a small copy, where a promise-based call costs
    // more than that in dispatch alone.
    writevSync(segment.fd, [instance.metaHeader, ...dataset], offset)
    segment.size += length
    this.grow(segment.name, length)
    if (segment.size >= (this.options.segmentBytes ?? 64 * 1024 * 1024)) this.closeSegment()
    this.evict()
    return {file: path.join(this.dir, segment.name), offset, length}
  }

  /** Whether a location still holds its copy (evicted files do not). */
  holds(location: RetentionLocation): boolean {
    const info = statSync(location.file, {throwIfNoEntry: false})
    return info !== undefined && info.size >= location.offset + location.length
  }

  /** Drops files past the age or byte limit, oldest first (never the segment being written). */
  evict(now = Date.now()): number {
    let dropped = 0
    while (this.files.length > 0) {
      const oldest = this.files[0]
      if (now - oldest.at <= this.options.maxAgeMs && this.bytes <= this.options.maxBytes) break
      if (oldest.name === this.segment?.name) this.closeSegment()
      // A journal segment's link: later records of that segment get a new link.
      for (const [segmentPath, name] of this.linkedSegments) if (name === oldest.name) this.linkedSegments.delete(segmentPath)
      this.files.shift()
      this.bytes -= oldest.bytes
      try {
        unlinkSync(path.join(this.dir, oldest.name))
      } catch {
        // already gone
      }

      dropped++
    }

    return dropped
  }

  close(): void {
    this.closeSegment()
  }

  /** The retention name of a spool journal segment, linked at the first call; undefined if it cannot be linked (then copies are made). */
  private linkSegment(segmentPath: string): string | undefined {
    const known = this.linkedSegments.get(segmentPath)
    if (known !== undefined) return known ?? undefined
    const name = `j-${Date.now().toString(36)}${(++this.links).toString(36)}-${path.basename(segmentPath)}`
    try {
      linkSync(segmentPath, path.join(this.dir, name))
    } catch {
      // another file system (or no such file): this segment's instances are copied instead
      this.linkedSegments.set(segmentPath, null)
      return undefined
    }

    this.linkedSegments.set(segmentPath, name)
    this.add(name, 0)
    return name
  }

  private openSegment(): {fd: number; name: string; size: number} {
    if (this.segment !== undefined) return this.segment
    const name = `r-${this.nextSegment++}.seg`
    const fd = openSync(path.join(this.dir, name), 'w')
    this.segment = {fd, name, size: fstatSync(fd).size}
    this.add(name, 0)
    return this.segment
  }

  private closeSegment(): void {
    if (this.segment === undefined) return
    closeSync(this.segment.fd)
    this.segment = undefined
  }

  private add(name: string, bytes: number): void {
    this.files.push({name, bytes, at: Date.now()})
    this.bytes += bytes
  }

  /** A linked journal segment holds kept records up to `end`: its bytes grow to that (zeros written ahead do not count). */
  private extend(name: string, end: number): void {
    let file: {name: string; bytes: number; at: number} | undefined
    for (let i = this.files.length - 1; i >= 0 && file === undefined; i--) if (this.files[i].name === name) file = this.files[i]
    if (file === undefined) return
    if (end > file.bytes) {
      this.bytes += end - file.bytes
      file.bytes = end
    }

    file.at = Date.now()
  }

  private grow(name: string, bytes: number): void {
    let file: {name: string; bytes: number; at: number} | undefined
    for (let i = this.files.length - 1; i >= 0 && file === undefined; i--) if (this.files[i].name === name) file = this.files[i]
    if (file !== undefined) {
      file.bytes += bytes
      file.at = Date.now()
    }

    this.bytes += bytes
  }
}

/** Writes a kept copy out as a Part 10 file of its own (for a repair). */
export async function extractRetained(location: RetentionLocation, target: string): Promise<void> {
  const bytes = await readFileSlice(location.file, location.offset, location.length)
  if (bytes.length !== location.length) throw new Error(`${location.file} holds ${bytes.length} of the ${location.length} bytes kept at ${location.offset}`)
  const fd = openSync(target, 'wx')
  try {
    writeSync(fd, bytes)
  } finally {
    closeSync(fd)
  }
}
