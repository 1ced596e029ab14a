/**
 * A module's findings as a DICOM Comprehensive SR in the study it looked at: same patient and
 * study, a series of its own (Modality SR), a device observer naming the module, findings as
 * CODE/NUM/TEXT content items with their probability and the instances they were found on, and
 * every instance the module saw in the Current Requested Procedure Evidence Sequence. Encoded with
 * dcmjs (explicit VR little endian, UTF-8); checked by dciodvfy in the tests.
 */
import dcmjs from 'dcmjs'

import {readDatasetFromFile} from '../dicom/dataset-reader.js'
import {DDR_IMPLEMENTATION_CLASS_UID, DDR_IMPLEMENTATION_VERSION_NAME} from '../dicom/part10.js'
import {Tag} from '../dicom/tags.js'
import {TransferSyntax, uidFromSeed} from '../dicom/uids.js'
import type {Finding, ModuleResult} from './contract.js'

/** Comprehensive SR Storage. */
export const COMPREHENSIVE_SR = '1.2.840.10008.5.1.4.1.1.88.33'
/** The series number of processing output, high so that it sorts after the acquired series. */
const SR_SERIES_NUMBER = 9900

export interface Code {
  value: string
  scheme: string
  meaning: string
}

// PS3.16 codes (DCM) used below, each once.
const Codes = {
  observerType: {value: '121005', scheme: 'DCM', meaning: 'Observer Type'},
  device: {value: '121007', scheme: 'DCM', meaning: 'Device'},
  deviceObserverUid: {value: '121012', scheme: 'DCM', meaning: 'Device Observer UID'},
  deviceObserverName: {value: '121013', scheme: 'DCM', meaning: 'Device Observer Name'},
  deviceObserverManufacturer: {value: '121014', scheme: 'DCM', meaning: 'Device Observer Manufacturer'},
  deviceObserverModelName: {value: '121015', scheme: 'DCM', meaning: 'Device Observer Model Name'},
  language: {value: '121049', scheme: 'DCM', meaning: 'Language of Content Item and Descendants'},
  english: {value: 'en', scheme: 'RFC5646', meaning: 'English'},
  findings: {value: '121070', scheme: 'DCM', meaning: 'Findings'},
  finding: {value: '121071', scheme: 'DCM', meaning: 'Finding'},
  summary: {value: '121111', scheme: 'DCM', meaning: 'Summary'},
  probability: {value: '122157', scheme: 'DCM', meaning: 'Probability'},
  seriesInstanceUid: {value: '112002', scheme: 'DCM', meaning: 'Series Instance UID'},
  noUnits: {value: '1', scheme: 'UCUM', meaning: 'no units'},
} as const satisfies Record<string, Code>

/** The private coding scheme of ddr's own codes (a "99" prefix is free for local use, PS3.16 8.2). */
export const DDR_CODING_SCHEME = '99DDR'

/** The Patient and General Study attributes copied from the study's instances into the SR. */
const STUDY_TAGS = [
  Tag.PatientName,
  Tag.PatientID,
  Tag.IssuerOfPatientID,
  Tag.PatientBirthDate,
  Tag.PatientSex,
  Tag.StudyInstanceUID,
  Tag.StudyDate,
  Tag.StudyTime,
  Tag.ReferringPhysicianName,
  Tag.StudyID,
  Tag.AccessionNumber,
  Tag.StudyDescription,
] as const

/** The study's header values as one of its instances carries them (decoded, padding trimmed). */
export type StudyHeader = Partial<Record<'PatientName' | 'PatientID' | 'IssuerOfPatientID' | 'PatientBirthDate' | 'PatientSex' | 'StudyInstanceUID' | 'StudyDate' | 'StudyTime' | 'ReferringPhysicianName' | 'StudyID' | 'AccessionNumber' | 'StudyDescription', string>>

const keywordOf = new Map<number, keyof StudyHeader>([
  [Tag.PatientName, 'PatientName'],
  [Tag.PatientID, 'PatientID'],
  [Tag.IssuerOfPatientID, 'IssuerOfPatientID'],
  [Tag.PatientBirthDate, 'PatientBirthDate'],
  [Tag.PatientSex, 'PatientSex'],
  [Tag.StudyInstanceUID, 'StudyInstanceUID'],
  [Tag.StudyDate, 'StudyDate'],
  [Tag.StudyTime, 'StudyTime'],
  [Tag.ReferringPhysicianName, 'ReferringPhysicianName'],
  [Tag.StudyID, 'StudyID'],
  [Tag.AccessionNumber, 'AccessionNumber'],
  [Tag.StudyDescription, 'StudyDescription'],
])

/** Reads the Patient and Study attributes from one of the study's Part 10 files (ddr's own reader, its character set decoded). */
export async function readStudyHeader(file: string): Promise<StudyHeader> {
  const {values} = await readDatasetFromFile(file, STUDY_TAGS)
  const header: StudyHeader = {}
  for (const [tag, keyword] of keywordOf) {
    const value = values.get(tag)
    if (value !== undefined && value !== '') header[keyword] = value
  }

  return header
}

/** One instance the module saw: the SR's evidence. */
export interface EvidenceInstance {
  sopInstanceUid: string
  sopClassUid: string
  seriesInstanceUid: string
}

export interface SrRequest {
  module: string
  /** The document title; default "<module> findings" under 99DDR. */
  title?: Code
  result: ModuleResult
  header: StudyHeader
  evidence: readonly EvidenceInstance[]
  /** Makes the SR's UIDs: the same seed gives the same UIDs (a retried run stores the same SR again, not a second one). */
  seed: string
  /** processing.uidRoot; default 2.25. */
  uidRoot?: string
  now?: Date
  softwareVersion?: string
}

/** The SR written: its Part 10 bytes, its UIDs, and its dataset as dcmjs names it (what `ddr process --dry-run` shows). */
export interface SrDocument {
  sopInstanceUid: string
  seriesInstanceUid: string
  part10: Buffer
  dataset: Record<string, unknown>
}

const coded = (code: Code) => [{CodeValue: code.value, CodingSchemeDesignator: code.scheme, CodeMeaning: code.meaning}]

/** A code that names a module-given label under ddr's private scheme: Code Value is at most 16 characters, so long labels are hashed. */
function privateCode(label: string, seed: string): Code {
  const slug = label.toUpperCase().replace(/[^A-Z0-9]+/g, '_').replace(/^_|_$/g, '')
  const value = slug.length > 0 && slug.length <= 16 ? slug : `L${uidFromSeed(seed).slice(-15)}`
  return {value, scheme: DDR_CODING_SCHEME, meaning: label.slice(0, 64)}
}

/** SOP classes referenced as IMAGE content items; other composite objects (SR, waveforms, RT, encapsulated documents) as COMPOSITE. */
function isImageClass(sopClassUid: string): boolean {
  const nonImage = ['1.2.840.10008.5.1.4.1.1.88.', '1.2.840.10008.5.1.4.1.1.9.', '1.2.840.10008.5.1.4.1.1.104.', '1.2.840.10008.5.1.4.1.1.66', '1.2.840.10008.5.1.4.1.1.11.']
  if (sopClassUid.startsWith('1.2.840.10008.5.1.4.1.1.481.')) return sopClassUid === '1.2.840.10008.5.1.4.1.1.481.1'
  return !nonImage.some((prefix) => sopClassUid.startsWith(prefix))
}

function dicomDate(date: Date): string {
  return date.toISOString().slice(0, 10).replaceAll('-', '')
}

function dicomTime(date: Date): string {
  return date.toISOString().slice(11, 19).replaceAll(':', '')
}

/** A DS value (at most 16 characters). */
function decimalString(value: number): string {
  for (let digits = 10; digits > 0; digits--) {
    const text = String(Number(value.toPrecision(digits)))
    if (text.length <= 16) return text
  }

  return value.toExponential(6)
}

function findingItem(finding: Finding, index: number, seed: string, classOf: ReadonlyMap<string, string>): Record<string, unknown> {
  const children: Array<Record<string, unknown>> = []
  if (finding.probability !== undefined) {
    children.push({
      RelationshipType: 'HAS PROPERTIES',
      ValueType: 'NUM',
      ConceptNameCodeSequence: coded(Codes.probability),
      MeasuredValueSequence: [{MeasurementUnitsCodeSequence: coded(Codes.noUnits), NumericValue: decimalString(finding.probability)}],
    })
  }

  if (finding.sopInstanceUid !== undefined) {
    const sopClassUid = classOf.get(finding.sopInstanceUid)!
    children.push({
      RelationshipType: 'INFERRED FROM',
      ValueType: isImageClass(sopClassUid) ? 'IMAGE' : 'COMPOSITE',
      ReferencedSOPSequence: [{ReferencedSOPClassUID: sopClassUid, ReferencedSOPInstanceUID: finding.sopInstanceUid}],
    })
  }

  if (finding.seriesInstanceUid !== undefined) {
    children.push({RelationshipType: 'HAS PROPERTIES', ValueType: 'UIDREF', ConceptNameCodeSequence: coded(Codes.seriesInstanceUid), UID: finding.seriesInstanceUid})
  }

  let item: Record<string, unknown>
  if (finding.value !== undefined) {
    const unit: Code = finding.unit === undefined || finding.unit === '1' ? Codes.noUnits : {value: finding.unit, scheme: 'UCUM', meaning: finding.unit}
    item = {
      ValueType: 'NUM',
      ConceptNameCodeSequence: coded(finding.code ?? privateCode(finding.label, `${seed}/finding/${index}`)),
      MeasuredValueSequence: [{MeasurementUnitsCodeSequence: coded(unit), NumericValue: decimalString(finding.value)}],
    }
  } else if (finding.code !== undefined) {
    item = {ValueType: 'CODE', ConceptNameCodeSequence: coded(Codes.finding), ConceptCodeSequence: coded(finding.code)}
  } else {
    item = {ValueType: 'TEXT', ConceptNameCodeSequence: coded(Codes.finding), TextValue: finding.label}
  }

  return {RelationshipType: 'CONTAINS', ...item, ...(children.length > 0 ? {ContentSequence: children} : {})}
}

/** The evidence: every instance the module saw, by series, in one study. */
function evidenceSequence(studyInstanceUid: string, evidence: readonly EvidenceInstance[]): Array<Record<string, unknown>> {
  const bySeries = new Map<string, EvidenceInstance[]>()
  for (const instance of evidence) bySeries.set(instance.seriesInstanceUid, [...(bySeries.get(instance.seriesInstanceUid) ?? []), instance])
  return [
    {
      StudyInstanceUID: studyInstanceUid,
      ReferencedSeriesSequence: [...bySeries].map(([seriesInstanceUid, instances]) => ({
        SeriesInstanceUID: seriesInstanceUid,
        ReferencedSOPSequence: instances.map((i) => ({ReferencedSOPClassUID: i.sopClassUid, ReferencedSOPInstanceUID: i.sopInstanceUid})),
      })),
    },
  ]
}

/**
 * Writes the SR of a module's result. The UIDs come from `seed` (study, module, run), so a run
 * that is retried after its SR was stored writes the same instance again, which the PACS keeps once.
 */
export function buildSr(request: SrRequest): SrDocument {
  const {header, result} = request
  const studyInstanceUid = header.StudyInstanceUID
  if (studyInstanceUid === undefined) throw new Error('the study header has no StudyInstanceUID')
  const now = request.now ?? new Date()
  const sopInstanceUid = uidFromSeed(`${request.seed}/sop`, request.uidRoot)
  const seriesInstanceUid = uidFromSeed(`${request.seed}/series`, request.uidRoot)
  // The same observer UID for every SR of a module: a site can ask for all a module wrote.
  const observerUid = uidFromSeed(`ddr-processing-module/${request.module}`, request.uidRoot)
  const classOf = new Map(request.evidence.map((i) => [i.sopInstanceUid, i.sopClassUid]))
  const title = request.title ?? {value: privateCode(request.module, request.module).value, scheme: DDR_CODING_SCHEME, meaning: `${request.module} findings`.slice(0, 64)}

  const content: Array<Record<string, unknown>> = [
    {RelationshipType: 'HAS CONCEPT MOD', ValueType: 'CODE', ConceptNameCodeSequence: coded(Codes.language), ConceptCodeSequence: coded(Codes.english)},
    {RelationshipType: 'HAS OBS CONTEXT', ValueType: 'CODE', ConceptNameCodeSequence: coded(Codes.observerType), ConceptCodeSequence: coded(Codes.device)},
    {RelationshipType: 'HAS OBS CONTEXT', ValueType: 'UIDREF', ConceptNameCodeSequence: coded(Codes.deviceObserverUid), UID: observerUid},
    {RelationshipType: 'HAS OBS CONTEXT', ValueType: 'TEXT', ConceptNameCodeSequence: coded(Codes.deviceObserverName), TextValue: request.module},
    {RelationshipType: 'HAS OBS CONTEXT', ValueType: 'TEXT', ConceptNameCodeSequence: coded(Codes.deviceObserverManufacturer), TextValue: 'ddr'},
    {RelationshipType: 'HAS OBS CONTEXT', ValueType: 'TEXT', ConceptNameCodeSequence: coded(Codes.deviceObserverModelName), TextValue: request.module},
    {
      RelationshipType: 'CONTAINS',
      ValueType: 'CONTAINER',
      ConceptNameCodeSequence: coded(Codes.findings),
      ContinuityOfContent: 'SEPARATE',
      ...(result.findings.length > 0 ? {ContentSequence: result.findings.map((f, i) => findingItem(f, i, request.seed, classOf))} : {}),
    },
  ]
  if (result.summary !== undefined && result.summary !== '') {
    content.push({RelationshipType: 'CONTAINS', ValueType: 'TEXT', ConceptNameCodeSequence: coded(Codes.summary), TextValue: result.summary})
  }

  const dataset: Record<string, unknown> = {
    SpecificCharacterSet: 'ISO_IR 192',
    // Says what the private scheme of the title and label codes is (PS3.3 C.12.1.1.8 Coding Scheme Identification).
    CodingSchemeIdentificationSequence: [{CodingSchemeDesignator: DDR_CODING_SCHEME, CodingSchemeName: 'ddr processing module codes', CodingSchemeResponsibleOrganization: 'ddr'}],
    InstanceCreationDate: dicomDate(now),
    InstanceCreationTime: dicomTime(now),
    SOPClassUID: COMPREHENSIVE_SR,
    SOPInstanceUID: sopInstanceUid,
    StudyDate: header.StudyDate ?? '',
    SeriesDate: dicomDate(now),
    ContentDate: dicomDate(now),
    StudyTime: header.StudyTime ?? '',
    SeriesTime: dicomTime(now),
    ContentTime: dicomTime(now),
    AccessionNumber: header.AccessionNumber ?? '',
    Modality: 'SR',
    Manufacturer: 'ddr',
    ReferringPhysicianName: header.ReferringPhysicianName ?? '',
    ...(header.StudyDescription === undefined ? {} : {StudyDescription: header.StudyDescription}),
    SeriesDescription: `${request.module} (ddr processing)`.slice(0, 64),
    ManufacturerModelName: request.module.slice(0, 64),
    ReferencedPerformedProcedureStepSequence: [],
    PatientName: header.PatientName ?? '',
    PatientID: header.PatientID ?? '',
    ...(header.IssuerOfPatientID === undefined ? {} : {IssuerOfPatientID: header.IssuerOfPatientID}),
    PatientBirthDate: header.PatientBirthDate ?? '',
    PatientSex: header.PatientSex ?? '',
    SoftwareVersions: request.softwareVersion ?? DDR_IMPLEMENTATION_VERSION_NAME,
    StudyInstanceUID: studyInstanceUid,
    SeriesInstanceUID: seriesInstanceUid,
    StudyID: header.StudyID ?? '',
    SeriesNumber: SR_SERIES_NUMBER,
    InstanceNumber: 1,
    ValueType: 'CONTAINER',
    ConceptNameCodeSequence: coded(title),
    ContinuityOfContent: 'SEPARATE',
    CompletionFlag: 'COMPLETE',
    VerificationFlag: 'UNVERIFIED',
    PerformedProcedureCodeSequence: [],
    CurrentRequestedProcedureEvidenceSequence: evidenceSequence(studyInstanceUid, request.evidence),
    ContentSequence: content,
  }

  const {DicomDict, DicomMetaDictionary} = dcmjs.data
  const meta = {
    FileMetaInformationVersion: new Uint8Array([0, 1]).buffer,
    MediaStorageSOPClassUID: COMPREHENSIVE_SR,
    MediaStorageSOPInstanceUID: sopInstanceUid,
    TransferSyntaxUID: TransferSyntax.ExplicitVRLittleEndian,
    ImplementationClassUID: DDR_IMPLEMENTATION_CLASS_UID,
    ImplementationVersionName: DDR_IMPLEMENTATION_VERSION_NAME,
  }
  const dict = new DicomDict(DicomMetaDictionary.denaturalizeDataset(meta))
  dict.dict = DicomMetaDictionary.denaturalizeDataset(dataset)
  return {sopInstanceUid, seriesInstanceUid, part10: Buffer.from(dict.write()), dataset}
}
