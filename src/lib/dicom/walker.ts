import {constants as zlibConstants, inflateRawSync, inflateSync} from 'node:zlib'

import {DdrError} from '../errors.js'
import {dictionaryEntry} from './dictionary.js'
import {type ContainerKind, type ElementHeader, ElementStream, type ElementVisitor, type StreamCut, UNDEFINED_LENGTH} from './element-stream.js'
import {type MetaHeader, readMetaHeader} from './part10.js'
import {describeTag, Tag} from './tags.js'
import {datasetEncoding} from './uids.js'

// The tree's lengths are compared with it: its users find it beside the tree's types.
export {UNDEFINED_LENGTH} from './element-stream.js'

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

/**
 * Builds the element tree from what the element reader reports. It only assembles: headers,
 * lengths, nesting and the checks on them are ElementStream's. Values and fragments are views
 * into the walked buffer, never copies.
 */
class TreeBuilder implements ElementVisitor {
  readonly elements: DatasetElement[] = []
  /** The element lists being filled: the dataset's, then each open item's. */
  private readonly lists: DatasetElement[][] = [this.elements]
  /** The open containers: a sequence's or fragments' element, or an item. */
  private readonly containers: Array<DatasetElement | DatasetItem> = []
  private last: DatasetElement | undefined

  constructor(
    private readonly buffer: Buffer,
    private readonly deep: boolean,
  ) {}

  element(header: ElementHeader): boolean {
    const vrInData = header.vr !== ''
    const vr = vrInData ? header.vr : dictionaryEntry(header.tag)?.vr || 'UN'
    const valueStart = header.offset + header.headerLength
    const element: DatasetElement = {
      tag: header.tag,
      vr,
      vrInData,
      offset: header.offset,
      headerLength: header.headerLength,
      length: header.length,
      end: valueStart + header.length,
      littleEndian: header.littleEndian,
    }
    this.lists.at(-1)!.push(element)
    this.last = element
    // Undefined length: items or fragments follow, and close() says where it ends.
    if (header.length === UNDEFINED_LENGTH) return false
    if (vr === 'SQ' && this.deep) return true
    element.value = this.buffer.subarray(valueStart, element.end)
    return false
  }

  open(kind: ContainerKind, offset: number, length: number, littleEndian: boolean): void {
    if (kind === 'item') {
      const item: DatasetItem = {offset, length, end: offset + 8 + length, elements: []}
      ;(this.containers.at(-1) as DatasetElement).items!.push(item)
      this.containers.push(item)
      this.lists.push(item.elements)
      return
    }

    const element = this.last!
    if (kind === 'sequence') {
      element.items = []
      // Implicit VR: a value of undefined length is a sequence whatever the dictionary says.
      if (!element.vrInData) element.vr = 'SQ'
      // CP-246: a UN sequence's items are little endian whatever the dataset is.
      element.littleEndian = littleEndian
    } else {
      element.fragments = []
    }

    this.containers.push(element)
  }

  close(kind: ContainerKind, end: number): void {
    this.containers.pop()!.end = end
    if (kind === 'item') this.lists.pop()
  }

  fragment(offset: number, length: number): void {
    ;(this.containers.at(-1) as DatasetElement).fragments!.push(this.buffer.subarray(offset + 8, offset + 8 + length))
  }

  /** How many fragments the innermost open fragments hold (the last one is the cut one, if any). */
  fragmentCount(): number {
    return (this.containers.at(-1) as DatasetElement | undefined)?.fragments?.length ?? 0
  }
}

/** The INVALID_DICOM error for data that ends inside something, in the words inspect and fix-sop use. */
function truncatedError(cut: StreamCut, dataLength: number, options: WalkOptions, fragments: number): DdrError {
  const where = (at: number): string => `${options.offsetNoun ?? 'byte'} ${(options.baseOffset ?? 0) + at}`
  let what: string
  switch (cut.inside) {
    case 'value': {
      // Only fragments are skipped as values of an Item tag.
      const name = cut.tag === Tag.Item ? `pixel data fragment ${fragments - 1}` : `the value of ${describeTag(cut.tag)}`
      what = `${name} (${cut.length} bytes from ${where(cut.tag === Tag.Item ? cut.offset : cut.valueOffset)})`
      break
    }

    case 'header': {
      what = cut.tag === undefined ? `an element header at ${where(cut.offset)}` : `the header of ${describeTag(cut.tag)} at ${where(cut.offset)}`
      break
    }

    case 'item': {
      what = cut.length === UNDEFINED_LENGTH ? 'an item with no item delimiter' : `an item (${cut.length} bytes from ${where(cut.offset)})`
      break
    }

    case 'sequence': {
      what = `the sequence ${describeTag(cut.tag)}${cut.length === UNDEFINED_LENGTH ? ' (no sequence delimiter)' : ` (${cut.length} bytes from ${where(cut.offset)})`}`
      break
    }

    case 'fragments': {
      what = `the pixel data fragments of ${describeTag(cut.tag)} (no sequence delimiter)`
      break
    }
  }

  const inside = cut.path.length === 0 ? '' : ` (inside ${cut.path.join(' > ')})`
  return new DdrError('INVALID_DICOM', `${options.source ? `${options.source}: ` : ''}truncated: the data ends at ${where(dataLength)}, inside ${what}${inside}`, {
    hint: 'the file was cut short (an interrupted copy or transfer?); get it again from its source',
  })
}

/**
 * Walks a whole dataset (no meta header) into its elements, sequences and fragments, without
 * copying values (each is a view into `buffer`). The headers come from ElementStream, the one
 * element reader. Throws DdrError INVALID_DICOM naming the element and offset when the bytes
 * end early ("truncated: ...") or break the encoding ("malformed ...").
 */
export function walkDataset(buffer: Buffer, options: WalkOptions): DatasetElement[] {
  const tree = new TreeBuilder(buffer, options.deep ?? true)
  const stream = new ElementStream(options, {
    visitor: tree,
    source: options.source,
    baseOffset: options.baseOffset,
    offsetNoun: options.offsetNoun ?? 'byte',
    hint: 'the bytes do not follow the transfer syntax the file declares; dcmdump shows the same file',
  })
  stream.push(buffer)
  const end = stream.end()
  if (!end.complete) throw truncatedError(end.cut, buffer.length, options, tree.fragmentCount())
  return tree.elements
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
