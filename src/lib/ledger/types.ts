/** One instance as the router acknowledged it: what the ledger records before Success. */
export interface InstanceReceipt {
  sopInstanceUid: string
  sopClassUid: string
  studyInstanceUid: string
  seriesInstanceUid?: string
  patientId?: string
  accessionNumber?: string
  modality?: string
  studyDate?: string
  /** From the instance's AcquisitionNumber and ImagesInAcquisition (never stored: they only make a study stable early). */
  acquisitionNumber?: string
  imagesInAcquisition?: number
  callingAeTitle: string
  /** The sender's address and port. */
  remoteAddress?: string
  /** Dataset bytes. */
  bytes: number
  /** Epoch milliseconds. */
  receivedAt: number
  /** Made by a processing module from the study (its SR): re-opens a stable study without counting as an amendment. */
  derived?: boolean
}

/** What became of an instance after Success. */
export interface InstanceOutcome {
  sopInstanceUid: string
  /** `stored`: a backend confirmed it; `dead-letter`: it went to spool.dir/dead-letter. */
  status: 'stored' | 'dead-letter'
  backend?: string
  at: number
  detail?: string
  /** Where a copy was kept for repairs (stored instances, with retention on). */
  kept?: {file: string; offset: number; length: number}
}

/**
 * What a backend was found to hold of a study, against what the ledger says it stored there:
 * `verified` (all there), `repairing` (missing ones re-sent from retention), `incomplete` (missing,
 * and not in retention), `unverifiable` (the backend cannot be asked: a DICOM SCP without REST).
 */
export type ReceiptState = 'verified' | 'repairing' | 'incomplete' | 'unverifiable'

export interface Receipt {
  state: ReceiptState
  /** Instances the ledger says backends stored. */
  expected: number
  /** Of those, how many the backends hold. */
  found: number
  /** SOP Instance UIDs a backend should hold and does not. */
  missing: string[]
  /** Of the missing, how many were queued again from retention by this check. */
  repaired: number
  checkedAt: string
  detail?: string
}

/** `receiving` while instances arrive; `stable` after studies.stableSeconds without one. */
export type StudyState = 'receiving' | 'stable'

/** One row of `ddr studies`. */
export interface StudySummary {
  studyInstanceUid: string
  patientId: string | null
  accessionNumber: string | null
  studyDate: string | null
  modalities: string[]
  instances: number
  bytes: number
  /** Where its instances went (one, unless a failover split it); null while none is delivered. */
  backend: string | null
  backends: string[]
  state: StudyState
  /** Instances by outcome: still queued, stored on a backend, in dead-letter. */
  delivered: {queued: number; stored: number; deadLetter: number}
  /** Instances that arrived after the study was stable (each such arrival re-opened it). */
  amendments: number
  firstReceived: string
  lastReceived: string
  stableAt: string | null
  /** The last receipt check; null before the first. */
  receipt: Receipt | null
  /** Processing modules on the study and how each went (`failed`: the study is processing-failed); empty when none ran. */
  processing: Array<{module: string; state: 'pending' | 'running' | 'done' | 'failed'; attempts: number; detail: string | null}>
}

/** One instance in `ddr study UID`. */
export interface StudyInstance {
  sopInstanceUid: string
  seriesInstanceUid: string | null
  sopClassUid: string
  modality: string | null
  bytes: number
  callingAeTitle: string
  remoteAddress: string | null
  receivedAt: string
  status: 'queued' | 'stored' | 'dead-letter'
  backend: string | null
  deliveredAt: string | null
  detail: string | null
  /** Arrived after the study was stable. */
  amendment: boolean
}

/** `ddr study UID`: the study, its series and every instance. */
export interface StudyDetail extends StudySummary {
  series: Array<{seriesInstanceUid: string | null; modality: string | null; instances: number}>
  instanceList: StudyInstance[]
}

/** Filters of `ddr studies`. */
export interface StudyQuery {
  state?: StudyState
  patientId?: string
  /** Only studies whose last instance arrived at or after this (epoch ms). */
  since?: number
  /** At most this many, newest first (default 100). */
  limit?: number
}

/** How many studies are in each state. */
export interface StudyCounts {
  receiving: number
  stable: number
  /** Stable studies by receipt state (null: not checked yet). */
  receipts: Record<ReceiptState | 'unchecked', number>
}
