import {readFile, stat} from 'node:fs/promises'

import {loadDictionary} from '../dicom/dictionary.js'
import {dumpDataset, type DumpElement, dumpLines, dumpMetaHeader, elementValue, uidMeaning} from '../dicom/dump.js'
import {Tag} from '../dicom/tags.js'
import {type DatasetElement, openPart10, walkPart10} from '../dicom/walker.js'
import {DdrError} from '../errors.js'
import {formatTable, painter} from '../output/table.js'

/** A UID with the name ddr knows for it. */
export interface NamedUid {
  uid: string
  name?: string
}

/** What `ddr inspect FILE --json` prints. */
export interface InspectFileResult {
  kind: 'file'
  file: string
  /** File size in bytes. */
  size: number
  transferSyntax: NamedUid
  /** SOPClassUID (0008,0016); absent when the dataset has none. */
  sopClass?: NamedUid
  /** MediaStorageSOPClassUID (0002,0002), when present. */
  mediaStorageSopClass?: NamedUid
  sopInstanceUid?: string
  modality?: string
  patient: {name?: string; id?: string; birthDate?: string; sex?: string}
  study: {instanceUid?: string; date?: string; time?: string; description?: string; accessionNumber?: string; id?: string}
  series: {instanceUid?: string; number?: string; description?: string}
  instanceNumber?: string
  /** NumberOfFrames, else 1 with pixel data, 0 without. */
  frames: number
  image?: {rows?: number; columns?: number; bitsAllocated?: number; photometricInterpretation?: string}
  specificCharacterSet?: string
  implementation: {classUid?: string; versionName?: string; sourceAeTitle?: string}
  /** Inconsistencies an operator should know about (missing SOPClassUID, meta header disagreeing). */
  warnings: string[]
  /** With --tags: the file meta information and the whole dataset. */
  meta?: DumpElement[]
  elements?: DumpElement[]
}

/** Options for inspectFile. */
export interface InspectFileOptions {
  /** Include the full dump (meta and dataset elements). */
  tags?: boolean
}

function named(uid: string): NamedUid {
  const name = uidMeaning(uid)
  return name === undefined ? {uid} : {uid, name}
}

function compact<T extends Record<string, unknown>>(object: T): T {
  return Object.fromEntries(Object.entries(object).filter(([, value]) => value !== undefined)) as T
}

/**
 * Reads a whole DICOM Part 10 file with ddr's own reader (any transfer syntax: implicit/explicit
 * VR, big endian, deflated, encapsulated; private and CP-246 UN sequences) and summarises its
 * header. Throws DdrError INVALID_DICOM (exit 2) naming the file and what is wrong for a file that
 * is not DICOM, is cut short or breaks its transfer syntax; USAGE when it does not exist.
 */
export async function inspectFile(file: string, options: InspectFileOptions = {}): Promise<InspectFileResult> {
  const info = await stat(file).catch(() => undefined)
  if (!info) throw new DdrError('USAGE', `${file}: no such file`, {hint: 'check the path'})
  if (info.isDirectory()) throw new DdrError('USAGE', `${file} is a folder, not a file`, {hint: 'give one DICOM file; "ddr fix-sop --dry-run FOLDER" reports on many'})
  const bytes = await readFile(file)
  const opened = openPart10(bytes, file)
  if (options.tags) await loadDictionary()
  const elements = walkPart10(opened, {source: file})
  const byTag = new Map<number, DatasetElement>(elements.map((element) => [element.tag, element]))
  const charset = byTag.get(Tag.SpecificCharacterSet) ? elementValue(byTag.get(Tag.SpecificCharacterSet) as DatasetElement) : undefined
  const text = (tag: number): string | undefined => {
    const element = byTag.get(tag)
    const value = element ? elementValue(element, charset) : undefined
    return value === '' ? undefined : value
  }
  const number = (tag: number): number | undefined => {
    const value = Number.parseInt(text(tag)?.split('\\')[0] ?? '', 10)
    return Number.isFinite(value) ? value : undefined
  }

  const {meta} = opened
  const sopClassUid = text(Tag.SOPClassUID)
  const sopInstanceUid = text(Tag.SOPInstanceUID)
  const hasPixels = byTag.has(Tag.PixelData) || byTag.has(Tag.FloatPixelData) || byTag.has(Tag.DoubleFloatPixelData)
  const warnings: string[] = []
  if (sopClassUid === undefined) warnings.push('no SOPClassUID (0008,0016) in the dataset: "ddr fix-sop" repairs it')
  else if (meta.mediaStorageSopClassUid === undefined) warnings.push('no MediaStorageSOPClassUID (0002,0002) in the meta header: "ddr fix-sop" repairs it')
  else if (meta.mediaStorageSopClassUid !== sopClassUid) warnings.push(`the meta header says ${named(meta.mediaStorageSopClassUid).name ?? meta.mediaStorageSopClassUid} but the dataset says ${named(sopClassUid).name ?? sopClassUid}: "ddr fix-sop" repairs it`)
  if (sopInstanceUid !== undefined && meta.mediaStorageSopInstanceUid !== undefined && sopInstanceUid !== meta.mediaStorageSopInstanceUid) {
    warnings.push('MediaStorageSOPInstanceUID (0002,0003) differs from SOPInstanceUID (0008,0018)')
  }
  if (sopInstanceUid === undefined) warnings.push('no SOPInstanceUID (0008,0018) in the dataset')

  const result: InspectFileResult = {
    kind: 'file',
    file,
    size: bytes.length,
    transferSyntax: named(meta.transferSyntaxUid),
    ...(sopClassUid === undefined ? {} : {sopClass: named(sopClassUid)}),
    ...(meta.mediaStorageSopClassUid === undefined ? {} : {mediaStorageSopClass: named(meta.mediaStorageSopClassUid)}),
    ...compact({sopInstanceUid, modality: text(Tag.Modality)}),
    patient: compact({name: text(Tag.PatientName), id: text(Tag.PatientID), birthDate: text(Tag.PatientBirthDate), sex: text(Tag.PatientSex)}),
    study: compact({
      instanceUid: text(Tag.StudyInstanceUID),
      date: text(Tag.StudyDate),
      time: text(Tag.StudyTime),
      description: text(Tag.StudyDescription),
      accessionNumber: text(Tag.AccessionNumber),
      id: text(Tag.StudyID),
    }),
    series: compact({instanceUid: text(Tag.SeriesInstanceUID), number: text(Tag.SeriesNumber), description: text(Tag.SeriesDescription)}),
    ...compact({instanceNumber: text(Tag.InstanceNumber)}),
    frames: number(Tag.NumberOfFrames) ?? (hasPixels ? 1 : 0),
    ...(hasPixels
      ? {image: compact({rows: number(Tag.Rows), columns: number(Tag.Columns), bitsAllocated: number(Tag.BitsAllocated), photometricInterpretation: text(Tag.PhotometricInterpretation)})}
      : {}),
    ...compact({specificCharacterSet: charset}),
    implementation: compact({classUid: meta.implementationClassUid, versionName: meta.implementationVersionName, sourceAeTitle: meta.sourceApplicationEntityTitle}),
    warnings,
  }
  if (options.tags) {
    result.meta = dumpMetaHeader(meta.elements)
    result.elements = dumpDataset(elements)
  }
  return result
}

function join(parts: Array<string | undefined>, separator = ', '): string {
  return parts.filter((part) => part !== undefined && part !== '').join(separator)
}

function withUid(named: NamedUid | undefined): string | undefined {
  if (!named) return undefined
  return named.name ? `${named.name} (${named.uid})` : named.uid
}

/** The human view of inspectFile: the main header as aligned fields, then (with --tags) the dump. */
export function formatInspectFile(result: InspectFileResult, options: {color?: boolean} = {}): string {
  const paint = painter(options.color ?? false)
  const {patient, study, series, image} = result
  const rows: Array<[string, string | undefined]> = [
    ['File', `${result.file} (${result.size} bytes)`],
    ['Patient', join([patient.name, patient.id && `ID ${patient.id}`, patient.birthDate && `born ${patient.birthDate}`, patient.sex && `sex ${patient.sex}`])],
    ['Study', join([study.instanceUid, study.date && join([study.date, study.time], ' '), study.description && `"${study.description}"`, study.accessionNumber && `accession ${study.accessionNumber}`])],
    ['Series', join([series.instanceUid, series.number && `#${series.number}`, series.description && `"${series.description}"`])],
    ['Modality', result.modality],
    ['SOP class', withUid(result.sopClass) ?? 'missing'],
    ['Meta SOP class', result.sopClass !== undefined && result.mediaStorageSopClass?.uid === result.sopClass.uid ? undefined : (withUid(result.mediaStorageSopClass) ?? 'missing')],
    ['SOP instance', join([result.sopInstanceUid, result.instanceNumber && `#${result.instanceNumber}`])],
    ['Transfer syntax', withUid(result.transferSyntax)],
    ['Frames', String(result.frames)],
    ['Image', image ? join([image.rows !== undefined && image.columns !== undefined ? `${image.columns} x ${image.rows}` : undefined, image.bitsAllocated === undefined ? undefined : `${image.bitsAllocated} bits`, image.photometricInterpretation]) : undefined],
    ['Character set', result.specificCharacterSet],
    ['Written by', join([result.implementation.versionName, result.implementation.classUid && `(${result.implementation.classUid})`, result.implementation.sourceAeTitle && `from AE ${result.implementation.sourceAeTitle}`], ' ')],
  ]
  const shown = rows.filter(([, value]) => value !== undefined && value !== '') as Array<[string, string]>
  let text = formatTable(shown, [
    {header: 'FIELD', value: ([field]) => field},
    {header: 'VALUE', value: ([, value]) => value, paint: ([, value], padded) => (value === 'missing' ? paint.red(padded) : padded)},
  ], options)
  for (const warning of result.warnings) text += `\n${paint.yellow(`warning: ${warning}`)}`
  if (result.meta && result.elements) {
    const lines = [...dumpLines(result.meta), ...dumpLines(result.elements)]
    text += `\n\n${formatTable(lines, [
      {header: 'TAG', value: (line) => `${'  '.repeat(line.depth)}${line.tag}`},
      {header: 'VR', value: (line) => line.vr},
      {header: 'LENGTH', value: (line) => line.length, align: 'right'},
      {header: 'VALUE', value: (line) => line.value},
      {header: 'NAME', value: (line) => line.name, paint: (_line, padded) => paint.dim(padded)},
    ], options)}`
  }
  return text
}
