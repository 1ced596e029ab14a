import {open} from 'node:fs/promises'
import {TextDecoder} from 'node:util'
import {constants as zlibConstants, inflateRawSync, inflateSync} from 'node:zlib'
import {DdrError} from '../errors.js'
import {readMetaHeader, tryReadMetaHeader, type MetaHeader} from './part10.js'
import {type ElementHeader, ElementStream, type ElementVisitor} from './element-stream.js'
import {Tag, TagVr} from './tags.js'
import {datasetEncoding, type DatasetEncoding} from './uids.js'
import {CHARSET_VRS, KEEP_LEADING_SPACE_VRS, TEXT_VRS} from './vr.js'

// Kept here too: callers read the encoding where they read the elements.
export {datasetEncoding, type DatasetEncoding} from './uids.js'

/** What readTopLevelElements found. */
export interface ReadElementsResult {
  /**
   * String values of the wanted elements that were found, padding trimmed (UIDs without their
   * NUL). Numbers (US, UL, FL...) come as decimal text, several values joined by a backslash.
   * Sequences and bulk data (OB, OW, UN...) are skipped, never returned; so is a value over 64 KB.
   */
  values: Map<number, string>
  /**
   * True when the answer is final: every wanted element was seen, or an element past the last
   * wanted tag was reached, or (with `endOfData`) the data ended on an element boundary. False
   * when the bytes ran out first: call again with more of the dataset.
   */
  complete: boolean
}

/** Options for readTopLevelElements. */
export interface ReadElementsOptions {
  /**
   * The buffer is the whole dataset: running out of bytes exactly between two elements means
   * "absent" (complete), not "send more".
   */
  endOfData?: boolean
  /** Names the input in error messages. */
  source?: string
}

interface ScanTarget {
  wanted: Set<number>
  maxWanted: number
}

function scanTarget(wanted: readonly number[]): ScanTarget {
  const set = new Set(wanted.map((tag) => tag >>> 0))
  return {wanted: set, maxWanted: set.size === 0 ? -1 : Math.max(...set)}
}

const READER_HINT = 'the sender wrote bytes that do not follow the transfer syntax it declared; dcmdump shows the same file'

/**
 * Reads some top-level values through the element reader: it keeps the wanted values (and
 * SpecificCharacterSet, to decode them) and stops the reader as soon as the answer is final:
 * every wanted element seen, or a top-level tag past the largest wanted one (tags ascend).
 */
class TopLevelScan implements ElementVisitor {
  readonly topLevelOnly = true
  readonly stream: ElementStream
  readonly values = new Map<number, string>()
  /** The answer is final before the end of the data (the reader was stopped). */
  done = false
  private readonly seen = new Set<number>()
  private readonly littleEndian: boolean
  private charset: string | undefined

  constructor(
    private readonly target: ScanTarget,
    encoding: Pick<DatasetEncoding, 'explicitVr' | 'littleEndian'>,
    source: string | undefined,
  ) {
    this.littleEndian = encoding.littleEndian
    this.stream = new ElementStream(encoding, {capture: [...target.wanted, Tag.SpecificCharacterSet], source, hint: READER_HINT, visitor: this})
  }

  element(header: ElementHeader): void {
    if (header.tag > this.target.maxWanted) {
      this.finish()
      return
    }

    // A kept value counts once it is whole (captured()); a sequence or an oversized value counts now.
    if (!header.captured && this.target.wanted.has(header.tag)) this.saw(header.tag)
  }

  captured(tag: number, vr: string, value: Buffer): void {
    if (tag === Tag.SpecificCharacterSet) this.charset = decodeValue(value, 0, value.length, 'CS', this.littleEndian, undefined)
    if (!this.target.wanted.has(tag)) return
    const text = decodeValue(value, 0, value.length, vr || TagVr[tag] || 'LO', this.littleEndian, this.charset)
    if (text !== undefined) this.values.set(tag, text)
    this.saw(tag)
  }

  /** Whether the answer is final when the data ends here (`endOfData`) or may go on. */
  complete(endOfData: boolean): boolean {
    return this.done || (endOfData && this.stream.end().complete)
  }

  private saw(tag: number): void {
    this.seen.add(tag)
    if (this.seen.size === this.target.wanted.size) this.finish()
  }

  private finish(): void {
    this.done = true
    this.stream.stop()
  }
}

const decoders = new Map<string, TextDecoder | null>()

// SpecificCharacterSet terms (PS3.3 C.12.1.1.2) to WHATWG encoding labels.
const charsetLabels: Record<string, string> = {
  'ISO_IR 101': 'iso-8859-2',
  'ISO 2022 IR 101': 'iso-8859-2',
  'ISO_IR 109': 'iso-8859-3',
  'ISO 2022 IR 109': 'iso-8859-3',
  'ISO_IR 110': 'iso-8859-4',
  'ISO 2022 IR 110': 'iso-8859-4',
  'ISO_IR 144': 'iso-8859-5',
  'ISO 2022 IR 144': 'iso-8859-5',
  'ISO_IR 127': 'iso-8859-6',
  'ISO 2022 IR 127': 'iso-8859-6',
  'ISO_IR 126': 'iso-8859-7',
  'ISO 2022 IR 126': 'iso-8859-7',
  'ISO_IR 138': 'iso-8859-8',
  'ISO 2022 IR 138': 'iso-8859-8',
  'ISO_IR 148': 'iso-8859-9',
  'ISO 2022 IR 148': 'iso-8859-9',
  'ISO_IR 203': 'iso-8859-15',
  'ISO 2022 IR 203': 'iso-8859-15',
  'ISO_IR 13': 'shift_jis',
  'ISO 2022 IR 13': 'shift_jis',
  'ISO_IR 166': 'windows-874',
  'ISO 2022 IR 166': 'windows-874',
  GB18030: 'gb18030',
  GBK: 'gbk',
}

/**
 * Decodes text in the dataset's character set. Single-byte and UTF-8 sets are exact; ISO 2022
 * code extensions (escape sequences) are not interpreted: such bytes come out as Latin-1.
 */
export function decodeText(bytes: Buffer, charset: string | undefined): string {
  const term = charset?.split('\\').map((t) => t.trim()).filter((t) => t !== '').at(-1)
  if (term === undefined || term === 'ISO_IR 6' || term === 'ISO_IR 100' || term === 'ISO 2022 IR 100' || term === 'ISO 2022 IR 6') return bytes.toString('latin1')
  if (term === 'ISO_IR 192') return bytes.toString('utf8')
  const label = charsetLabels[term]
  if (!label) return bytes.toString('latin1')
  let decoder = decoders.get(label)
  if (decoder === undefined) {
    try {
      decoder = new TextDecoder(label)
    } catch {
      decoder = null
    }
    decoders.set(label, decoder)
  }
  return decoder ? decoder.decode(bytes) : bytes.toString('latin1')
}

/**
 * One element's value as text, as readTopLevelElements gives it (padding trimmed, numbers in
 * decimal, several values joined by a backslash); undefined for bulk and sequence VRs.
 */
export function decodeElementValue(value: Buffer, tag: number, vr: string | undefined, littleEndian: boolean, charset?: string): string | undefined {
  return decodeValue(value, 0, value.length, vr || TagVr[tag] || 'LO', littleEndian, charset)
}

function decodeValue(buffer: Buffer, start: number, end: number, vr: string, littleEndian: boolean, charset: string | undefined): string | undefined {
  if (TEXT_VRS.has(vr)) {
    const bytes = buffer.subarray(start, end)
    let text = CHARSET_VRS.has(vr) ? decodeText(bytes, charset) : bytes.toString('latin1')
    text = text.replace(/[\0 ]+$/, '')
    if (!KEEP_LEADING_SPACE_VRS.has(vr)) text = text.replace(/^ +/, '')
    return text
  }
  const numbers: string[] = []
  const read = (size: number, reader: (offset: number) => number | string): string => {
    for (let at = start; at + size <= end; at += size) numbers.push(String(reader(at)))
    return numbers.join('\\')
  }
  switch (vr) {
    case 'US':
      return read(2, (at) => (littleEndian ? buffer.readUInt16LE(at) : buffer.readUInt16BE(at)))
    case 'SS':
      return read(2, (at) => (littleEndian ? buffer.readInt16LE(at) : buffer.readInt16BE(at)))
    case 'UL':
      return read(4, (at) => (littleEndian ? buffer.readUInt32LE(at) : buffer.readUInt32BE(at)))
    case 'SL':
      return read(4, (at) => (littleEndian ? buffer.readInt32LE(at) : buffer.readInt32BE(at)))
    case 'FL':
      return read(4, (at) => (littleEndian ? buffer.readFloatLE(at) : buffer.readFloatBE(at)))
    case 'FD':
      return read(8, (at) => (littleEndian ? buffer.readDoubleLE(at) : buffer.readDoubleBE(at)))
    case 'AT':
      return read(4, (at) => {
        const group = littleEndian ? buffer.readUInt16LE(at) : buffer.readUInt16BE(at)
        const element = littleEndian ? buffer.readUInt16LE(at + 2) : buffer.readUInt16BE(at + 2)
        return `${group.toString(16).padStart(4, '0')}${element.toString(16).padStart(4, '0')}`.toUpperCase()
      })
    default:
      return undefined
  }
}

const FIRST_INFLATE_INPUT = 16 * 1024

/**
 * Inflates as much of a deflate stream as the bytes allow. A cut stream gives the output so
 * far instead of an error. DICOM wants raw deflate (RFC 1951); some senders wrap it in zlib
 * (RFC 1950), which is accepted too.
 */
function inflatePrefix(compressed: Buffer, source: string | undefined): Buffer {
  const options = {finishFlush: zlibConstants.Z_SYNC_FLUSH}
  try {
    return inflateRawSync(compressed, options)
  } catch (rawError) {
    const zlibHeader = compressed.length >= 2 && (compressed[0] & 0x0f) === 8 && ((compressed[0] << 8) | compressed[1]) % 31 === 0
    if (zlibHeader) {
      try {
        return inflateSync(compressed, options)
      } catch {
        // fall through to the raw error, which describes the standard encoding
      }
    }
    throw new DdrError('INVALID_DICOM', `${source ? `${source}: ` : ''}the deflated dataset cannot be inflated: ${(rawError as Error).message}`, {
      hint: 'the transfer syntax says Deflated Explicit VR Little Endian but the bytes are not a deflate stream',
      cause: rawError,
    })
  }
}

/**
 * Reads the values of some top-level elements of a raw dataset (no meta header) in the given
 * transfer syntax: implicit VR little endian, explicit VR little or big endian, deflated
 * explicit VR little endian (the buffer then holds deflated bytes), or any encapsulated syntax.
 *
 * Works on a prefix of the dataset: it stops as soon as every wanted tag was seen or a tag past
 * the largest wanted one appears, and reports `complete: false` when the bytes ran out first.
 * It reads through ElementStream (the one element reader), so the structure it walks to get
 * there is checked as on receive; it copies only the wanted values (values over 64 KB are not
 * kept), never the dataset. Throws DdrError INVALID_DICOM only for bytes that cannot be a
 * dataset in that syntax.
 */
export function readTopLevelElements(dataset: Buffer, transferSyntaxUid: string, wanted: readonly number[], options: ReadElementsOptions = {}): ReadElementsResult {
  const encoding = datasetEncoding(transferSyntaxUid)
  const target = scanTarget(wanted)
  if (target.wanted.size === 0) return {values: new Map(), complete: true}
  const endOfData = options.endOfData ?? false
  if (!encoding.deflated) {
    const scan = new TopLevelScan(target, encoding, options.source)
    scan.stream.push(dataset)
    return {values: scan.values, complete: scan.complete(endOfData)}
  }
  // Inflate growing prefixes: the wanted elements are usually in the first few KB, and a
  // large deflated dataset should not be inflated whole to find them.
  let take = Math.min(dataset.length, FIRST_INFLATE_INPUT)
  for (;;) {
    const inflated = inflatePrefix(dataset.subarray(0, take), options.source)
    const whole = take === dataset.length
    const scan = new TopLevelScan(target, encoding, options.source)
    scan.stream.push(inflated)
    const complete = scan.complete(endOfData && whole)
    if (complete || whole) return {values: scan.values, complete}
    take = Math.min(dataset.length, take * 4)
  }
}

/** What readPart10Elements and readDatasetFromFile found. */
export interface Part10ElementsResult extends ReadElementsResult {
  meta: MetaHeader
}

/**
 * readTopLevelElements for a whole Part 10 file in memory: meta header first (DdrError
 * INVALID_DICOM when there is none), then the dataset in its transfer syntax.
 */
export function readPart10Elements(file: Buffer, wanted: readonly number[], options: ReadElementsOptions = {}): Part10ElementsResult {
  const meta = readMetaHeader(file, {source: options.source})
  const result = readTopLevelElements(file.subarray(meta.datasetOffset), meta.transferSyntaxUid, wanted, {...options, endOfData: options.endOfData ?? true})
  return {meta, ...result}
}

/** Options for readDatasetFromFile. */
export interface ReadFileOptions {
  /** Bytes read at a time (64 KB by default). */
  chunkSize?: number
}

/** What readDatasetFromFile found, and how many bytes of the file it had to read. */
export interface FileElementsResult extends Part10ElementsResult {
  bytesRead: number
}

const DEFAULT_CHUNK = 64 * 1024

/**
 * Reads the meta header and some top-level elements of a Part 10 file, a chunk at a time: bulk
 * data it does not need (pixel data, long sequences of known length) is skipped on disk, not
 * read. `complete` is false for a file that ends (is truncated) before the answer is final:
 * inside an element, item or sequence, also inside a value it skipped on disk.
 * Throws DdrError INVALID_DICOM for a file that is not DICOM.
 */
export async function readDatasetFromFile(path: string, wanted: readonly number[], options: ReadFileOptions = {}): Promise<FileElementsResult> {
  const chunkSize = Math.max(256, options.chunkSize ?? DEFAULT_CHUNK)
  const handle = await open(path, 'r')
  try {
    const size = (await handle.stat()).size
    let bytesRead = 0
    const readAt = async (position: number, length: number): Promise<Buffer> => {
      const wantedLength = Math.max(0, Math.min(length, size - position))
      const buffer = Buffer.allocUnsafe(wantedLength)
      let filled = 0
      while (filled < wantedLength) {
        const {bytesRead: count} = await handle.read(buffer, filled, wantedLength - filled, position + filled)
        if (count === 0) break
        filled += count
      }
      bytesRead += filled
      return buffer.subarray(0, filled)
    }

    let head = await readAt(0, chunkSize)
    let meta = tryReadMetaHeader(head, {source: path})
    while (!meta) {
      if (head.length >= size) {
        meta = readMetaHeader(head, {source: path})
        break
      }
      head = Buffer.concat([head, await readAt(head.length, Math.max(chunkSize, head.length))])
      meta = tryReadMetaHeader(head, {source: path})
    }
    const datasetOffset = meta.datasetOffset
    const datasetSize = size - datasetOffset
    const encoding = datasetEncoding(meta.transferSyntaxUid)
    const target = scanTarget(wanted)

    if (encoding.deflated) {
      let compressed = head.subarray(datasetOffset)
      for (;;) {
        const atEnd = compressed.length >= datasetSize
        const result = readTopLevelElements(compressed, meta.transferSyntaxUid, wanted, {endOfData: atEnd, source: path})
        if (result.complete || atEnd) return {meta, ...result, bytesRead}
        compressed = Buffer.concat([compressed, await readAt(datasetOffset + compressed.length, Math.max(chunkSize, compressed.length))])
      }
    }

    // Value bytes it does not keep (pixel data, sequences of known length) are skipped on disk:
    // the reader is told they passed (advance) and the next read starts after them.
    const scan = new TopLevelScan(target, encoding, path)
    const stream = scan.stream
    let position = datasetOffset
    let chunk = head.subarray(datasetOffset)
    for (;;) {
      stream.push(chunk)
      position += chunk.length
      if (scan.done) break
      const skip = Math.min(stream.skippable, size - position)
      stream.advance(skip)
      position += skip
      if (position >= size) break
      chunk = await readAt(position, chunkSize)
      if (chunk.length === 0) break
    }

    // A file cut inside a value it skipped is not complete: the reader knows the value's length.
    return {meta, values: scan.values, complete: scan.complete(true), bytesRead}
  } finally {
    await handle.close()
  }
}
