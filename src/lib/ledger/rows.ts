import type {Receipt, StudyDetail, StudyInstance, StudyState, StudySummary} from './types.js'

/** A study row with its instances' aggregates, as both stores select it (SQLite's JSON columns still text, PostgreSQL's parsed). */
export interface StudyRow {
  study_instance_uid: string
  patient_id: string | null
  accession_number: string | null
  study_date: string | null
  first_received: number
  last_received: number
  state: StudyState
  stable_at: number | null
  amendments: number
  receipt: Receipt | string | null
  instances: number
  bytes: number | null
  modalities: string | null
  backends: string | null
  queued: number | null
  stored: number | null
  dead_letter: number | null
  processing?: StudySummary['processing'] | string | null
}

export const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString())

const json = <T>(value: T | string | null | undefined): T | null => (value === null || value === undefined ? null : typeof value === 'string' ? (JSON.parse(value) as T) : value)

/** One row of `ddr studies`, from a study row. */
export function studySummary(row: StudyRow): StudySummary {
  const backends = (row.backends ?? '').split(',').filter((b) => b !== '').sort()
  return {
    studyInstanceUid: row.study_instance_uid,
    patientId: row.patient_id,
    accessionNumber: row.accession_number,
    studyDate: row.study_date,
    modalities: (row.modalities ?? '').split(',').filter((m) => m !== '').sort(),
    instances: row.instances,
    bytes: row.bytes ?? 0,
    backend: backends.length === 0 ? null : backends.join(','),
    backends,
    state: row.state,
    delivered: {queued: row.queued ?? 0, stored: row.stored ?? 0, deadLetter: row.dead_letter ?? 0},
    amendments: row.amendments,
    firstReceived: iso(row.first_received)!,
    lastReceived: iso(row.last_received)!,
    stableAt: iso(row.stable_at),
    receipt: json<Receipt>(row.receipt),
    processing: json<StudySummary['processing']>(row.processing) ?? [],
  }
}

/** One instance of `ddr study UID`, from an instances row (amendment: SQLite's 0/1 or PostgreSQL's boolean). */
export function studyInstance(row: Record<string, unknown>): StudyInstance {
  return {
    sopInstanceUid: row.sop_instance_uid as string,
    seriesInstanceUid: row.series_instance_uid as string | null,
    sopClassUid: row.sop_class_uid as string,
    modality: row.modality as string | null,
    bytes: row.bytes as number,
    callingAeTitle: row.calling_ae as string,
    remoteAddress: row.remote_address as string | null,
    receivedAt: iso(row.received_at as number)!,
    status: row.status as StudyInstance['status'],
    backend: row.backend as string | null,
    deliveredAt: iso(row.delivered_at as number | null),
    detail: row.detail as string | null,
    amendment: row.amendment === 1 || row.amendment === true,
  }
}

/** A study with its series (in the order of its instances) and every instance. */
export function studyDetail(head: StudySummary, instanceList: StudyInstance[]): StudyDetail {
  const series = new Map<string | null, {seriesInstanceUid: string | null; modality: string | null; instances: number}>()
  for (const instance of instanceList) {
    const entry = series.get(instance.seriesInstanceUid) ?? {seriesInstanceUid: instance.seriesInstanceUid, modality: instance.modality, instances: 0}
    entry.instances++
    series.set(instance.seriesInstanceUid, entry)
  }

  return {...head, series: [...series.values()], instanceList}
}
