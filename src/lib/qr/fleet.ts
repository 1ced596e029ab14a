/**
 * `ddr find` and `ddr get`: the fleet-wide query and retrieval straight from the configured
 * backends, for an operator or a script (no router needs to run).
 */
import type {DdrConfig} from '../config/schema.js'
import {Identifier, type QueryLevel} from '../dicom/identifier.js'
import {Tag} from '../dicom/tags.js'
import {QueryModel} from '../dimse/scp.js'
import {DdrError} from '../errors.js'
import {type Column, formatTable} from '../output/table.js'
import {formatBytes} from '../output/units.js'
import {FolderSink, type SubOperationFailure, deliverInstances} from './deliver.js'
import {type MissingAnswer, queryFleet} from './find.js'
import type {StoredInstances} from './ledger-source.js'
import {InstanceFetcher, locateInstances} from './retrieve.js'
import {querySources} from './sources.js'

export interface FindOptions {
  level: QueryLevel
  patientId?: string
  patientName?: string
  studyInstanceUid?: string
  accessionNumber?: string
  modality?: string
  /** DICOM date or range: 20260101, 20260101-20260131, -20260131, 20260101- */
  date?: string
  /** Our AE title towards the backends (default: listen.aeTitle). */
  callingAeTitle?: string
  /** The study ledger's record (ledger/query.ts openStoredInstances): folder backends are answered from it. */
  stored?: StoredInstances
}

/** One match as `ddr find --json` prints it. */
export interface FoundRow {
  level: QueryLevel
  patientId: string
  patientName: string
  studyInstanceUid?: string
  studyDate?: string
  accessionNumber?: string
  modalities?: string
  seriesInstanceUid?: string
  sopInstanceUid?: string
  instances?: number
  /** The backends that hold (part of) it. */
  backends: string[]
}

export interface FindResult {
  level: QueryLevel
  matches: FoundRow[]
  answered: string[]
  missing: MissingAnswer[]
}

const DATE_PATTERN = /^(\d{8})?(-(\d{8})?)?$/

/** The query identifier for `ddr find`'s flags: the filters as matching keys, the columns it shows as return keys. */
export function findIdentifier(options: FindOptions): Identifier {
  if (options.date !== undefined && (!DATE_PATTERN.test(options.date) || options.date === '-' || options.date === '')) {
    throw new DdrError('USAGE', `--date "${options.date}" is not a DICOM date or range`, {hint: 'YYYYMMDD, YYYYMMDD-YYYYMMDD, -YYYYMMDD or YYYYMMDD-'})
  }

  const level = options.level
  const keys: Array<[number, string]> = [
    [Tag.QueryRetrieveLevel, level],
    [Tag.PatientID, options.patientId ?? ''],
    [Tag.PatientName, options.patientName ?? ''],
  ]
  if (level !== 'PATIENT') {
    keys.push([Tag.StudyInstanceUID, options.studyInstanceUid ?? ''], [Tag.StudyDate, options.date ?? ''], [Tag.AccessionNumber, options.accessionNumber ?? ''])
  }

  if (level === 'STUDY') keys.push([Tag.ModalitiesInStudy, options.modality ?? ''], [Tag.NumberOfStudyRelatedInstances, ''])
  if (level === 'SERIES') keys.push([Tag.SeriesInstanceUID, ''], [Tag.Modality, options.modality ?? ''], [Tag.NumberOfSeriesRelatedInstances, ''])
  if (level === 'IMAGE') keys.push([Tag.SeriesInstanceUID, ''], [Tag.SOPInstanceUID, ''], [Tag.Modality, options.modality ?? ''])
  if (level === 'PATIENT') keys.push([Tag.NumberOfPatientRelatedInstances, ''])
  return Identifier.of(keys)
}

function rowOf(level: QueryLevel, identifier: Identifier, backends: string[]): FoundRow {
  const optional = (tag: number) => {
    const value = identifier.get(tag)
    return value === undefined || value === '' ? undefined : value
  }

  const count = optional(Tag.NumberOfStudyRelatedInstances) ?? optional(Tag.NumberOfSeriesRelatedInstances) ?? optional(Tag.NumberOfPatientRelatedInstances)
  const row: FoundRow = {
    level,
    patientId: identifier.get(Tag.PatientID) ?? '',
    patientName: identifier.get(Tag.PatientName) ?? '',
    studyInstanceUid: optional(Tag.StudyInstanceUID),
    studyDate: optional(Tag.StudyDate),
    accessionNumber: optional(Tag.AccessionNumber),
    modalities: optional(Tag.ModalitiesInStudy) ?? optional(Tag.Modality),
    seriesInstanceUid: optional(Tag.SeriesInstanceUID),
    sopInstanceUid: optional(Tag.SOPInstanceUID),
    instances: count === undefined ? undefined : Number.parseInt(count, 10),
    backends: [...backends].sort(),
  }
  return Object.fromEntries(Object.entries(row).filter(([, value]) => value !== undefined)) as unknown as FoundRow
}

/** Queries every DICOM backend of the config at once and merges the answers. */
export async function findInFleet(config: DdrConfig, options: FindOptions): Promise<FindResult> {
  const identifier = findIdentifier(options)
  const {sources, unqueryable} = querySources(config.backends, {callingAeTitle: options.callingAeTitle ?? config.listen.aeTitle, timeoutMs: config.retrieve.queryTimeoutMs, stored: options.stored})
  if (sources.length === 0) throw new DdrError('USAGE', 'no backend of the config answers queries', {hint: unqueryable.map((u) => `${u.backend}: ${u.why}`).join('; ')})
  const result = await queryFleet(identifier, sources, {
    model: options.level === 'PATIENT' ? QueryModel.patientRootFind : QueryModel.studyRootFind,
    timeoutMs: config.retrieve.queryTimeoutMs,
    skipped: unqueryable.map((u) => ({backend: u.backend, why: u.why})),
  })
  const matches = result.matches.map((m) => rowOf(result.level, m.identifier, m.backends))
  matches.sort((a, b) => (a.patientId + (a.studyDate ?? '') + (a.studyInstanceUid ?? '') + (a.seriesInstanceUid ?? '') + (a.sopInstanceUid ?? '')).localeCompare(b.patientId + (b.studyDate ?? '') + (b.studyInstanceUid ?? '') + (b.seriesInstanceUid ?? '') + (b.sopInstanceUid ?? '')))
  return {level: result.level, matches, answered: result.answered, missing: result.missing}
}

export function formatFindResult(result: FindResult, options: {color?: boolean} = {}): string {
  const columns: Array<Column<FoundRow>> = [
    {header: 'PATIENT ID', value: (r) => r.patientId},
    {header: 'NAME', value: (r) => r.patientName},
  ]
  if (result.level !== 'PATIENT') columns.push({header: 'DATE', value: (r) => r.studyDate ?? ''}, {header: 'ACCESSION', value: (r) => r.accessionNumber ?? ''}, {header: 'STUDY UID', value: (r) => r.studyInstanceUid ?? ''})
  if (result.level === 'SERIES' || result.level === 'IMAGE') columns.push({header: 'SERIES UID', value: (r) => r.seriesInstanceUid ?? ''})
  if (result.level === 'IMAGE') columns.push({header: 'SOP INSTANCE UID', value: (r) => r.sopInstanceUid ?? ''})
  if (result.level !== 'PATIENT') columns.push({header: 'MODALITY', value: (r) => r.modalities ?? ''})
  if (result.level !== 'IMAGE') columns.push({header: 'INSTANCES', value: (r) => (r.instances === undefined ? '' : String(r.instances)), align: 'right'})
  columns.push({header: 'BACKENDS', value: (r) => r.backends.join(', ')})
  const lines = [result.matches.length === 0 ? `no ${result.level.toLowerCase()} matches` : formatTable(result.matches, columns, options)]
  for (const missing of result.missing) lines.push(`warning: no answer from ${missing.backend}: ${missing.why}`)
  return lines.join('\n')
}

export interface GetOptions {
  outDir: string
  callingAeTitle?: string
  /** The study ledger's record: folder backends are answered from it. */
  stored?: StoredInstances
  signal?: AbortSignal
  onProgress?: (done: number, total: number, failure?: SubOperationFailure) => void
}

export interface GetResult {
  studies: Array<{studyInstanceUid: string; instances: number; backends: string[]}>
  /** Asked for, held by no backend that answered. */
  notFound: string[]
  written: number
  bytes: number
  failures: SubOperationFailure[]
  missing: MissingAnswer[]
  outDir: string
}

/** Downloads studies from whichever backends hold them into <out>/<PatientID>/<Study>/<Series>/<SOP>.dcm, byte for byte. */
export async function getFromFleet(config: DdrConfig, studyInstanceUids: string[], options: GetOptions): Promise<GetResult> {
  if (studyInstanceUids.length === 0) throw new DdrError('USAGE', 'give at least one StudyInstanceUID', {hint: '`ddr find` lists them'})
  const callingAeTitle = options.callingAeTitle ?? config.listen.aeTitle
  const {sources, unqueryable} = querySources(config.backends, {callingAeTitle, timeoutMs: config.retrieve.queryTimeoutMs, stored: options.stored})
  const fetcher = new InstanceFetcher(config.backends, {timeoutMs: 60_000, callingAeTitle})
  const located = await locateInstances({level: 'STUDY', studyInstanceUids}, sources, {
    model: QueryModel.studyRootFind,
    timeoutMs: config.retrieve.queryTimeoutMs,
    signal: options.signal,
    sopClassFrom: fetcher.fetchesByCGet,
  })
  const sink = new FolderSink(options.outDir)
  let done = 0
  const result = await deliverInstances(located.instances, fetcher, sink, {
    signal: options.signal,
    onProgress: (_counts, step) => {
      done++
      options.onProgress?.(done, located.instances.length, step?.why === undefined ? undefined : {sopInstanceUid: step.instance.sopInstanceUid, backend: step.instance.backend, why: step.why})
    },
  })
  const studies = studyInstanceUids.map((uid) => {
    const of = located.instances.filter((i) => i.studyInstanceUid === uid)
    return {studyInstanceUid: uid, instances: of.length, backends: [...new Set(of.map((i) => i.backend))].sort()}
  })
  return {
    studies,
    notFound: studies.filter((s) => s.instances === 0).map((s) => s.studyInstanceUid),
    written: sink.written.length,
    bytes: result.bytes,
    failures: result.failures,
    missing: [...unqueryable.map((u) => ({backend: u.backend, why: u.why})), ...located.missing],
    outDir: options.outDir,
  }
}

export function formatGetResult(result: GetResult): string {
  const lines = result.studies.map((s) => (s.instances === 0 ? `${s.studyInstanceUid}: held by no backend that answered` : `${s.studyInstanceUid}: ${s.instances} instances from ${s.backends.join(', ')}`))
  lines.push(`${result.written} files (${formatBytes(result.bytes)}) written under ${result.outDir}`)
  for (const failure of result.failures) lines.push(`failed: ${failure.sopInstanceUid} from ${failure.backend}: ${failure.why}`)
  for (const missing of result.missing) lines.push(`warning: no answer from ${missing.backend}: ${missing.why}`)
  return lines.join('\n')
}
