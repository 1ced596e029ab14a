import type Database from 'better-sqlite3'

/**
 * What became of one processing module on one study: `pending` (waiting for its turn, or for its
 * study's instances to be delivered), `running`, `done`, `failed` (its retries used up: the study
 * is processing-failed), `skipped` (no instance of the study matched the module).
 */
export type ProcessingRunState = 'pending' | 'running' | 'done' | 'failed' | 'skipped'

/** One module's record on one study: the processing room writes it, `ddr studies` shows it. */
export interface ProcessingRun {
  studyInstanceUid: string
  module: string
  state: ProcessingRunState
  /** How many times the module was (re)scheduled for the study: 1, then +1 per re-run after an amendment or by hand. */
  run: number
  /** Attempts of the current run (each failed one is retried until the module's retries are used up). */
  attempts: number
  /** Epoch ms before which a pending run is not tried again (the backoff after a failed attempt). */
  nextAttemptAt: number | null
  /** Instances the module was given in its last attempt, and a digest of their SOP Instance UIDs. */
  inputs: number | null
  inputsDigest: string | null
  /** SOP Instance UIDs this module's runs stored into the study (SRs, DICOM from DDR_OUT), the latest last. */
  outputs: string[]
  /** Why the last attempt failed (with the end of stderr), or what a finished run produced. */
  detail: string | null
  /** The router that took the run's latest attempt (a shared ledger: only it may finish it while it lives). */
  runner: string | null
  updatedAt: number
  finishedAt: number | null
}

/** The processing table; additive, so a ledger file written before it opens unchanged. */
export const PROCESSING_SCHEMA = `
CREATE TABLE IF NOT EXISTS processing (
  study_instance_uid TEXT NOT NULL,
  module TEXT NOT NULL,
  state TEXT NOT NULL,
  run INTEGER NOT NULL DEFAULT 1,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at INTEGER,
  inputs INTEGER,
  inputs_digest TEXT,
  outputs TEXT,
  detail TEXT,
  runner TEXT,
  updated_at INTEGER NOT NULL,
  finished_at INTEGER,
  PRIMARY KEY (study_instance_uid, module)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS processing_state ON processing (state);
`

/** Creates the processing table, or adds what a file written by an earlier ddr lacks (the runner column). */
export function createProcessingSchema(db: Database.Database): void {
  db.exec(PROCESSING_SCHEMA)
  const columns = db.prepare<[], {name: string}>('SELECT name FROM pragma_table_info(\'processing\')').all()
  if (!columns.some((c) => c.name === 'runner')) db.exec('ALTER TABLE processing ADD COLUMN runner TEXT')
}

/** What a study summary says of its processing (skipped modules left out). */
export const PROCESSING_SUMMARY_COLUMN = `(SELECT json_group_array(json_object('module', p.module, 'state', p.state, 'attempts', p.attempts, 'detail', p.detail))
  FROM processing p WHERE p.study_instance_uid = s.study_instance_uid AND p.state != 'skipped') AS processing`

interface Row {
  study_instance_uid: string
  module: string
  state: ProcessingRunState
  run: number
  attempts: number
  next_attempt_at: number | null
  inputs: number | null
  inputs_digest: string | null
  outputs: string | null
  detail: string | null
  runner?: string | null
  updated_at: number
  finished_at: number | null
}

/** A processing row of either store (SQLite's outputs as JSON text, PostgreSQL's parsed). */
export type ProcessingRow = Omit<Row, 'outputs'> & {outputs: string | string[] | null}

export function fromRow(row: ProcessingRow): ProcessingRun {
  return {
    studyInstanceUid: row.study_instance_uid,
    module: row.module,
    state: row.state,
    run: row.run,
    attempts: row.attempts,
    nextAttemptAt: row.next_attempt_at,
    inputs: row.inputs,
    inputsDigest: row.inputs_digest,
    outputs: row.outputs === null ? [] : typeof row.outputs === 'string' ? (JSON.parse(row.outputs) as string[]) : row.outputs,
    detail: row.detail,
    runner: row.runner ?? null,
    updatedAt: row.updated_at,
    finishedAt: row.finished_at,
  }
}

/** How an attempt ended, as recorded. */
export interface ProcessingOutcome {
  state: 'pending' | 'done' | 'failed' | 'skipped'
  detail?: string
  outputs?: string[]
  inputs?: number
  inputsDigest?: string
  /** With `pending`: the next attempt waits until then (epoch ms). */
  nextAttemptAt?: number
}

/** Runs by module and state (skipped left out). */
export type ProcessingCounts = Array<{module: string; state: ProcessingRunState; runs: number}>

/** Which interrupted runs go back to pending. */
export interface RequeueOptions {
  /** This router's name. */
  router: string
  /** Its own running runs too (true when it starts: they are what its previous life left); never while it runs them. */
  own: boolean
  /** A router whose last heartbeat is older than this is gone: its running runs are requeued (shared ledgers); a live router's never are. */
  silentSeconds: number
}

/**
 * The ledger's processing table, one interface for the embedded SQLite file and the shared
 * PostgreSQL database (several routers): every method may answer now or later, so callers await
 * them. A run is taken (pending -> running) by one router at a time (`take`), and only that router
 * may record its end while it lives (`finish` with the runner).
 */
export interface ProcessingStore {
  /** Schedules modules for a study (a study just became stable); modules it already has a row for are left alone, whoever scheduled them. */
  schedule(studyInstanceUid: string, modules: readonly string[], at?: number): Awaitable<void>
  /** Schedules a settled module again (an amendment): a new run with fresh attempts. A run pending or running now is left alone (another router rescheduled it first). */
  reschedule(studyInstanceUid: string, module: string, at?: number): Awaitable<void>
  get(studyInstanceUid: string, module: string): Awaitable<ProcessingRun | undefined>
  forStudy(studyInstanceUid: string): Awaitable<ProcessingRun[]>
  /** Pending runs whose backoff is over, oldest first (another router may take one first: `take` decides). */
  due(now: number, limit: number): Awaitable<ProcessingRun[]>
  /**
   * Takes a pending run for `runner`: running, one more attempt, in one statement that only a
   * pending row passes; the run as taken, or undefined when it was not pending (another router took it).
   */
  take(studyInstanceUid: string, module: string, runner: string, at?: number): Awaitable<ProcessingRun | undefined>
  /**
   * Starts a new run by hand (`ddr process`): a new run, its first attempt running for `runner`,
   * unless the module runs on the study now; the run as taken, or undefined when it runs.
   */
  takeNewRun(studyInstanceUid: string, module: string, runner: string, at?: number): Awaitable<ProcessingRun | undefined>
  /**
   * An attempt ended. Outputs add to those of earlier runs. With `runner`, only while the run is
   * still that router's (a run taken over from a router thought dead is the new runner's); false
   * when nothing was recorded.
   */
  finish(studyInstanceUid: string, module: string, outcome: ProcessingOutcome, at?: number, runner?: string): Awaitable<boolean>
  /** Runs left running go back to pending (the attempt is tried again, not charged); how many. */
  requeueInterrupted(options: RequeueOptions): Awaitable<number>
  /** Every SOP Instance UID processing stored into a study: not inputs of a module. */
  outputsOf(studyInstanceUid: string): Awaitable<Set<string>>
  /** Runs by module and state (skipped left out): /status and /metrics. */
  counts(): Awaitable<ProcessingCounts>
}

type Awaitable<T> = Promise<T> | T

/**
 * The processing table of the SQLite ledger: one row per study and module, so that a module runs
 * once per study across restarts, and `ddr studies` and /metrics can say which studies failed.
 * Written by the processing room (the running router), read by the commands. One router owns the
 * file, so every running run is its own (requeueInterrupted requeues them all), unless the file is
 * `shared` by the workers of one `ddr listen --workers N`: then, as on PostgreSQL, only its own
 * runs and those of workers whose heartbeat went silent.
 */
export class ProcessingRuns implements ProcessingStore {
  constructor(private readonly db: Database.Database, private readonly options: {shared?: boolean} = {}) {}

  schedule(studyInstanceUid: string, modules: readonly string[], at = Date.now()): void {
    const insert = this.db.prepare("INSERT INTO processing (study_instance_uid, module, state, updated_at) VALUES (?, ?, 'pending', ?) ON CONFLICT DO NOTHING")
    this.db.transaction(() => {
      for (const module of modules) insert.run(studyInstanceUid, module, at)
    })()
  }

  reschedule(studyInstanceUid: string, module: string, at = Date.now()): void {
    this.db
      .prepare(
        `INSERT INTO processing (study_instance_uid, module, state, updated_at) VALUES (@study, @module, 'pending', @at)
         ON CONFLICT DO UPDATE SET state = 'pending', run = run + 1, attempts = 0, next_attempt_at = NULL, detail = NULL, finished_at = NULL, updated_at = @at
         WHERE state IN ('done', 'failed', 'skipped')`,
      )
      .run({study: studyInstanceUid, module, at})
  }

  get(studyInstanceUid: string, module: string): ProcessingRun | undefined {
    const row = this.db.prepare<[string, string], Row>('SELECT * FROM processing WHERE study_instance_uid = ? AND module = ?').get(studyInstanceUid, module)
    return row === undefined ? undefined : fromRow(row)
  }

  forStudy(studyInstanceUid: string): ProcessingRun[] {
    return this.db.prepare<[string], Row>('SELECT * FROM processing WHERE study_instance_uid = ? ORDER BY module').all(studyInstanceUid).map(fromRow)
  }

  due(now: number, limit: number): ProcessingRun[] {
    return this.db
      .prepare<[number, number], Row>("SELECT * FROM processing WHERE state = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= ?) ORDER BY updated_at LIMIT ?")
      .all(now, limit)
      .map(fromRow)
  }

  take(studyInstanceUid: string, module: string, runner: string, at = Date.now()): ProcessingRun | undefined {
    const row = this.db
      .prepare<[string, number, string, string], Row>("UPDATE processing SET state = 'running', attempts = attempts + 1, runner = ?, updated_at = ? WHERE study_instance_uid = ? AND module = ? AND state = 'pending' RETURNING *")
      .get(runner, at, studyInstanceUid, module)
    return row === undefined ? undefined : fromRow(row)
  }

  takeNewRun(studyInstanceUid: string, module: string, runner: string, at = Date.now()): ProcessingRun | undefined {
    const row = this.db
      .prepare<Record<string, unknown>, Row>(
        `INSERT INTO processing (study_instance_uid, module, state, attempts, runner, updated_at) VALUES (@study, @module, 'running', 1, @runner, @at)
         ON CONFLICT DO UPDATE SET state = 'running', run = run + 1, attempts = 1, next_attempt_at = NULL, detail = NULL, finished_at = NULL, runner = @runner, updated_at = @at
         WHERE state != 'running' RETURNING *`,
      )
      .get({study: studyInstanceUid, module, runner, at})
    return row === undefined ? undefined : fromRow(row)
  }

  finish(studyInstanceUid: string, module: string, outcome: ProcessingOutcome, at = Date.now(), runner?: string): boolean {
    const before = outcome.outputs === undefined ? [] : (this.get(studyInstanceUid, module)?.outputs ?? [])
    const outputs = outcome.outputs === undefined ? undefined : [...new Set([...before, ...outcome.outputs])]
    return (
      this.db
        .prepare(
          `UPDATE processing SET state = @state, detail = @detail, outputs = COALESCE(@outputs, outputs), inputs = COALESCE(@inputs, inputs),
             inputs_digest = COALESCE(@digest, inputs_digest), next_attempt_at = @next, updated_at = @at, finished_at = @finished
           WHERE study_instance_uid = @study AND module = @module${runner === undefined ? '' : ' AND runner = @runner'}`,
        )
        .run({
          study: studyInstanceUid,
          module,
          state: outcome.state,
          detail: outcome.detail ?? null,
          outputs: outputs === undefined ? null : JSON.stringify(outputs),
          inputs: outcome.inputs ?? null,
          digest: outcome.inputsDigest ?? null,
          next: outcome.nextAttemptAt ?? null,
          at,
          finished: outcome.state === 'pending' ? null : at,
          ...(runner === undefined ? {} : {runner}),
        }).changes > 0
    )
  }

  /**
   * One router owns the file: on start every running run is its own; there are no other routers to
   * be silent. Shared by workers: its own (on start), and those of workers silent for silentSeconds
   * (their heartbeats, in the routers table), never a live worker's.
   */
  requeueInterrupted(options: RequeueOptions): number {
    if (!this.options.shared) {
      if (!options.own) return 0
      return this.db.prepare("UPDATE processing SET state = 'pending', attempts = MAX(attempts - 1, 0), runner = NULL WHERE state = 'running'").run().changes
    }

    return this.db
      .prepare(
        `UPDATE processing SET state = 'pending', attempts = MAX(attempts - 1, 0), runner = NULL
         WHERE state = 'running' AND (
           (@own AND runner = @router)
           OR (runner IS NOT @router AND NOT EXISTS (SELECT 1 FROM routers r WHERE r.name = processing.runner AND r.heartbeat_at > @since)))`,
      )
      .run({router: options.router, own: options.own ? 1 : 0, since: Date.now() - options.silentSeconds * 1000}).changes
  }

  outputsOf(studyInstanceUid: string): Set<string> {
    const outputs = new Set<string>()
    for (const run of this.forStudy(studyInstanceUid)) for (const sop of run.outputs) outputs.add(sop)
    return outputs
  }

  counts(): ProcessingCounts {
    return this.db
      .prepare<[], {module: string; state: ProcessingRunState; n: number}>("SELECT module, state, COUNT(*) AS n FROM processing WHERE state != 'skipped' GROUP BY module, state ORDER BY module, state")
      .all()
      .map((row) => ({module: row.module, state: row.state, runs: row.n}))
  }
}
