import type {ProcessingStore} from './processing-runs.js'
import type {InstanceOutcome, InstanceReceipt, Receipt, StudyCounts, StudyDetail, StudyQuery, StudySummary} from './types.js'

/** A value now (SQLite answers from the calling thread) or later (PostgreSQL answers over the network). */
export type Awaitable<T> = Promise<T> | T

/** What became of a claim on a study's home: the backend every router sends the study to, and which router claimed it. */
export interface StudyClaim {
  backend: string
  router: string
  /** This claim was the one written (no router had claimed the study before). */
  won: boolean
}

/** One router of a shared ledger, as its last heartbeat said. */
export interface RouterRecord {
  name: string
  /** Where its status server answers (host:port). */
  address: string
  version: string
  startedAt: string
  heartbeatAt: string
  /** Seconds since its last heartbeat, by the database's clock. */
  ageSeconds: number
  /** Whether it said it could take traffic, and its counters, at its last heartbeat. */
  status: RouterHeartbeat['status']
}

/** What a router says of itself every heartbeat. */
export interface RouterHeartbeat {
  name: string
  address: string
  version: string
  startedAt: number
  status: {
    healthy: boolean
    reasons: string[]
    received: number
    routed: number
    failed: number
    spoolDepth: number
  }
}

/**
 * The study ledger's storage, one interface for the embedded SQLite file (one router) and
 * PostgreSQL (several routers, docs/cluster.md). StudyLedger, the commands and the console use
 * only this; every method may answer now or later, so callers await them.
 */
export interface LedgerStore {
  /** Where it lives, for messages: the file, or the database URL without its password. */
  readonly file: string
  /**
   * True when a failed write is likely to work again soon (a database server that is restarting):
   * the ledger keeps the writes and tries again instead of refusing new instances.
   */
  readonly transientFailures: boolean
  /** The processing table: which module ran on which study (both stores; several routers share PostgreSQL's). */
  readonly processing: ProcessingStore
  /** Study claims (shared ledgers only: one router needs none). */
  readonly claims?: ClaimStore
  /** Router registration (shared ledgers only). */
  readonly registry?: RouterRegistry

  received(receipts: InstanceReceipt[], recovered?: boolean): Awaitable<string[]>
  outcomes(outcomes: InstanceOutcome[]): Awaitable<void>
  /** Receipts and then outcomes in one transaction (what a flush of the ledger writes); returns the amended studies. Nothing is written when it throws. */
  record(receipts: InstanceReceipt[], outcomes: InstanceOutcome[]): Awaitable<string[]>
  receiving(): Awaitable<Array<{studyInstanceUid: string; lastReceived: number}>>
  markStable(studyInstanceUids: string[], quietSince: number, at: number): Awaitable<StudySummary[]>
  studies(query?: StudyQuery): Awaitable<StudySummary[]>
  arrivalGaps(since: number): Awaitable<Array<{callingAeTitle: string; modality: string | null; studyInstanceUid: string; gapMs: number; amendment: boolean}>>
  summary(studyInstanceUid: string): Awaitable<StudySummary | undefined>
  study(studyInstanceUid: string): Awaitable<StudyDetail | undefined>
  counts(): Awaitable<StudyCounts>
  storedByBackend(studyInstanceUid: string): Awaitable<Map<string, string[]>>
  requeued(sopInstanceUids: string[]): Awaitable<void>
  kept(sopInstanceUid: string): Awaitable<{file: string; offset: number; length: number} | undefined>
  setReceipt(studyInstanceUid: string, receipt: Receipt): Awaitable<void>
  dueForReceipt(limit: number): Awaitable<string[]>
  prune(before: number): Awaitable<number>
  /** Makes every write so far survive a power loss (a no-op where a commit already does). */
  syncLog(): Promise<void>
  close(): Awaitable<void>
}

/** The shared record of each study's home. */
export interface ClaimStore {
  /** Claims a study's home for `backend` unless a router did first; answers the claim that holds. */
  claim(studyInstanceUid: string, backend: string, router: string): Promise<StudyClaim>
}

/** Where routers sharing a ledger say they are alive. */
export interface RouterRegistry {
  heartbeat(heartbeat: RouterHeartbeat): Promise<void>
  routers(): Promise<RouterRecord[]>
}

