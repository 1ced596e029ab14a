import {readFileSync} from 'node:fs'

import pg from 'pg'

import {DdrError} from '../errors.js'
import {redactUrl} from '../output/redact.js'
import {POSTGRES_PROCESSING_SCHEMA, POSTGRES_PROCESSING_SUMMARY_COLUMN, PostgresProcessingRuns} from './postgres-processing.js'
import {inTransaction} from './pg-transaction.js'
import type {ProcessingStore} from './processing-runs.js'
import {type StudyRow, iso, studyDetail, studyInstance, studySummary} from './rows.js'
import type {ClaimStore, LedgerStore, RouterHeartbeat, RouterRecord, RouterRegistry, StudyClaim} from './store.js'
import type {InstanceOutcome, InstanceReceipt, Receipt, ReceiptState, StudyCounts, StudyDetail, StudyQuery, StudyState, StudySummary} from './types.js'

/** Bumped when the tables change; a database written by a newer ddr is refused. */
const SCHEMA_VERSION = 1

// Times are epoch milliseconds (BIGINT), as in the SQLite ledger, so both read the same way.
const SCHEMA = `
CREATE TABLE IF NOT EXISTS ddr_schema (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS studies (
  study_instance_uid TEXT PRIMARY KEY,
  patient_id TEXT,
  accession_number TEXT,
  study_date TEXT,
  first_received BIGINT NOT NULL,
  last_received BIGINT NOT NULL,
  state TEXT NOT NULL,
  stable_at BIGINT,
  amendments INTEGER NOT NULL DEFAULT 0,
  receipt JSONB
);
CREATE INDEX IF NOT EXISTS studies_last_received ON studies (last_received);
CREATE INDEX IF NOT EXISTS studies_state ON studies (state);
CREATE INDEX IF NOT EXISTS studies_patient ON studies (patient_id);
CREATE TABLE IF NOT EXISTS instances (
  sop_instance_uid TEXT PRIMARY KEY,
  study_instance_uid TEXT NOT NULL,
  series_instance_uid TEXT,
  sop_class_uid TEXT NOT NULL,
  modality TEXT,
  bytes BIGINT NOT NULL,
  calling_ae TEXT NOT NULL,
  remote_address TEXT,
  received_at BIGINT NOT NULL,
  status TEXT NOT NULL DEFAULT 'queued',
  backend TEXT,
  delivered_at BIGINT,
  detail TEXT,
  amendment BOOLEAN NOT NULL DEFAULT false,
  kept JSONB,
  router TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS instances_study ON instances (study_instance_uid);
CREATE TABLE IF NOT EXISTS study_claims (
  study_instance_uid TEXT PRIMARY KEY,
  backend TEXT NOT NULL,
  router TEXT NOT NULL,
  claimed_at BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS routers (
  name TEXT PRIMARY KEY,
  address TEXT NOT NULL,
  version TEXT NOT NULL,
  started_at BIGINT NOT NULL,
  heartbeat_at TIMESTAMPTZ NOT NULL,
  status JSONB NOT NULL
);
${POSTGRES_PROCESSING_SCHEMA}`

/** The tables SCHEMA creates, each with its indexes. */
const TABLES = ['ddr_schema', 'studies', 'instances', 'study_claims', 'routers', 'processing']

/** Any number that identifies ddr's schema lock among the database's advisory locks. */
const SCHEMA_LOCK = 0x0dd7_1ed9

// A database written before the processing table existed is read with no processing (readonly opens create nothing).
const summarySelect = (withProcessing: boolean) => `
SELECT s.study_instance_uid, s.patient_id, s.accession_number, s.study_date, s.first_received, s.last_received, s.state, s.stable_at, s.amendments, s.receipt,
  ${withProcessing ? POSTGRES_PROCESSING_SUMMARY_COLUMN : 'NULL AS processing'},
  COUNT(i.sop_instance_uid)::int AS instances, COALESCE(SUM(i.bytes), 0)::bigint AS bytes,
  string_agg(DISTINCT i.modality, ',') AS modalities, string_agg(DISTINCT i.backend, ',') AS backends,
  COUNT(*) FILTER (WHERE i.status = 'queued')::int AS queued, COUNT(*) FILTER (WHERE i.status = 'stored')::int AS stored,
  COUNT(*) FILTER (WHERE i.status = 'dead-letter')::int AS dead_letter
FROM studies s LEFT JOIN instances i ON i.study_instance_uid = s.study_instance_uid`



/** BIGINT columns as numbers (epoch ms and byte counts stay far below 2^53). */
const types = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') => (oid === 20 ? (value: string) => Number(value) : pg.types.getTypeParser(oid, format as 'text'))) as typeof pg.types.getTypeParser,
}

/**
 * Takes a lock per study (a transaction-level advisory lock on its UID's hash) in the order of the
 * sorted UIDs, before a transaction touches several studies' rows. Every router takes them in that
 * one order, whether the rows exist yet or not, so two writing the same studies at once wait for
 * each other instead of deadlocking (row locks alone follow each statement's own order, and a
 * study another router inserted meanwhile would join a transaction's locks out of order).
 */
async function lockStudies(client: pg.PoolClient, sortedUids: string[]): Promise<void> {
  if (sortedUids.length === 0) return
  await client.query('SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT hashtextextended(u, 0) AS k FROM unnest($1::text[]) AS u ORDER BY 1) AS keys', [sortedUids])
}

/** Options for PostgresLedgerStore. */
export interface PostgresStoreOptions {
  /** This router's name: recorded with each instance it received (only it holds their retained copies). */
  router: string
  /** Password when the URL has none. */
  password?: string
  tls?: {ca?: string; cert?: string; key?: string; rejectUnauthorized: boolean}
  /** Open for reading only (the commands): no tables are created. */
  readonly?: boolean
  /** How long a connection attempt or a statement may take (default 5 s). */
  timeoutMs?: number
  /** Told when an idle connection breaks (the server restarted): the pool makes a new one at the next query. */
  onIdleError?: (error: Error) => void
}

/**
 * The study ledger in PostgreSQL, shared by several routers (docs/cluster.md): the SQLite
 * ledger's tables, plus each study's claimed home (study_claims) and the routers' heartbeats
 * (routers). Every write is one transaction that commits with the server's synchronous_commit,
 * so a commit is durable when it returns. A statement fails after timeoutMs when the server does
 * not answer; StudyLedger keeps such writes and tries again (transientFailures).
 */
export class PostgresLedgerStore implements LedgerStore, ClaimStore, RouterRegistry {
  readonly transientFailures = true
  readonly claims: ClaimStore = this
  readonly registry: RouterRegistry = this
  /** Which module ran on which study, shared by the routers (one runner per run). */
  readonly processing: ProcessingStore
  readonly file: string
  private summarySql = summarySelect(true)

  private constructor(private readonly pool: pg.Pool, url: string, private readonly options: PostgresStoreOptions) {
    this.file = redactUrl(url)
    this.processing = new PostgresProcessingRuns(pool)
  }

  /** Connects (creating the tables unless readonly); DdrError LEDGER_FAILED naming the database when it cannot. */
  static async open(url: string, options: PostgresStoreOptions): Promise<PostgresLedgerStore> {
    const timeoutMs = options.timeoutMs ?? 5000
    const read = (file: string | undefined) => {
      if (file === undefined) return undefined
      try {
        return readFileSync(file, 'utf8')
      } catch (error) {
        throw new DdrError('CONFIG_INVALID', `ledger.tls: cannot read ${file}: ${(error as Error).message}`)
      }
    }

    const ssl = options.tls === undefined ? undefined : {ca: read(options.tls.ca), cert: read(options.tls.cert), key: read(options.tls.key), rejectUnauthorized: options.tls.rejectUnauthorized}
    const pool = new pg.Pool({
      connectionString: url,
      ...(options.password === undefined || new URL(url).password !== '' ? {} : {password: options.password}),
      ...(ssl === undefined ? {} : {ssl}),
      max: 4,
      connectionTimeoutMillis: timeoutMs,
      query_timeout: timeoutMs,
      idleTimeoutMillis: 30_000,
      keepAlive: true,
      application_name: `ddr ${options.router}`,
      // The spool lets an instance go once its outcome is committed: a commit must be durable when it
      // returns, whatever the server's default (synchronous_commit off would lose the last commits in a crash).
      options: '-c synchronous_commit=on',
      types,
    })
    // An idle connection that breaks (the server restarts) must not take the process down.
    pool.on('error', (error) => options.onIdleError?.(error))
    const store = new PostgresLedgerStore(pool, url, options)
    try {
      if (options.readonly) {
        await store.checkVersion(pool)
        store.summarySql = summarySelect((await pool.query<{t: string | null}>("SELECT to_regclass('processing')::text AS t")).rows[0].t !== null)
      } else await store.transaction(async (client) => {
        await client.query('SELECT pg_advisory_xact_lock($1)', [SCHEMA_LOCK])
        // CREATE INDEX IF NOT EXISTS locks its table (SHARE) before it finds the index: on a ledger other
        // routers use, that lock taken table after table deadlocked with a router's prune (which deletes
        // from instances, then studies). The tables come with their indexes, so when all are there, no DDL.
        const present = await client.query<{n: number}>('SELECT count(*)::int AS n FROM unnest($1::text[]) AS t WHERE to_regclass(t) IS NOT NULL', [TABLES])
        if (present.rows[0].n < TABLES.length) await client.query(SCHEMA)
        await store.checkVersion(client)
        await client.query('DELETE FROM ddr_schema')
        await client.query('INSERT INTO ddr_schema (version) VALUES ($1)', [SCHEMA_VERSION])
      })
    } catch (error) {
      await pool.end().catch(() => {})
      if (error instanceof DdrError) throw error
      throw new DdrError('LEDGER_FAILED', `study ledger ${store.file}: ${(error as Error).message}`, {
        hint: 'is PostgreSQL running there, does the database exist, and may this user create tables in it? (password: ledger.password or DDR_LEDGER_PASSWORD)',
        cause: error,
      })
    }

    return store
  }

  private async checkVersion(client: pg.Pool | pg.PoolClient): Promise<void> {
    const exists = await client.query<{t: string | null}>("SELECT to_regclass('ddr_schema')::text AS t")
    if (exists.rows[0].t === null) {
      if (this.options.readonly) throw new DdrError('CONFIG_NOT_FOUND', `study ledger ${this.file} has no ddr tables`, {hint: 'they are created by `ddr listen` with this ledger.url: has a router run with it?'})
      return
    }

    const version = (await client.query<{version: number}>('SELECT max(version) AS version FROM ddr_schema')).rows[0]?.version ?? 0
    if (version > SCHEMA_VERSION) throw new DdrError('LEDGER_FAILED', `study ledger ${this.file} was written by a newer ddr (schema ${version}, this one knows ${SCHEMA_VERSION})`, {hint: 'run the newer ddr'})
  }

  private transaction<T>(work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    return inTransaction(this.pool, work)
  }

  async received(receipts: InstanceReceipt[], recovered = false): Promise<string[]> {
    if (receipts.length === 0) return []
    return this.transaction((client) => this.writeReceipts(client, receipts, recovered))
  }

  async outcomes(outcomes: InstanceOutcome[]): Promise<void> {
    if (outcomes.length === 0) return
    await this.transaction((client) => this.writeOutcomes(client, outcomes))
  }

  /** Receipts, then outcomes (an outcome updates its receipt's row), in one transaction. */
  record(receipts: InstanceReceipt[], outcomes: InstanceOutcome[]): Promise<string[]> {
    return this.transaction(async (client) => {
      const amended = receipts.length === 0 ? [] : await this.writeReceipts(client, receipts, false)
      if (outcomes.length > 0) await this.writeOutcomes(client, outcomes)
      return amended
    })
  }

  /**
   * As SqliteLedgerStore.received: an instance of a stable study re-opens it; the first such
   * instance (not one a processing module made) counts as an amendment. Rows go as arrays
   * (unnest), one statement per table whatever the batch size.
   */
  private async writeReceipts(client: pg.PoolClient, receipts: InstanceReceipt[], recovered: boolean): Promise<string[]> {
    const uids = [...new Set(receipts.map((r) => r.studyInstanceUid))].sort()
    await lockStudies(client, uids)
    const before = new Map((await client.query<{study_instance_uid: string; state: StudyState}>('SELECT study_instance_uid, state FROM studies WHERE study_instance_uid = ANY($1)', [uids])).rows.map((r) => [r.study_instance_uid, r.state]))
    const amended = new Set<string>()
    const firstSeen = new Set<string>()
    const bySop = new Map<string, InstanceReceipt & {amendment: boolean}>()
    for (const receipt of receipts) {
      const study = receipt.studyInstanceUid
      const amendment = !firstSeen.has(study) && before.get(study) === 'stable' && !recovered && receipt.derived !== true
      firstSeen.add(study)
      if (amendment) amended.add(study)
      bySop.set(receipt.sopInstanceUid, {...receipt, amendment})
    }

    const rows = [...bySop.values()]
    const column = <K extends keyof (typeof rows)[number]>(key: K) => rows.map((r) => r[key] ?? null)
    const inserted = await client.query<{sop_instance_uid: string; study_instance_uid: string}>(
      `INSERT INTO instances (sop_instance_uid, study_instance_uid, series_instance_uid, sop_class_uid, modality, bytes, calling_ae, remote_address, received_at, amendment, router)
       SELECT *, $11::text FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::text[], $8::text[], $9::bigint[], $10::boolean[])
       ON CONFLICT (sop_instance_uid) DO ${
         recovered
           ? 'NOTHING'
           : `UPDATE SET study_instance_uid = excluded.study_instance_uid, series_instance_uid = excluded.series_instance_uid, bytes = excluded.bytes,
              calling_ae = excluded.calling_ae, remote_address = excluded.remote_address, received_at = excluded.received_at, router = excluded.router,
              status = 'queued', backend = NULL, delivered_at = NULL, detail = NULL`
       }
       RETURNING sop_instance_uid, study_instance_uid`,
      [
        column('sopInstanceUid'),
        column('studyInstanceUid'),
        column('seriesInstanceUid'),
        column('sopClassUid'),
        column('modality'),
        column('bytes'),
        column('callingAeTitle'),
        column('remoteAddress'),
        column('receivedAt'),
        column('amendment'),
        this.options.router,
      ],
    )

    // Recovered instances touch their study only where they were new, and never re-open a stable one.
    const touched = recovered ? new Set(inserted.rows.map((r) => r.study_instance_uid).filter((uid) => before.get(uid) !== 'stable')) : new Set(uids)
    const studies = new Map<string, {uid: string; patient: string | null; accession: string | null; date: string | null; first: number; last: number; amendments: number}>()
    for (const r of rows) {
      if (!touched.has(r.studyInstanceUid)) continue
      const s = studies.get(r.studyInstanceUid) ?? {uid: r.studyInstanceUid, patient: null, accession: null, date: null, first: r.receivedAt, last: r.receivedAt, amendments: 0}
      s.patient ??= r.patientId ?? null
      s.accession ??= r.accessionNumber ?? null
      s.date ??= r.studyDate ?? null
      s.first = Math.min(s.first, r.receivedAt)
      s.last = Math.max(s.last, r.receivedAt)
      if (r.amendment) s.amendments++
      studies.set(r.studyInstanceUid, s)
    }

    if (studies.size > 0) {
      const list = [...studies.values()].sort((a, b) => (a.uid < b.uid ? -1 : a.uid > b.uid ? 1 : 0))
      await client.query(
        `INSERT INTO studies (study_instance_uid, patient_id, accession_number, study_date, first_received, last_received, amendments, state)
         SELECT *, 'receiving' FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::int[])
         ON CONFLICT (study_instance_uid) DO UPDATE SET
           patient_id = COALESCE(studies.patient_id, excluded.patient_id),
           accession_number = COALESCE(studies.accession_number, excluded.accession_number),
           study_date = COALESCE(studies.study_date, excluded.study_date),
           first_received = LEAST(studies.first_received, excluded.first_received),
           last_received = GREATEST(studies.last_received, excluded.last_received),
           amendments = studies.amendments + excluded.amendments,
           state = 'receiving', stable_at = NULL, receipt = NULL`,
        [list.map((s) => s.uid), list.map((s) => s.patient), list.map((s) => s.accession), list.map((s) => s.date), list.map((s) => s.first), list.map((s) => s.last), list.map((s) => s.amendments)],
      )
    }

    return [...amended]
  }

  private async writeOutcomes(client: pg.PoolClient, outcomes: InstanceOutcome[]): Promise<void> {
    const bySop = new Map(outcomes.map((o) => [o.sopInstanceUid, o]))
    const rows = [...bySop.values()].sort((a, b) => (a.sopInstanceUid < b.sopInstanceUid ? -1 : 1))
    await client.query(
      `UPDATE instances SET status = o.status, backend = o.backend, delivered_at = o.at, detail = o.detail, kept = COALESCE(o.kept, instances.kept)
       FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::text[], $6::jsonb[]) AS o(sop, status, backend, at, detail, kept)
       WHERE instances.sop_instance_uid = o.sop`,
      [
        rows.map((o) => o.sopInstanceUid),
        rows.map((o) => o.status),
        rows.map((o) => o.backend ?? null),
        rows.map((o) => o.at),
        rows.map((o) => o.detail ?? null),
        rows.map((o) => (o.kept === undefined ? null : JSON.stringify(o.kept))),
      ],
    )
  }

  async receiving(): Promise<Array<{studyInstanceUid: string; lastReceived: number}>> {
    const {rows} = await this.pool.query<{study_instance_uid: string; last_received: number}>("SELECT study_instance_uid, last_received FROM studies WHERE state = 'receiving'")
    return rows.map((row) => ({studyInstanceUid: row.study_instance_uid, lastReceived: row.last_received}))
  }

  async markStable(studyInstanceUids: string[], quietSince: number, at: number): Promise<StudySummary[]> {
    if (studyInstanceUids.length === 0) return []
    // Several routers may time the same study out: the UPDATE lets one of them mark it.
    const rows = await this.transaction(async (client) => {
      await lockStudies(client, [...studyInstanceUids].sort())
      return (
        await client.query<{study_instance_uid: string}>(
          "UPDATE studies SET state = 'stable', stable_at = $1 WHERE study_instance_uid = ANY($2) AND state = 'receiving' AND last_received <= $3 RETURNING study_instance_uid",
          [at, studyInstanceUids, quietSince],
        )
      ).rows
    })
    const marked: StudySummary[] = []
    for (const row of rows) {
      const study = await this.summary(row.study_instance_uid)
      if (study !== undefined) marked.push(study)
    }

    return marked
  }

  async studies(query: StudyQuery = {}): Promise<StudySummary[]> {
    const where: string[] = []
    const values: Array<string | number> = []
    if (query.state !== undefined) where.push(`s.state = $${values.push(query.state)}`)
    if (query.patientId !== undefined) where.push(`s.patient_id = $${values.push(query.patientId)}`)
    if (query.since !== undefined) where.push(`s.last_received >= $${values.push(query.since)}`)
    const limit = `$${values.push(query.limit ?? 100)}`
    const sql = `${this.summarySql} ${where.length > 0 ? `WHERE ${where.join(' AND ')}` : ''} GROUP BY s.study_instance_uid ORDER BY s.last_received DESC LIMIT ${limit}`
    return (await this.pool.query<StudyRow>(sql, values)).rows.map(studySummary)
  }

  async arrivalGaps(since: number): Promise<Array<{callingAeTitle: string; modality: string | null; studyInstanceUid: string; gapMs: number; amendment: boolean}>> {
    const {rows} = await this.pool.query<{calling_ae: string; modality: string | null; study_instance_uid: string; gap: number | null; amendment: boolean}>(
      `SELECT calling_ae, modality, study_instance_uid, amendment,
         received_at - LAG(received_at) OVER (PARTITION BY study_instance_uid ORDER BY received_at) AS gap
       FROM instances WHERE study_instance_uid IN (SELECT study_instance_uid FROM studies WHERE last_received >= $1)`,
      [since],
    )
    return rows.filter((row) => row.gap !== null).map((row) => ({callingAeTitle: row.calling_ae, modality: row.modality, studyInstanceUid: row.study_instance_uid, gapMs: row.gap!, amendment: row.amendment}))
  }

  async summary(studyInstanceUid: string): Promise<StudySummary | undefined> {
    const {rows} = await this.pool.query<StudyRow>(`${this.summarySql} WHERE s.study_instance_uid = $1 GROUP BY s.study_instance_uid`, [studyInstanceUid])
    return rows.length === 0 ? undefined : studySummary(rows[0])
  }

  async study(studyInstanceUid: string): Promise<StudyDetail | undefined> {
    const head = await this.summary(studyInstanceUid)
    if (head === undefined) return undefined
    const {rows} = await this.pool.query<Record<string, unknown>>('SELECT * FROM instances WHERE study_instance_uid = $1 ORDER BY series_instance_uid, received_at, sop_instance_uid', [studyInstanceUid])
    return studyDetail(head, rows.map(studyInstance))
  }

  async counts(): Promise<StudyCounts> {
    const counts: StudyCounts = {receiving: 0, stable: 0, receipts: {verified: 0, repairing: 0, incomplete: 0, unverifiable: 0, unchecked: 0}}
    for (const row of (await this.pool.query<{state: StudyState; n: number}>('SELECT state, COUNT(*)::int AS n FROM studies GROUP BY state')).rows) counts[row.state] = row.n
    const receipts = await this.pool.query<{state: ReceiptState | null; n: number}>("SELECT receipt->>'state' AS state, COUNT(*)::int AS n FROM studies WHERE state = 'stable' GROUP BY 1")
    for (const row of receipts.rows) counts.receipts[row.state ?? 'unchecked'] = row.n
    return counts
  }

  async storedByBackend(studyInstanceUid: string): Promise<Map<string, string[]>> {
    const byBackend = new Map<string, string[]>()
    const {rows} = await this.pool.query<{sop_instance_uid: string; backend: string}>("SELECT sop_instance_uid, backend FROM instances WHERE study_instance_uid = $1 AND status = 'stored' AND backend IS NOT NULL", [studyInstanceUid])
    for (const row of rows) byBackend.set(row.backend, [...(byBackend.get(row.backend) ?? []), row.sop_instance_uid])
    return byBackend
  }

  async requeued(sopInstanceUids: string[]): Promise<void> {
    if (sopInstanceUids.length > 0) await this.pool.query("UPDATE instances SET status = 'queued', delivered_at = NULL WHERE sop_instance_uid = ANY($1)", [sopInstanceUids])
  }

  /** Where this router kept a copy (another router's copies are on its own disk). */
  async kept(sopInstanceUid: string): Promise<{file: string; offset: number; length: number} | undefined> {
    const {rows} = await this.pool.query<{kept: {file: string; offset: number; length: number} | null}>('SELECT kept FROM instances WHERE sop_instance_uid = $1 AND router = $2', [sopInstanceUid, this.options.router])
    return rows[0]?.kept ?? undefined
  }

  async setReceipt(studyInstanceUid: string, receipt: Receipt): Promise<void> {
    await this.pool.query('UPDATE studies SET receipt = $1 WHERE study_instance_uid = $2', [JSON.stringify(receipt), studyInstanceUid])
  }

  /** As SqliteLedgerStore.dueForReceipt, for the studies this router claimed (one router checks each study). */
  async dueForReceipt(limit: number): Promise<string[]> {
    const {rows} = await this.pool.query<{study_instance_uid: string}>(
      `SELECT s.study_instance_uid FROM studies s JOIN study_claims c ON c.study_instance_uid = s.study_instance_uid AND c.router = $1
        WHERE s.state = 'stable' AND (s.receipt IS NULL OR s.receipt->>'state' = 'repairing')
        AND NOT EXISTS (SELECT 1 FROM instances i WHERE i.study_instance_uid = s.study_instance_uid AND i.status = 'queued')
        ORDER BY s.stable_at LIMIT $2`,
      [this.options.router, limit],
    )
    return rows.map((row) => row.study_instance_uid)
  }

  async prune(before: number): Promise<number> {
    return this.transaction(async (client) => {
      const old = 'SELECT study_instance_uid FROM studies WHERE last_received < $1'
      await client.query(`DELETE FROM instances WHERE study_instance_uid IN (${old})`, [before])
      await client.query(`DELETE FROM study_claims WHERE study_instance_uid IN (${old})`, [before])
      await client.query(`DELETE FROM processing WHERE study_instance_uid IN (${old})`, [before])
      return (await client.query('DELETE FROM studies WHERE last_received < $1', [before])).rowCount ?? 0
    })
  }

  /** A commit is durable when it returns (synchronous_commit): nothing more to sync. */
  async syncLog(): Promise<void> {}

  async claim(studyInstanceUid: string, backend: string, router: string): Promise<StudyClaim> {
    const inserted = await this.pool.query<{backend: string; router: string}>(
      'INSERT INTO study_claims (study_instance_uid, backend, router, claimed_at) VALUES ($1, $2, $3, $4) ON CONFLICT (study_instance_uid) DO NOTHING RETURNING backend, router',
      [studyInstanceUid, backend, router, Date.now()],
    )
    if (inserted.rows.length > 0) return {...inserted.rows[0], won: true}
    const {rows} = await this.pool.query<{backend: string; router: string}>('SELECT backend, router FROM study_claims WHERE study_instance_uid = $1', [studyInstanceUid])
    // Pruned between the two statements: claim again.
    return rows.length > 0 ? {...rows[0], won: false} : this.claim(studyInstanceUid, backend, router)
  }

  async heartbeat(heartbeat: RouterHeartbeat): Promise<void> {
    await this.pool.query(
      `INSERT INTO routers (name, address, version, started_at, heartbeat_at, status) VALUES ($1, $2, $3, $4, now(), $5)
       ON CONFLICT (name) DO UPDATE SET address = excluded.address, version = excluded.version, started_at = excluded.started_at, heartbeat_at = now(), status = excluded.status`,
      [heartbeat.name, heartbeat.address, heartbeat.version, heartbeat.startedAt, JSON.stringify(heartbeat.status)],
    )
  }

  async routers(): Promise<RouterRecord[]> {
    const {rows} = await this.pool.query<{name: string; address: string; version: string; started_at: number; heartbeat_at: Date; age: number; status: RouterRecord['status']}>(
      'SELECT name, address, version, started_at, heartbeat_at, EXTRACT(EPOCH FROM now() - heartbeat_at)::float8 AS age, status FROM routers ORDER BY name',
    )
    return rows.map((row) => ({
      name: row.name,
      address: row.address,
      version: row.version,
      startedAt: iso(row.started_at)!,
      heartbeatAt: row.heartbeat_at.toISOString(),
      ageSeconds: Math.round(row.age * 10) / 10,
      status: row.status,
    }))
  }

  async close(): Promise<void> {
    await this.pool.end().catch(() => {})
  }
}
