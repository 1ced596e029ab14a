import type pg from 'pg'

import {inTransaction} from './pg-transaction.js'
import {type ProcessingCounts, type ProcessingOutcome, type ProcessingRow, type ProcessingRun, type ProcessingRunState, type ProcessingStore, type RequeueOptions, fromRow} from './processing-runs.js'

/** The SQLite ledger's processing table, in PostgreSQL (created with the ledger's other tables). */
export const POSTGRES_PROCESSING_SCHEMA = `
CREATE TABLE IF NOT EXISTS processing (
  study_instance_uid TEXT NOT NULL,
  module TEXT NOT NULL,
  state TEXT NOT NULL,
  run INTEGER NOT NULL DEFAULT 1,
  attempts INTEGER NOT NULL DEFAULT 0,
  next_attempt_at BIGINT,
  inputs INTEGER,
  inputs_digest TEXT,
  outputs JSONB,
  detail TEXT,
  runner TEXT,
  updated_at BIGINT NOT NULL,
  finished_at BIGINT,
  PRIMARY KEY (study_instance_uid, module)
);
CREATE INDEX IF NOT EXISTS processing_state ON processing (state);
`

/** What a study summary says of its processing (skipped modules left out), as the SQLite ledger's column. */
export const POSTGRES_PROCESSING_SUMMARY_COLUMN = `(SELECT COALESCE(jsonb_agg(jsonb_build_object('module', p.module, 'state', p.state, 'attempts', p.attempts, 'detail', p.detail) ORDER BY p.module COLLATE "C"), '[]'::jsonb)
  FROM processing p WHERE p.study_instance_uid = s.study_instance_uid AND p.state <> 'skipped') AS processing`

/**
 * The processing table of the shared ledger (several routers, docs/cluster.md). Exactly one router
 * runs a given (study, module) at a time: `take` is one UPDATE that only a pending row passes
 * (a router that loses the race waits for the winner's row lock, then finds the row running and
 * takes nothing); each running run names its runner; a router requeues only its own runs (when it
 * starts) and those of routers silent for longer than the registry's silence time, never a live
 * router's; and a runner thought dead whose run was taken over cannot record its end.
 */
export class PostgresProcessingRuns implements ProcessingStore {
  constructor(private readonly pool: pg.Pool) {}

  async schedule(studyInstanceUid: string, modules: readonly string[], at = Date.now()): Promise<void> {
    if (modules.length === 0) return
    await this.pool.query(
      "INSERT INTO processing (study_instance_uid, module, state, updated_at) SELECT $1, m, 'pending', $3 FROM unnest($2::text[]) AS m ON CONFLICT DO NOTHING",
      [studyInstanceUid, [...modules], at],
    )
  }

  async reschedule(studyInstanceUid: string, module: string, at = Date.now()): Promise<void> {
    await this.pool.query(
      `INSERT INTO processing (study_instance_uid, module, state, updated_at) VALUES ($1, $2, 'pending', $3)
       ON CONFLICT (study_instance_uid, module) DO UPDATE SET state = 'pending', run = processing.run + 1, attempts = 0, next_attempt_at = NULL, detail = NULL, finished_at = NULL, updated_at = $3
       WHERE processing.state IN ('done', 'failed', 'skipped')`,
      [studyInstanceUid, module, at],
    )
  }

  async get(studyInstanceUid: string, module: string): Promise<ProcessingRun | undefined> {
    const {rows} = await this.pool.query<ProcessingRow>('SELECT * FROM processing WHERE study_instance_uid = $1 AND module = $2', [studyInstanceUid, module])
    return rows.length === 0 ? undefined : fromRow(rows[0])
  }

  async forStudy(studyInstanceUid: string): Promise<ProcessingRun[]> {
    const {rows} = await this.pool.query<ProcessingRow>('SELECT * FROM processing WHERE study_instance_uid = $1 ORDER BY module COLLATE "C"', [studyInstanceUid])
    return rows.map(fromRow)
  }

  async due(now: number, limit: number): Promise<ProcessingRun[]> {
    const {rows} = await this.pool.query<ProcessingRow>(
      `SELECT * FROM processing WHERE state = 'pending' AND (next_attempt_at IS NULL OR next_attempt_at <= $1) ORDER BY updated_at, study_instance_uid COLLATE "C", module COLLATE "C" LIMIT $2`,
      [now, limit],
    )
    return rows.map(fromRow)
  }

  async take(studyInstanceUid: string, module: string, runner: string, at = Date.now()): Promise<ProcessingRun | undefined> {
    const {rows} = await this.pool.query<ProcessingRow>(
      "UPDATE processing SET state = 'running', attempts = attempts + 1, runner = $1, updated_at = $2 WHERE study_instance_uid = $3 AND module = $4 AND state = 'pending' RETURNING *",
      [runner, at, studyInstanceUid, module],
    )
    return rows.length === 0 ? undefined : fromRow(rows[0])
  }

  async takeNewRun(studyInstanceUid: string, module: string, runner: string, at = Date.now()): Promise<ProcessingRun | undefined> {
    const {rows} = await this.pool.query<ProcessingRow>(
      `INSERT INTO processing (study_instance_uid, module, state, attempts, runner, updated_at) VALUES ($1, $2, 'running', 1, $3, $4)
       ON CONFLICT (study_instance_uid, module) DO UPDATE SET state = 'running', run = processing.run + 1, attempts = 1, next_attempt_at = NULL, detail = NULL, finished_at = NULL, runner = $3, updated_at = $4
       WHERE processing.state <> 'running' RETURNING *`,
      [studyInstanceUid, module, runner, at],
    )
    return rows.length === 0 ? undefined : fromRow(rows[0])
  }

  finish(studyInstanceUid: string, module: string, outcome: ProcessingOutcome, at = Date.now(), runner?: string): Promise<boolean> {
    return inTransaction(this.pool, async (client) => {
      // The row is locked from the read to the write: outputs are merged as the SQLite ledger merges them.
      const {rows} = await client.query<{outputs: string[] | null; runner: string | null}>('SELECT outputs, runner FROM processing WHERE study_instance_uid = $1 AND module = $2 FOR UPDATE', [studyInstanceUid, module])
      // Not its run (taken over meanwhile) or gone: nothing written (the commit only ends the lock).
      if (rows.length === 0 || (runner !== undefined && rows[0].runner !== runner)) return false
      const outputs = outcome.outputs === undefined ? null : JSON.stringify([...new Set([...(rows[0].outputs ?? []), ...outcome.outputs])])
      await client.query(
        `UPDATE processing SET state = $3, detail = $4, outputs = COALESCE($5::jsonb, outputs), inputs = COALESCE($6, inputs), inputs_digest = COALESCE($7, inputs_digest),
           next_attempt_at = $8, updated_at = $9, finished_at = $10
         WHERE study_instance_uid = $1 AND module = $2`,
        [studyInstanceUid, module, outcome.state, outcome.detail ?? null, outputs, outcome.inputs ?? null, outcome.inputsDigest ?? null, outcome.nextAttemptAt ?? null, at, outcome.state === 'pending' ? null : at],
      )
      return true
    })
  }

  async requeueInterrupted(options: RequeueOptions): Promise<number> {
    // Silence is measured by the database's clock, as the heartbeats are written (routers.heartbeat_at = now()).
    const result = await this.pool.query(
      `UPDATE processing p SET state = 'pending', attempts = GREATEST(p.attempts - 1, 0), runner = NULL
       WHERE p.state = 'running' AND (
         ($2 AND p.runner = $1)
         OR (p.runner IS DISTINCT FROM $1 AND NOT EXISTS (SELECT 1 FROM routers r WHERE r.name = p.runner AND r.heartbeat_at > now() - make_interval(secs => $3))))`,
      [options.router, options.own, options.silentSeconds],
    )
    return result.rowCount ?? 0
  }

  async outputsOf(studyInstanceUid: string): Promise<Set<string>> {
    const outputs = new Set<string>()
    for (const run of await this.forStudy(studyInstanceUid)) for (const sop of run.outputs) outputs.add(sop)
    return outputs
  }

  async counts(): Promise<ProcessingCounts> {
    const {rows} = await this.pool.query<{module: string; state: ProcessingRunState; n: number}>(
      `SELECT module, state, COUNT(*)::int AS n FROM processing WHERE state <> 'skipped' GROUP BY module, state ORDER BY module COLLATE "C", state COLLATE "C"`,
    )
    return rows.map((row) => ({module: row.module, state: row.state, runs: row.n}))
  }
}
