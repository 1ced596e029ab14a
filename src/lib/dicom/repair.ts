import {deflateRawSync} from 'node:zlib'

import {isDdrError} from '../errors.js'
import {elementValue} from './dump.js'
import {hasPart10Prefix, META_START, type MetaHeader} from './part10.js'
import {describeTag, formatTag, Tag, tagGroup, tagName} from './tags.js'
import {describeSopClass, isValidUid, STORAGE_SOP_CLASS_ROOT} from './uids.js'
import {type DatasetElement, openPart10, type Part10Dataset, walkPart10} from './walker.js'

// Enhanced (multi-frame functional group) IODs carry this sequence; classic IODs do not.
const SHARED_FUNCTIONAL_GROUPS_SEQUENCE = 0x52009229
const MEDIA_STORAGE_DIRECTORY_STORAGE = '1.2.840.10008.1.3.10'

const storage = (suffix: string): string => `${STORAGE_SOP_CLASS_ROOT}.${suffix}`

/** Image attributes that pick between the storage classes of one modality. */
export interface ImageAttributes {
  numberOfFrames?: number
  samplesPerPixel?: number
  bitsAllocated?: number
  /** PresentationIntentType (0008,0068): FOR PRESENTATION or FOR PROCESSING. */
  presentationIntentType?: string
  /** The dataset has SharedFunctionalGroupsSequence (5200,9229): an enhanced multi-frame IOD. */
  enhanced?: boolean
}

interface ModalityRule {
  /** The storage class to infer; undefined when the modality alone is ambiguous (SR, PR, ECG...). */
  infer?: (attributes: ImageAttributes) => string
  /** Storage classes (suffixes under 1.2.840.10008.5.1.4.1.1) a file of this modality may have. */
  compatible: string[]
}

const forProcessing = (attributes: ImageAttributes) => attributes.presentationIntentType?.toUpperCase() === 'FOR PROCESSING'
const multiFrame = (attributes: ImageAttributes) => (attributes.numberOfFrames ?? 1) > 1

// Secondary Capture: the classic IOD is single-frame; multi-frame SC has one class per pixel kind.
function secondaryCapture(attributes: ImageAttributes): string {
  if (!multiFrame(attributes)) return storage('7')
  if (attributes.bitsAllocated === 1) return storage('7.1')
  if ((attributes.samplesPerPixel ?? 1) === 3) return storage('7.4')
  return attributes.bitsAllocated !== undefined && attributes.bitsAllocated > 8 ? storage('7.3') : storage('7.2')
}

/**
 * Modality (0008,0060) → storage SOP class. The first class of `compatible` is the classic one;
 * image attributes choose the variant (multi-frame, enhanced, for processing).
 */
const modalityRules: Record<string, ModalityRule> = {
  CT: {infer: (a) => storage(a.enhanced ? '2.1' : '2'), compatible: ['2', '2.1', '2.2']},
  MR: {infer: (a) => storage(a.enhanced ? '4.1' : '4'), compatible: ['4', '4.1', '4.2', '4.3', '4.4']},
  US: {infer: (a) => storage(multiFrame(a) ? '3.1' : '6.1'), compatible: ['6.1', '3.1', '6.2', '6', '3']},
  CR: {infer: () => storage('1'), compatible: ['1']},
  DX: {infer: (a) => storage(forProcessing(a) ? '1.1.1' : '1.1'), compatible: ['1.1', '1.1.1']},
  MG: {infer: (a) => storage(forProcessing(a) ? '1.2.1' : '1.2'), compatible: ['1.2', '1.2.1', '13.1.3', '13.1.4', '13.1.5']},
  IO: {infer: (a) => storage(forProcessing(a) ? '1.3.1' : '1.3'), compatible: ['1.3', '1.3.1']},
  NM: {infer: () => storage('20'), compatible: ['20', '5']},
  PT: {infer: (a) => storage(a.enhanced ? '130' : '128'), compatible: ['128', '128.1', '130']},
  XA: {infer: (a) => storage(a.enhanced ? '12.1.1' : '12.1'), compatible: ['12.1', '12.1.1', '12.3', '13.1.1']},
  RF: {infer: (a) => storage(a.enhanced ? '12.2.1' : '12.2'), compatible: ['12.2', '12.2.1']},
  OT: {infer: secondaryCapture, compatible: ['7', '7.1', '7.2', '7.3', '7.4']},
  RTIMAGE: {infer: () => storage('481.1'), compatible: ['481.1', '481.23', '481.24']},
  RTDOSE: {infer: () => storage('481.2'), compatible: ['481.2']},
  RTSTRUCT: {infer: () => storage('481.3'), compatible: ['481.3']},
  RTPLAN: {infer: () => storage('481.5'), compatible: ['481.5', '481.8']},
  SEG: {infer: () => storage('66.4'), compatible: ['66.4', '66.5', '66.7', '66.8']},
  KO: {infer: () => storage('88.59'), compatible: ['88.59']},
  SR: {compatible: ['88.11', '88.22', '88.33', '88.34', '88.35', '88.40', '88.50', '88.65', '88.67', '88.68', '88.69', '88.70', '88.71', '88.72', '88.73', '88.74', '88.75', '88.76']},
  ECG: {compatible: ['9.1.1', '9.1.2', '9.1.3', '9.1.4']},
  PR: {compatible: ['11.1', '11.2', '11.3', '11.4', '11.5', '11.6', '11.7', '11.8', '11.9', '11.10', '11.11', '11.12']},
  DOC: {compatible: ['104.1', '104.2', '104.3', '104.4', '104.5']},
}

/** Modalities whose storage class ddr can infer from Modality and image attributes alone. */
export const inferableModalities: readonly string[] = Object.entries(modalityRules)
  .filter(([, rule]) => rule.infer)
  .map(([modality]) => modality)

/** The storage class for a modality and image attributes (CT → CT Image Storage...), or undefined. */
export function inferSopClass(modality: string | undefined, attributes: ImageAttributes = {}): string | undefined {
  if (modality === undefined) return undefined
  return modalityRules[modality.trim().toUpperCase()]?.infer?.(attributes)
}

/** Whether a storage class fits a modality (CT Image Storage fits CT, not MR); undefined when ddr cannot tell. */
export function modalityAllows(modality: string | undefined, sopClassUid: string): boolean | undefined {
  if (modality === undefined) return undefined
  const rule = modalityRules[modality.trim().toUpperCase()]
  if (!rule) return undefined
  return rule.compatible.some((suffix) => storage(suffix) === sopClassUid)
}

/** Where the SOP class a repair settles on comes from. */
export type SopClassSource = 'dataset' | 'meta' | 'modality' | 'user'

/** One element a repair changes (or would change). */
export interface RepairChange {
  /** "dataset" or "meta" (the file meta information, group 0002). */
  where: 'dataset' | 'meta'
  /** `(gggg,eeee)` */
  tag: string
  name: string
  /** The old value; absent when the element was missing (or empty). */
  from?: string
  to: string
}

/** What repairPart10 decided for one file. */
export interface RepairOutcome {
  /** changed: `bytes` is the repaired file. unchanged: nothing to do. cannot-fix: `reason` says why. skipped: not an instance. */
  status: 'changed' | 'unchanged' | 'cannot-fix' | 'skipped'
  reason?: string
  /** The SOP class the file has after the repair, and where it came from. */
  sopClassUid?: string
  sopClassSource?: SopClassSource
  changes: RepairChange[]
  /** The repaired file, when status is "changed". */
  bytes?: Buffer
}

/** New UIDs to give the file (fix-sop --new-uids / --new-study-uids). */
export interface NewUidOptions {
  sopInstanceUid: () => string
  /** Maps the file's StudyInstanceUID (undefined when it has none) to the new one. */
  studyInstanceUid?: (original: string | undefined) => string
  seriesInstanceUid?: (original: string | undefined) => string
}

/** Options for repairPart10. */
export interface RepairOptions {
  /** The class to use when neither the meta header nor Modality tells it (fix-sop --sop-class). */
  fallbackSopClassUid?: string
  newUids?: NewUidOptions
}

interface Encoding {
  explicitVr: boolean
  littleEndian: boolean
}

function uidValue(uid: string): Buffer {
  const bytes = Buffer.from(uid, 'latin1')
  return bytes.length % 2 === 0 ? bytes : Buffer.concat([bytes, Buffer.from([0])])
}

/** A UI element in the dataset's encoding. */
export function encodeUidElement(tag: number, uid: string, encoding: Encoding): Buffer {
  const value = uidValue(uid)
  const {explicitVr, littleEndian} = encoding
  const header = Buffer.alloc(8)
  if (littleEndian) {
    header.writeUInt16LE(tagGroup(tag), 0)
    header.writeUInt16LE(tag & 0xffff, 2)
  } else {
    header.writeUInt16BE(tagGroup(tag), 0)
    header.writeUInt16BE(tag & 0xffff, 2)
  }
  if (explicitVr) {
    header.write('UI', 4, 'latin1')
    if (littleEndian) header.writeUInt16LE(value.length, 6)
    else header.writeUInt16BE(value.length, 6)
  } else if (littleEndian) header.writeUInt32LE(value.length, 4)
  else header.writeUInt32BE(value.length, 4)
  return Buffer.concat([header, value])
}

/** A group length an edit made wrong, and its new value. */
export interface GroupLengthChange {
  tag: number
  from: number
  to: number
}

/**
 * Sets UI elements at the top level of a dataset by splicing bytes: a present element is
 * replaced, a missing one inserted before the first element with a larger tag. Every other byte
 * is kept as it was. A group length element (gggg,0000) of an edited group is set to the group's
 * new length.
 */
export function spliceDataset(dataset: Buffer, elements: DatasetElement[], encoding: Encoding, edits: ReadonlyMap<number, string>): {bytes: Buffer; groupLengths: GroupLengthChange[]} {
  const pending = [...edits.keys()].sort((a, b) => a - b)
  const segments: Array<{tag: number; bytes: Buffer}> = []
  const insertUpTo = (limit: number) => {
    while (pending.length > 0 && pending[0] < limit) {
      const tag = pending.shift() as number
      segments.push({tag, bytes: encodeUidElement(tag, edits.get(tag) as string, encoding)})
    }
  }
  for (const element of elements) {
    insertUpTo(element.tag)
    if (pending[0] === element.tag) {
      pending.shift()
      segments.push({tag: element.tag, bytes: encodeUidElement(element.tag, edits.get(element.tag) as string, encoding)})
    } else {
      segments.push({tag: element.tag, bytes: dataset.subarray(element.offset, element.end)})
    }
  }
  insertUpTo(Number.POSITIVE_INFINITY)

  const groupLengths: GroupLengthChange[] = []
  const editedGroups = new Set([...edits.keys()].map((tag) => tagGroup(tag)))
  for (const segment of segments) {
    const group = tagGroup(segment.tag)
    if ((segment.tag & 0xffff) !== 0 || !editedGroups.has(group)) continue
    const headerLength = segment.bytes.length - 4
    if (headerLength !== 8) continue
    const read = (bytes: Buffer) => (encoding.littleEndian ? bytes.readUInt32LE(headerLength) : bytes.readUInt32BE(headerLength))
    const actual = segments.filter((s) => tagGroup(s.tag) === group && s !== segment).reduce((sum, s) => sum + s.bytes.length, 0)
    const from = read(segment.bytes)
    if (from === actual) continue
    const rewritten = Buffer.from(segment.bytes)
    if (encoding.littleEndian) rewritten.writeUInt32LE(actual, headerLength)
    else rewritten.writeUInt32BE(actual, headerLength)
    segment.bytes = rewritten
    groupLengths.push({tag: segment.tag, from, to: actual})
  }
  return {bytes: Buffer.concat(segments.map((segment) => segment.bytes)), groupLengths}
}

function metaElement(tag: number, vr: string, value: Buffer): Buffer {
  const header = Buffer.alloc(8)
  header.writeUInt16LE(tagGroup(tag), 0)
  header.writeUInt16LE(tag & 0xffff, 2)
  header.write(vr, 4, 'latin1')
  header.writeUInt16LE(value.length, 6)
  return Buffer.concat([header, value])
}

/**
 * The file's preamble, "DICM" and meta header with some UI elements set (replaced or inserted in
 * tag order, explicit VR little endian as PS3.10 wants) and the group length recomputed; the
 * preamble and every other meta element are kept byte for byte.
 */
export function rebuildMetaHeader(file: Buffer, meta: MetaHeader, edits: ReadonlyMap<number, string>): Buffer {
  const pending = [...edits.keys()].sort((a, b) => a - b)
  const parts: Buffer[] = []
  const insertUpTo = (limit: number) => {
    while (pending.length > 0 && pending[0] < limit) {
      const tag = pending.shift() as number
      parts.push(metaElement(tag, 'UI', uidValue(edits.get(tag) as string)))
    }
  }
  for (const element of meta.elements) {
    if (element.tag === Tag.FileMetaInformationGroupLength) continue
    insertUpTo(element.tag)
    if (pending[0] === element.tag) {
      pending.shift()
      parts.push(metaElement(element.tag, 'UI', uidValue(edits.get(element.tag) as string)))
    } else {
      const end = element.value.byteOffset - file.byteOffset + element.value.length
      parts.push(file.subarray(element.offset, end))
    }
  }
  insertUpTo(Number.POSITIVE_INFINITY)
  const group = Buffer.concat(parts)
  const length = Buffer.alloc(4)
  length.writeUInt32LE(group.length, 0)
  return Buffer.concat([file.subarray(0, META_START), metaElement(Tag.FileMetaInformationGroupLength, 'UL', length), group])
}

function text(elements: Map<number, DatasetElement>, tag: number, charset?: string): string | undefined {
  const element = elements.get(tag)
  if (!element) return undefined
  const value = elementValue(element, charset)
  return value === undefined || value === '' ? undefined : value
}

function integer(elements: Map<number, DatasetElement>, tag: number): number | undefined {
  const value = text(elements, tag)
  if (value === undefined) return undefined
  const number = Number.parseInt(value.split('\\')[0], 10)
  return Number.isFinite(number) ? number : undefined
}

interface ClassDecision {
  uid?: string
  source?: SopClassSource
  reason?: string
}

/**
 * Which SOP class a file should have. The dataset and the meta header agreeing settles it. One
 * missing: the other one. Both missing: Modality and image attributes, then the user's fallback.
 * Disagreeing: the meta header, unless Modality fits the dataset's class and not the meta's
 * (a CT dataset with a wrong MR meta header keeps CT).
 */
export function decideSopClass(input: {datasetClass?: string; metaClass?: string; modality?: string; attributes: ImageAttributes; fallback?: string}): ClassDecision {
  const datasetClass = input.datasetClass !== undefined && isValidUid(input.datasetClass) ? input.datasetClass : undefined
  const metaClass = input.metaClass !== undefined && isValidUid(input.metaClass) ? input.metaClass : undefined
  if (datasetClass && metaClass) {
    if (datasetClass === metaClass) return {uid: datasetClass, source: 'dataset'}
    const datasetFits = modalityAllows(input.modality, datasetClass)
    const metaFits = modalityAllows(input.modality, metaClass)
    if (datasetFits === true && metaFits !== true) return {uid: datasetClass, source: 'dataset'}
    return {uid: metaClass, source: 'meta'}
  }
  if (datasetClass) return {uid: datasetClass, source: 'dataset'}
  if (metaClass) return {uid: metaClass, source: 'meta'}
  const inferred = inferSopClass(input.modality, input.attributes)
  if (inferred) return {uid: inferred, source: 'modality'}
  if (input.fallback) return {uid: input.fallback, source: 'user'}
  const why = input.modality === undefined ? 'no Modality (0008,0060) either' : `Modality ${input.modality} does not tell the class (ddr infers ${inferableModalities.join(', ')})`
  return {reason: `cannot infer the SOP class: no SOPClassUID, no MediaStorageSOPClassUID, and ${why}; give one with --sop-class UID`}
}

function cannotFix(reason: string): RepairOutcome {
  return {status: 'cannot-fix', reason, changes: []}
}

/**
 * Repairs the SOP identity of a Part 10 file in memory: SOPClassUID (0008,0016) missing or
 * disagreeing with MediaStorageSOPClassUID (0002,0002), the meta header's instance UID out of
 * step with the dataset's, and optionally new SOP instance / study / series UIDs. Only the
 * changed elements (and group lengths they invalidate) differ in the result; a deflated dataset
 * is inflated, edited and deflated again. Never throws for a bad file: it says why in `reason`.
 */
export function repairPart10(file: Buffer, options: RepairOptions = {}): RepairOutcome {
  if (!hasPart10Prefix(file)) return cannotFix('not a DICOM Part 10 file: no "DICM" prefix at byte 128')
  let opened: Part10Dataset
  let elements: DatasetElement[]
  try {
    opened = openPart10(file)
    elements = walkPart10(opened, {deep: false})
  } catch (error) {
    if (isDdrError(error, 'INVALID_DICOM')) return cannotFix(error.message)
    throw error
  }
  const {meta} = opened
  if (meta.mediaStorageSopClassUid === MEDIA_STORAGE_DIRECTORY_STORAGE) return {status: 'skipped', reason: 'a DICOMDIR (media directory), not an instance', changes: []}

  const byTag = new Map(elements.map((element) => [element.tag, element]))
  const charset = text(byTag, Tag.SpecificCharacterSet)
  const datasetClass = text(byTag, Tag.SOPClassUID)
  const modality = text(byTag, Tag.Modality, charset)
  const decision = decideSopClass({
    datasetClass,
    metaClass: meta.mediaStorageSopClassUid,
    modality,
    fallback: options.fallbackSopClassUid,
    attributes: {
      numberOfFrames: integer(byTag, Tag.NumberOfFrames),
      samplesPerPixel: integer(byTag, Tag.SamplesPerPixel),
      bitsAllocated: integer(byTag, Tag.BitsAllocated),
      presentationIntentType: text(byTag, Tag.PresentationIntentType),
      enhanced: byTag.has(SHARED_FUNCTIONAL_GROUPS_SEQUENCE),
    },
  })
  if (decision.uid === undefined) return cannotFix(decision.reason ?? 'cannot infer the SOP class')
  const sopClassUid = decision.uid

  const datasetEdits = new Map<number, string>()
  const metaEdits = new Map<number, string>()
  if (datasetClass !== sopClassUid) datasetEdits.set(Tag.SOPClassUID, sopClassUid)
  if (meta.mediaStorageSopClassUid !== sopClassUid) metaEdits.set(Tag.MediaStorageSOPClassUID, sopClassUid)

  const sopInstanceUid = text(byTag, Tag.SOPInstanceUID)
  if (options.newUids) {
    const uid = options.newUids.sopInstanceUid()
    datasetEdits.set(Tag.SOPInstanceUID, uid)
    metaEdits.set(Tag.MediaStorageSOPInstanceUID, uid)
    if (options.newUids.studyInstanceUid) datasetEdits.set(Tag.StudyInstanceUID, options.newUids.studyInstanceUid(text(byTag, Tag.StudyInstanceUID)))
    if (options.newUids.seriesInstanceUid) datasetEdits.set(Tag.SeriesInstanceUID, options.newUids.seriesInstanceUid(text(byTag, Tag.SeriesInstanceUID)))
  } else if (sopInstanceUid !== undefined) {
    if (meta.mediaStorageSopInstanceUid !== sopInstanceUid) metaEdits.set(Tag.MediaStorageSOPInstanceUID, sopInstanceUid)
  } else if (meta.mediaStorageSopInstanceUid !== undefined && isValidUid(meta.mediaStorageSopInstanceUid)) {
    datasetEdits.set(Tag.SOPInstanceUID, meta.mediaStorageSopInstanceUid)
  } else {
    return cannotFix('no SOPInstanceUID (0008,0018) and no MediaStorageSOPInstanceUID (0002,0003); give it one with --new-uids')
  }

  const changes: RepairChange[] = []
  const note = (where: RepairChange['where'], tag: number, from: string | undefined, to: string) => {
    const change: RepairChange = {where, tag: formatTag(tag), name: tagName(tag) ?? describeTag(tag), to}
    if (from !== undefined) change.from = from
    changes.push(change)
  }
  const metaValue = (tag: number) => {
    const element = meta.elements.find((e) => e.tag === tag)
    const value = element?.value.toString('latin1').replace(/[\0 ]+$/, '').trim()
    return value === '' ? undefined : value
  }
  for (const [tag, to] of [...datasetEdits].sort(([a], [b]) => a - b)) note('dataset', tag, text(byTag, tag), to)
  for (const [tag, to] of [...metaEdits].sort(([a], [b]) => a - b)) note('meta', tag, metaValue(tag), to)
  const outcome = {sopClassUid, sopClassSource: decision.source}
  if (changes.length === 0) return {status: 'unchanged', ...outcome, changes, reason: `SOPClassUID agrees with the meta header: ${describeSopClass(sopClassUid)}`}

  const spliced = spliceDataset(opened.dataset, elements, opened, datasetEdits)
  for (const change of spliced.groupLengths) note('dataset', change.tag, String(change.from), String(change.to))
  const dataset = opened.deflated ? deflateRawSync(spliced.bytes) : spliced.bytes
  const bytes = Buffer.concat([rebuildMetaHeader(file, meta, metaEdits), dataset])

  // Read the result back before anyone writes it over the original.
  try {
    const check = openPart10(bytes)
    const checkElements = new Map(walkPart10(check, {deep: false}).map((element) => [element.tag, element]))
    const written = text(checkElements, Tag.SOPClassUID)
    if (written !== sopClassUid || check.meta.mediaStorageSopClassUid !== sopClassUid) throw new Error(`SOPClassUID reads back as ${written}`)
  } catch (error) {
    return cannotFix(`internal error: the repaired file does not read back (${(error as Error).message}); nothing was written`)
  }
  return {status: 'changed', ...outcome, changes, bytes}
}
