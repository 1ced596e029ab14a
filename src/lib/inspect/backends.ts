import {redactUrl} from '../output/redact.js'
import type {BackendConfig} from '../config/schema.js'
import {DdrError, ExitCode, type ExitCodeValue, isDdrError} from '../errors.js'
import {type OrthancClient, orthancClientFor} from '../orthanc/client.js'
import {type Column, formatTable, painter} from '../output/table.js'

/** One study as a backend holds it. */
export interface StudySummary {
  studyInstanceUid: string
  /** Orthanc's id of the study on that backend. */
  orthancId: string
  patientId?: string
  patientName?: string
  studyDate?: string
  studyDescription?: string
  accessionNumber?: string
  /** Modalities of its series, sorted. */
  modalities: string[]
  series: number
  instances: number
}

/**
 * found / not-found: the backend answered. unreachable: no connection or timeout. refused: it
 * answered with an error (e.g. 401). no-rest-api: the backend has no `url`, so it cannot be asked.
 */
export type BackendQueryStatus = 'found' | 'not-found' | 'unreachable' | 'refused' | 'no-rest-api'

/** What one backend said. */
export interface BackendLocation {
  backend: string
  url?: string
  status: BackendQueryStatus
  error?: {code: string; message: string}
  studies: StudySummary[]
  /** For --sop: the instance and where it sits. */
  instance?: {orthancId: string; sopInstanceUid: string; seriesInstanceUid?: string; studyInstanceUid?: string; instanceNumber?: string}
  /** Totals over `studies`. */
  series: number
  instances: number
}

/** What `ddr inspect --study/--sop/--patient --json` prints. */
export interface LocateResult {
  kind: 'locate'
  query: LocateQuery
  /** Some backend holds it. */
  found: boolean
  /** Names of the backends that hold it, in configuration order. */
  foundOn: string[]
  /** A study (--study, --sop) stored on more than one backend. */
  split: boolean
  /** How many backends answered (found or not). */
  answered: number
  backends: BackendLocation[]
}

export interface LocateQuery {
  by: 'study' | 'sop' | 'patient'
  value: string
}

/** What `ddr inspect --backend NAME --json` prints. */
export interface BackendStudiesResult {
  kind: 'backend-studies'
  backend: string
  url?: string
  status: 'ok' | Exclude<BackendQueryStatus, 'found' | 'not-found'>
  error?: {code: string; message: string}
  /** Studies the backend holds in all (from /statistics). */
  total?: number
  offset: number
  limit: number
  studies: StudySummary[]
}

/** Options for the backend queries. */
export interface BackendQueryOptions {
  /** Per-request timeout (default 10 s). */
  timeoutMs?: number
  /** Requests in flight per backend (default 8). */
  concurrency?: number
}

const DEFAULT_TIMEOUT_MS = 10_000
const DEFAULT_CONCURRENCY = 8

async function mapLimit<T, R>(items: T[], limit: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const results: R[] = new Array(items.length)
  let next = 0
  const worker = async () => {
    while (next < items.length) {
      const index = next++
      results[index] = await fn(items[index])
    }
  }
  await Promise.all(Array.from({length: Math.min(limit, items.length)}, worker))
  return results
}

function clientFor(backend: BackendConfig, options: BackendQueryOptions): OrthancClient | undefined {
  if (backend.url === undefined) return undefined
  return orthancClientFor(backend, {timeoutMs: options.timeoutMs ?? DEFAULT_TIMEOUT_MS})
}

function tag(tags: Record<string, string> | undefined, name: string): string | undefined {
  const value = tags?.[name]?.trim()
  return value === undefined || value === '' ? undefined : value
}

/** The study's tags, series and instance counts on one Orthanc (two requests). */
export async function summarizeStudy(client: OrthancClient, orthancId: string): Promise<StudySummary> {
  const [study, series] = await Promise.all([client.study(orthancId), client.studySeries(orthancId)])
  const modalities = [...new Set(series.map((s) => tag(s.MainDicomTags, 'Modality')).filter((m): m is string => m !== undefined))].sort()
  const summary: StudySummary = {
    studyInstanceUid: tag(study.MainDicomTags, 'StudyInstanceUID') ?? '',
    orthancId,
    modalities,
    series: series.length,
    instances: series.reduce((sum, s) => sum + (Array.isArray(s.Instances) ? s.Instances.length : 0), 0),
  }
  const optional: Array<[keyof StudySummary, string | undefined]> = [
    ['patientId', tag(study.PatientMainDicomTags, 'PatientID')],
    ['patientName', tag(study.PatientMainDicomTags, 'PatientName')],
    ['studyDate', tag(study.MainDicomTags, 'StudyDate')],
    ['studyDescription', tag(study.MainDicomTags, 'StudyDescription')],
    ['accessionNumber', tag(study.MainDicomTags, 'AccessionNumber')],
  ]
  for (const [key, value] of optional) if (value !== undefined) (summary as unknown as Record<string, unknown>)[key] = value
  return summary
}

function failure(error: unknown): {status: 'unreachable' | 'refused'; error: {code: string; message: string}} {
  if (isDdrError(error)) return {status: error.code === 'BACKEND_UNREACHABLE' || error.code === 'TIMEOUT' ? 'unreachable' : 'refused', error: {code: error.code, message: error.message}}
  throw error
}

const noRestApi = (backend: BackendConfig) => ({
  status: 'no-rest-api' as const,
  error: {code: 'BACKEND_UNREACHABLE', message: `backend ${backend.name} (${backend.host === undefined ? `${backend.type} backend` : `${backend.host}:${backend.port}`}) has no "url": ddr can only ask an Orthanc REST API`},
})

async function locateOn(backend: BackendConfig, query: LocateQuery, options: BackendQueryOptions): Promise<BackendLocation> {
  const base = {backend: backend.name, ...(backend.url === undefined ? {} : {url: redactUrl(backend.url)}), studies: [] as StudySummary[], series: 0, instances: 0}
  const client = clientFor(backend, options)
  if (!client) return {...base, ...noRestApi(backend)}
  const concurrency = options.concurrency ?? DEFAULT_CONCURRENCY
  try {
    let instance: BackendLocation['instance']
    let studyIds: string[]
    if (query.by === 'sop') {
      const id = await client.lookupInstance(query.value)
      if (id === undefined) {
        studyIds = []
      } else {
        const found = await client.instance(id)
        const series = await client.series(found.ParentSeries)
        instance = {orthancId: id, sopInstanceUid: tag(found.MainDicomTags, 'SOPInstanceUID') ?? query.value}
        const seriesInstanceUid = tag(series.MainDicomTags, 'SeriesInstanceUID')
        if (seriesInstanceUid !== undefined) instance.seriesInstanceUid = seriesInstanceUid
        const instanceNumber = tag(found.MainDicomTags, 'InstanceNumber')
        if (instanceNumber !== undefined) instance.instanceNumber = instanceNumber
        studyIds = [series.ParentStudy]
      }
    } else {
      studyIds = await client.findStudies(query.by === 'study' ? {StudyInstanceUID: query.value} : {PatientID: query.value})
    }
    const studies = await mapLimit(studyIds, concurrency, (id) => summarizeStudy(client, id))
    if (instance && studies[0]?.studyInstanceUid) instance.studyInstanceUid = studies[0].studyInstanceUid
    return {
      ...base,
      status: studies.length > 0 ? 'found' : 'not-found',
      studies,
      ...(instance ? {instance} : {}),
      series: studies.reduce((sum, study) => sum + study.series, 0),
      instances: studies.reduce((sum, study) => sum + study.instances, 0),
    }
  } catch (error) {
    return {...base, ...failure(error)}
  } finally {
    client.close()
  }
}

/**
 * Asks every backend (in parallel) whether it holds a study (by StudyInstanceUID), an instance
 * (by SOPInstanceUID) or a patient's studies (by PatientID, Orthanc wildcards allowed), with
 * series and instance counts. A backend that cannot be asked is reported as such, never thrown.
 */
export async function locateOnBackends(backends: BackendConfig[], query: LocateQuery, options: BackendQueryOptions = {}): Promise<LocateResult> {
  const locations = await Promise.all(backends.map((backend) => locateOn(backend, query, options)))
  const foundOn = locations.filter((location) => location.status === 'found').map((location) => location.backend)
  const studyUids = new Set(locations.flatMap((location) => location.studies.map((study) => study.studyInstanceUid)))
  return {
    kind: 'locate',
    query,
    found: foundOn.length > 0,
    foundOn,
    split: query.by !== 'patient' && foundOn.length > 1 && studyUids.size === 1,
    answered: locations.filter((location) => location.status === 'found' || location.status === 'not-found').length,
    backends: locations,
  }
}

/**
 * One page of the studies a backend holds (Orthanc's order), each with patient, date,
 * modalities and counts, and the backend's total study count.
 */
export async function listBackendStudies(backend: BackendConfig, page: {offset: number; limit: number}, options: BackendQueryOptions = {}): Promise<BackendStudiesResult> {
  const base = {kind: 'backend-studies' as const, backend: backend.name, ...(backend.url === undefined ? {} : {url: redactUrl(backend.url)}), offset: page.offset, limit: page.limit, studies: [] as StudySummary[]}
  const client = clientFor(backend, options)
  if (!client) return {...base, ...noRestApi(backend)}
  try {
    const [statistics, ids] = await Promise.all([client.statistics(), client.studies({since: page.offset, limit: page.limit})])
    const studies = await mapLimit(ids, options.concurrency ?? DEFAULT_CONCURRENCY, (id) => summarizeStudy(client, id))
    return {...base, status: 'ok', total: statistics.CountStudies, studies}
  } catch (error) {
    return {...base, ...failure(error)}
  } finally {
    client.close()
  }
}

/** 0 when every backend answered, 3 when none could be asked, 4 when some could not (the answer may be incomplete). */
export function locateExitCode(result: LocateResult): ExitCodeValue {
  if (result.answered === 0) return ExitCode.peer
  return result.answered < result.backends.length ? ExitCode.partial : ExitCode.ok
}

/** What the user asked `ddr inspect` for. */
export type InspectRequest =
  | {kind: 'file'; file: string; tags: boolean}
  | {kind: 'locate'; query: LocateQuery; backends?: string[]}
  | {kind: 'backend-studies'; backend: string; offset: number; limit: number}

/** The flags and argument of `ddr inspect`. */
export interface InspectInput {
  file?: string
  tags?: boolean
  study?: string
  sop?: string
  patient?: string
  backend?: string[]
  limit?: number
  offset?: number
  page?: number
}

export const DEFAULT_PAGE_SIZE = 25

/** Checks which of its three uses `ddr inspect` was called for; DdrError USAGE (exit 2) for a mix. */
export function inspectRequest(input: InspectInput): InspectRequest {
  const usage = (message: string) => new DdrError('USAGE', message, {hint: 'ddr inspect FILE [--tags] | --study UID | --sop UID | --patient ID [--backend NAME...] | --backend NAME [--limit N --page N]'})
  const queries = (['study', 'sop', 'patient'] as const).filter((key) => input[key] !== undefined)
  const paging = input.limit !== undefined || input.offset !== undefined || input.page !== undefined
  if (input.file !== undefined) {
    if (queries.length > 0 || input.backend !== undefined || paging) throw usage('give a FILE or a backend query (--study, --sop, --patient, --backend), not both')
    return {kind: 'file', file: input.file, tags: input.tags ?? false}
  }
  if (input.tags) throw usage('--tags dumps a file: give the FILE')
  if (queries.length > 1) throw usage(`one of --study, --sop, --patient at a time (got ${queries.map((key) => `--${key}`).join(', ')})`)
  if (queries.length === 1) {
    if (paging) throw usage('--limit, --offset and --page page the study list of --backend NAME')
    const by = queries[0]
    return {kind: 'locate', query: {by, value: (input[by] as string).trim()}, ...(input.backend === undefined ? {} : {backends: input.backend})}
  }
  if (input.backend === undefined) throw usage('nothing to inspect: give a FILE, --study UID, --sop UID, --patient ID or --backend NAME')
  if (input.backend.length !== 1) throw usage('--backend NAME alone lists one backend\'s studies: give one (or add --study/--sop/--patient to search several)')
  if (input.offset !== undefined && input.page !== undefined) throw usage('--offset or --page, not both')
  const limit = input.limit ?? DEFAULT_PAGE_SIZE
  const offset = input.offset ?? ((input.page ?? 1) - 1) * limit
  return {kind: 'backend-studies', backend: input.backend[0], offset, limit}
}

const statusColumn = (paint: ReturnType<typeof painter>) => (status: string, padded: string) =>
  status === 'found' || status === 'ok' ? paint.green(padded) : status === 'not-found' ? paint.dim(padded) : paint.red(padded)

interface LocateRow {
  backend: string
  status: BackendQueryStatus
  study?: StudySummary
}

const studyColumns: Array<Column<{study?: StudySummary}>> = [
  {header: 'STUDY', value: (row) => row.study?.studyInstanceUid ?? ''},
  {header: 'PATIENT', value: (row) => (row.study ? [row.study.patientName, row.study.patientId && `(${row.study.patientId})`].filter(Boolean).join(' ') : '')},
  {header: 'DATE', value: (row) => row.study?.studyDate ?? ''},
  {header: 'MODALITY', value: (row) => row.study?.modalities.join('/') ?? ''},
  {header: 'SERIES', value: (row) => (row.study ? String(row.study.series) : ''), align: 'right'},
  {header: 'INSTANCES', value: (row) => (row.study ? String(row.study.instances) : ''), align: 'right'},
]

/** The human view of locateOnBackends: a headline, one row per backend and study, then what failed. */
export function formatLocate(result: LocateResult, options: {color?: boolean} = {}): string {
  const paint = painter(options.color ?? false)
  const what = {study: 'Study', sop: 'Instance', patient: 'Patient'}[result.query.by]
  const headline = result.found
    ? `${what} ${result.query.value} is on ${result.foundOn.join(', ')}${result.split ? paint.yellow(` (split across ${result.foundOn.length} backends)`) : ''}`
    : `${what} ${result.query.value} is on none of the ${result.answered} backend${result.answered === 1 ? '' : 's'} that answered`
  const rows: LocateRow[] = result.backends.flatMap((location) =>
    location.studies.length > 0 ? location.studies.map((study) => ({backend: location.backend, status: location.status, study})) : [{backend: location.backend, status: location.status}],
  )
  const table = formatTable(rows, [
    {header: 'BACKEND', value: (row) => row.backend},
    {header: 'STATUS', value: (row) => row.status, paint: (row, padded) => statusColumn(paint)(row.status, padded)},
    ...(studyColumns as Array<Column<LocateRow>>),
  ], options)
  const problems = result.backends.filter((location) => location.error).map((location) => paint.red(`${location.backend}: ${location.error?.message}`))
  const instance = result.backends.find((location) => location.instance)?.instance
  const detail = instance?.seriesInstanceUid ? [`series ${instance.seriesInstanceUid}${instance.instanceNumber ? `, instance #${instance.instanceNumber}` : ''}`] : []
  return [headline, ...detail, '', table, ...(problems.length > 0 ? ['', ...problems] : [])].join('\n')
}

/** The human view of listBackendStudies. */
export function formatBackendStudies(result: BackendStudiesResult, options: {color?: boolean} = {}): string {
  const paint = painter(options.color ?? false)
  if (result.status !== 'ok') return paint.red(`${result.backend}: ${result.status}: ${result.error?.message ?? ''}`)
  const first = result.studies.length === 0 ? result.offset : result.offset + 1
  const last = result.offset + result.studies.length
  const headline = `${result.backend} (${result.url}): studies ${first}-${last} of ${result.total ?? '?'}`
  if (result.studies.length === 0) return `${headline}\n\nno studies on this page`
  const rows = result.studies.map((study) => ({study}))
  const more = result.total !== undefined && last < result.total ? `\n\nnext page: --offset ${last} --limit ${result.limit}` : ''
  return `${headline}\n\n${formatTable(rows, [...studyColumns, {header: 'DESCRIPTION', value: (row) => row.study?.studyDescription ?? ''}], options)}${more}`
}
