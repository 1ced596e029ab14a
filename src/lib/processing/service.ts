/**
 * The router's processing: modules run on studies that became stable, in the background, at most
 * `processing.concurrency` at a time, once per study (again after an amendment when configured),
 * each attempt's outputs stored through the router's own intake. Nothing here is on the receive
 * path, and routing never waits for it.
 */
import {EventEmitter} from 'node:events'

import type {DdrConfig} from '../config/schema.js'
import {formatStatus} from '../dimse/status.js'
import {DdrError} from '../errors.js'
import type {StudyLedger} from '../ledger/ledger.js'
import type {ProcessingOutcome, ProcessingRun, ProcessingRunState} from '../ledger/processing-runs.js'
import type {SqliteLedgerStore} from '../ledger/sqlite-store.js'
import type {StudySummary} from '../ledger/types.js'
import type {Logger} from '../output/logger.js'
import {type AttemptResult, ProcessingModule, attemptModule} from './attempt.js'
import {type ModuleResult, ModuleFailure} from './contract.js'
import {inputsDigest} from './inputs.js'
import type {OutputInstance} from './outputs.js'

/**
 * Stores one output (a Part 10 file) through the router's intake, for a module: `stored` once it is
 * durable in the spool; otherwise the status a DICOM sender would have got and why. Given by the
 * listener (RouterService.ingest).
 */
export type OutputStore = (file: string, module: string) => Promise<{stored: boolean; status?: number; reason?: string}>

export interface ProcessingServiceOptions {
  /** listen.aeTitle: ddr's AE title towards a backend an input is fetched from by C-GET. */
  config: Pick<DdrConfig, 'processing' | 'backends'> & {listen: Pick<DdrConfig['listen'], 'aeTitle'>}
  ledger: StudyLedger
  /** The ledger's file, read and written in step with the runs (processing runs on the SQLite ledger only). */
  runs: SqliteLedgerStore
  store: OutputStore
  logger: Logger
  /** How often due runs are looked for (default 500 ms). */
  tickMs?: number
}

/** What `ddr process` (through the router) gets back for each module it ran. */
export interface ProcessOutcome {
  module: string
  state: ProcessingRunState
  run: number
  attempts: number
  detail: string | null
  /** What the module found (when it gave a result). */
  result?: ModuleResult
  /** SOP Instance UIDs this run stored into the study (the SR first). */
  outputs: string[]
}

/** /status's processing: runs by module and state, and how many run now. */
export interface ProcessingStatus {
  running: number
  runs: Array<{module: string; state: ProcessingRunState; runs: number}>
}

/**
 * Follows the ledger's `stable` events and runs the configured modules. Emits `finished`
 * (ProcessingRun) after each attempt is recorded.
 */
export class ProcessingService extends EventEmitter<{finished: [run: ProcessingRun, result?: ModuleResult]}> {
  private readonly modules: Map<string, ProcessingModule>
  private readonly running = new Map<string, {controller: AbortController; done: Promise<void>}>()
  private timer?: NodeJS.Timeout
  private readonly onStable = (study: StudySummary) => this.studyStable(study)
  private stopped = false

  constructor(private readonly options: ProcessingServiceOptions) {
    super()
    this.modules = new Map(options.config.processing.modules.map((m) => [m.name, new ProcessingModule(m)]))
  }

  private get runs() {
    return this.options.runs.processing
  }

  /** Picks up runs a stopped router left behind, and follows the ledger. */
  start(): void {
    const requeued = this.runs.requeueInterrupted()
    if (requeued > 0) this.options.logger.info('processing-resumed', {runs: requeued}, 'runs a stopped router left running are tried again')
    this.options.ledger.on('stable', this.onStable)
    this.timer = setInterval(() => this.tick(), this.options.tickMs ?? 500)
    this.timer.unref()
  }

  /** Stops following the ledger; running modules are stopped (their runs are taken up again on the next start). */
  async stop(): Promise<void> {
    this.stopped = true
    clearInterval(this.timer)
    this.options.ledger.off('stable', this.onStable)
    for (const {controller} of this.running.values()) controller.abort()
    await Promise.all([...this.running.values()].map((r) => r.done))
  }

  status(): ProcessingStatus {
    let runs: ProcessingStatus['runs'] = []
    try {
      runs = this.runs.counts()
    } catch {
      // the ledger cannot be read: /status must still answer
    }

    return {running: this.running.size, runs}
  }

  /**
   * A study became stable: modules that never looked at it are scheduled; a module that did is
   * scheduled again when new instances came (an amendment) and it is configured to re-run, or when
   * it was skipped before (the new instances may match). Processing's own outputs are no news.
   */
  private studyStable(summary: StudySummary): void {
    if (this.modules.size === 0) return
    const uid = summary.studyInstanceUid
    const existing = new Map(this.runs.forStudy(uid).map((r) => [r.module, r]))
    const fresh = [...this.modules.keys()].filter((name) => !existing.has(name))
    if (fresh.length > 0) this.runs.schedule(uid, fresh)
    const settled = [...existing.values()].filter((r) => r.state === 'done' || r.state === 'failed' || r.state === 'skipped')
    if (settled.length === 0) return
    const study = this.options.runs.study(uid)
    if (study === undefined) return
    const digest = inputsDigest(study.instanceList, this.runs.outputsOf(uid))
    for (const run of settled) {
      const module = this.modules.get(run.module)
      if (module === undefined || run.inputsDigest === null || run.inputsDigest === digest) continue
      if (run.state !== 'skipped' && !module.config.rerunOnAmendment) continue
      this.runs.reschedule(uid, run.module)
      this.options.logger.info('processing-rescheduled', {study: uid, module: run.module}, run.state === 'skipped' ? 'new instances: the match is decided again' : 'an amendment brought new instances')
    }
  }

  private tick(): void {
    const concurrency = this.options.config.processing.concurrency
    if (this.stopped || this.running.size >= concurrency) return
    let due: ProcessingRun[]
    try {
      due = this.runs.due(Date.now(), 100)
    } catch (error) {
      this.options.logger.error('processing-failed', {}, `cannot read the processing runs: ${(error as Error).message}`)
      return
    }

    for (const run of due) {
      if (this.running.size >= concurrency) break
      if (this.running.has(key(run))) continue
      const summary = this.options.runs.summary(run.studyInstanceUid)
      if (summary === undefined) {
        this.runs.finish(run.studyInstanceUid, run.module, {state: 'skipped', detail: 'the study left the ledger'})
        continue
      }

      // A module sees the study whole: stable, every instance delivered (routing is never held up: this only waits for it).
      if (summary.state !== 'stable' || summary.delivered.queued > 0) continue
      this.launch(run, this.modules.get(run.module)?.config.retries ?? 0)
    }
  }

  /**
   * Runs one module on one study now, by hand (`ddr process` through the router): a new run of it,
   * one attempt, recorded like any; resolves when it is done. Throws DdrError USAGE for an unknown module or one running on the study now.
   */
  async processNow(studyInstanceUid: string, moduleName: string): Promise<ProcessOutcome> {
    const module = this.modules.get(moduleName)
    if (module === undefined) throw new DdrError('USAGE', `no processing module named ${moduleName} (configured: ${[...this.modules.keys()].join(', ') || 'none'})`)
    if (this.running.has(`${studyInstanceUid}\u0000${moduleName}`)) throw new DdrError('USAGE', `${moduleName} is running on study ${studyInstanceUid} now`, {hint: 'wait for it to finish'})
    this.runs.reschedule(studyInstanceUid, moduleName)
    const run = this.runs.get(studyInstanceUid, moduleName)!
    const earlier = new Set(run.outputs)
    let result: ModuleResult | undefined
    const listener = (finished: ProcessingRun, given?: ModuleResult) => {
      if (finished.studyInstanceUid === studyInstanceUid && finished.module === moduleName) result = given
    }

    this.on('finished', listener)
    try {
      await this.launch(run, 0)
    } finally {
      this.off('finished', listener)
    }

    const after = this.runs.get(studyInstanceUid, moduleName)!
    return {module: moduleName, state: after.state, run: after.run, attempts: after.attempts, detail: after.detail, outputs: after.outputs.filter((uid) => !earlier.has(uid)), ...(result === undefined ? {} : {result})}
  }

  /** The modules configured, by name (`ddr process` without --module runs those that match). */
  moduleNames(): string[] {
    return [...this.modules.keys()]
  }

  private launch(run: ProcessingRun, retries: number): Promise<void> {
    const controller = new AbortController()
    this.runs.start(run.studyInstanceUid, run.module)
    const done = this.execute(run, retries, controller.signal).finally(() => this.running.delete(key(run)))
    this.running.set(key(run), {controller, done})
    return done
  }

  private async execute(run: ProcessingRun, retries: number, signal: AbortSignal): Promise<void> {
    const {logger} = this.options
    const uid = run.studyInstanceUid
    const attempt = run.attempts + 1
    const log = {study: uid, module: run.module, run: run.run, attempt}
    const module = this.modules.get(run.module)
    const study = this.options.runs.study(uid)
    if (module === undefined || study === undefined) {
      this.record(run, {state: 'skipped', detail: module === undefined ? 'the module is no longer configured' : 'the study left the ledger'})
      return
    }

    logger.info('processing-started', log)
    const started = Date.now()
    let attempted: AttemptResult | undefined
    try {
      attempted = await attemptModule(module, study, {
        processingOutputs: this.runs.outputsOf(uid),
        sources: {kept: (sop) => this.options.runs.kept(sop), backends: this.options.config.backends, callingAeTitle: this.options.config.listen.aeTitle},
        workDir: this.options.config.processing.workDir,
        uidRoot: this.options.config.processing.uidRoot,
        run: run.run,
        attempt,
        signal,
      })
      if (attempted.skipped) {
        logger.info('processing-skipped', log, attempted.reason)
        this.record(run, {state: 'skipped', detail: attempted.reason, inputsDigest: attempted.inputsDigest})
        return
      }

      const stored: string[] = []
      for (const output of attempted.outputs) {
        await this.storeOutput(output, module.name)
        stored.push(output.sopInstanceUid)
      }

      const findings = attempted.result?.findings.length
      const detail = `${findings === undefined ? 'no result.json' : `${findings} finding(s)`}; ${stored.length === 0 ? 'nothing stored' : `stored ${attempted.outputs.map((o) => `${o.kind === 'sr' ? 'SR ' : ''}${o.sopInstanceUid}`).join(', ')}`}`
      logger.info('processing-done', {...log, findings, stored: stored.length, ms: Date.now() - started}, detail)
      this.record(run, {state: 'done', detail, outputs: stored, inputs: attempted.inputs.length, inputsDigest: attempted.inputsDigest}, attempted.result)
    } catch (error) {
      if (signal.aborted && this.stopped) {
        // Stopped with the router: the run stays `running` and is taken up again on the next start.
        logger.info('processing-stopped', log, 'the router is stopping: the run is taken up again on the next start')
        return
      }

      const failure = error instanceof ModuleFailure ? error : new ModuleFailure('exit', `unexpected: ${(error as Error).message}`)
      if (attempt <= retries) {
        const delayMs = module.config.retryDelaySeconds * 1000 * 2 ** (attempt - 1)
        logger.warn('processing-attempt-failed', {...log, kind: failure.kind, retryInMs: delayMs}, failure.detail)
        this.record(run, {state: 'pending', detail: failure.detail, nextAttemptAt: Date.now() + delayMs})
      } else {
        logger.error('processing-failed', {...log, kind: failure.kind}, `${failure.detail}; the study is processing-failed${retries > 0 ? ` after ${attempt} attempts` : ''}`)
        this.record(run, {state: 'failed', detail: failure.detail})
      }
    } finally {
      if (attempted !== undefined && !attempted.skipped) await attempted.folders.remove()
    }
  }

  /** Stores an output through the router's intake (durable in the spool, routed by affinity, recorded in the ledger). */
  private async storeOutput(output: OutputInstance, module: string): Promise<void> {
    const what = `${output.kind === 'sr' ? 'the SR' : output.path} (${output.sopInstanceUid})`
    let outcome: Awaited<ReturnType<OutputStore>>
    try {
      outcome = await this.options.store(output.path, module)
    } catch (error) {
      throw new ModuleFailure('store', `the router could not take ${what}: ${(error as Error).message}`)
    }

    if (!outcome.stored) throw new ModuleFailure('store', `the router refused ${what}${outcome.status === undefined ? '' : ` with ${formatStatus(outcome.status)}`}${outcome.reason ? `: ${outcome.reason}` : ''}`)
  }

  private record(run: ProcessingRun, outcome: ProcessingOutcome, result?: ModuleResult): void {
    try {
      this.runs.finish(run.studyInstanceUid, run.module, outcome)
      const after = this.runs.get(run.studyInstanceUid, run.module)
      if (after !== undefined) this.emit('finished', after, result)
    } catch (error) {
      this.options.logger.error('processing-failed', {study: run.studyInstanceUid, module: run.module}, `cannot record the run in the ledger: ${(error as Error).message}`)
    }
  }
}

const key = (run: Pick<ProcessingRun, 'studyInstanceUid' | 'module'>) => `${run.studyInstanceUid}\u0000${run.module}`
