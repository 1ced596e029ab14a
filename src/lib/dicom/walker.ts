import {constants as zlibConstants, inflateRawSync, inflateSync} from 'node:zlib'

import {DdrError} from '../errors.js'
import {dictionaryEntry} from './dictionary.js'
import {type MetaHeader, readMetaHeader} from './part10.js'
import {describeTag, Tag} from './tags.js'
import {datasetEncoding} from './uids.js'
import {SHORT_LENGTH_VRS} from './vr.js'

/** The length DICOM writes for "until the delimiter". */
export const UNDEFINED_LENGTH = 0xffffffff

// Real datasets nest a few levels (SR trees some dozens); deeper than this is corrupt or hostile.
const MAX_DEPTH = 256

/** One element of a dataset, as found in the bytes. Offsets are into the walked buffer. */
export interface DatasetElement {
  tag: number
  /** The VR written in the data (explicit VR), else the dictionary's, else "UN". */
  vr: string
  /** True when `vr` was read from the data, false when it came from the dictionary. */
  vrInData: boolean
  /** Offset of the element's first byte. */
  offset: number
  headerLength: number
  /** The value length as written: UNDEFINED_LENGTH for "until the delimiter". */
  length: number
  /** Offset just past the element (past its sequence delimiter for undefined lengths). */
  end: number
  /** Whether the value (and any items in it) is little endian. */
  littleEndian: boolean
  /** The value of an element that is neither a sequence nor encapsulated pixel data. */
  value?: Buffer
  /** The items of a sequence (SQ, or an undefined-length UN sequence read per CP-246). */
  items?: DatasetItem[]
  /** Encapsulated pixel data: the basic offset table first, then the fragments. */
  fragments?: Buffer[]
}

/** One item of a sequence. */
export interface DatasetItem {
  offset: number
  /** As written: UNDEFINED_LENGTH for an item ended by an item delimiter. */
  length: number
  end: number
  elements: DatasetElement[]
}

/** How to walk a dataset. */
export interface WalkOptions {
  explicitVr: boolean
  littleEndian: boolean
  /** Names the input in error messages (a file path). */
  source?: string
  /** Where buffer[0] lies in the file, so messages give file offsets (default 0). */
  baseOffset?: number
  /** What an offset counts, for messages: "byte" (default) or e.g. "inflated dataset byte". */
  offsetNoun?: string
  /**
   * Parse the items of sequences with a defined length too (default true). False walks only what
   * it must to find where each top-level element ends: a damaged private sequence of known length
   * then does not stop a caller that only needs the top level.
   */
  deep?: boolean
}

interface Header {
  tag: number
  vr: string
  length: number
  headerLength: number
}

/** Walks a dataset held in memory into the tree of its elements (values are views, never copies). */
class DatasetTreeWalker {
  private readonly path: string[] = []

  constructor(
    readonly buffer: Buffer,
    readonly options: WalkOptions,
  ) {}

  private where(at: number): string {
    return `${this.options.offsetNoun ?? 'byte'} ${(this.options.baseOffset ?? 0) + at}`
  }

  private inside(): string {
    return this.path.length === 0 ? '' : ` (inside ${this.path.join(' > ')})`
  }

  private prefix(): string {
    return this.options.source ? `${this.options.source}: ` : ''
  }

  truncated(what: string, detail = ''): DdrError {
    return new DdrError('INVALID_DICOM', `${this.prefix()}truncated: the data ends at ${this.where(this.buffer.length)}, inside ${what}${detail}${this.inside()}`, {
      hint: 'the file was cut short (an interrupted copy or transfer?); get it again from its source',
    })
  }

  malformed(what: string, at: number): DdrError {
    return new DdrError('INVALID_DICOM', `${this.prefix()}malformed dataset: ${what} at ${this.where(at)}${this.inside()}`, {
      hint: 'the bytes do not follow the transfer syntax the file declares; dcmdump shows the same file',
    })
  }

  header(at: number, explicitVr: boolean, littleEndian: boolean): Header {
    const buffer = this.buffer
    if (at + 8 > buffer.length) throw this.truncated(`an element header at ${this.where(at)}`)
    const group = littleEndian ? buffer.readUInt16LE(at) : buffer.readUInt16BE(at)
    const element = littleEndian ? buffer.readUInt16LE(at + 2) : buffer.readUInt16BE(at + 2)
    const tag = (group * 0x10000 + element) >>> 0
    // Items and delimiters (group FFFE) carry no VR in any syntax.
    if (!explicitVr || group === 0xfffe) {
      return {tag, vr: '', length: littleEndian ? buffer.readUInt32LE(at + 4) : buffer.readUInt32BE(at + 4), headerLength: 8}
    }
    const first = buffer[at + 4]
    const second = buffer[at + 5]
    if (first < 0x41 || first > 0x5a || second < 0x41 || second > 0x5a) {
      throw this.malformed(`${describeTag(tag)} has no valid VR (bytes 0x${first.toString(16)} 0x${second.toString(16)})`, at)
    }
    const vr = String.fromCharCode(first, second)
    // Unknown VRs take the 4-byte length form, as every VR added since 2000 does.
    if (SHORT_LENGTH_VRS.has(vr)) return {tag, vr, length: littleEndian ? buffer.readUInt16LE(at + 6) : buffer.readUInt16BE(at + 6), headerLength: 8}
    if (at + 12 > buffer.length) throw this.truncated(`the header of ${describeTag(tag)} at ${this.where(at)}`)
    return {tag, vr, length: littleEndian ? buffer.readUInt32LE(at + 8) : buffer.readUInt32BE(at + 8), headerLength: 12}
  }

  /**
   * Elements from `at` on: up to `limit` (a defined-length item), to the item delimiter
   * (`untilDelimiter`), or to the end of the buffer (the top level).
   */
  elements(at: number, limit: number | undefined, untilDelimiter: boolean, explicitVr: boolean, littleEndian: boolean, depth: number): {elements: DatasetElement[]; end: number} {
    const elements: DatasetElement[] = []
    let position = at
    for (;;) {
      if (limit !== undefined && position === limit) return {elements, end: position}
      if (limit === undefined && !untilDelimiter && position === this.buffer.length) return {elements, end: position}
      if (untilDelimiter) {
        const next = this.header(position, explicitVr, littleEndian)
        if (next.tag === Tag.ItemDelimitationItem) return {elements, end: position + 8}
      }
      const element = this.element(position, explicitVr, littleEndian, depth)
      if (limit !== undefined && element.end > limit) throw this.malformed(`${describeTag(element.tag)} runs past the end of its item`, position)
      elements.push(element)
      position = element.end
    }
  }

  element(at: number, explicitVr: boolean, littleEndian: boolean, depth: number): DatasetElement {
    const header = this.header(at, explicitVr, littleEndian)
    const {tag, length, headerLength} = header
    if (tag >>> 16 === 0xfffe) throw this.malformed(`${describeTag(tag)} where an element was expected`, at)
    const vrInData = header.vr !== ''
    const vr = vrInData ? header.vr : (dictionaryEntry(tag)?.vr || 'UN')
    const valueStart = at + headerLength
    const base = {tag, vrInData, offset: at, headerLength, length, littleEndian}

    if (length === UNDEFINED_LENGTH) {
      this.path.push(describeTag(tag))
      try {
        if (tag === Tag.PixelData) {
          const {fragments, end} = this.fragments(valueStart, littleEndian)
          return {...base, vr, end, fragments}
        }
        // Undefined length means a sequence. CP-246: an explicit-VR UN sequence holds implicit
        // VR little endian items.
        const un = explicitVr && vr === 'UN'
        const {items, end} = this.items(valueStart, undefined, explicitVr && !un, littleEndian || un, depth + 1)
        return {...base, vr: vrInData ? vr : 'SQ', end, littleEndian: littleEndian || un, items}
      } finally {
        this.path.pop()
      }
    }

    const end = valueStart + length
    if (end > this.buffer.length) {
      throw this.truncated(`the value of ${describeTag(tag)}`, ` (${length} bytes from ${this.where(valueStart)})`)
    }
    if (vr === 'SQ' && (this.options.deep ?? true)) {
      this.path.push(describeTag(tag))
      try {
        const {items} = this.items(valueStart, end, explicitVr, littleEndian, depth + 1)
        return {...base, vr, end, items}
      } finally {
        this.path.pop()
      }
    }
    return {...base, vr, end, value: this.buffer.subarray(valueStart, end)}
  }

  items(at: number, limit: number | undefined, explicitVr: boolean, littleEndian: boolean, depth: number): {items: DatasetItem[]; end: number} {
    if (depth > MAX_DEPTH) throw this.malformed(`sequences nested more than ${MAX_DEPTH} deep`, at)
    const items: DatasetItem[] = []
    let position = at
    for (;;) {
      if (limit !== undefined && position >= limit) {
        if (position > limit) throw this.malformed('an item runs past the end of its sequence', position)
        return {items, end: position}
      }
      const header = this.header(position, false, littleEndian)
      if (header.tag === Tag.SequenceDelimitationItem) {
        if (limit === undefined) return {items, end: position + 8}
        // A delimiter inside a defined-length sequence is redundant: tolerated, as dcmtk does.
        position += 8
        continue
      }
      if (header.tag !== Tag.Item) throw this.malformed(`expected an item or a sequence delimiter, found ${describeTag(header.tag)}`, position)
      this.path.push(`item ${items.length + 1}`)
      try {
        if (header.length === UNDEFINED_LENGTH) {
          const {elements, end} = this.elements(position + 8, undefined, true, explicitVr, littleEndian, depth)
          items.push({offset: position, length: header.length, end, elements})
          position = end
        } else {
          const end = position + 8 + header.length
          if (end > this.buffer.length) throw this.truncated(`an item`, ` (${header.length} bytes from ${this.where(position)})`)
          const {elements} = this.elements(position + 8, end, false, explicitVr, littleEndian, depth)
          items.push({offset: position, length: header.length, end, elements})
          position = end
        }
      } finally {
        this.path.pop()
      }
    }
  }

  fragments(at: number, littleEndian: boolean): {fragments: Buffer[]; end: number} {
    const fragments: Buffer[] = []
    let position = at
    for (;;) {
      const header = this.header(position, false, littleEndian)
      if (header.tag === Tag.SequenceDelimitationItem) return {fragments, end: position + 8}
      if (header.tag !== Tag.Item || header.length === UNDEFINED_LENGTH) {
        throw this.malformed(`expected a pixel data fragment or a sequence delimiter, found ${describeTag(header.tag)}`, position)
      }
      const end = position + 8 + header.length
      if (end > this.buffer.length) throw this.truncated(`pixel data fragment ${fragments.length}`, ` (${header.length} bytes from ${this.where(position)})`)
      fragments.push(this.buffer.subarray(position + 8, end))
      position = end
    }
  }
}

/**
 * Walks a whole dataset (no meta header) into its elements, sequences and fragments, without
 * copying values (each is a view into `buffer`). Throws DdrError INVALID_DICOM naming the element
 * and offset when the bytes end early ("truncated: ...") or break the encoding ("malformed ...").
 */
export function walkDataset(buffer: Buffer, options: WalkOptions): DatasetElement[] {
  const walker = new DatasetTreeWalker(buffer, options)
  return walker.elements(0, undefined, false, options.explicitVr, options.littleEndian, 0).elements
}

/** A Part 10 file read into memory: its meta header and its dataset bytes, inflated when deflated. */
export interface Part10Dataset {
  meta: MetaHeader
  /** The dataset bytes (inflated for a deflated transfer syntax). */
  dataset: Buffer
  explicitVr: boolean
  littleEndian: boolean
  deflated: boolean
  /** Where dataset[0] lies in the file; undefined when the dataset was inflated. */
  datasetFileOffset?: number
}

/**
 * Reads the meta header of a Part 10 file and decodes where its dataset lies: for deflated
 * syntaxes the whole dataset is inflated (a cut deflate stream is an error, not a prefix).
 * Throws DdrError INVALID_DICOM naming `source`.
 */
export function openPart10(file: Buffer, source?: string): Part10Dataset {
  const meta = readMetaHeader(file, {source})
  const encoding = datasetEncoding(meta.transferSyntaxUid)
  const raw = file.subarray(meta.datasetOffset)
  if (!encoding.deflated) {
    return {meta, dataset: raw, explicitVr: encoding.explicitVr, littleEndian: encoding.littleEndian, deflated: false, datasetFileOffset: meta.datasetOffset}
  }
  return {meta, dataset: inflateDataset(raw, source), explicitVr: encoding.explicitVr, littleEndian: encoding.littleEndian, deflated: true}
}

/** Inflates a whole deflated dataset: raw deflate (the standard), or zlib-wrapped (seen in the wild). */
export function inflateDataset(compressed: Buffer, source?: string): Buffer {
  try {
    return inflateRawSync(compressed)
  } catch (rawError) {
    const zlibHeader = compressed.length >= 2 && (compressed[0] & 0x0f) === 8 && ((compressed[0] << 8) | compressed[1]) % 31 === 0
    if (zlibHeader) {
      try {
        return inflateSync(compressed)
      } catch {
        // fall through: the raw error describes the standard encoding
      }
    }
    const message = (rawError as Error).message
    let cut = false
    try {
      inflateRawSync(compressed, {finishFlush: zlibConstants.Z_SYNC_FLUSH})
      cut = true
    } catch {
      cut = false
    }
    const what = cut ? 'truncated: the deflated dataset ends before its deflate stream does' : `the deflated dataset cannot be inflated (${message})`
    throw new DdrError('INVALID_DICOM', `${source ? `${source}: ` : ''}${what}`, {
      hint: cut ? 'the file was cut short; get it again from its source' : 'the transfer syntax says Deflated Explicit VR Little Endian but the bytes are not a deflate stream',
      cause: rawError,
    })
  }
}

/** Walks the dataset of an opened Part 10 file, with file offsets in messages where they exist. */
export function walkPart10(opened: Part10Dataset, options: {source?: string; deep?: boolean} = {}): DatasetElement[] {
  return walkDataset(opened.dataset, {
    explicitVr: opened.explicitVr,
    littleEndian: opened.littleEndian,
    source: options.source,
    deep: options.deep,
    baseOffset: opened.datasetFileOffset ?? 0,
    offsetNoun: opened.datasetFileOffset === undefined ? 'inflated dataset byte' : 'byte',
  })
}
