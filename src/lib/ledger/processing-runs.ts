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
  updated_at INTEGER NOT NULL,
  finished_at INTEGER,
  PRIMARY KEY (study_instance_uid, module)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS processing_state ON processing (state);
`

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
  updated_at: number
  finished_at: number | null
}

function fromRow(row: Row): ProcessingRun {
  return {
    studyInstanceUid: row.study_instance_uid,
    module: row.module,
    state: row.state,
    run: row.run,
    attempts: row.attempts,
    nextAttemptAt: row.next_attempt_at,
    inputs: row.inputs,
    inputsDigest: row.inputs_digest,
    outputs: row.outputs === null ? [] : (JSON.parse(row.outputs) as string[]),
    detail: row.detail,
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

/**
 * The processing table of the study ledger: one row per study and module, so that a module runs
 * once per study across restarts, and `ddr studies` and /metrics can say which studies failed.
 * Written by the processing room (the running router), read by the commands.
 */
export class ProcessingRuns {
  constructor(private readonly db: Database.Database) {}

  /** Schedules modules for a study (a study just became stable); modules it already has a row for are left alone. */
  schedule(studyInstanceUid: string, modules: readonly string[], at = Date.now()): void {
    const insert = this.db.prepare("INSERT INTO processing (study_instance_uid, module, state, updated_at) VALUES (?, ?, 'pending', ?) ON CONFLICT DO NOTHING")
    this.db.transaction(() => {
      for (const module of modules) insert.run(studyInstanceUid, module, at)
    })()
  }

  /** Schedules a module again for a study it has run on (an amendment, or by hand): a new run with fresh attempts. */
  reschedule(studyInstanceUid: string, module: string, at = Date.now()): void {
    this.db
      .prepare(
        `INSERT INTO processing (study_instance_uid, module, state, updated_at) VALUES (@study, @module, 'pending', @at)
         ON CONFLICT DO UPDATE SET state = 'pending', run = run + 1, attempts = 0, next_attempt_at = NULL, detail = NULL, finished_at = NULL, updated_at = @at`,
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

  /** Pending runs whose backoff is over, oldest first. */
  due(now: number, limit: number): ProcessingRun[] {
    return this.db
      .prepare<[number, number], Row>("SELECT * FROM processing WHERE state = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= ?) ORDER BY updated_at LIMIT ?")
      .all(now, limit)
      .map(fromRow)
  }

  /** An attempt begins: running, one more attempt. */
  start(studyInstanceUid: string, module: string, at = Date.now()): void {
    this.db.prepare("UPDATE processing SET state = 'running', attempts = attempts + 1, updated_at = ? WHERE study_instance_uid = ? AND module = ?").run(at, studyInstanceUid, module)
  }

  /** An attempt ended. Outputs add to those of earlier runs: all stay processing's, never a module's inputs. */
  finish(studyInstanceUid: string, module: string, outcome: ProcessingOutcome, at = Date.now()): void {
    const before = outcome.outputs === undefined ? [] : (this.get(studyInstanceUid, module)?.outputs ?? [])
    const outputs = outcome.outputs === undefined ? undefined : [...new Set([...before, ...outcome.outputs])]
    this.db
      .prepare(
        `UPDATE processing SET state = @state, detail = @detail, outputs = COALESCE(@outputs, outputs), inputs = COALESCE(@inputs, inputs),
           inputs_digest = COALESCE(@digest, inputs_digest), next_attempt_at = @next, updated_at = @at, finished_at = @finished
         WHERE study_instance_uid = @study AND module = @module`,
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
      })
  }

  /** Runs a stopped router left running go back to pending (the attempt is tried again, not charged). */
  requeueInterrupted(): number {
    return this.db.prepare("UPDATE processing SET state = 'pending', attempts = MAX(attempts - 1, 0) WHERE state = 'running'").run().changes
  }

  /** Every SOP Instance UID processing stored into a study: not inputs of a module. */
  outputsOf(studyInstanceUid: string): Set<string> {
    const outputs = new Set<string>()
    for (const run of this.forStudy(studyInstanceUid)) for (const sop of run.outputs) outputs.add(sop)
    return outputs
  }

  /** Runs by module and state (skipped left out): /status and /metrics. */
  counts(): Array<{module: string; state: ProcessingRunState; runs: number}> {
    return this.db
      .prepare<[], {module: string; state: ProcessingRunState; n: number}>("SELECT module, state, COUNT(*) AS n FROM processing WHERE state != 'skipped' GROUP BY module, state ORDER BY module, state")
      .all()
      .map((row) => ({module: row.module, state: row.state, runs: row.n}))
  }
}
