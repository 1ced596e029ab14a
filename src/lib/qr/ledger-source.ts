/**
 * A folder backend answers no query itself: the study ledger says which instances ddr stored on it
 * (and narrows by what it records: patient, accession, date, UIDs), their files say the rest, and
 * ddr matches the query against them (matching.ts) the way a DICOM SCP would.
 */
import path from 'node:path'

import {folderLayout} from '../backends/folder-backend.js'
import type {BackendConfig} from '../config/schema.js'
import {readDatasetFromFile} from '../dicom/dataset-reader.js'
import {Identifier, type QueryLevel} from '../dicom/identifier.js'
import {Tag} from '../dicom/tags.js'
import {DdrError} from '../errors.js'
import {matchesQuery} from './matching.js'
import type {QuerySource} from './types.js'

/** One instance the study ledger says a backend stored. */
export interface StoredInstance {
  sopInstanceUid: string
  seriesInstanceUid: string
  studyInstanceUid: string
  patientId: string
  sopClassUid: string
  modality: string
}

/**
 * What the ledger can narrow by itself (it may return more, never less: the files decide). Patient
 * ID and accession number as DICOM patterns (`*`, `?`), the study date as a DICOM date or range.
 */
export interface StoredFilter {
  patientId?: string
  accessionNumber?: string
  studyDate?: string
  studyInstanceUids?: string[]
  seriesInstanceUids?: string[]
  sopInstanceUids?: string[]
}

/**
 * What the study ledger recorded as stored on a backend. The ledger implements it and listen/
 * (or a command) hands it down: qr sits below the ledger (docs/architecture.md).
 */
export interface StoredInstances {
  storedOn(backend: string, filter: StoredFilter): StoredInstance[]
}

/** Attributes ddr counts or knows instead of reading them from a file. */
const COMPUTED: ReadonlySet<number> = new Set([
  Tag.QueryRetrieveLevel,
  Tag.SpecificCharacterSet,
  Tag.RetrieveAETitle,
  Tag.InstanceAvailability,
  Tag.ModalitiesInStudy,
  Tag.NumberOfPatientRelatedStudies,
  Tag.NumberOfPatientRelatedSeries,
  Tag.NumberOfPatientRelatedInstances,
  Tag.NumberOfStudyRelatedSeries,
  Tag.NumberOfStudyRelatedInstances,
  Tag.NumberOfSeriesRelatedInstances,
])

const GROUP_KEY: Record<QueryLevel, (instance: StoredInstance) => string> = {
  PATIENT: (instance) => instance.patientId,
  STUDY: (instance) => instance.studyInstanceUid,
  SERIES: (instance) => instance.seriesInstanceUid,
  IMAGE: (instance) => instance.sopInstanceUid,
}

/** The ledger's narrowing for a query: the keys it records, when the query gives them. */
export function storedFilterOf(query: Identifier): StoredFilter {
  const text = (tag: number) => {
    const value = query.get(tag)?.trim()
    return value === undefined || value === '' || /^\*+$/.test(value) ? undefined : value
  }

  const uids = (tag: number) => (text(tag) === undefined ? undefined : query.list(tag).filter((uid) => uid !== ''))
  const filter: StoredFilter = {
    patientId: text(Tag.PatientID),
    accessionNumber: text(Tag.AccessionNumber),
    studyDate: text(Tag.StudyDate),
    studyInstanceUids: uids(Tag.StudyInstanceUID),
    seriesInstanceUids: uids(Tag.SeriesInstanceUID),
    sopInstanceUids: uids(Tag.SOPInstanceUID),
  }
  return Object.fromEntries(Object.entries(filter).filter(([, value]) => value !== undefined)) as StoredFilter
}

/** A folder backend's part of a fleet query, from the ledger and the backend's files. */
export class LedgerQuerySource implements QuerySource {
  readonly name: string
  private readonly root: string

  constructor(backend: BackendConfig, private readonly ledger: StoredInstances) {
    if (backend.path === undefined) throw new DdrError('CONFIG_INVALID', `backend ${backend.name} has type "folder" but no path`)
    this.name = backend.name
    this.root = path.resolve(backend.path)
  }

  async find(query: Identifier, options: {model: string; signal?: AbortSignal; onMatch: (match: Identifier) => void}): Promise<void> {
    const level = query.level()
    if (level === undefined) throw new DdrError('USAGE', 'the query has no valid Query/Retrieve Level (0008,0052)')
    const groups = new Map<string, StoredInstance[]>()
    for (const instance of this.ledger.storedOn(this.name, storedFilterOf(query))) {
      const key = GROUP_KEY[level](instance)
      const group = groups.get(key)
      if (group === undefined) groups.set(key, [instance])
      else group.push(instance)
    }

    const fromFile = query.tags().filter((tag) => !COMPUTED.has(tag) && query.vr(tag) !== 'SQ')
    for (const group of groups.values()) {
      if (options.signal?.aborted) return
      // Attributes of the level and above are the same in every instance of the group: one file says them.
      const representative = group[0]
      const read = await readDatasetFromFile(path.join(this.root, folderLayout(representative)), fromFile).catch(() => undefined)
      // A file the ledger knows but the folder no longer holds is not there to be retrieved.
      if (read === undefined) continue
      const computed = computedValues(level, group)
      const known: Record<number, string> = {
        [Tag.PatientID]: representative.patientId,
        [Tag.StudyInstanceUID]: representative.studyInstanceUid,
        [Tag.SeriesInstanceUID]: representative.seriesInstanceUid,
        [Tag.SOPInstanceUID]: representative.sopInstanceUid,
        [Tag.SOPClassUID]: representative.sopClassUid,
        [Tag.Modality]: representative.modality,
      }
      const valueOf = (tag: number) => computed.get(tag) ?? read.values.get(tag) ?? known[tag]
      if (!matchesQuery(query, valueOf)) continue
      const answer = Identifier.of([[Tag.QueryRetrieveLevel, level]])
      let unicode = false
      for (const tag of query.tags()) {
        if (tag === Tag.QueryRetrieveLevel || tag === Tag.SpecificCharacterSet || query.vr(tag) === 'SQ') continue
        const value = valueOf(tag) ?? ''
        if ([...value].some((c) => c.charCodeAt(0) > 0x7f)) unicode = true
        answer.set(tag, value, query.vr(tag))
      }

      if (unicode) answer.set(Tag.SpecificCharacterSet, 'ISO_IR 192')
      options.onMatch(answer)
    }
  }
}

/** Counts and sets over the group's instances, as a PACS computes them for the level. */
function computedValues(level: QueryLevel, group: readonly StoredInstance[]): Map<number, string> {
  const distinct = (pick: (instance: StoredInstance) => string) => new Set(group.map(pick).filter((v) => v !== ''))
  const values = new Map<number, string>([[Tag.InstanceAvailability, 'ONLINE']])
  const count = (tag: number, n: number) => values.set(tag, String(n))
  if (level === 'PATIENT') {
    count(Tag.NumberOfPatientRelatedStudies, distinct((i) => i.studyInstanceUid).size)
    count(Tag.NumberOfPatientRelatedSeries, distinct((i) => i.seriesInstanceUid).size)
    count(Tag.NumberOfPatientRelatedInstances, group.length)
  }

  if (level === 'STUDY') {
    count(Tag.NumberOfStudyRelatedSeries, distinct((i) => i.seriesInstanceUid).size)
    count(Tag.NumberOfStudyRelatedInstances, group.length)
    values.set(Tag.ModalitiesInStudy, [...distinct((i) => i.modality)].sort().join('\\'))
  }

  if (level === 'SERIES') count(Tag.NumberOfSeriesRelatedInstances, group.length)
  return values
}
