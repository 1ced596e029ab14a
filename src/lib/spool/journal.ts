import {closeSync, openSync, writeSync, writevSync} from 'node:fs'
import {type FileHandle, open, readdir, readFile, rm} from 'node:fs/promises'
import path from 'node:path'
import {crc32} from 'node:zlib'

import {syncDir} from '../fs/durable.js'

/**
 * An append-only journal for small acknowledged instances: records go into segment files
 * (`seg-<n>.log`) with one fdatasync per round (several associations share it), instead of a
 * create + fsync + rename + folder fsync per instance.
 *
 * Record: magic "DDRJ", payload length (u32 LE), CRC-32 of id + payload (u32 LE), id length
 * (u16 LE), 2 reserved bytes, the id (ASCII), the payload (the Part 10 meta header, then the
 * dataset bytes as received). Writes are serialized, so a record is written only after every
 * record before it: a torn record can only be the last one written, never acknowledged, and
 * recovery stops there. A record is written by the caller's thread when nothing is queued before
 * it (one pwritev into the page cache); only the fdatasync goes to the thread pool. A sealed segment is deleted once all its records are delivered.
 *
 * Space ahead of the write position is preallocated by writing zeros (and fdatasync'ing them)
 * in the background, a few MB at a time. A record written into that space changes no file size
 * or extent, so its fdatasync only flushes data and needs no file-system journal commit: about
 * half the latency of an appending fdatasync on ext4, and it does not queue behind other
 * processes' commits (Orthanc's, on the same disk). A record never lands in space whose zeros
 * are still being written; one that does not fit is appended as before. Recovery reads the
 * zeros as the end of the segment (no magic).
 *
 * Each segment has a companion `seg-<n>.done` listing, one per line, the ids of its records that
 * were delivered (or moved to dead-letter). It is appended without fsync, once per turn of the
 * event loop, with a synchronous write of a few hundred bytes (not queued behind the thread pool's
 * fsyncs, so a crash loses at most that turn's entries): it only spares redeliveries after a restart. Recovery skips the records it names;
 * after a crash that lost its tail (power loss), those instances are simply delivered again, which
 * is what happened before it existed. The segment and its list go together.
 */

const MAGIC = 0x4a524444 // "DDRJ" read as u32 LE
const HEADER_BYTES = 16
const ZEROS = Buffer.alloc(1024 * 1024)

export interface JournalRecord {
  id: string
  segment: Segment
  /** Where the payload starts in the segment file. */
  payloadOffset: number
  payloadLength: number
}

export interface RecoveredRecord extends JournalRecord {
  payload: Buffer
}

export class Segment {
  live = 0
  /** Where the next record goes: the end of the last record. */
  size = 0
  /** Bytes of the file known to be written (zeros or records) and fdatasync'ed. */
  allocated = 0
  /** Zeros being written past `allocated`; records wait rather than write into them. */
  filling?: Promise<void>
  sealed = false
  handle?: FileHandle
  /** Ids delivered but not yet written to the .done list, and the list's descriptor. */
  donePending: string[] = []
  doneFd?: number
  gone = false

  constructor(readonly path: string, readonly number: number) {}

  get donePath(): string {
    return this.path.replace(/\.log$/, '.done')
  }
}

export class Journal {
  private active?: Segment
  private readonly segments = new Set<Segment>()
  private writes: Promise<unknown> = Promise.resolve()
  /** Appends waiting in `writes`; while there are any, a new record queues behind them (order is what recovery relies on). */
  private queuedWrites = 0
  private syncRunning?: Promise<void>
  private syncNext?: Promise<void>
  /** Segments written since their last fdatasync. */
  private dirty = new Set<Segment>()
  private nextNumber = 1
  private readonly preallocateBytes: number

  /**
   * @param segmentBytes a segment is sealed once it holds this much
   * @param options.preallocateBytes zeros written ahead of the records at a time (0: append only)
   */
  constructor(readonly dir: string, private readonly segmentBytes = 64 * 1024 * 1024, options: {preallocateBytes?: number} = {}) {
    this.preallocateBytes = options.preallocateBytes ?? 4 * 1024 * 1024
  }

  /** Reads back every complete record (oldest first) and drops torn tails. Call once, before append. */
  async open(): Promise<RecoveredRecord[]> {
    const all = await readdir(this.dir)
    const names = all.filter((name) => /^seg-\d+\.log$/.test(name))
    // A .done list whose segment is gone (a crash between the two deletions) names nothing.
    for (const name of all) if (/^seg-\d+\.done$/.test(name) && !names.includes(name.replace(/\.done$/, '.log'))) await rm(path.join(this.dir, name), {force: true})
    names.sort((a, b) => segmentNumber(a) - segmentNumber(b))
    const records: RecoveredRecord[] = []
    for (const name of names) {
      const segment = new Segment(path.join(this.dir, name), segmentNumber(name))
      this.nextNumber = Math.max(this.nextNumber, segment.number + 1)
      segment.sealed = true
      const handle = await open(segment.path, 'r')
      let content: Buffer
      try {
        content = await handle.readFile()
      } finally {
        await handle.close()
      }

      const done = await readDoneList(segment.donePath)
      for (const record of parseSegment(content, segment)) {
        if (done.has(record.id)) continue
        records.push(record)
        segment.live++
      }

      if (segment.live === 0) await removeSegmentFiles(segment)
      else this.segments.add(segment)
    }

    return records
  }

  /** Appends a record; resolves once it is on disk (fdatasync), never before. */
  append(id: string, parts: Buffer[]): Promise<JournalRecord> {
    const idBytes = Buffer.from(id, 'latin1')
    let payloadLength = 0
    for (const part of parts) payloadLength += part.length
    const header = Buffer.allocUnsafe(HEADER_BYTES)
    header.writeUInt32LE(MAGIC, 0)
    header.writeUInt32LE(payloadLength, 4)
    let crc = crc32(idBytes)
    for (const part of parts) crc = crc32(part, crc)
    header.writeUInt32LE(crc, 8)
    header.writeUInt16LE(idBytes.length, 12)
    header.writeUInt16LE(0, 14)
    const buffers = [header, idBytes, ...parts]
    const recordBytes = HEADER_BYTES + idBytes.length + payloadLength
    const active = this.active
    if (this.queuedWrites === 0 && active !== undefined && !this.mustWait(active, recordBytes)) {
      // The common case: nothing queued before this record and room in the open segment. One
      // write from this thread (the bytes go to the page cache, as retention's copy does): a trip
      // through the thread pool would cost more in wake-ups and promises than the copy itself.
      let record: JournalRecord
      try {
        record = this.write(active, id, buffers, recordBytes, idBytes.length, (position) => writevSync(active.handle!.fd, buffers, position))
      } catch (error) {
        return Promise.reject(error)
      }

      return this.sync().then(() => record)
    }

    this.queuedWrites++
    const written = this.writes.then(async () => {
      const segment = await this.segmentFor(recordBytes)
      if (segment.size + recordBytes > segment.allocated && segment.filling !== undefined) await segment.filling
      const {bytesWritten} = await segment.handle!.writev(buffers, segment.size)
      return this.write(segment, id, buffers, recordBytes, idBytes.length, () => bytesWritten)
    })
    this.writes = written.catch(() => {}).finally(() => this.queuedWrites--)
    return written.then(async (record) => {
      await this.sync()
      return record
    })
  }

  /** Whether a record of this size must go the queued way: a new segment is due, or it would land in zeros still being written. */
  private mustWait(segment: Segment, recordBytes: number): boolean {
    if (segment.size > 0 && segment.size + recordBytes > this.segmentBytes) return true
    return segment.size + recordBytes > segment.allocated && segment.filling !== undefined
  }

  /** Writes a record at the segment's end (`writeAt` does the I/O and returns the bytes written) and accounts for it. */
  private write(segment: Segment, id: string, buffers: Buffer[], recordBytes: number, idLength: number, writeAt: (position: number) => number): JournalRecord {
    const position = segment.size
    const bytesWritten = writeAt(position)
    // A short write (disk full) leaves a torn record: the next one overwrites it, recovery stops at it.
    if (bytesWritten !== recordBytes) throw new Error(`journal ${segment.path}: wrote ${bytesWritten} of a ${recordBytes}-byte record`)
    segment.size += recordBytes
    segment.live++
    this.dirty.add(segment)
    this.preallocate(segment)
    return {id, segment, payloadOffset: position + HEADER_BYTES + idLength, payloadLength: recordBytes - HEADER_BYTES - idLength}
  }

  /** The record was delivered (or moved to dead-letter): a sealed segment without live records goes. */
  async release(record: JournalRecord): Promise<void> {
    const segment = record.segment
    segment.live--
    if (segment.live > 0) {
      this.markDone(segment, record.id)
      return
    }

    if (segment === this.active) {
      // Rotate an emptied active segment once it is large, so files do not grow without end.
      if (segment.size < this.segmentBytes / 4) {
        this.markDone(segment, record.id)
        return
      }

      this.active = undefined
      segment.sealed = true
    }

    if (!segment.sealed) {
      this.markDone(segment, record.id)
      return
    }
    this.segments.delete(segment)
    this.dirty.delete(segment)
    await this.writes
    await segment.filling
    await segment.handle?.close().catch(() => {})
    await removeSegmentFiles(segment)
  }

  /** Queues the id for the segment's .done list; the list is appended once per event-loop turn. */
  private markDone(segment: Segment, id: string): void {
    segment.donePending.push(id)
    if (segment.donePending.length === 1) setImmediate(() => flushDone(segment))
  }

  async close(): Promise<void> {
    await this.writes
    for (const segment of this.segments) {
      await segment.filling
      flushDone(segment)
      if (segment.doneFd !== undefined) closeSync(segment.doneFd)
      segment.doneFd = undefined
      await segment.handle?.close().catch(() => {})
    }
  }

  private async segmentFor(bytes: number): Promise<Segment> {
    if (this.active !== undefined && this.active.size + bytes > this.segmentBytes && this.active.size > 0) {
      const full = this.active
      full.sealed = true
      this.active = undefined
      if (full.live === 0) {
        this.segments.delete(full)
        await full.filling
        await full.handle?.close()
        await removeSegmentFiles(full)
      }
    }

    if (this.active === undefined) {
      const number = this.nextNumber++
      const segment = new Segment(path.join(this.dir, `seg-${String(number).padStart(8, '0')}.log`), number)
      segment.handle = await open(segment.path, 'wx')
      // The new file's name must survive a crash before any record in it is acknowledged.
      await syncDir(this.dir)

      this.active = segment
      this.segments.add(segment)
      // The first records of a segment already go into preallocated space.
      this.preallocate(segment)
      await segment.filling
    }

    return this.active
  }

  /** Starts writing the next zeros once less than half a preallocation is left ahead of the records. */
  private preallocate(segment: Segment): void {
    if (this.preallocateBytes <= 0 || segment.filling !== undefined || segment.sealed) return
    if (segment.allocated - segment.size >= this.preallocateBytes / 2 || segment.size >= this.segmentBytes) return
    const handle = segment.handle!
    const from = Math.max(segment.allocated, segment.size)
    const length = Math.min(this.preallocateBytes, this.segmentBytes - from)
    if (length <= 0) return
    segment.filling = (async () => {
      try {
        for (let done = 0; done < length; done += ZEROS.length) await handle.write(ZEROS, 0, Math.min(ZEROS.length, length - done), from + done)
        await handle.datasync()
        segment.allocated = from + length
      } catch {
        // No space for zeros (or the segment went away): records are appended as before.
      } finally {
        segment.filling = undefined
      }
    })()
  }

  /** fdatasync of every segment written since the last round, shared: a caller arriving during a round waits for the next. */
  private sync(): Promise<void> {
    if (this.syncRunning === undefined) {
      const segments = [...this.dirty]
      this.dirty.clear()
      this.syncRunning = (async () => {
        await Promise.all(segments.map((segment) => segment.handle?.datasync()))
      })().finally(() => {
        this.syncRunning = undefined
      })
      return this.syncRunning
    }

    this.syncNext ??= this.syncRunning
      .catch(() => {})
      .then(() => {
        this.syncNext = undefined
        return this.sync()
      })
    return this.syncNext
  }
}

/** Writes the segment's pending .done entries (synchronously: a few hundred bytes to the page cache). */
function flushDone(segment: Segment): void {
  if (segment.gone || segment.donePending.length === 0) return
  const lines = `${segment.donePending.join('\n')}\n`
  segment.donePending = []
  try {
    segment.doneFd ??= openSync(segment.donePath, 'a')
    writeSync(segment.doneFd, lines)
  } catch {
    // Only a redelivery after a restart is at stake.
  }
}

/** Deletes a segment and its .done list. */
async function removeSegmentFiles(segment: Segment): Promise<void> {
  segment.gone = true
  segment.donePending = []
  if (segment.doneFd !== undefined) closeSync(segment.doneFd)
  segment.doneFd = undefined
  await rm(segment.path, {force: true})
  await rm(segment.donePath, {force: true})
}

/** The ids a .done list names: complete lines only (a torn last line names nothing). */
async function readDoneList(file: string): Promise<Set<string>> {
  let text: string
  try {
    text = await readFile(file, 'latin1')
  } catch {
    return new Set()
  }
  const lines = text.split('\n')
  lines.pop() // after the last newline: empty, or a line cut short
  return new Set(lines)
}

function segmentNumber(name: string): number {
  return Number(/^seg-(\d+)\.log$/.exec(name)?.[1] ?? 0)
}

/** The complete records of a segment, up to the first torn or damaged one. */
export function parseSegment(content: Buffer, segment: Segment): RecoveredRecord[] {
  const records: RecoveredRecord[] = []
  let offset = 0
  while (offset + HEADER_BYTES <= content.length) {
    if (content.readUInt32LE(offset) !== MAGIC) break
    const payloadLength = content.readUInt32LE(offset + 4)
    const crc = content.readUInt32LE(offset + 8)
    const idLength = content.readUInt16LE(offset + 12)
    const idStart = offset + HEADER_BYTES
    const payloadStart = idStart + idLength
    const end = payloadStart + payloadLength
    if (end > content.length) break
    const idBytes = content.subarray(idStart, payloadStart)
    const payload = content.subarray(payloadStart, end)
    if (crc32(payload, crc32(idBytes)) !== crc) break
    records.push({id: idBytes.toString('latin1'), segment, payloadOffset: payloadStart, payloadLength, payload})
    offset = end
  }

  segment.size = offset
  return records
}
