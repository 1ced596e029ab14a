import {decodeText} from './dataset-reader.js'
import {dictionaryEntry, isPrivateCreator} from './dictionary.js'
import type {MetaElement} from './part10.js'
import {formatTag, Tag, tagElement, tagGroup} from './tags.js'
import {sopClassName, transferSyntaxInfo} from './uids.js'
import {CHARSET_VRS, KEEP_LEADING_SPACE_VRS, NUMBER_VR_SIZES, TEXT_VRS} from './vr.js'
import {type DatasetElement, UNDEFINED_LENGTH} from './walker.js'

// Bulk VRs are shown as a preview of their first values (dcmdump does the same).
const BULK_SIZES: Record<string, number> = {OB: 1, UN: 1, OW: 2, OL: 4, OF: 4, OD: 8, OV: 8}
const MAX_NUMBERS = 32
const MAX_BULK_VALUES = 10

/** One element of a dump: what `ddr inspect --tags --json` prints. */
export interface DumpElement {
  /** `(gggg,eeee)` */
  tag: string
  vr: string
  /** Value length as written; null for an undefined length. */
  length: number | null
  /** Dictionary keyword, `PrivateCreator`, `Private "<creator>" xx`, or `Unknown`. */
  name: string
  /**
   * The value as text: strings decoded in the dataset's character set, numbers joined by `\`
   * (at most 32), bulk data as a preview of its first values in hex. Absent for sequences and
   * encapsulated pixel data.
   */
  value?: string
  /** What a UID stands for (a SOP class or transfer syntax name), when ddr knows it. */
  meaning?: string
  items?: DumpItem[]
  /** Encapsulated pixel data: the length of the basic offset table, then of each fragment. */
  fragments?: number[]
}

/** One item of a sequence in a dump. */
export interface DumpItem {
  length: number | null
  elements: DumpElement[]
}

function trimText(text: string, vr: string): string {
  let trimmed = text.replace(/[\0 ]+$/, '')
  if (!KEEP_LEADING_SPACE_VRS.has(vr)) trimmed = trimmed.replace(/^ +/, '')
  return trimmed
}

function readNumber(value: Buffer, at: number, vr: string, littleEndian: boolean): string {
  switch (vr) {
    case 'US':
      return String(littleEndian ? value.readUInt16LE(at) : value.readUInt16BE(at))
    case 'SS':
      return String(littleEndian ? value.readInt16LE(at) : value.readInt16BE(at))
    case 'UL':
      return String(littleEndian ? value.readUInt32LE(at) : value.readUInt32BE(at))
    case 'SL':
      return String(littleEndian ? value.readInt32LE(at) : value.readInt32BE(at))
    case 'FL':
      return String(littleEndian ? value.readFloatLE(at) : value.readFloatBE(at))
    case 'FD':
      return String(littleEndian ? value.readDoubleLE(at) : value.readDoubleBE(at))
    case 'SV':
      return String(littleEndian ? value.readBigInt64LE(at) : value.readBigInt64BE(at))
    case 'UV':
      return String(littleEndian ? value.readBigUInt64LE(at) : value.readBigUInt64BE(at))
    case 'AT': {
      const group = littleEndian ? value.readUInt16LE(at) : value.readUInt16BE(at)
      const element = littleEndian ? value.readUInt16LE(at + 2) : value.readUInt16BE(at + 2)
      return formatTag(group * 0x10000 + element)
    }
    default:
      return ''
  }
}

function listValues(value: Buffer, size: number, max: number, read: (at: number) => string): string {
  const count = Math.floor(value.length / size)
  const shown: string[] = []
  for (let index = 0; index < Math.min(count, max); index++) shown.push(read(index * size))
  const leftover = value.length % size
  const more = count > max ? `\\... (${count} values)` : leftover > 0 ? `\\(+${leftover} bytes)` : ''
  return shown.join('\\') + more
}

function bulkPreview(value: Buffer, vr: string, littleEndian: boolean): string {
  const size = BULK_SIZES[vr] ?? 1
  return listValues(value, size, MAX_BULK_VALUES, (at) => {
    switch (vr) {
      case 'OW':
        return (littleEndian ? value.readUInt16LE(at) : value.readUInt16BE(at)).toString(16).padStart(4, '0')
      case 'OL':
        return (littleEndian ? value.readUInt32LE(at) : value.readUInt32BE(at)).toString(16).padStart(8, '0')
      case 'OF':
        return String(littleEndian ? value.readFloatLE(at) : value.readFloatBE(at))
      case 'OD':
        return String(littleEndian ? value.readDoubleLE(at) : value.readDoubleBE(at))
      case 'OV':
        return (littleEndian ? value.readBigUInt64LE(at) : value.readBigUInt64BE(at)).toString(16).padStart(16, '0')
      default:
        return value[at].toString(16).padStart(2, '0')
    }
  })
}

/**
 * The value of a primitive element as text (see DumpElement.value): the full string for text VRs,
 * numbers joined by `\`, a hex preview for bulk data. Undefined for sequences and fragments.
 */
export function elementValue(element: Pick<DatasetElement, 'vr' | 'value' | 'littleEndian'>, charset?: string): string | undefined {
  const {value, vr, littleEndian} = element
  if (value === undefined) return undefined
  if (TEXT_VRS.has(vr)) return trimText(CHARSET_VRS.has(vr) ? decodeText(value, charset) : value.toString('latin1'), vr)
  const size = NUMBER_VR_SIZES[vr]
  if (size !== undefined) return listValues(value, size, MAX_NUMBERS, (at) => readNumber(value, at, vr, littleEndian))
  return bulkPreview(value, vr, littleEndian)
}

/** What a UID stands for, when ddr knows it. */
export function uidMeaning(uid: string): string | undefined {
  return sopClassName(uid) ?? transferSyntaxInfo(uid)?.name
}

function privateName(tag: number, creators: Map<number, string>): string {
  const block = (tagElement(tag) >> 8) & 0xff
  const creator = creators.get(tagGroup(tag) * 0x100 + block)
  const offset = (tagElement(tag) & 0xff).toString(16).toUpperCase().padStart(2, '0')
  return creator === undefined ? `Private (no creator) ${offset}` : `Private "${creator}" ${offset}`
}

/** Options for dumpDataset. */
export interface DumpOptions {
  /** SpecificCharacterSet of the enclosing dataset (items without their own inherit it). */
  charset?: string
}

/**
 * Turns walked elements into the structured dump `ddr inspect --tags` prints: names from the data
 * dictionary (call loadDictionary() first for the full one), decoded values, items and fragments.
 */
export function dumpDataset(elements: DatasetElement[], options: DumpOptions = {}): DumpElement[] {
  let charset = options.charset
  const creators = new Map<number, string>()
  return elements.map((element) => {
    const {tag, vr} = element
    const value = elementValue(element, charset)
    if (tag === Tag.SpecificCharacterSet && value !== undefined) charset = value
    if (isPrivateCreator(tag) && value !== undefined) creators.set(tagGroup(tag) * 0x100 + tagElement(tag), value)
    const name = (tagGroup(tag) & 1) === 1 && !isPrivateCreator(tag) && tagElement(tag) !== 0 ? privateName(tag, creators) : (dictionaryEntry(tag)?.name ?? 'Unknown')
    const dumped: DumpElement = {tag: formatTag(tag), vr, length: element.length === UNDEFINED_LENGTH ? null : element.length, name}
    if (value !== undefined) dumped.value = value
    if (vr === 'UI' && value !== undefined) {
      const meaning = uidMeaning(value)
      if (meaning !== undefined) dumped.meaning = meaning
    }
    if (element.items) {
      const itemCharset = charset
      dumped.items = element.items.map((item) => ({
        length: item.length === UNDEFINED_LENGTH ? null : item.length,
        elements: dumpDataset(item.elements, {charset: itemCharset}),
      }))
    }
    if (element.fragments) dumped.fragments = element.fragments.map((fragment) => fragment.length)
    return dumped
  })
}

/** The file meta information (group 0002) as dump elements. */
export function dumpMetaHeader(elements: MetaElement[]): DumpElement[] {
  return elements.map((element) => {
    const vr = element.vr === '??' ? (dictionaryEntry(element.tag)?.vr ?? 'UN') : element.vr
    const value = elementValue({vr, value: element.value, littleEndian: true})
    const dumped: DumpElement = {tag: formatTag(element.tag), vr, length: element.value.length, name: dictionaryEntry(element.tag)?.name ?? 'Unknown'}
    if (value !== undefined) dumped.value = value
    if (vr === 'UI' && value !== undefined && uidMeaning(value) !== undefined) dumped.meaning = uidMeaning(value)
    return dumped
  })
}

/** One printed line of a dump, for a table. */
export interface DumpLine {
  depth: number
  tag: string
  vr: string
  length: string
  value: string
  name: string
}

const MAX_SHOWN_VALUE = 72

function shown(value: string): string {
  // eslint-disable-next-line no-control-regex
  const oneLine = value.replace(/\r\n|\r|\n/g, '\\n').replace(/[\x00-\x1f]/g, '.')
  return oneLine.length > MAX_SHOWN_VALUE ? `${oneLine.slice(0, MAX_SHOWN_VALUE - 3)}...` : oneLine
}

/**
 * Flattens a dump into lines: items and fragments indented under their element, delimiters
 * shown where the file has them (undefined lengths), as dcmdump does.
 */
export function dumpLines(elements: DumpElement[], depth = 0): DumpLine[] {
  const lines: DumpLine[] = []
  const lengthText = (length: number | null) => (length === null ? 'u/l' : String(length))
  for (const element of elements) {
    let value = element.value === undefined ? '' : shown(element.value)
    if (element.meaning) value = `${value} (${element.meaning})`
    if (element.items) value = `(sequence, ${element.items.length} item${element.items.length === 1 ? '' : 's'})`
    if (element.fragments) value = `(encapsulated, ${Math.max(0, element.fragments.length - 1)} fragment${element.fragments.length === 2 ? '' : 's'} + offset table)`
    lines.push({depth, tag: element.tag, vr: element.vr, length: lengthText(element.length), value, name: element.name})
    element.items?.forEach((item, index) => {
      lines.push({depth: depth + 1, tag: formatTag(Tag.Item), vr: '', length: lengthText(item.length), value: `(item ${index + 1}, ${item.elements.length} element${item.elements.length === 1 ? '' : 's'})`, name: 'Item'})
      lines.push(...dumpLines(item.elements, depth + 2))
      if (item.length === null) lines.push({depth: depth + 1, tag: formatTag(Tag.ItemDelimitationItem), vr: '', length: '0', value: '', name: 'ItemDelimitationItem'})
    })
    element.fragments?.forEach((length, index) => {
      lines.push({depth: depth + 1, tag: formatTag(Tag.Item), vr: '', length: String(length), value: index === 0 ? '(basic offset table)' : `(fragment ${index})`, name: 'Item'})
    })
    if (element.length === null) lines.push({depth, tag: formatTag(Tag.SequenceDelimitationItem), vr: '', length: '0', value: '', name: 'SequenceDelimitationItem'})
  }
  return lines
}
