import {DdrError} from '../errors.js'
import {describeTag, Tag, tagGroup} from './tags.js'
import {MAX_UID_LENGTH} from './uids.js'
import {hasShortLength} from './vr.js'

/** Bytes of the Part 10 preamble, before "DICM". */
export const PREAMBLE_LENGTH = 128
/** Offset of the first meta element: preamble + "DICM". */
export const META_START = PREAMBLE_LENGTH + 4

/** ddr's implementation class UID, written into every file meta header it makes. */
export const DDR_IMPLEMENTATION_CLASS_UID = '2.25.301137085571375985515141120683090702359'
/** ddr's implementation version name (SH, at most 16 characters). */
export const DDR_IMPLEMENTATION_VERSION_NAME = 'DDR_0.1'

// A meta header larger than this is corrupt: it stops a streaming reader from waiting forever
// on a garbage length.
const MAX_META_LENGTH = 1024 * 1024
const DICM = Buffer.from('DICM', 'latin1')

/** One element of group 0002 as found in the file. */
export interface MetaElement {
  tag: number
  /** As written; "??" when the writer used implicit VR (not conformant, but seen). */
  vr: string
  /** Offset of the element's first byte in the buffer. */
  offset: number
  /** Value bytes (a view into the buffer read). */
  value: Buffer
}

/** What the file meta information (PS3.10 7.1) of a Part 10 file says. */
export interface MetaHeader {
  /** Offset of the first dataset byte: preamble, DICM and group 0002 come before it. */
  datasetOffset: number
  /** FileMetaInformationGroupLength (0002,0000), when present. */
  groupLength?: number
  transferSyntaxUid: string
  /** MediaStorageSOPClassUID (0002,0002); undefined when absent or empty. */
  mediaStorageSopClassUid?: string
  /** MediaStorageSOPInstanceUID (0002,0003); undefined when absent or empty. */
  mediaStorageSopInstanceUid?: string
  implementationClassUid?: string
  implementationVersionName?: string
  sourceApplicationEntityTitle?: string
  elements: MetaElement[]
}

/** Options for reading a meta header. */
export interface ReadMetaOptions {
  /** Names the input in error messages (a file path, "association from AE X"). */
  source?: string
}

/** Whether the buffer starts like a Part 10 file: 128 bytes, then "DICM". */
export function hasPart10Prefix(buffer: Buffer): boolean {
  return buffer.length >= META_START && buffer.subarray(PREAMBLE_LENGTH, META_START).equals(DICM)
}

/**
 * Reads the file meta information of a Part 10 file (or of a prefix of one). Throws DdrError
 * INVALID_DICOM when the buffer is not a Part 10 file or ends inside the meta header.
 */
export function readMetaHeader(buffer: Buffer, options: ReadMetaOptions = {}): MetaHeader {
  const meta = parseMeta(buffer, true, options.source)
  if (!meta) throw new Error('unreachable: a final meta parse returns or throws')
  return meta
}

/**
 * For streaming: the meta header when the buffer holds all of it, undefined when more bytes are
 * needed first. Throws DdrError INVALID_DICOM as soon as the bytes show it is not DICOM.
 * The meta header ends at the first element outside group 0002, so a file with an empty dataset
 * is only recognised by readMetaHeader (which treats the end of the buffer as the end).
 */
export function tryReadMetaHeader(buffer: Buffer, options: ReadMetaOptions = {}): MetaHeader | undefined {
  return parseMeta(buffer, false, options.source)
}

function invalid(source: string | undefined, what: string, hint?: string): DdrError {
  return new DdrError('INVALID_DICOM', source ? `${source}: ${what}` : what, {
    hint: hint ?? 'check that the input is a DICOM Part 10 file (dcmdump shows what is wrong with it)',
  })
}

function isUpperLetter(byte: number): boolean {
  return byte >= 0x41 && byte <= 0x5a
}

function parseMeta(buffer: Buffer, final: boolean, source: string | undefined): MetaHeader | undefined {
  if (buffer.length < META_START) {
    if (!final) return undefined
    throw invalid(source, `not a DICOM Part 10 file: ${buffer.length} bytes, too short for the 128-byte preamble and "DICM"`)
  }
  if (!hasPart10Prefix(buffer)) {
    throw invalid(source, 'not a DICOM Part 10 file: no "DICM" prefix at byte 128')
  }

  const elements: MetaElement[] = []
  let position = META_START
  const truncated = (detail: string): DdrError =>
    invalid(source, `truncated file meta information: the data ends inside ${detail} at byte ${position} (${buffer.length} bytes available)`)

  for (;;) {
    if (position + 4 > buffer.length) {
      // Exactly at the end: the meta header may be all there is (a final read decides).
      if (position === buffer.length && final && elements.length > 0) break
      if (!final) return undefined
      throw truncated('an element tag')
    }
    const group = buffer.readUInt16LE(position)
    if (group !== 0x0002) break
    const tag = ((group << 16) | buffer.readUInt16LE(position + 2)) >>> 0

    if (position + 8 > buffer.length) {
      if (!final) return undefined
      throw truncated(`the header of ${describeTag(tag)}`)
    }
    let vr: string
    let length: number
    let headerLength: number
    if (isUpperLetter(buffer[position + 4]) && isUpperLetter(buffer[position + 5])) {
      vr = buffer.toString('latin1', position + 4, position + 6)
      if (!hasShortLength(vr)) {
        if (position + 12 > buffer.length) {
          if (!final) return undefined
          throw truncated(`the header of ${describeTag(tag)}`)
        }
        length = buffer.readUInt32LE(position + 8)
        headerLength = 12
      } else {
        length = buffer.readUInt16LE(position + 6)
        headerLength = 8
      }
    } else {
      // Some writers put the meta group in implicit VR: tolerate it, it is unambiguous here.
      vr = '??'
      length = buffer.readUInt32LE(position + 4)
      headerLength = 8
    }
    if (length === 0xffffffff) {
      throw invalid(source, `invalid file meta information: ${describeTag(tag)} at byte ${position} has an undefined length`)
    }
    const end = position + headerLength + length
    if (end > META_START + MAX_META_LENGTH) {
      throw invalid(source, `invalid file meta information: ${describeTag(tag)} at byte ${position} claims ${length} bytes`)
    }
    if (end > buffer.length) {
      if (!final) return undefined
      throw truncated(`the value of ${describeTag(tag)}`)
    }
    elements.push({tag, vr, offset: position, value: buffer.subarray(position + headerLength, end)})
    position = end
  }

  const text = (tag: number): string | undefined => {
    const element = elements.find((e) => e.tag === tag)
    if (!element) return undefined
    const value = element.value.toString('latin1').replace(/[\0 ]+$/, '').replace(/^ +/, '')
    return value === '' ? undefined : value
  }
  const groupLengthElement = elements.find((e) => e.tag === Tag.FileMetaInformationGroupLength)
  const transferSyntaxUid = text(Tag.TransferSyntaxUID)
  if (!transferSyntaxUid) {
    throw invalid(source, `invalid file meta information: no ${describeTag(Tag.TransferSyntaxUID)}, so the dataset cannot be decoded`)
  }
  return {
    datasetOffset: position,
    groupLength: groupLengthElement && groupLengthElement.value.length === 4 ? groupLengthElement.value.readUInt32LE(0) : undefined,
    transferSyntaxUid,
    mediaStorageSopClassUid: text(Tag.MediaStorageSOPClassUID),
    mediaStorageSopInstanceUid: text(Tag.MediaStorageSOPInstanceUID),
    implementationClassUid: text(Tag.ImplementationClassUID),
    implementationVersionName: text(Tag.ImplementationVersionName),
    sourceApplicationEntityTitle: text(Tag.SourceApplicationEntityTitle),
    elements,
  }
}

/** What goes into a file meta header that ddr writes. */
export interface BuildMetaHeaderOptions {
  sopClassUid: string
  sopInstanceUid: string
  /** The transfer syntax the dataset bytes that follow are encoded in. */
  transferSyntaxUid: string
  /** The AE title that sent the dataset, written as SourceApplicationEntityTitle (0002,0016). */
  sourceAeTitle?: string
  implementationClassUid?: string
  implementationVersionName?: string
}

/** UIDs already checked (SOP classes, transfer syntaxes: the same few for every instance), bounded. */
const checkedUids = new Map<string, string>()

function checkUid(field: string, tag: number, value: string): string {
  const known = checkedUids.get(value)
  if (known !== undefined) return known
  const uid = value.replace(/[\0 ]+$/, '')
  // Lenient on purpose: a router stores what it received; only what cannot be written is refused.
  if (uid.length === 0 || uid.length > MAX_UID_LENGTH || !/^[\x21-\x7e]+$/.test(uid) || uid.includes('\\')) {
    throw new DdrError('INVALID_DICOM', `cannot write ${field} as ${describeTag(tag)}: ${JSON.stringify(value)} is not a UID (1 to 64 characters, digits and dots)`)
  }
  return uid
}

/** checkUid, remembering the answer: for the UIDs that repeat (not an instance's own UID). */
function checkCommonUid(field: string, tag: number, value: string): string {
  const uid = checkUid(field, tag, value)
  if (checkedUids.size < 256) checkedUids.set(value, uid)
  return uid
}

/**
 * Builds the start of a Part 10 file: a zero preamble, "DICM" and group 0002 in explicit VR
 * little endian with a correct group length. `Buffer.concat([buildMetaHeader(...), dataset])`
 * is a complete file when the dataset bytes are in the given transfer syntax.
 */
export function buildMetaHeader(options: BuildMetaHeaderOptions): Buffer {
  const sopClassUid = checkCommonUid('the SOP class UID', Tag.MediaStorageSOPClassUID, options.sopClassUid)
  const sopInstanceUid = checkUid('the SOP instance UID', Tag.MediaStorageSOPInstanceUID, options.sopInstanceUid)
  const transferSyntaxUid = checkCommonUid('the transfer syntax UID', Tag.TransferSyntaxUID, options.transferSyntaxUid)
  const implementationClassUid = checkCommonUid('the implementation class UID', Tag.ImplementationClassUID, options.implementationClassUid ?? DDR_IMPLEMENTATION_CLASS_UID)
  const versionName = options.implementationVersionName ?? DDR_IMPLEMENTATION_VERSION_NAME
  if (versionName.length > 16 || !/^[\x20-\x7e]*$/.test(versionName) || versionName.includes('\\')) {
    throw new DdrError('INVALID_DICOM', `cannot write ${describeTag(Tag.ImplementationVersionName)}: ${JSON.stringify(versionName)} is longer than 16 characters or not printable ASCII`)
  }

  let aeTitle: string | undefined
  if (options.sourceAeTitle !== undefined) {
    aeTitle = options.sourceAeTitle.trim()
    if (aeTitle.length === 0 || aeTitle.length > 16 || !/^[\x20-\x7e]+$/.test(aeTitle) || aeTitle.includes('\\')) {
      throw new DdrError('INVALID_DICOM', `cannot write ${describeTag(Tag.SourceApplicationEntityTitle)}: ${JSON.stringify(options.sourceAeTitle)} is not an AE title (1 to 16 printable characters, no backslash)`)
    }
  }

  // Written into one buffer (every received instance gets one): the elements in tag order, text
  // padded to even length (UI with NUL, the others with a space), after the group length.
  const texts: Array<[number, string, string]> = [
    [Tag.MediaStorageSOPClassUID, 'UI', sopClassUid],
    [Tag.MediaStorageSOPInstanceUID, 'UI', sopInstanceUid],
    [Tag.TransferSyntaxUID, 'UI', transferSyntaxUid],
    [Tag.ImplementationClassUID, 'UI', implementationClassUid],
    [Tag.ImplementationVersionName, 'SH', versionName],
  ]
  if (aeTitle !== undefined) texts.push([Tag.SourceApplicationEntityTitle, 'AE', aeTitle])
  let groupLength = 12 + 2 // FileMetaInformationVersion: OB, long form, 2 bytes
  for (const [, , text] of texts) groupLength += 8 + text.length + (text.length % 2)
  const out = Buffer.allocUnsafe(META_START + 12 + groupLength)
  out.fill(0, 0, PREAMBLE_LENGTH)
  DICM.copy(out, PREAMBLE_LENGTH)
  let at = writeElementHeader(out, META_START, Tag.FileMetaInformationGroupLength, 'UL', 4)
  out.writeUInt32LE(groupLength, at)
  at = writeElementHeader(out, at + 4, Tag.FileMetaInformationVersion, 'OB', 2)
  out[at] = 0x00
  out[at + 1] = 0x01
  at += 2
  for (const [tag, vr, text] of texts) {
    const length = text.length + (text.length % 2)
    at = writeElementHeader(out, at, tag, vr, length)
    out.write(text, at, 'latin1')
    if (length > text.length) out[at + text.length] = vr === 'UI' ? 0x00 : 0x20
    at += length
  }

  return out
}

/** An explicit VR little endian element header at `at`; returns where its value starts. */
function writeElementHeader(out: Buffer, at: number, tag: number, vr: string, length: number): number {
  out.writeUInt16LE(tagGroup(tag), at)
  out.writeUInt16LE(tag & 0xffff, at + 2)
  out.write(vr, at + 4, 'latin1')
  if (hasShortLength(vr)) {
    out.writeUInt16LE(length, at + 6)
    return at + 8
  }

  out.writeUInt16LE(0, at + 6)
  out.writeUInt32LE(length, at + 8)
  return at + 12
}

