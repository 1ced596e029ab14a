import {createReadStream, readSync} from 'node:fs'
import {Readable, Writable} from 'node:stream'
import {pipeline} from 'node:stream/promises'
import {createInflate, createInflateRaw} from 'node:zlib'

import {describeTag, Tag} from '../dicom/tags.js'
import {datasetEncoding} from '../dicom/uids.js'
import {SHORT_LENGTH_VRS} from '../dicom/vr.js'

/** Random access to the bytes of a file or of a buffer. */
export interface ByteSource {
  readonly size: number
  /** Up to `length` bytes from `position` (fewer at the end). */
  read(position: number, length: number): Promise<Buffer>
  /** The bytes from `start` to the end, as a stream. */
  stream(start: number): Readable
}

/** A ByteSource over a buffer (a ZIP entry in memory). */
export function bufferSource(buffer: Buffer): ByteSource {
  return {
    size: buffer.length,
    read: async (position, length) => buffer.subarray(position, Math.min(buffer.length, position + length)),
    stream: (start) => Readable.from([buffer.subarray(start)]),
  }
}

/**
 * A ByteSource over an open file descriptor. Reads are synchronous: the files ddr send checks sit
 * in the page cache more often than not, and a thread-pool round trip per read costs more than
 * the read itself. The last block read is kept, so the meta header and the element walk that
 * follows it share one read for a small file.
 */
export function fileSource(fd: number, filePath: string, size: number): ByteSource {
  let last = Buffer.alloc(0)
  let lastStart = 0
  return {
    size,
    async read(position, length) {
      const wanted = Math.max(0, Math.min(length, size - position))
      if (position >= lastStart && position + wanted <= lastStart + last.length) return last.subarray(position - lastStart, position - lastStart + wanted)
      const buffer = Buffer.allocUnsafe(wanted)
      let filled = 0
      while (filled < wanted) {
        const bytesRead = readSync(fd, buffer, filled, wanted - filled, position + filled)
        if (bytesRead === 0) break
        filled += bytesRead
      }
      last = buffer.subarray(0, filled)
      lastStart = position
      return last
    },
    stream: (start) => createReadStream(filePath, {start}),
  }
}

/** Whether the dataset is whole; when not, what was cut and where. */
export type DatasetCheck = {complete: true} | {complete: false; reason: string}

const UNDEFINED_LENGTH = 0xffffffff
const MAX_DEPTH = 256
const WINDOW = 64 * 1024

class Cut extends Error {}
class Malformed extends Error {}

interface Header {
  tag: number
  vr: string
  length: number
  headerLength: number
}

/**
 * Proves a dataset is not cut short by reading element headers only, through a window, so walking a
 * file costs a few reads, not one per element.
 */
class CompletenessWalker {
  private window: Buffer = Buffer.alloc(0)
  private windowStart = 0

  constructor(private readonly source: ByteSource, private readonly datasetOffset: number) {}

  private async bytes(position: number, length: number): Promise<Buffer | undefined> {
    if (position + length > this.source.size) return undefined
    if (position < this.windowStart || position + length > this.windowStart + this.window.length) {
      this.window = await this.source.read(position, Math.max(WINDOW, length))
      this.windowStart = position
      if (this.window.length < length) return undefined
    }
    return this.window.subarray(position - this.windowStart, position - this.windowStart + length)
  }

  private where(position: number): string {
    return `dataset byte ${position - this.datasetOffset}`
  }

  async header(position: number, explicitVr: boolean, littleEndian: boolean, inside: string): Promise<Header> {
    const head = await this.bytes(position, 8)
    if (head === undefined) throw new Cut(`the file ends inside ${inside} (an element header at ${this.where(position)})`)
    const group = littleEndian ? head.readUInt16LE(0) : head.readUInt16BE(0)
    const element = littleEndian ? head.readUInt16LE(2) : head.readUInt16BE(2)
    const tag = group * 0x10000 + element
    if (!explicitVr || group === 0xfffe) return {tag, vr: '', length: littleEndian ? head.readUInt32LE(4) : head.readUInt32BE(4), headerLength: 8}
    const first = head[4]
    const second = head[5]
    if (first < 0x41 || first > 0x5a || second < 0x41 || second > 0x5a) {
      throw new Malformed(`${describeTag(tag)} at ${this.where(position)} has no valid VR (bytes 0x${first.toString(16)} 0x${second.toString(16)})`)
    }
    const vr = String.fromCharCode(first, second)
    if (SHORT_LENGTH_VRS.has(vr)) return {tag, vr, length: littleEndian ? head.readUInt16LE(6) : head.readUInt16BE(6), headerLength: 8}
    const long = await this.bytes(position, 12)
    if (long === undefined) throw new Cut(`the file ends inside the header of ${describeTag(tag)} at ${this.where(position)}`)
    return {tag, vr, length: littleEndian ? long.readUInt32LE(8) : long.readUInt32BE(8), headerLength: 12}
  }

  /** Walks the elements from `position` to `end` (the end of the data) and checks each fits. */
  async elements(position: number, explicitVr: boolean, littleEndian: boolean): Promise<void> {
    let at = position
    while (at < this.source.size) {
      const header = await this.header(at, explicitVr, littleEndian, 'the dataset')
      at = await this.skip(at, header, explicitVr, littleEndian, 0)
    }
  }

  /** The offset just past the element whose header starts at `at`. */
  private async skip(at: number, header: Header, explicitVr: boolean, littleEndian: boolean, depth: number): Promise<number> {
    if (header.length !== UNDEFINED_LENGTH) {
      const end = at + header.headerLength + header.length
      if (end > this.source.size) {
        throw new Cut(`the file ends inside ${describeTag(header.tag)} (its value needs ${header.length} bytes from ${this.where(at + header.headerLength)}, ${this.source.size - at - header.headerLength} are there)`)
      }
      return end
    }
    // Undefined length: a sequence, encapsulated pixel data, or (CP-246) a UN sequence whose items
    // are implicit VR little endian. All are items up to a sequence delimiter.
    if (depth >= MAX_DEPTH) throw new Malformed(`sequences nested more than ${MAX_DEPTH} deep at ${this.where(at)}`)
    const name = describeTag(header.tag)
    const isUn = explicitVr && header.vr === 'UN'
    const itemsExplicit = explicitVr && !isUn
    const itemsLittle = littleEndian || isUn
    let position = at + header.headerLength
    for (;;) {
      const item = await this.header(position, itemsExplicit, itemsLittle, name)
      if (item.tag === Tag.SequenceDelimitationItem) return position + 8
      if (item.tag !== Tag.Item) throw new Malformed(`expected an item or a sequence delimiter in ${name}, found ${describeTag(item.tag)} at ${this.where(position)}`)
      if (item.length !== UNDEFINED_LENGTH) {
        position += 8 + item.length
        if (position > this.source.size) throw new Cut(`the file ends inside an item of ${name} (at ${this.where(position - 8 - item.length)})`)
        continue
      }
      position += 8
      for (;;) {
        const inner = await this.header(position, itemsExplicit, itemsLittle, name)
        if (inner.tag === Tag.ItemDelimitationItem) {
          position += 8
          break
        }
        position = await this.skip(position, inner, itemsExplicit, itemsLittle, depth + 1)
      }
    }
  }
}

/**
 * Checks that a Part 10 file's dataset is not cut short: every element (sequences and
 * encapsulated pixel data included) must end within the data. Reads only element headers (a
 * few reads per file; bulk values are skipped, not read). A deflated dataset is inflated as a
 * stream (nothing kept) and must end its deflate stream.
 */
export async function checkDatasetComplete(source: ByteSource, datasetOffset: number, transferSyntaxUid: string): Promise<DatasetCheck> {
  const encoding = datasetEncoding(transferSyntaxUid)
  try {
    if (encoding.deflated) return await checkDeflateStream(source, datasetOffset)
    await new CompletenessWalker(source, datasetOffset).elements(datasetOffset, encoding.explicitVr, encoding.littleEndian)
    return {complete: true}
  } catch (error) {
    if (error instanceof Cut) return {complete: false, reason: `truncated: ${error.message}`}
    if (error instanceof Malformed) return {complete: false, reason: `malformed dataset: ${error.message}`}
    throw error
  }
}

async function inflates(source: ByteSource, datasetOffset: number, raw: boolean): Promise<void> {
  const sink = new Writable({write: (_chunk, _encoding, done) => done()})
  await pipeline(source.stream(datasetOffset), raw ? createInflateRaw() : createInflate(), sink)
}

async function checkDeflateStream(source: ByteSource, datasetOffset: number): Promise<DatasetCheck> {
  try {
    await inflates(source, datasetOffset, true)
    return {complete: true}
  } catch (rawError) {
    // Some writers wrap the stream in zlib (RFC 1950) although DICOM asks for raw deflate.
    const head = await source.read(datasetOffset, 2)
    const zlibHeader = head.length === 2 && (head[0] & 0x0f) === 8 && ((head[0] << 8) | head[1]) % 31 === 0
    if (zlibHeader) {
      try {
        await inflates(source, datasetOffset, false)
        return {complete: true}
      } catch {
        // report the raw error: it describes the standard encoding
      }
    }
    const message = (rawError as Error).message
    return /unexpected end/i.test(message)
      ? {complete: false, reason: 'truncated: the file ends inside the deflated dataset (the deflate stream is cut)'}
      : {complete: false, reason: `malformed dataset: the deflated dataset cannot be inflated (${message})`}
  }
}
