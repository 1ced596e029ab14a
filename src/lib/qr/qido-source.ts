/**
 * A DICOMweb backend's part of a fleet query: QIDO-RS (PS3.18 10.6). The identifier's matching
 * keys become query parameters (wildcards, date ranges and UID lists keep their DICOM syntax,
 * UID lists comma-separated), its return keys `includefield`, and each DICOM JSON answer (PS3.18
 * F.2) an identifier again. QIDO has no patient resource: a PATIENT-level query asks for studies
 * and gathers them by patient, summing their counts.
 */
import got, {type Got} from 'got'

import type {BackendConfig} from '../config/schema.js'
import {Identifier, type QueryLevel} from '../dicom/identifier.js'
import {Tag} from '../dicom/tags.js'
import {DdrError} from '../errors.js'
import {redactUrl} from '../output/redact.js'
import {type HttpAgents, backendHttpAgents, destroyHttpAgents} from '../security/https.js'
import type {QuerySource} from './types.js'

/** DICOM JSON: attributes by tag ("00100010"), each with its VR and values. */
export type DicomJson = Record<string, {vr?: string; Value?: unknown[]} | undefined>

/** The QIDO resource that answers a level. */
const RESOURCE: Record<QueryLevel, string> = {PATIENT: 'studies', STUDY: 'studies', SERIES: 'series', IMAGE: 'instances'}

/** Query elements that are not attributes to match or return. */
const NOT_ATTRIBUTES: ReadonlySet<number> = new Set([Tag.QueryRetrieveLevel, Tag.SpecificCharacterSet])

/** Patient counts ddr sums from the studies; QIDO does not know them. */
const PATIENT_COUNTS: ReadonlySet<number> = new Set([Tag.NumberOfPatientRelatedStudies, Tag.NumberOfPatientRelatedSeries, Tag.NumberOfPatientRelatedInstances])

/** A tag as QIDO names it: eight upper-case hex digits. */
export function qidoTag(tag: number): string {
  return tag.toString(16).padStart(8, '0').toUpperCase()
}

/** The QIDO-RS request for a query: the resource (relative to the backend's url) and its parameters. */
export function qidoRequestOf(query: Identifier): {resource: string; searchParams: URLSearchParams} {
  const level = query.level()
  if (level === undefined) throw new DdrError('USAGE', 'the query has no valid Query/Retrieve Level (0008,0052)')
  const searchParams = new URLSearchParams()
  const include = new Set<string>()
  for (const tag of query.tags()) {
    if (NOT_ATTRIBUTES.has(tag) || query.vr(tag) === 'SQ' || PATIENT_COUNTS.has(tag)) continue
    const value = query.get(tag)?.trim() ?? ''
    if (value === '' || /^\*+$/.test(value)) include.add(qidoTag(tag))
    else searchParams.append(qidoTag(tag), query.vr(tag) === 'UI' ? query.list(tag).join(',') : value)
  }

  // Patients are gathered from their studies: the studies' counts give theirs.
  if (level === 'PATIENT') {
    for (const tag of [Tag.PatientID, Tag.NumberOfStudyRelatedSeries, Tag.NumberOfStudyRelatedInstances]) include.add(qidoTag(tag))
  }

  for (const field of include) searchParams.append('includefield', field)
  return {resource: RESOURCE[level], searchParams}
}

/** One DICOM JSON value as identifier text: person names by their alphabetic group, numbers in decimal. */
function textOf(value: unknown): string {
  if (value === null || value === undefined) return ''
  if (typeof value === 'object') {
    const name = value as {Alphabetic?: string; Ideographic?: string; Phonetic?: string}
    const groups = [name.Alphabetic ?? '', name.Ideographic ?? '', name.Phonetic ?? '']
    while (groups.length > 1 && groups.at(-1) === '') groups.pop()
    return groups.join('=')
  }

  return String(value)
}

/**
 * A QIDO answer as a C-FIND match: the query's keys (empty when the answer lacks them), with the
 * values it gives; SpecificCharacterSet ISO_IR 192 when a value is not ASCII (DICOM JSON is UTF-8).
 */
export function identifierOfQido(answer: DicomJson, query: Identifier, level: QueryLevel): Identifier {
  const match = Identifier.of([[Tag.QueryRetrieveLevel, level]])
  let unicode = false
  for (const tag of query.tags()) {
    if (NOT_ATTRIBUTES.has(tag) || query.vr(tag) === 'SQ') continue
    const values = answer[qidoTag(tag)]?.Value ?? []
    const text = values.map((value) => textOf(value)).join('\\')
    if ([...text].some((c) => c.charCodeAt(0) > 0x7f)) unicode = true
    match.set(tag, text, query.vr(tag))
  }

  if (unicode) match.set(Tag.SpecificCharacterSet, 'ISO_IR 192')
  return match
}

/** QIDO answers to a PATIENT-level query (studies) gathered by patient, with the patient counts summed. */
export function patientsOfStudies(studies: readonly DicomJson[], query: Identifier): Identifier[] {
  const patients = new Map<string, {match: Identifier; studies: number; series: number; instances: number}>()
  const count = (study: DicomJson, tag: number) => Number(study[qidoTag(tag)]?.Value?.[0] ?? 0) || 0
  for (const study of studies) {
    const match = identifierOfQido(study, query, 'PATIENT')
    const key = `${textOf(study[qidoTag(Tag.PatientID)]?.Value?.[0])}\u0000${textOf(study[qidoTag(Tag.IssuerOfPatientID)]?.Value?.[0])}`
    const known = patients.get(key) ?? {match, studies: 0, series: 0, instances: 0}
    known.studies++
    known.series += count(study, Tag.NumberOfStudyRelatedSeries)
    known.instances += count(study, Tag.NumberOfStudyRelatedInstances)
    patients.set(key, known)
  }

  return [...patients.values()].map(({match, studies: studyCount, series, instances}) => {
    if (query.has(Tag.NumberOfPatientRelatedStudies)) match.set(Tag.NumberOfPatientRelatedStudies, String(studyCount))
    if (query.has(Tag.NumberOfPatientRelatedSeries)) match.set(Tag.NumberOfPatientRelatedSeries, String(series))
    if (query.has(Tag.NumberOfPatientRelatedInstances)) match.set(Tag.NumberOfPatientRelatedInstances, String(instances))
    return match
  })
}

/** An HTTP client for a DICOMweb backend's url (its credentials and trust); close the agents when done. */
export function dicomwebClient(backend: BackendConfig, timeoutMs: number): {client: Got; agents: HttpAgents} {
  if (backend.url === undefined) throw new DdrError('CONFIG_INVALID', `backend ${backend.name} has type "dicomweb" but no url`)
  const agents = backendHttpAgents(backend)
  const client = got.extend({
    prefixUrl: backend.url,
    username: backend.username,
    password: backend.password,
    headers: backend.token === undefined ? {} : {authorization: `Bearer ${backend.token}`},
    timeout: {request: timeoutMs},
    retry: {limit: 0},
    throwHttpErrors: false,
    agent: agents,
  })
  return {client, agents}
}

/** QIDO-RS towards one DICOMweb backend: one request per query. */
export class QidoQuerySource implements QuerySource {
  readonly name: string

  constructor(private readonly backend: BackendConfig, private readonly options: {timeoutMs: number}) {
    this.name = backend.name
  }

  async find(query: Identifier, options: {model: string; signal?: AbortSignal; onMatch: (match: Identifier) => void}): Promise<void> {
    const level = query.level()
    if (level === undefined) throw new DdrError('USAGE', 'the query has no valid Query/Retrieve Level (0008,0052)')
    const {resource, searchParams} = qidoRequestOf(query)
    const shown = `QIDO-RS ${redactUrl(this.backend.url!, {credentials: 'drop'})}/${resource}`
    const {client, agents} = dicomwebClient(this.backend, this.options.timeoutMs)
    try {
      const response = await client.get(resource, {searchParams, headers: {accept: 'application/dicom+json'}, signal: options.signal}).catch((error: Error) => {
        throw new DdrError('BACKEND_UNREACHABLE', `${shown}: ${error.message}`, {cause: error})
      })
      // No match: 204 (PS3.18), or 200 with an empty body.
      if (response.statusCode === 204) return
      if (response.statusCode !== 200) {
        throw new DdrError('BACKEND_REFUSED', `${shown} answered HTTP ${response.statusCode}`, {hint: response.statusCode === 401 || response.statusCode === 403 ? `check the credentials of backend ${this.backend.name}` : undefined})
      }

      let answers: DicomJson[]
      try {
        answers = response.body.trim() === '' ? [] : (JSON.parse(response.body) as DicomJson[])
        if (!Array.isArray(answers)) throw new Error('not an array')
      } catch (error) {
        throw new DdrError('BACKEND_REFUSED', `${shown} answered something that is not DICOM JSON: ${(error as Error).message}`)
      }

      const matches = level === 'PATIENT' ? patientsOfStudies(answers, query) : answers.map((answer) => identifierOfQido(answer, query, level))
      for (const match of matches) options.onMatch(match)
    } finally {
      destroyHttpAgents(agents)
    }
  }
}
