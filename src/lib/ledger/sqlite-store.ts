import {mkdirSync} from 'node:fs'
import {type FileHandle, open} from 'node:fs/promises'
import path from 'node:path'

import Database from 'better-sqlite3'

import {DdrError} from '../errors.js'
import type {StoredFilter, StoredInstance, StoredInstances} from '../qr/ledger-source.js'
import {PROCESSING_SUMMARY_COLUMN, ProcessingRuns, createProcessingSchema} from './processing-runs.js'
import {type StudyRow, studyDetail, studyInstance, studySummary} from './rows.js'
import type {ClaimStore, LedgerStore, RouterHeartbeat, RouterRecord, RouterRegistry, StudyClaim} from './store.js'
import type {InstanceOutcome, InstanceReceipt, Receipt, ReceiptState, StudyCounts, StudyDetail, StudyQuery, StudyState, StudySummary} from './types.js'

/** Bumped when the tables change; an older file is migrated on open, a newer one refused. */
const SCHEMA_VERSION = 1

// WITHOUT ROWID: rows live in their primary key's b-tree, one page write fewer per instance recorded.
const SCHEMA = `
CREATE TABLE IF NOT EXISTS studies (
  study_instance_uid TEXT PRIMARY KEY,
  patient_id TEXT,
  accession_number TEXT,
  study_date TEXT,
  first_received INTEGER NOT NULL,
  last_received INTEGER NOT NULL,
  state TEXT NOT NULL,
  stable_at INTEGER,
  amendments INTEGER NOT NULL DEFAULT 0,
  receipt TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS studies_last_received ON studies (last_received);
CREATE INDEX IF NOT EXISTS studies_state ON studies (state);
CREATE INDEX IF NOT EXISTS studies_patient ON studies (patient_id);
CREATE TABLE IF NOT EXISTS instances (
  sop_instance_uid TEXT PRIMARY KEY,
  study_instance_uid TEXT NOT NULL,
  series_instance_uid TEXT,
  sop_class_uid TEXT NOT NULL,
  modality TEXT,
  bytes INTEGER NOT NULL,
  calling_ae TEXT NOT NULL,
  remote_address TEXT,
  received_at INTEGER NOT NULL,
  status TEXT NOT NULL DEFAULT 'queued',
  backend TEXT,
  delivered_at INTEGER,
  detail TEXT,
  amendment INTEGER NOT NULL DEFAULT 0,
  kept TEXT
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS instances_study ON instances (study_instance_uid);
`


// A ledger written before the processing table existed is read with no processing (readonly opens create nothing).
const summarySelect = (withProcessing: boolean) => `
SELECT s.*, ${withProcessing ? PROCESSING_SUMMARY_COLUMN : 'NULL AS processing'}, COUNT(i.sop_instance_uid) AS instances, SUM(i.bytes) AS bytes,
  GROUP_CONCAT(DISTINCT i.modality) AS modalities, GROUP_CONCAT(DISTINCT i.backend) AS backends,
  SUM(i.status = 'queued') AS queued, SUM(i.status = 'stored') AS stored, SUM(i.status = 'dead-letter') AS dead_letter
FROM studies s LEFT JOIN instances i ON i.study_instance_uid = s.study_instance_uid`


// Only on a file several processes share (listen.workers > 1): a single router pays nothing for them.
const SHARED_SCHEMA = `
CREATE TABLE IF NOT EXISTS study_claims (
  study_instance_uid TEXT PRIMARY KEY,
  backend TEXT NOT NULL,
  router TEXT NOT NULL,
  claimed_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS routers (
  name TEXT PRIMARY KEY,
  address TEXT NOT NULL,
  version TEXT NOT NULL,
  started_at INTEGER NOT NULL,
  heartbeat_at INTEGER NOT NULL,
  status TEXT NOT NULL
) WITHOUT ROWID;
`

/**
 * How long a statement waits for another process's write lock on a shared file before it fails
 * with SQLITE_BUSY. A commit holds the lock for well under a millisecond; the wait blocks the
 * event loop, so it is kept short, and the ledger tries a busy flush again instead of failing.
 */
const SHARED_BUSY_TIMEOUT_MS = 2000

/** Whether an error is SQLite's "another connection holds the lock" (the write can be tried again). */
export function isSqliteBusy(error: unknown): boolean {
  const code = (error as {code?: unknown} | undefined)?.code
  return typeof code === 'string' && (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED'))
}

/** Options for SqliteLedgerStore. */
export interface SqliteStoreOptions {
  /** Open an existing ledger for reading only (the commands; a running router keeps writing). */
  readonly?: boolean
  /**
   * Several router processes write this file (the workers of `ddr listen --workers N`): this one's
   * name. Adds study claims and router heartbeats (`claims`, `registry`), waits for the others'
   * write locks, and takes each write transaction's lock up front (BEGIN IMMEDIATE), so a busy
   * lock fails before anything is written and the write can simply be tried again.
   */
  shared?: {router: string}
}

/**
 * The study ledger in an embedded SQLite file (better-sqlite3). Write-ahead log with
 * synchronous=NORMAL: a commit is a write to the log, no fsync, so it costs the hot path a few tens
 * of microseconds and survives a process crash (the page cache keeps it); the spool's own fsyncs
 * keep every acknowledged instance on disk, and recovery records again what the spool still holds.
 * Readers (`ddr studies`) never block the router. Methods are synchronous: better-sqlite3 answers
 * from the calling thread, faster than a round trip to a worker for statements this small.
 */
export class SqliteLedgerStore implements LedgerStore, StoredInstances, ClaimStore, RouterRegistry {
  readonly transientFailures = false
  /** Study claims: only on a shared file (one router needs none: its study affinity decides). */
  readonly claims?: ClaimStore
  /** Router heartbeats: only on a shared file. */
  readonly registry?: RouterRegistry
  private readonly shared?: {router: string}
  private readonly db: Database.Database
  private readonly insertInstance?: Database.Statement
  private readonly recoverInstance?: Database.Statement
  private readonly upsertStudy?: Database.Statement
  private readonly outcome?: Database.Statement
  private readonly stateOf?: Database.Statement<[string], {state: StudyState}>
  // Made once: db.transaction() builds its wrappers anew on every call.
  private readonly receivedTransaction?: (receipts: InstanceReceipt[], recovered: boolean) => string[]
  private readonly outcomesTransaction?: (outcomes: InstanceOutcome[]) => void
  private readonly recordTransaction?: (receipts: InstanceReceipt[], outcomes: InstanceOutcome[]) => string[]
  private readonly summarySql: string
  private readonly insertClaim?: Database.Statement<[string, string, string, number], {backend: string; router: string}>
  private readonly selectClaim?: Database.Statement<[string], {backend: string; router: string}>
  /** Which module ran on which study (the processing room's records). */
  readonly processing: ProcessingRuns

  private walHandle?: Promise<FileHandle>
  private lastSync: Promise<void> = Promise.resolve()

  constructor(readonly file: string, options: SqliteStoreOptions = {}) {
    try {
      if (!options.readonly) mkdirSync(path.dirname(file), {recursive: true})
      this.db = new Database(file, {readonly: options.readonly ?? false, fileMustExist: options.readonly ?? false})
      // Shared by the workers of one `ddr listen --workers N`: their runs are each other's (heartbeats say who lives).
      this.processing = new ProcessingRuns(this.db, {shared: options.shared !== undefined})
      if (options.readonly) {
        this.db.pragma('query_only = ON')
        this.checkVersion()
        this.summarySql = summarySelect(this.db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'processing'").get() !== undefined)
        return
      }

      if (options.shared !== undefined) this.db.pragma(`busy_timeout = ${SHARED_BUSY_TIMEOUT_MS}`)
      this.db.pragma('journal_mode = WAL')
      this.db.pragma('synchronous = NORMAL')
      // A checkpoint (which syncs) every ~16 MB of log instead of every 4 MB: it runs on the thread
      // that commits, so fewer of them keep the receive path's pauses rare.
      this.db.pragma('wal_autocheckpoint = 4000')
      this.checkVersion()
      this.db.exec(SCHEMA)
      createProcessingSchema(this.db)
      if (options.shared !== undefined) {
        this.db.exec(SHARED_SCHEMA)
        // Which worker received each instance (as the PostgreSQL ledger's router column).
        const columns = this.db.prepare<[], {name: string}>('PRAGMA table_info(instances)').all()
        if (!columns.some((column) => column.name === 'router')) this.db.exec('ALTER TABLE instances ADD COLUMN router TEXT')
        this.shared = options.shared
        this.claims = this
        this.registry = this
      }

      this.summarySql = summarySelect(true)
      this.db.pragma(`user_version = ${SCHEMA_VERSION}`)
    } catch (error) {
      if (error instanceof DdrError) throw error
      const missing = options.readonly && /unable to open|does not exist/i.test((error as Error).message)
      throw new DdrError(missing ? 'CONFIG_NOT_FOUND' : 'LEDGER_FAILED', `study ledger ${file}: ${(error as Error).message}`, {
        hint: missing ? 'the ledger is written by `ddr listen` (store-and-forward mode): has a router run with this config?' : 'check the file and its folder (permissions, free space); move a damaged file aside and restart to begin a new one',
        cause: error,
      })
    }

    const router = options.shared === undefined ? {column: '', value: '', update: ''} : {column: ', router', value: ', @router', update: ', router = excluded.router'}
    this.insertInstance = this.db.prepare(`
      INSERT INTO instances (sop_instance_uid, study_instance_uid, series_instance_uid, sop_class_uid, modality, bytes, calling_ae, remote_address, received_at, amendment${router.column})
      VALUES (@sopInstanceUid, @studyInstanceUid, @seriesInstanceUid, @sopClassUid, @modality, @bytes, @callingAeTitle, @remoteAddress, @receivedAt, @amendment${router.value})
      ON CONFLICT (sop_instance_uid) DO UPDATE SET
        study_instance_uid = excluded.study_instance_uid, series_instance_uid = excluded.series_instance_uid, bytes = excluded.bytes,
        calling_ae = excluded.calling_ae, remote_address = excluded.remote_address, received_at = excluded.received_at,
        status = 'queued', backend = NULL, delivered_at = NULL, detail = NULL${router.update}`)
    // After a restart, the spool's instances are recorded again without touching what is known.
    this.recoverInstance = this.db.prepare(`
      INSERT INTO instances (sop_instance_uid, study_instance_uid, series_instance_uid, sop_class_uid, modality, bytes, calling_ae, remote_address, received_at, amendment${router.column})
      VALUES (@sopInstanceUid, @studyInstanceUid, @seriesInstanceUid, @sopClassUid, @modality, @bytes, @callingAeTitle, @remoteAddress, @receivedAt, 0${router.value})
      ON CONFLICT (sop_instance_uid) DO NOTHING`)
    this.upsertStudy = this.db.prepare(`
      INSERT INTO studies (study_instance_uid, patient_id, accession_number, study_date, first_received, last_received, state)
      VALUES (@studyInstanceUid, @patientId, @accessionNumber, @studyDate, @receivedAt, @receivedAt, 'receiving')
      ON CONFLICT (study_instance_uid) DO UPDATE SET
        patient_id = COALESCE(studies.patient_id, excluded.patient_id),
        accession_number = COALESCE(studies.accession_number, excluded.accession_number),
        study_date = COALESCE(studies.study_date, excluded.study_date),
        first_received = MIN(studies.first_received, excluded.first_received),
        last_received = MAX(studies.last_received, excluded.last_received),
        amendments = studies.amendments + @amendment,
        state = 'receiving', stable_at = NULL, receipt = NULL`)
    this.stateOf = this.db.prepare<[string], {state: StudyState}>('SELECT state FROM studies WHERE study_instance_uid = ?')
    this.outcome = this.db.prepare(`UPDATE instances SET status = @status, backend = @backend, delivered_at = @at, detail = @detail, kept = COALESCE(@kept, kept) WHERE sop_instance_uid = @sopInstanceUid`)
    // Shared: BEGIN IMMEDIATE, so the write lock is waited for (busy_timeout) before the first
    // read, instead of failing at once when a read transaction must become a write one.
    const mode = (transaction: {immediate: unknown; default: unknown}) => (options.shared === undefined ? transaction.default : transaction.immediate)
    const received = this.db.transaction((receipts: InstanceReceipt[], recovered: boolean) => this.insertReceipts(receipts, recovered))
    this.receivedTransaction = mode(received) as typeof received
    const outcomes = this.db.transaction((list: InstanceOutcome[]) => this.updateOutcomes(list))
    this.outcomesTransaction = mode(outcomes) as typeof outcomes
    const record = this.db.transaction((receipts: InstanceReceipt[], list: InstanceOutcome[]) => {
      const amended = this.insertReceipts(receipts, false)
      this.updateOutcomes(list)
      return amended
    })
    this.recordTransaction = mode(record) as typeof record
    if (options.shared !== undefined) {
      this.insertClaim = this.db.prepare('INSERT INTO study_claims (study_instance_uid, backend, router, claimed_at) VALUES (?, ?, ?, ?) ON CONFLICT (study_instance_uid) DO NOTHING RETURNING backend, router')
      this.selectClaim = this.db.prepare('SELECT backend, router FROM study_claims WHERE study_instance_uid = ?')
    }
  }

  private checkVersion(): void {
    const version = this.db.pragma('user_version', {simple: true}) as number
    if (version > SCHEMA_VERSION) {
      throw new DdrError('LEDGER_FAILED', `study ledger ${this.file} was written by a newer ddr (schema ${version}, this one knows ${SCHEMA_VERSION})`, {hint: 'run the newer ddr, or move the file aside'})
    }
  }

  /**
   * Records acknowledged instances and their studies in one transaction; returns the studies that
   * were stable before (their new instances are amendments). `recovered`: read back from the spool
   * after a restart, recorded only where unknown.
   */
  received(receipts: InstanceReceipt[], recovered = false): string[] {
    return this.receivedTransaction!(receipts, recovered)
  }

  /** Records what became of instances (stored on a backend, dead-lettered). */
  outcomes(outcomes: InstanceOutcome[]): void {
    this.outcomesTransaction!(outcomes)
  }

  /**
   * received() and outcomes() in one transaction: one commit (one set of log pages, one lock)
   * where the two would take two. Throws if either part fails; nothing is then written.
   */
  record(receipts: InstanceReceipt[], outcomes: InstanceOutcome[]): string[] {
    return this.recordTransaction!(receipts, outcomes)
  }

  private insertReceipts(receipts: InstanceReceipt[], recovered: boolean): string[] {
    const amended: string[] = []
    const stateOf = this.stateOf!
    for (const receipt of receipts) {
      const before = stateOf.get(receipt.studyInstanceUid)?.state
      // An instance processing made from the study (its SR) re-opens it, but is no amendment of the sender's.
      const amendment = before === 'stable' && !recovered && receipt.derived !== true
      if (amendment) amended.push(receipt.studyInstanceUid)
      const row = {
        seriesInstanceUid: null,
        modality: null,
        remoteAddress: null,
        patientId: null,
        accessionNumber: null,
        studyDate: null,
        ...receipt,
        amendment: amendment ? 1 : 0,
        ...(this.shared === undefined ? {} : {router: this.shared.router}),
      }
      const inserted = (recovered ? this.recoverInstance! : this.insertInstance!).run(row)
      if (!recovered || inserted.changes > 0) {
        if (recovered && before === 'stable') continue
        this.upsertStudy!.run(row)
      }
    }

    return amended.length === 0 ? amended : [...new Set(amended)]
  }

  private updateOutcomes(outcomes: InstanceOutcome[]): void {
    for (const outcome of outcomes) this.outcome!.run({backend: null, detail: null, ...outcome, kept: outcome.kept === undefined ? null : JSON.stringify(outcome.kept)})
  }

  /** Studies still receiving, with their last arrival: the completion timer's starting point after a restart. */
  receiving(): Array<{studyInstanceUid: string; lastReceived: number}> {
    return this.db
      .prepare<[], {study_instance_uid: string; last_received: number}>("SELECT study_instance_uid, last_received FROM studies WHERE state = 'receiving'")
      .all()
      .map((row) => ({studyInstanceUid: row.study_instance_uid, lastReceived: row.last_received}))
  }

  /** Marks studies stable, unless an instance arrived after `quietSince` (then they stay receiving). */
  markStable(studyInstanceUids: string[], quietSince: number, at: number): StudySummary[] {
    const update = this.db.prepare("UPDATE studies SET state = 'stable', stable_at = ? WHERE study_instance_uid = ? AND state = 'receiving' AND last_received <= ?")
    const marked: string[] = []
    const mark = this.db.transaction(() => {
      for (const uid of studyInstanceUids) if (update.run(at, uid, quietSince).changes > 0) marked.push(uid)
    })
    if (this.shared === undefined) mark()
    else mark.immediate()
    return marked.map((uid) => this.summary(uid)!).filter(Boolean)
  }

  /** Studies, newest last arrival first. */
  studies(query: StudyQuery = {}): StudySummary[] {
    const where: string[] = []
    const values: Array<string | number> = []
    if (query.state !== undefined) {
      where.push('s.state = ?')
      values.push(query.state)
    }

    if (query.patientId !== undefined) {
      where.push('s.patient_id = ?')
      values.push(query.patientId)
    }

    if (query.since !== undefined) {
      where.push('s.last_received >= ?')
      values.push(query.since)
    }

    const sql = `${this.summarySql} ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''} GROUP BY s.study_instance_uid ORDER BY s.last_received DESC LIMIT ?`
    return this.db
      .prepare<Array<string | number>, StudyRow>(sql)
      .all(...values, query.limit ?? 100)
      .map(studySummary)
  }

  /**
   * For each instance received since `since` (epoch ms), the time since the previous instance of
   * its study: how long senders pause inside a study, to tune studies.stableSeconds.
   */
  arrivalGaps(since: number): Array<{callingAeTitle: string; modality: string | null; studyInstanceUid: string; gapMs: number; amendment: boolean}> {
    return this.db
      .prepare<[number], {calling_ae: string; modality: string | null; study_instance_uid: string; gap: number | null; amendment: number}>(
        `SELECT calling_ae, modality, study_instance_uid, amendment,
           received_at - LAG(received_at) OVER (PARTITION BY study_instance_uid ORDER BY received_at) AS gap
         FROM instances WHERE study_instance_uid IN (SELECT study_instance_uid FROM studies WHERE last_received >= ?)`,
      )
      .all(since)
      .filter((row) => row.gap !== null)
      .map((row) => ({callingAeTitle: row.calling_ae, modality: row.modality, studyInstanceUid: row.study_instance_uid, gapMs: row.gap!, amendment: row.amendment === 1}))
  }

  summary(studyInstanceUid: string): StudySummary | undefined {
    const row = this.db.prepare<[string], StudyRow>(`${this.summarySql} WHERE s.study_instance_uid = ? GROUP BY s.study_instance_uid`).get(studyInstanceUid)
    return row === undefined ? undefined : studySummary(row)
  }

  /** One study with its series and every instance, or undefined. */
  study(studyInstanceUid: string): StudyDetail | undefined {
    const head = this.summary(studyInstanceUid)
    if (head === undefined) return undefined
    const rows = this.db
      .prepare<[string], Record<string, unknown>>('SELECT * FROM instances WHERE study_instance_uid = ? ORDER BY series_instance_uid, received_at, sop_instance_uid')
      .all(studyInstanceUid)
    return studyDetail(head, rows.map(studyInstance))
  }

  counts(): StudyCounts {
    const counts: StudyCounts = {receiving: 0, stable: 0, receipts: {verified: 0, repairing: 0, incomplete: 0, unverifiable: 0, unchecked: 0}}
    for (const row of this.db.prepare<[], {state: StudyState; n: number}>('SELECT state, COUNT(*) AS n FROM studies GROUP BY state').all()) counts[row.state] = row.n
    const receipts = this.db.prepare<[], {state: ReceiptState | null; n: number}>("SELECT json_extract(receipt, '$.state') AS state, COUNT(*) AS n FROM studies WHERE state = 'stable' GROUP BY 1").all()
    for (const row of receipts) counts.receipts[row.state ?? 'unchecked'] = row.n
    return counts
  }

  /** The SOP Instance UIDs each backend stored of a study, by backend name. */
  storedByBackend(studyInstanceUid: string): Map<string, string[]> {
    const byBackend = new Map<string, string[]>()
    const rows = this.db.prepare<[string], {sop_instance_uid: string; backend: string}>("SELECT sop_instance_uid, backend FROM instances WHERE study_instance_uid = ? AND status = 'stored' AND backend IS NOT NULL").all(studyInstanceUid)
    for (const row of rows) byBackend.set(row.backend, [...(byBackend.get(row.backend) ?? []), row.sop_instance_uid])
    return byBackend
  }

  /**
   * The instances stored on a backend, narrowed by what the ledger records (qr's StoredInstances:
   * a folder backend's part of a fleet query; the files decide the rest, so this may return more).
   */
  storedOn(backend: string, filter: StoredFilter): StoredInstance[] {
    const where = ["i.backend = @backend", "i.status = 'stored'"]
    const parameters: Record<string, string> = {backend}
    // DICOM's * and ? are GLOB's; a [ would open a GLOB character class.
    const glob = (value: string) => value.replaceAll('[', '[[]')
    const pattern = (column: string, name: string, value: string | undefined) => {
      if (value === undefined || value.includes('\\')) return
      parameters[name] = /[*?]/.test(value) ? glob(value) : value
      where.push(/[*?]/.test(value) ? `${column} GLOB @${name}` : `${column} = @${name}`)
    }

    pattern('s.patient_id', 'patientId', filter.patientId)
    pattern('s.accession_number', 'accessionNumber', filter.accessionNumber)
    const date = filter.studyDate
    if (date !== undefined && /^\d{0,8}-\d{0,8}$/.test(date)) {
      const [from, to] = date.split('-')
      if (from !== '') {
        parameters.dateFrom = from
        where.push('s.study_date >= @dateFrom')
      }

      if (to !== '') {
        parameters.dateTo = to
        where.push('s.study_date <= @dateTo')
      }
    } else if (date !== undefined && /^\d{8}$/.test(date)) {
      parameters.date = date
      where.push('s.study_date = @date')
    }

    const uids = (column: string, name: string, list: string[] | undefined) => {
      if (list === undefined || list.length === 0 || list.length > 1000) return
      where.push(`${column} IN (${list.map((_, index) => `@${name}${index}`).join(', ')})`)
      for (const [index, uid] of list.entries()) parameters[`${name}${index}`] = uid
    }

    uids('i.study_instance_uid', 'study', filter.studyInstanceUids)
    uids('i.series_instance_uid', 'series', filter.seriesInstanceUids)
    uids('i.sop_instance_uid', 'sop', filter.sopInstanceUids)
    const rows = this.db
      .prepare<Record<string, string>, {sop_instance_uid: string; series_instance_uid: string | null; study_instance_uid: string; patient_id: string | null; sop_class_uid: string; modality: string | null}>(
        `SELECT i.sop_instance_uid, i.series_instance_uid, i.study_instance_uid, s.patient_id, i.sop_class_uid, i.modality
          FROM instances i JOIN studies s ON s.study_instance_uid = i.study_instance_uid
          WHERE ${where.join(' AND ')}`,
      )
      .all(parameters)
    return rows.map((row) => ({
      sopInstanceUid: row.sop_instance_uid,
      seriesInstanceUid: row.series_instance_uid ?? '',
      studyInstanceUid: row.study_instance_uid,
      patientId: row.patient_id ?? '',
      sopClassUid: row.sop_class_uid,
      modality: row.modality ?? '',
    }))
  }

  /** Marks instances queued again (a repair re-sends them), so the study is not checked before they arrive. */
  requeued(sopInstanceUids: string[]): void {
    const update = this.db.prepare("UPDATE instances SET status = 'queued', delivered_at = NULL WHERE sop_instance_uid = ?")
    this.db.transaction(() => {
      for (const sop of sopInstanceUids) update.run(sop)
    })()
  }

  /** Where a copy of an instance was kept for repairs, if it was. */
  kept(sopInstanceUid: string): {file: string; offset: number; length: number} | undefined {
    const row = this.db.prepare<[string], {kept: string | null}>('SELECT kept FROM instances WHERE sop_instance_uid = ?').get(sopInstanceUid)
    return row?.kept ? (JSON.parse(row.kept) as {file: string; offset: number; length: number}) : undefined
  }

  setReceipt(studyInstanceUid: string, receipt: Receipt): void {
    this.db.prepare('UPDATE studies SET receipt = ? WHERE study_instance_uid = ?').run(JSON.stringify(receipt), studyInstanceUid)
  }

  /** Stable studies whose instances are all delivered and that have no final receipt yet (or are being repaired), oldest first. */
  dueForReceipt(limit: number): string[] {
    // Shared: each study is checked by the worker whose claim holds (as on PostgreSQL).
    if (this.shared !== undefined) {
      return this.db
        .prepare<[string, number], {study_instance_uid: string}>(
          `SELECT s.study_instance_uid FROM studies s JOIN study_claims c ON c.study_instance_uid = s.study_instance_uid AND c.router = ?
            WHERE s.state = 'stable' AND (s.receipt IS NULL OR json_extract(s.receipt, '$.state') = 'repairing')
            AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.study_instance_uid = s.study_instance_uid AND i.status = 'queued')
            ORDER BY s.stable_at LIMIT ?`,
        )
        .all(this.shared.router, limit)
        .map((row) => row.study_instance_uid)
    }

    return this.db
      .prepare<[number], {study_instance_uid: string}>(
        `SELECT s.study_instance_uid FROM studies s WHERE s.state = 'stable'
          AND (s.receipt IS NULL OR json_extract(s.receipt, '$.state') = 'repairing')
          AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.study_instance_uid = s.study_instance_uid AND i.status = 'queued')
          ORDER BY s.stable_at LIMIT ?`,
      )
      .all(limit)
      .map((row) => row.study_instance_uid)
  }

  /** Forgets studies whose last instance arrived before `before` (epoch ms); returns how many. */
  prune(before: number): number {
    let removed = 0
    this.db.transaction(() => {
      this.db.prepare('DELETE FROM instances WHERE study_instance_uid IN (SELECT study_instance_uid FROM studies WHERE last_received < ?)').run(before)
      this.db.prepare('DELETE FROM processing WHERE study_instance_uid IN (SELECT study_instance_uid FROM studies WHERE last_received < ?)').run(before)
      if (this.shared !== undefined) this.db.prepare('DELETE FROM study_claims WHERE study_instance_uid IN (SELECT study_instance_uid FROM studies WHERE last_received < ?)').run(before)
      removed = this.db.prepare('DELETE FROM studies WHERE last_received < ?').run(before).changes
    })()
    return removed
  }

  /**
   * Makes every commit so far survive a power loss: fdatasync of the write-ahead log, in the
   * thread pool (commits run with synchronous=NORMAL, which syncs only at checkpoints, and a sync
   * inside a commit would stop the event loop for its duration). A checkpoint syncs the database
   * before it reuses the log, so what is not in the log then is in the synced database.
   */
  syncLog(): Promise<void> {
    this.walHandle ??= open(`${this.file}-wal`, 'r+')
    const handle = this.walHandle
    const sync = handle.then((h) => h.datasync())
    this.lastSync = sync.catch(() => {})
    return sync
  }

  /**
   * Claims a study's home for `backend` unless another process of the shared file did first
   * (shared only). A lock held past busy_timeout is waited for a few times more before it fails
   * (StudyClaims then routes on the rendezvous choice and claims again later).
   */
  async claim(studyInstanceUid: string, backend: string, router: string): Promise<StudyClaim> {
    if (this.insertClaim === undefined || this.selectClaim === undefined) throw new DdrError('LEDGER_FAILED', `study ledger ${this.file} is not opened as shared: it keeps no study claims`)
    for (let attempt = 0; ; attempt++) {
      try {
        const inserted = this.insertClaim.get(studyInstanceUid, backend, router, Date.now())
        if (inserted !== undefined) return {...inserted, won: true}
        const held = this.selectClaim.get(studyInstanceUid)
        if (held !== undefined) return {...held, won: false}
        // Pruned between the two statements: claim again.
      } catch (error) {
        if (!isSqliteBusy(error) || attempt >= 3) throw error
        await new Promise((resolve) => setTimeout(resolve, 20))
      }
    }
  }

  async heartbeat(heartbeat: RouterHeartbeat): Promise<void> {
    this.db
      .prepare(
        `INSERT INTO routers (name, address, version, started_at, heartbeat_at, status) VALUES (?, ?, ?, ?, ?, ?)
         ON CONFLICT (name) DO UPDATE SET address = excluded.address, version = excluded.version, started_at = excluded.started_at, heartbeat_at = excluded.heartbeat_at, status = excluded.status`,
      )
      .run(heartbeat.name, heartbeat.address, heartbeat.version, heartbeat.startedAt, Date.now(), JSON.stringify(heartbeat.status))
  }

  async routers(): Promise<RouterRecord[]> {
    const now = Date.now()
    return this.db
      .prepare<[], {name: string; address: string; version: string; started_at: number; heartbeat_at: number; status: string}>('SELECT * FROM routers ORDER BY name')
      .all()
      .map((row) => ({
        name: row.name,
        address: row.address,
        version: row.version,
        startedAt: new Date(row.started_at).toISOString(),
        heartbeatAt: new Date(row.heartbeat_at).toISOString(),
        ageSeconds: Math.round((now - row.heartbeat_at) / 100) / 10,
        status: JSON.parse(row.status) as RouterRecord['status'],
      }))
  }

  close(): void {
    if (this.db.open) this.db.close()
    const handle = this.walHandle
    this.walHandle = undefined
    // A sync still running finishes on its handle first (closing the database checkpoints and syncs anyway).
    if (handle !== undefined) void this.lastSync.then(() => handle).then((h) => h.close()).catch(() => {})
  }
}
