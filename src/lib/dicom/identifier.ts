/**
 * Query/retrieve identifiers (PS3.4 C.4): the small, flat datasets that C-FIND, C-MOVE and C-GET
 * carry. Read with the one element reader, kept as tag -> (VR, text), written back in implicit or
 * explicit VR little endian. Sequences in an identifier (rare in queries) are kept as raw element
 * bytes when the identifier is written in the syntax it was read in, and dropped otherwise.
 */
import {DdrError} from '../errors.js'
import {dictionaryEntry} from './dictionary.js'
import {decodeElementValue} from './dataset-reader.js'
import {Tag, TagVr} from './tags.js'
import {datasetEncoding} from './uids.js'
import {CHARSET_VRS, SHORT_LENGTH_VRS} from './vr.js'
import {walkDataset} from './walker.js'

/** Query/Retrieve levels (0008,0052). */
export type QueryLevel = 'PATIENT' | 'STUDY' | 'SERIES' | 'IMAGE'

export const QUERY_LEVELS: readonly QueryLevel[] = ['PATIENT', 'STUDY', 'SERIES', 'IMAGE']

/** The unique key of each level (PS3.4 C.2.2.1.1). */
export const LEVEL_KEY: Readonly<Record<QueryLevel, number>> = {
  PATIENT: Tag.PatientID,
  STUDY: Tag.StudyInstanceUID,
  SERIES: Tag.SeriesInstanceUID,
  IMAGE: Tag.SOPInstanceUID,
}

interface IdentifierElement {
  vr: string
  /** The value as text (numbers in decimal, several values joined by "\"). */
  text: string
  /** A sequence's bytes as read (with their header), and the syntax they are in. */
  raw?: {bytes: Buffer; explicitVr: boolean}
}

const NUMERIC_WRITERS: Record<string, {size: number; write: (b: Buffer, v: number, at: number) => void}> = {
  US: {size: 2, write: (b, v, at) => b.writeUInt16LE(v, at)},
  SS: {size: 2, write: (b, v, at) => b.writeInt16LE(v, at)},
  UL: {size: 4, write: (b, v, at) => b.writeUInt32LE(v, at)},
  SL: {size: 4, write: (b, v, at) => b.writeInt32LE(v, at)},
  FL: {size: 4, write: (b, v, at) => b.writeFloatLE(v, at)},
  FD: {size: 8, write: (b, v, at) => b.writeDoubleLE(v, at)},
}

function vrOf(tag: number): string {
  return dictionaryEntry(tag)?.vr || TagVr[tag] || 'LO'
}

/** A flat identifier: elements by tag, written in ascending tag order. */
export class Identifier {
  private readonly elements = new Map<number, IdentifierElement>()

  /** Reads an identifier dataset; throws DdrError INVALID_DICOM naming `source` when it does not parse. */
  static decode(bytes: Buffer, transferSyntaxUid: string, source = 'identifier'): Identifier {
    const encoding = datasetEncoding(transferSyntaxUid)
    if (encoding.deflated || !encoding.littleEndian) throw new DdrError('INVALID_DICOM', `${source}: identifiers must be little endian and not deflated (got ${transferSyntaxUid})`)
    const identifier = new Identifier()
    const elements = walkDataset(bytes, {explicitVr: encoding.explicitVr, littleEndian: true, source, deep: false})
    const charset = elements.find((element) => element.tag === Tag.SpecificCharacterSet)?.value?.toString('latin1').trim()
    for (const element of elements) {
      const vr = element.vrInData ? element.vr : vrOf(element.tag)
      if (element.tag === 0 || (element.tag >>> 16) === 0x0002) continue
      if (vr === 'SQ' || element.value === undefined) {
        identifier.elements.set(element.tag, {vr: 'SQ', text: '', raw: {bytes: bytes.subarray(element.offset, element.end), explicitVr: encoding.explicitVr}})
        continue
      }

      const text = decodeElementValue(element.value, element.tag, vr, true, charset) ?? ''
      identifier.elements.set(element.tag, {vr, text})
    }

    return identifier
  }

  /** An identifier from text values (tag -> value); VRs from the dictionary. */
  static of(values: Iterable<[number, string]>): Identifier {
    const identifier = new Identifier()
    for (const [tag, text] of values) identifier.set(tag, text)
    return identifier
  }

  get size(): number {
    return this.elements.size
  }

  has(tag: number): boolean {
    return this.elements.has(tag)
  }

  /** The value as text; undefined when the element is absent (present and empty gives ""). */
  get(tag: number): string | undefined {
    return this.elements.get(tag)?.text
  }

  /** The values of a multi-valued element ("a\b" -> ["a", "b"]); empty for absent or empty. */
  list(tag: number): string[] {
    const text = this.get(tag)
    return text === undefined || text === '' ? [] : text.split('\\').map((v) => v.trim())
  }

  /** The element's VR (from the data it was read from, else the dictionary); undefined when absent. */
  vr(tag: number): string | undefined {
    return this.elements.get(tag)?.vr
  }

  set(tag: number, text: string, vr?: string): this {
    this.elements.set(tag, {vr: vr ?? this.elements.get(tag)?.vr ?? vrOf(tag), text})
    return this
  }

  delete(tag: number): this {
    this.elements.delete(tag)
    return this
  }

  tags(): number[] {
    return [...this.elements.keys()].sort((a, b) => a - b)
  }

  clone(): Identifier {
    const copy = new Identifier()
    for (const [tag, element] of this.elements) copy.elements.set(tag, {...element})
    return copy
  }

  /** The Query/Retrieve level, upper-cased; undefined when absent or unknown. */
  level(): QueryLevel | undefined {
    const level = this.get(Tag.QueryRetrieveLevel)?.toUpperCase()
    return QUERY_LEVELS.includes(level as QueryLevel) ? (level as QueryLevel) : undefined
  }

  /** Text values as a plain object keyed by tag (ggggeeee), for logs and --json. */
  toJSON(): Record<string, string> {
    const out: Record<string, string> = {}
    for (const tag of this.tags()) out[tag.toString(16).padStart(8, '0').toUpperCase()] = this.get(tag) ?? ''
    return out
  }

  /** Writes the identifier in implicit or explicit VR little endian (sequences only in the syntax they came in). */
  encode(transferSyntaxUid: string): Buffer {
    const {explicitVr} = datasetEncoding(transferSyntaxUid)
    const utf8 = (this.get(Tag.SpecificCharacterSet) ?? '').includes('ISO_IR 192')
    const parts: Buffer[] = []
    for (const tag of this.tags()) {
      const element = this.elements.get(tag)!
      if (element.raw !== undefined) {
        if (element.raw.explicitVr === explicitVr) parts.push(element.raw.bytes)
        continue
      }

      const value = encodeValue(element.vr, element.text, utf8)
      parts.push(elementHeader(tag, element.vr, value.length, explicitVr), value)
    }

    return Buffer.concat(parts)
  }
}

function encodeValue(vr: string, text: string, utf8: boolean): Buffer {
  const writer = NUMERIC_WRITERS[vr]
  if (writer !== undefined) {
    const values = text === '' ? [] : text.split('\\').map(Number)
    const buffer = Buffer.alloc(values.length * writer.size)
    for (const [index, value] of values.entries()) writer.write(buffer, value, index * writer.size)
    return buffer
  }

  let bytes = Buffer.from(text, utf8 && CHARSET_VRS.has(vr) ? 'utf8' : 'latin1')
  if (bytes.length % 2 === 1) bytes = Buffer.concat([bytes, Buffer.from([vr === 'UI' ? 0 : 0x20])])
  return bytes
}

function elementHeader(tag: number, vr: string, length: number, explicitVr: boolean): Buffer {
  if (!explicitVr) {
    const header = Buffer.alloc(8)
    header.writeUInt16LE(tag >>> 16, 0)
    header.writeUInt16LE(tag & 0xffff, 2)
    header.writeUInt32LE(length, 4)
    return header
  }

  if (SHORT_LENGTH_VRS.has(vr)) {
    const header = Buffer.alloc(8)
    header.writeUInt16LE(tag >>> 16, 0)
    header.writeUInt16LE(tag & 0xffff, 2)
    header.write(vr, 4, 'latin1')
    header.writeUInt16LE(length, 6)
    return header
  }

  const header = Buffer.alloc(12)
  header.writeUInt16LE(tag >>> 16, 0)
  header.writeUInt16LE(tag & 0xffff, 2)
  header.write(vr.length === 2 ? vr : 'UN', 4, 'latin1')
  header.writeUInt32LE(length, 8)
  return header
}
