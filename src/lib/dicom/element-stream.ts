import {DdrError} from '../errors.js'
import {describeTag, Tag} from './tags.js'
import type {DatasetEncoding} from './uids.js'
import {vrHasShortLength, vrIndex, vrName} from './vr.js'

/** The length DICOM writes for "until the delimiter". */
export const UNDEFINED_LENGTH = 0xffffffff
// Real datasets nest a few levels (SR trees some dozens); deeper than this is corrupt or hostile.
const MAX_DEPTH = 256
/** A captured value larger than this is skipped, not kept (the wanted elements are UIDs and short strings). */
const MAX_CAPTURE = 64 * 1024
/** The longest element header: explicit VR with the 4-byte length form. */
const MAX_HEADER_LENGTH = 12
// Items and delimiters live in group FFFE, which has no elements of its own.
const ITEM_GROUP_FIRST = 0xfffe0000
const ITEM_GROUP_LAST = 0xfffeffff
const EMPTY = Buffer.alloc(0)

/** An unsigned 32-bit length at `at` (the caller checked the bounds). */
function uint32(bytes: Buffer, at: number, littleEndian: boolean): number {
  return littleEndian
    ? (bytes[at] | (bytes[at + 1] << 8) | (bytes[at + 2] << 16)) + bytes[at + 3] * 0x1000000
    : bytes[at] * 0x1000000 + ((bytes[at + 1] << 16) | (bytes[at + 2] << 8) | bytes[at + 3])
}

/** A container inside a dataset: a sequence, one of its items, or encapsulated pixel data fragments. */
export type ContainerKind = 'sequence' | 'item' | 'fragments'

interface Frame {
  kind: 'dataset' | ContainerKind
  /** Stream offset just past the container; Infinity for an undefined length (ends at its delimiter). */
  end: number
  explicitVr: boolean
  littleEndian: boolean
  /** The element that opened it (an item: its sequence's), for messages. */
  tag: number
  /** Stream offset of the header that opened it (the element's, or the item's). */
  offset: number
  /** That header's length field: UNDEFINED_LENGTH for "until the delimiter". */
  length: number
  /** A sequence: how many items it opened so far. An item: its number in its sequence, from 1. */
  count: number
}

/**
 * One element header as read (not items or delimiters: those are the reader's business). The
 * reader hands the same object to every ElementVisitor.element call: copy what you keep.
 */
export interface ElementHeader {
  tag: number
  /** The VR as written in the data; '' in implicit VR. */
  vr: string
  /** The value length as written: UNDEFINED_LENGTH for "until the delimiter". */
  length: number
  /** Stream offset of the header's first byte. */
  offset: number
  /** 8, or 12 for the 4-byte length form of explicit VR. */
  headerLength: number
  /** 0 for a top-level element; more inside sequences and items. */
  depth: number
  /** Whether the element's container is explicit VR (false inside a CP-246 UN sequence). */
  explicitVr: boolean
  /** Whether the element (and its value) is little endian. */
  littleEndian: boolean
  /** Whether its value will be kept in `values` (a wanted top-level element). */
  captured: boolean
}

/**
 * Hooks for a user of the reader that needs more than "whole or cut short": a tree builder, a
 * scan for some top-level values. Every method is optional; offsets are stream offsets.
 */
export interface ElementVisitor {
  /** Call element() for top-level elements only: a scan of the top level is then not called for every element inside its sequences. */
  readonly topLevelOnly?: boolean
  /**
   * An element header, before its value. Return true to read a value of defined length as the
   * items of a sequence (a tree walker's SQ); a value of undefined length is always read as
   * items or fragments, any other value is skipped (or captured).
   */
  element?(header: ElementHeader): boolean | void
  /** A captured value is whole (it is in `values` too); `vr` as written, '' in implicit VR. */
  captured?(tag: number, vr: string, value: Buffer): void
  /**
   * A container opened. `offset` and `length` are those of the header that opened it (the
   * element's for a sequence or fragments, the item's for an item); `littleEndian` is its
   * content's (CP-246 UN sequences hold implicit VR little endian items).
   */
  open?(kind: ContainerKind, offset: number, length: number, littleEndian: boolean): void
  /** The innermost open container ended just before stream offset `end`. */
  close?(kind: ContainerKind, end: number): void
  /** One item of encapsulated pixel data (the basic offset table first): its header's offset and value length. */
  fragment?(offset: number, length: number): void
}

/**
 * Where the data ended when it ended inside something (stream offsets). `path` names the open
 * containers from the outermost: e.g. ["ReferencedImageSequence (0008,1140)", "item 2"].
 */
export type StreamCut =
  | {inside: 'value'; tag: number; offset: number; valueOffset: number; length: number; missing: number; path: string[]}
  | {inside: 'header'; offset: number; /** When the bytes there hold it. */ tag?: number; path: string[]}
  | {inside: ContainerKind; tag: number; offset: number; length: number; path: string[]}

/** How a dataset ended: whole, or cut short (with what was open at the end). */
export type StreamEnd = {complete: true; length: number} | {complete: false; length: number; problem: string; cut: StreamCut}

/** Options for ElementStream. */
export interface ElementStreamOptions {
  /** Top-level elements whose values to keep (raw bytes, see `values`); small values only. */
  capture?: readonly number[]
  /** Names the input in error messages. */
  source?: string
  /** Hooks called as the reader finds elements, containers and fragments. */
  visitor?: ElementVisitor
  /** Where stream offset 0 lies in what messages count (a file offset, say); 0 by default. */
  baseOffset?: number
  /** What messages count offsets in: "dataset byte" by default. */
  offsetNoun?: string
  /** The hint of the INVALID_DICOM errors; by default it blames the sender. */
  hint?: string
}

/**
 * The one DICOM element reader: a push reader of a dataset's element structure. Feed it the
 * dataset bytes as they arrive (any chunk sizes), then call end(). It reads element headers
 * (tag, VR, both length forms, undefined lengths) and skips values, so it costs the same for a
 * 40 KB and a 2 GB instance; it follows sequences and items of undefined length, items of defined
 * length inside them, CP-246 UN sequences and encapsulated pixel data, and checks that every
 * element lies inside its container. It keeps the raw value bytes of a few wanted top-level
 * elements. A caller that reads from a file can seek past a value instead of reading it
 * (`skippable`, advance()); a visitor sees every element and container (ElementVisitor).
 *
 * push() throws DdrError INVALID_DICOM for bytes that cannot be a dataset in the encoding; end()
 * says whether the data stopped on a top-level element boundary with every container closed, or
 * inside an element, an item or a sequence (a dataset cut short).
 *
 * Sequences of defined length are skipped as values unless a visitor asks for their items: the
 * bytes a backend gets are its to judge, and a damaged private sequence of known length does not
 * stop a dataset from being stored.
 */
export class ElementStream {
  /** Raw value bytes of the captured top-level elements that were present. */
  readonly values = new Map<number, Buffer>()
  private readonly stack: Frame[]
  /** The innermost open container: the stack's last frame, kept at hand for every header. */
  private top: Frame
  private readonly wanted: Set<number>
  private readonly visitor: ElementVisitor | undefined
  /** Which elements the visitor's element() wants: none, top-level ones, or all. */
  private readonly elementCalls: 'none' | 'top' | 'all'
  private readonly header: ElementHeader = {tag: 0, vr: '', length: 0, offset: 0, headerLength: 0, depth: 0, explicitVr: false, littleEndian: true, captured: false}
  /** Stream offset of the next byte push() will see. */
  private position = 0
  /** Value bytes still to skip (or capture) before the next header. */
  private skip = 0
  private capturing?: {tag: number; vr: string; parts: Buffer[]}
  /** Bytes of a header that straddles two chunks. */
  private carry: Buffer | undefined
  private stopped = false
  // The element whose value is being skipped (for end()); plain fields: one is set per value.
  private valueTag = 0
  private valueOffset = 0
  private valueStart = 0
  private valueLength = 0

  constructor(encoding: Pick<DatasetEncoding, 'explicitVr' | 'littleEndian'>, private readonly options: ElementStreamOptions = {}) {
    this.top = {kind: 'dataset', end: Number.POSITIVE_INFINITY, explicitVr: encoding.explicitVr, littleEndian: encoding.littleEndian, tag: 0, offset: 0, length: UNDEFINED_LENGTH, count: 0}
    this.stack = [this.top]
    this.wanted = new Set((options.capture ?? []).map((tag) => tag >>> 0))
    this.visitor = options.visitor
    this.elementCalls = this.visitor?.element === undefined ? 'none' : this.visitor.topLevelOnly ? 'top' : 'all'
  }

  /** Bytes seen so far (skipped ones included). */
  get length(): number {
    return this.position
  }

  /** Whether stop() was called: the reader takes no more bytes. */
  get isStopped(): boolean {
    return this.stopped
  }

  /**
   * Value bytes that come next and that the reader does not need to see: a caller reading a file
   * may seek past them with advance() instead of reading them. 0 while a header is incomplete or
   * a captured value is being kept.
   */
  get skippable(): number {
    return this.capturing === undefined && this.carry === undefined ? this.skip : 0
  }

  /** Counts the next `bytes` bytes (at most `skippable`) as seen without reading them. */
  advance(bytes: number): void {
    if (bytes > this.skippable || bytes < 0) throw new Error(`advance(${bytes}) past the ${this.skippable} skippable bytes`)
    this.skip -= bytes
    this.position += bytes
  }

  /** Stops reading: push() ignores what comes next. For a visitor that found what it wanted. */
  stop(): void {
    this.stopped = true
  }

  /** Feeds the next bytes of the dataset. */
  push(chunk: Buffer): void {
    if (this.stopped) return
    const base = this.position
    this.position = base + chunk.length
    let start = 0
    const carry = this.carry
    if (carry !== undefined) {
      // A header straddles two chunks (rare): join its missing bytes to the carried ones, not the
      // whole chunk, so no chunk is copied.
      this.carry = undefined
      const joined = Buffer.concat([carry, chunk.subarray(0, MAX_HEADER_LENGTH - carry.length)])
      const used = this.readHeaders(joined, 0, base - carry.length)
      if (this.stopped) return
      if (used === 0) {
        // The chunk is too short to finish the header: it is all in `joined`.
        this.carry = joined
        return
      }

      // Any bytes of `joined` left unread are the chunk's: read them from the chunk itself.
      start = used - carry.length
    }

    const used = this.readHeaders(chunk, start, base)
    if (used < chunk.length && !this.stopped) this.carry = Buffer.from(chunk.subarray(used))
  }

  /** The data ended: whether it ended on an element boundary with every container closed. */
  end(): StreamEnd {
    if (this.stopped) throw new Error('end() after stop(): the reader did not see the rest of the data')
    this.closeEndedFrames(this.position)
    const length = this.position
    if (this.skip > 0) {
      const cut: StreamCut = {inside: 'value', tag: this.valueTag, offset: this.valueOffset, valueOffset: this.valueStart, length: this.valueLength, missing: this.skip, path: this.path()}
      return {complete: false, length, cut, problem: `the data ends inside the value of ${describeTag(this.valueTag)} (at byte ${this.valueOffset}, ${this.skip} of its ${this.valueLength} bytes missing)`}
    }

    if (this.carry !== undefined) {
      const offset = length - this.carry.length
      const cut: StreamCut = {inside: 'header', offset, path: this.path()}
      if (this.carry.length >= 4) {
        const littleEndian = this.top.littleEndian
        cut.tag = (littleEndian ? this.carry.readUInt16LE(0) : this.carry.readUInt16BE(0)) * 0x10000 + (littleEndian ? this.carry.readUInt16LE(2) : this.carry.readUInt16BE(2))
      }

      return {complete: false, length, cut, problem: `the data ends inside an element header at byte ${offset}`}
    }

    const open = this.top
    if (open.kind !== 'dataset') {
      const what = open.kind === 'item' ? 'an item of' : open.kind === 'fragments' ? 'the fragments of' : 'the sequence'
      return {
        complete: false,
        length,
        cut: {inside: open.kind, tag: open.tag, offset: open.offset, length: open.length, path: this.path()},
        problem: `the data ends inside ${what} ${describeTag(open.tag)}${open.end === Number.POSITIVE_INFINITY ? ' (no delimiter)' : ''}`,
      }
    }

    return {complete: true, length}
  }

  /** The open containers from the outermost, for messages: "ReferencedImageSequence (0008,1140)", "item 2". */
  private path(): string[] {
    return this.stack.slice(1).map((frame) => (frame.kind === 'item' ? `item ${frame.count}` : describeTag(frame.tag)))
  }

  private invalid(what: string, at: number): DdrError {
    const path = this.path()
    const inside = path.length === 0 ? '' : ` (inside ${path.join(' > ')})`
    const where = `${this.options.offsetNoun ?? 'dataset byte'} ${(this.options.baseOffset ?? 0) + at}`
    return new DdrError('INVALID_DICOM', `${this.options.source ? `${this.options.source}: ` : ''}malformed dataset: ${what} at ${where}${inside}`, {
      hint: this.options.hint ?? 'the sender wrote bytes that do not follow the transfer syntax it declared',
    })
  }

  /** Pops the defined-length containers that end at `offset`; an element that ran past one is an error. */
  private closeEndedFrames(offset: number): void {
    while (this.top.end <= offset) {
      const {end} = this.top
      if (end < offset) throw this.invalid('an element runs past the end of the item or sequence it is in', end)
      this.pop(end)
    }
  }

  /**
   * Skips values and reads headers in `bytes` from index `start` (bytes[0] is at stream offset
   * `base`). Returns how many bytes it consumed: all of them, or up to a header that the bytes do
   * not hold whole.
   */
  private readHeaders(bytes: Buffer, start: number, base: number): number {
    let at = start
    for (;;) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, bytes.length - at)
        if (this.capturing !== undefined && n > 0) this.capturing.parts.push(bytes.subarray(at, at + n))
        this.skip -= n
        at += n
        if (this.skip > 0) return at
        if (this.capturing !== undefined) {
          const {tag, vr, parts} = this.capturing
          this.capturing = undefined
          this.keep(tag, vr, Buffer.concat(parts))
          if (this.stopped) return bytes.length
        }
      }

      if (at === bytes.length) return at
      const offset = base + at
      if (this.top.end <= offset) this.closeEndedFrames(offset)
      const frame = this.top
      if (at + 8 > bytes.length) return at
      const littleEndian = frame.littleEndian
      // Byte arithmetic rather than readUInt16LE and friends: the bounds are checked above, and
      // this runs for every header of every received instance.
      const group = littleEndian ? bytes[at] | (bytes[at + 1] << 8) : (bytes[at] << 8) | bytes[at + 1]
      const element = littleEndian ? bytes[at + 2] | (bytes[at + 3] << 8) : (bytes[at + 2] << 8) | bytes[at + 3]
      const tag = group * 0x10000 + element
      let vr = ''
      let length: number
      let headerLength = 8
      // Items and delimiters (group FFFE) carry no VR in any syntax.
      if (!frame.explicitVr || group === 0xfffe) {
        length = uint32(bytes, at + 4, littleEndian)
      } else {
        const index = vrIndex(bytes[at + 4], bytes[at + 5])
        if (index < 0) throw this.invalid(`${describeTag(tag)} has no valid VR (bytes 0x${bytes[at + 4].toString(16)} 0x${bytes[at + 5].toString(16)})`, offset)
        vr = vrName(index)
        if (vrHasShortLength(index)) {
          length = littleEndian ? bytes[at + 6] | (bytes[at + 7] << 8) : (bytes[at + 6] << 8) | bytes[at + 7]
        } else {
          if (at + 12 > bytes.length) return at
          length = uint32(bytes, at + 8, littleEndian)
          headerLength = 12
        }
      }

      at += headerLength
      if (length !== UNDEFINED_LENGTH && offset + headerLength + length > frame.end) {
        throw this.invalid(`${describeTag(tag)} (${length} bytes) runs past the end of the item or sequence it is in`, offset)
      }

      this.onHeader(frame, tag, vr, length, offset, headerLength)
      if (this.stopped) return bytes.length
    }
  }

  private onHeader(frame: Frame, tag: number, vr: string, length: number, offset: number, headerLength: number): void {
    const defined = length !== UNDEFINED_LENGTH
    const valueStart = offset + headerLength
    switch (frame.kind) {
      case 'sequence': {
        if (tag === Tag.SequenceDelimitationItem) {
          // In a sequence of defined length a delimiter is redundant: tolerated, as dcmtk does.
          if (frame.end === Number.POSITIVE_INFINITY) this.pop(valueStart)
          return
        }

        if (tag !== Tag.Item) throw this.invalid(`expected an item or a sequence delimiter, found ${describeTag(tag)}`, offset)
        frame.count++
        const end = defined ? valueStart + length : Number.POSITIVE_INFINITY
        this.open({kind: 'item', end, explicitVr: frame.explicitVr, littleEndian: frame.littleEndian, tag: frame.tag, offset, length, count: frame.count}, offset)
        return
      }

      case 'fragments': {
        if (tag === Tag.SequenceDelimitationItem) {
          this.pop(valueStart)
          return
        }

        if (tag !== Tag.Item || !defined) throw this.invalid(`expected a fragment item or a sequence delimiter, found ${describeTag(tag)}`, offset)
        this.visitor?.fragment?.(offset, length)
        this.skipValue(tag, vr, offset, valueStart, length, false)
        return
      }

      default: {
        if (tag >= ITEM_GROUP_FIRST && tag <= ITEM_GROUP_LAST) {
          if (tag === Tag.ItemDelimitationItem) {
            if (frame.kind !== 'item' || frame.end !== Number.POSITIVE_INFINITY) throw this.invalid('an item delimiter outside an item of undefined length', offset)
            this.pop(valueStart)
            return
          }

          if (tag === Tag.Item || tag === Tag.SequenceDelimitationItem) throw this.invalid(`${describeTag(tag)} outside a sequence`, offset)
          throw this.invalid(`${describeTag(tag)} where an element was expected`, offset)
        }

        const capture = defined && frame.kind === 'dataset' && length <= MAX_CAPTURE && this.wanted.has(tag)
        let readItems = false
        if (this.elementCalls === 'all' || (this.elementCalls === 'top' && frame.kind === 'dataset')) {
          const header = this.header
          header.tag = tag
          header.vr = vr
          header.length = length
          header.offset = offset
          header.headerLength = headerLength
          header.depth = this.stack.length - 1
          header.explicitVr = frame.explicitVr
          header.littleEndian = frame.littleEndian
          header.captured = capture
          readItems = this.visitor!.element!(header) === true
        }

        if (defined) {
          if (readItems) {
            this.open({kind: 'sequence', end: valueStart + length, explicitVr: frame.explicitVr, littleEndian: frame.littleEndian, tag, offset, length, count: 0}, offset)
            return
          }

          this.skipValue(tag, vr, offset, valueStart, length, capture)
          return
        }

        // Undefined length: a sequence, encapsulated pixel data, or (CP-246) a UN sequence whose
        // items are implicit VR little endian.
        if (vr === '' || vr === 'SQ' || vr === 'UN') {
          const implicitInside = vr === 'UN'
          const fragments = tag === Tag.PixelData && vr === ''
          this.open(
            {
              kind: fragments ? 'fragments' : 'sequence',
              end: Number.POSITIVE_INFINITY,
              explicitVr: implicitInside ? false : frame.explicitVr,
              littleEndian: implicitInside ? true : frame.littleEndian,
              tag,
              offset,
              length,
              count: 0,
            },
            offset,
          )
          return
        }

        if (vr === 'OB' || vr === 'OW') {
          this.open({kind: 'fragments', end: Number.POSITIVE_INFINITY, explicitVr: frame.explicitVr, littleEndian: frame.littleEndian, tag, offset, length, count: 0}, offset)
          return
        }

        throw this.invalid(`${describeTag(tag)} (VR ${vr}) has an undefined length`, offset)
      }
    }
  }

  private open(frame: Frame, offset: number): void {
    if (this.stack.length > MAX_DEPTH) throw this.invalid(`sequences nested more than ${MAX_DEPTH} deep`, offset)
    this.stack.push(frame)
    this.top = frame
    this.visitor?.open?.(frame.kind as ContainerKind, frame.offset, frame.length, frame.littleEndian)
  }

  private pop(end: number): void {
    const frame = this.stack.pop()!
    this.top = this.stack.at(-1)!
    this.visitor?.close?.(frame.kind as ContainerKind, end)
  }

  private skipValue(tag: number, vr: string, offset: number, valueStart: number, length: number, capture: boolean): void {
    this.valueTag = tag
    this.valueOffset = offset
    this.valueStart = valueStart
    this.valueLength = length
    if (length === 0) {
      if (capture) this.keep(tag, vr, EMPTY)
      return
    }

    this.skip = length
    if (capture) this.capturing = {tag, vr, parts: []}
  }

  private keep(tag: number, vr: string, value: Buffer): void {
    this.values.set(tag, value)
    this.visitor?.captured?.(tag, vr, value)
  }
}
