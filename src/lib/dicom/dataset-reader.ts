import {open} from 'node:fs/promises'
import {TextDecoder} from 'node:util'
import {constants as zlibConstants, inflateRawSync, inflateSync} from 'node:zlib'
import {DdrError} from '../errors.js'
import {readMetaHeader, tryReadMetaHeader, type MetaHeader} from './part10.js'
import {describeTag, Tag, TagVr} from './tags.js'
import {datasetEncoding, type DatasetEncoding} from './uids.js'
import {CHARSET_VRS, KEEP_LEADING_SPACE_VRS, SHORT_LENGTH_VRS, TEXT_VRS} from './vr.js'

// Kept here too: callers read the encoding where they read the elements.
export {datasetEncoding, type DatasetEncoding} from './uids.js'

/** What readTopLevelElements found. */
export interface ReadElementsResult {
  /**
   * String values of the wanted elements that were found, padding trimmed (UIDs without their
   * NUL). Numbers (US, UL, FL...) come as decimal text, several values joined by a backslash.
   * Sequences and bulk data (OB, OW, UN...) are skipped, never returned.
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

const UNDEFINED_LENGTH = 0xffffffff
const NEED_MORE = -1
// Real datasets nest a few levels (SR trees some dozens); deeper than this is corrupt or hostile.
const MAX_DEPTH = 256
const ITEM = Tag.Item
const ITEM_DELIMITER = Tag.ItemDelimitationItem
const SEQUENCE_DELIMITER = Tag.SequenceDelimitationItem


/** Where a scan stands: kept between calls when the caller feeds more bytes. */
interface ScanState {
  /** Dataset offset of the next top-level element. */
  position: number
  values: Map<number, string>
  seen: Set<number>
  charset?: string
}

interface ScanTarget {
  wanted: Set<number>
  maxWanted: number
}

/**
 * Walks a buffer that holds dataset bytes from offset `start` on. Reads element headers; skips
 * values, sequences (defined and undefined lengths, nested) and encapsulated pixel data. Never
 * reads outside the buffer: where it needs bytes it does not have, it says so.
 */
class Scanner {
  tag = 0
  vr = ''
  length = 0
  headerLength = 0

  constructor(
    readonly buffer: Buffer,
    readonly start: number,
    readonly source: string | undefined,
  ) {}

  private invalid(what: string, at: number): DdrError {
    const where = `at dataset byte ${this.start + at}`
    return new DdrError('INVALID_DICOM', `${this.source ? `${this.source}: ` : ''}malformed dataset: ${what} ${where}`, {
      hint: 'the sender wrote bytes that do not follow the transfer syntax it declared; dcmdump shows the same file',
    })
  }

  /** Reads the element header at `at` into the fields; false when the buffer ends first. */
  readHeader(at: number, explicitVr: boolean, littleEndian: boolean): boolean {
    const buffer = this.buffer
    if (at + 8 > buffer.length) return false
    const group = littleEndian ? buffer.readUInt16LE(at) : buffer.readUInt16BE(at)
    const element = littleEndian ? buffer.readUInt16LE(at + 2) : buffer.readUInt16BE(at + 2)
    this.tag = group * 0x10000 + element
    // Items and delimiters (group FFFE) carry no VR in any syntax.
    if (!explicitVr || group === 0xfffe) {
      this.vr = ''
      this.length = littleEndian ? buffer.readUInt32LE(at + 4) : buffer.readUInt32BE(at + 4)
      this.headerLength = 8
      return true
    }
    const first = buffer[at + 4]
    const second = buffer[at + 5]
    if (first < 0x41 || first > 0x5a || second < 0x41 || second > 0x5a) {
      throw this.invalid(`${describeTag(this.tag)} has no valid VR (bytes 0x${first.toString(16)} 0x${second.toString(16)})`, at)
    }
    this.vr = String.fromCharCode(first, second)
    // Unknown VRs take the 4-byte length form, as every VR added since 2000 does.
    if (SHORT_LENGTH_VRS.has(this.vr)) {
      this.length = littleEndian ? buffer.readUInt16LE(at + 6) : buffer.readUInt16BE(at + 6)
      this.headerLength = 8
      return true
    }
    if (at + 12 > buffer.length) return false
    this.length = littleEndian ? buffer.readUInt32LE(at + 8) : buffer.readUInt32BE(at + 8)
    this.headerLength = 12
    return true
  }

  /**
   * The offset just past the element whose header is in the fields and starts at `at`; it may
   * lie past the buffer for a defined length. NEED_MORE when an undefined-length value runs
   * past the buffer.
   */
  skipElement(at: number, explicitVr: boolean, littleEndian: boolean, depth: number): number {
    if (this.length !== UNDEFINED_LENGTH) return at + this.headerLength + this.length
    // Undefined length: a sequence, encapsulated pixel data, or (CP-246) a UN sequence whose
    // items are implicit VR little endian. All are items up to a sequence delimiter.
    const isUn = explicitVr && this.vr === 'UN'
    return this.skipItems(at + this.headerLength, explicitVr && !isUn, littleEndian || isUn, depth + 1)
  }

  /** From the first item of an undefined-length sequence to just past its delimiter. */
  private skipItems(at: number, explicitVr: boolean, littleEndian: boolean, depth: number): number {
    if (depth > MAX_DEPTH) throw this.invalid(`sequences nested more than ${MAX_DEPTH} deep`, at)
    let position = at
    for (;;) {
      if (!this.readHeader(position, explicitVr, littleEndian)) return NEED_MORE
      if (this.tag === SEQUENCE_DELIMITER) return position + 8
      if (this.tag !== ITEM) throw this.invalid(`expected an item or a sequence delimiter, found ${describeTag(this.tag)}`, position)
      if (this.length !== UNDEFINED_LENGTH) {
        position += 8 + this.length
        if (position > this.buffer.length) return NEED_MORE
        continue
      }
      position = this.skipItemContent(position + 8, explicitVr, littleEndian, depth)
      if (position === NEED_MORE) return NEED_MORE
    }
  }

  /** From the first element of an undefined-length item to just past its delimiter. */
  private skipItemContent(at: number, explicitVr: boolean, littleEndian: boolean, depth: number): number {
    let position = at
    for (;;) {
      if (!this.readHeader(position, explicitVr, littleEndian)) return NEED_MORE
      if (this.tag === ITEM_DELIMITER) return position + 8
      if (this.tag === SEQUENCE_DELIMITER || this.tag === ITEM) throw this.invalid(`${describeTag(this.tag)} inside an item before its delimiter`, position)
      const end = this.skipElement(position, explicitVr, littleEndian, depth)
      if (end === NEED_MORE || end > this.buffer.length) return NEED_MORE
      position = end
    }
  }

  /**
   * Walks top-level elements from `state.position`, recording wanted values. Returns true when
   * the result is final, false when more bytes are needed (state.position then says from where).
   */
  scan(state: ScanState, target: ScanTarget, encoding: DatasetEncoding, endOfData: boolean): boolean {
    const {explicitVr, littleEndian} = encoding
    const buffer = this.buffer
    for (;;) {
      const at = state.position - this.start
      if (at < 0) throw new Error(`scan position ${state.position} is before the buffer start ${this.start}`)
      if (!this.readHeader(at, explicitVr, littleEndian)) {
        return endOfData && at === buffer.length
      }
      const tag = this.tag
      if (tag > target.maxWanted) return true
      const isWanted = target.wanted.has(tag)
      if ((isWanted || tag === Tag.SpecificCharacterSet) && this.length !== UNDEFINED_LENGTH) {
        const valueStart = at + this.headerLength
        const valueEnd = valueStart + this.length
        if (valueEnd > buffer.length) return false
        const vr = this.vr || TagVr[tag] || 'LO'
        if (tag === Tag.SpecificCharacterSet) state.charset = decodeValue(buffer, valueStart, valueEnd, 'CS', littleEndian, undefined)
        if (isWanted) {
          const value = decodeValue(buffer, valueStart, valueEnd, vr, littleEndian, state.charset)
          if (value !== undefined) state.values.set(tag, value)
        }
      }
      if (isWanted) {
        state.seen.add(tag)
        if (state.seen.size === target.wanted.size) return true
      }
      const end = this.skipElement(at, explicitVr, littleEndian, 0)
      if (end === NEED_MORE) return false
      state.position = this.start + end
    }
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

function newState(): ScanState {
  return {position: 0, values: new Map(), seen: new Set()}
}

function scanTarget(wanted: readonly number[]): ScanTarget {
  const set = new Set(wanted.map((tag) => tag >>> 0))
  return {wanted: set, maxWanted: set.size === 0 ? -1 : Math.max(...set)}
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
 * It never copies or re-encodes the dataset, and never reads past the buffer. Throws DdrError
 * INVALID_DICOM only for bytes that cannot be a dataset in that syntax.
 */
export function readTopLevelElements(dataset: Buffer, transferSyntaxUid: string, wanted: readonly number[], options: ReadElementsOptions = {}): ReadElementsResult {
  const encoding = datasetEncoding(transferSyntaxUid)
  const target = scanTarget(wanted)
  if (target.wanted.size === 0) return {values: new Map(), complete: true}
  const endOfData = options.endOfData ?? false
  if (!encoding.deflated) {
    const state = newState()
    const complete = new Scanner(dataset, 0, options.source).scan(state, target, encoding, endOfData)
    return {values: state.values, complete}
  }
  // Inflate growing prefixes: the wanted elements are usually in the first few KB, and a
  // large deflated dataset should not be inflated whole to find them.
  let take = Math.min(dataset.length, FIRST_INFLATE_INPUT)
  for (;;) {
    const inflated = inflatePrefix(dataset.subarray(0, take), options.source)
    const whole = take === dataset.length
    const state = newState()
    const complete = new Scanner(inflated, 0, options.source).scan(state, target, encoding, endOfData && whole)
    if (complete || whole) return {values: state.values, complete}
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
 * read. `complete` is false only for a file that ends inside an element (truncated).
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

    const state = newState()
    let bufferStart = 0
    let buffer = head.subarray(datasetOffset)
    let lastResume = -1
    let growth = chunkSize
    for (;;) {
      const atEnd = bufferStart + buffer.length >= datasetSize
      const complete = new Scanner(buffer, bufferStart, path).scan(state, target, encoding, atEnd)
      if (complete || atEnd) return {meta, values: state.values, complete, bytesRead}
      const resume = state.position
      if (resume >= bufferStart + buffer.length) {
        // Past everything read so far (a value of known length was skipped): seek, do not read it.
        bufferStart = resume
        buffer = await readAt(datasetOffset + resume, chunkSize)
        growth = chunkSize
      } else {
        // An element straddles the end of the buffer: keep its start, read more behind it, and
        // read more each time the same element is still not whole.
        growth = resume === lastResume ? growth * 2 : chunkSize
        const kept = buffer.subarray(resume - bufferStart)
        buffer = Buffer.concat([kept, await readAt(datasetOffset + resume + kept.length, growth)])
        bufferStart = resume
      }
      lastResume = resume
    }
  } finally {
    await handle.close()
  }
}
