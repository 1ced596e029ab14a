import {DdrError} from '../errors.js'
import type {DatasetEncoding} from './uids.js'
import {describeTag, Tag} from './tags.js'
import {SHORT_LENGTH_VRS} from './vr.js'

const UNDEFINED_LENGTH = 0xffffffff
// Real datasets nest a few levels (SR trees some dozens); deeper than this is corrupt or hostile.
const MAX_DEPTH = 256
/** A captured value larger than this is skipped, not kept (the wanted elements are UIDs and short strings). */
const MAX_CAPTURE = 64 * 1024

/** What a container is: the dataset itself, a sequence, one item, or encapsulated pixel data fragments. */
type FrameKind = 'dataset' | 'sequence' | 'item' | 'fragments'

interface Frame {
  kind: FrameKind
  /** Stream offset just past the container; Infinity for an undefined length (ends at its delimiter). */
  end: number
  explicitVr: boolean
  littleEndian: boolean
  /** The element that opened it (for messages). */
  tag: number
}

/** How a dataset ended: whole, or cut short (with what was open at the end). */
export type StreamEnd = {complete: true; length: number} | {complete: false; length: number; problem: string}

/** Options for ElementStream. */
export interface ElementStreamOptions {
  /** Top-level elements whose values to keep (raw bytes, see `values`); small values only. */
  capture?: readonly number[]
  /** Names the input in error messages. */
  source?: string
}

/**
 * A push reader of a dataset's element structure: feed it the dataset bytes as they arrive (any
 * chunk sizes), then call end(). It reads element headers only and skips values, so it costs the
 * same for a 40 KB and a 2 GB instance; it follows sequences and items of undefined length, items
 * of defined length inside them, and encapsulated pixel data, and checks that every element lies
 * inside its container. It keeps the raw value bytes of a few wanted top-level elements.
 *
 * push() throws DdrError INVALID_DICOM for bytes that cannot be a dataset in the encoding; end()
 * says whether the data stopped on a top-level element boundary with every container closed, or
 * inside an element, an item or a sequence (a dataset cut short).
 *
 * Defined-length sequences are skipped as values: the bytes a backend gets are its to judge, and a
 * damaged private sequence of known length does not stop a dataset from being stored.
 */
export class ElementStream {
  /** Raw value bytes of the captured top-level elements that were present. */
  readonly values = new Map<number, Buffer>()
  private readonly stack: Frame[]
  private readonly wanted: Set<number>
  /** Stream offset of the next byte push() will see. */
  private position = 0
  /** Value bytes still to skip (or capture) before the next header. */
  private skip = 0
  private capturing?: {tag: number; parts: Buffer[]}
  /** Bytes of a header that straddles two chunks. */
  private carry: Buffer | undefined
  /** The element whose value is being skipped (for messages). */
  private current = {tag: 0, offset: 0, length: 0}

  constructor(encoding: Pick<DatasetEncoding, 'explicitVr' | 'littleEndian'>, private readonly options: ElementStreamOptions = {}) {
    this.stack = [{kind: 'dataset', end: Number.POSITIVE_INFINITY, explicitVr: encoding.explicitVr, littleEndian: encoding.littleEndian, tag: 0}]
    this.wanted = new Set((options.capture ?? []).map((tag) => tag >>> 0))
  }

  /** Bytes seen so far. */
  get length(): number {
    return this.position
  }

  /** Feeds the next bytes of the dataset. */
  push(chunk: Buffer): void {
    let bytes = chunk
    let base = this.position
    if (this.carry !== undefined) {
      // A header straddles two chunks (rare: at most once per chunk): join them.
      bytes = Buffer.concat([this.carry, chunk])
      base -= this.carry.length
      this.carry = undefined
    }

    this.position = base + bytes.length
    const used = this.readHeaders(bytes, base)
    if (used < bytes.length) this.carry = Buffer.from(bytes.subarray(used))
  }

  /** The data ended: whether it ended on an element boundary with every container closed. */
  end(): StreamEnd {
    this.closeEndedFrames(this.position)
    const length = this.position
    if (this.skip > 0) {
      return {complete: false, length, problem: `the data ends inside the value of ${describeTag(this.current.tag)} (at byte ${this.current.offset}, ${this.skip} of its ${this.current.length} bytes missing)`}
    }

    if (this.carry !== undefined) return {complete: false, length, problem: `the data ends inside an element header at byte ${length - this.carry.length}`}
    const open = this.stack.at(-1)!
    if (open.kind !== 'dataset') {
      const what = open.kind === 'item' ? 'an item of' : open.kind === 'fragments' ? 'the fragments of' : 'the sequence'
      return {complete: false, length, problem: `the data ends inside ${what} ${describeTag(open.tag)}${open.end === Number.POSITIVE_INFINITY ? ' (no delimiter)' : ''}`}
    }

    return {complete: true, length}
  }

  private invalid(what: string, at: number): DdrError {
    return new DdrError('INVALID_DICOM', `${this.options.source ? `${this.options.source}: ` : ''}malformed dataset: ${what} at dataset byte ${at}`, {
      hint: 'the sender wrote bytes that do not follow the transfer syntax it declared',
    })
  }

  /** Pops the defined-length containers that end at `offset`; an element that ran past one is an error. */
  private closeEndedFrames(offset: number): void {
    for (let frame = this.stack.at(-1)!; frame.end <= offset; frame = this.stack.at(-1)!) {
      if (frame.end < offset) throw this.invalid(`an element runs past the end of the item or sequence ${describeTag(frame.tag)}`, frame.end)
      this.stack.pop()
    }
  }

  /**
   * Skips values and reads headers in `bytes` (which start at stream offset `base`). Returns how
   * many bytes it consumed: all of them, or up to a header that the bytes do not hold whole.
   */
  private readHeaders(bytes: Buffer, base: number): number {
    let at = 0
    for (;;) {
      if (this.skip > 0) {
        const n = Math.min(this.skip, bytes.length - at)
        if (this.capturing !== undefined && n > 0) this.capturing.parts.push(bytes.subarray(at, at + n))
        this.skip -= n
        at += n
        if (this.skip > 0) return at
        if (this.capturing !== undefined) {
          const parts = this.capturing.parts
          this.values.set(this.capturing.tag, Buffer.concat(parts))
          this.capturing = undefined
        }
      }

      if (at === bytes.length) return at
      const offset = base + at
      this.closeEndedFrames(offset)
      const frame = this.stack.at(-1)!
      const littleEndian = frame.littleEndian
      if (at + 8 > bytes.length) return at
      const group = littleEndian ? bytes.readUInt16LE(at) : bytes.readUInt16BE(at)
      const element = littleEndian ? bytes.readUInt16LE(at + 2) : bytes.readUInt16BE(at + 2)
      const tag = group * 0x10000 + element
      let vr = ''
      let length: number
      let headerLength = 8
      if (!frame.explicitVr || group === 0xfffe) {
        length = littleEndian ? bytes.readUInt32LE(at + 4) : bytes.readUInt32BE(at + 4)
      } else {
        const first = bytes[at + 4]
        const second = bytes[at + 5]
        if (first < 0x41 || first > 0x5a || second < 0x41 || second > 0x5a) {
          throw this.invalid(`${describeTag(tag)} has no valid VR (bytes 0x${first.toString(16)} 0x${second.toString(16)})`, offset)
        }

        vr = String.fromCharCode(first, second)
        if (SHORT_LENGTH_VRS.has(vr)) {
          length = littleEndian ? bytes.readUInt16LE(at + 6) : bytes.readUInt16BE(at + 6)
        } else {
          if (at + 12 > bytes.length) return at
          length = littleEndian ? bytes.readUInt32LE(at + 8) : bytes.readUInt32BE(at + 8)
          headerLength = 12
        }
      }

      at += headerLength
      const valueStart = offset + headerLength
      if (length !== UNDEFINED_LENGTH && valueStart + length > frame.end) {
        throw this.invalid(`${describeTag(tag)} (${length} bytes) runs past the end of the item or sequence ${describeTag(frame.tag)} it is in`, offset)
      }

      this.onHeader(frame, tag, vr, length, offset, valueStart)
    }
  }

  private onHeader(frame: Frame, tag: number, vr: string, length: number, offset: number, valueStart: number): void {
    const defined = length !== UNDEFINED_LENGTH
    switch (frame.kind) {
      case 'sequence': {
        if (tag === Tag.SequenceDelimitationItem) {
          if (frame.end !== Number.POSITIVE_INFINITY) throw this.invalid(`a sequence delimiter in ${describeTag(frame.tag)}, which has a defined length`, offset)
          this.stack.pop()
          return
        }

        if (tag !== Tag.Item) throw this.invalid(`expected an item or a sequence delimiter in ${describeTag(frame.tag)}, found ${describeTag(tag)}`, offset)
        this.open({kind: 'item', end: defined ? valueStart + length : Number.POSITIVE_INFINITY, explicitVr: frame.explicitVr, littleEndian: frame.littleEndian, tag: frame.tag}, offset)
        return
      }

      case 'fragments': {
        if (tag === Tag.SequenceDelimitationItem) {
          this.stack.pop()
          return
        }

        if (tag !== Tag.Item || !defined) throw this.invalid(`expected a fragment item or a sequence delimiter in ${describeTag(frame.tag)}, found ${describeTag(tag)}`, offset)
        this.skipValue(tag, offset, length, false)
        return
      }

      default: {
        if (tag === Tag.ItemDelimitationItem) {
          if (frame.kind !== 'item' || frame.end !== Number.POSITIVE_INFINITY) throw this.invalid('an item delimiter outside an item of undefined length', offset)
          this.stack.pop()
          return
        }

        if (tag === Tag.Item || tag === Tag.SequenceDelimitationItem) throw this.invalid(`${describeTag(tag)} outside a sequence`, offset)
        if (defined) {
          this.skipValue(tag, offset, length, frame.kind === 'dataset' && this.wanted.has(tag) && length <= MAX_CAPTURE)
          return
        }

        // Undefined length: a sequence, encapsulated pixel data, or (CP-246) a UN sequence whose
        // items are implicit VR little endian.
        if (vr === '' || vr === 'SQ' || vr === 'UN') {
          const implicitInside = vr === 'UN'
          const fragments = tag === Tag.PixelData && vr === ''
          this.open(
            {kind: fragments ? 'fragments' : 'sequence', end: Number.POSITIVE_INFINITY, explicitVr: implicitInside ? false : frame.explicitVr, littleEndian: implicitInside ? true : frame.littleEndian, tag},
            offset,
          )
          return
        }

        if (vr === 'OB' || vr === 'OW') {
          this.open({kind: 'fragments', end: Number.POSITIVE_INFINITY, explicitVr: frame.explicitVr, littleEndian: frame.littleEndian, tag}, offset)
          return
        }

        throw this.invalid(`${describeTag(tag)} (VR ${vr}) has an undefined length`, offset)
      }
    }
  }

  private open(frame: Frame, offset: number): void {
    if (this.stack.length > MAX_DEPTH) throw this.invalid(`sequences nested more than ${MAX_DEPTH} deep`, offset)
    this.stack.push(frame)
  }

  private skipValue(tag: number, offset: number, length: number, capture: boolean): void {
    this.current = {tag, offset, length}
    if (length === 0) {
      if (capture) this.values.set(tag, Buffer.alloc(0))
      return
    }

    this.skip = length
    if (capture) this.capturing = {tag, parts: []}
  }
}
