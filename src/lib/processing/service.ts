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
import {SILENT_ROUTER_SECONDS} from '../ledger/cluster.js'
import type {StudyLedger} from '../ledger/ledger.js'
import type {ProcessingCounts, ProcessingOutcome, ProcessingRun, ProcessingRunState} from '../ledger/processing-runs.js'
import type {LedgerStore} from '../ledger/store.js'
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

/** What processing needs of the ledger's store: its processing table and the studies (the SQLite file, or PostgreSQL shared by several routers). */
export type ProcessingLedgerStore = Pick<LedgerStore, 'processing' | 'study' | 'summary' | 'kept'>

export interface ProcessingServiceOptions {
  /** listen.aeTitle: ddr's AE title towards a backend an input is fetched from by C-GET. */
  config: Pick<DdrConfig, 'processing' | 'backends'> & {listen: Pick<DdrConfig['listen'], 'aeTitle'>}
  ledger: StudyLedger
  /** The ledger's store, read and written in step with the runs. */
  runs: ProcessingLedgerStore
  store: OutputStore
  logger: Logger
  /** This router's name, recorded as the runner of the runs it takes (default `ddr`). */
  router?: string
  /**
   * A ledger several routers share (PostgreSQL): the runs of a router silent for `silentSeconds`
   * (default 15, as its heartbeats say) are taken over, looked for every `reclaimMs` (default 5 s);
   * and a stopping router hands its running runs back at once.
   */
  shared?: {silentSeconds?: number; reclaimMs?: number}
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
  private reclaimTimer?: NodeJS.Timeout
  private readonly onStable = (study: StudySummary) => {
    this.studyStable(study).catch((error: Error) => this.options.logger.error('processing-failed', {study: study.studyInstanceUid}, `cannot schedule the modules: ${error.message}`))
  }

  private stopped = false
  private ticking?: Promise<void>
  private resumed: Promise<void> = Promise.resolve()
  private countsCache: ProcessingCounts = []
  private countsRefreshing = false
  private readonly router: string

  constructor(private readonly options: ProcessingServiceOptions) {
    super()
    this.modules = new Map(options.config.processing.modules.map((m) => [m.name, new ProcessingModule(m)]))
    this.router = options.router ?? 'ddr'
  }

  private get silentSeconds(): number {
    return this.options.shared?.silentSeconds ?? SILENT_ROUTER_SECONDS
  }

  private get runs() {
    return this.options.runs.processing
  }

  /** Picks up runs this router (or, on a shared ledger, a router gone silent) left running, and follows the ledger. */
  start(): void {
    this.resumed = this.requeue(true, 'processing-resumed', 'runs a stopped router left running are tried again')
    this.options.ledger.on('stable', this.onStable)
    this.timer = setInterval(() => void this.tick(), this.options.tickMs ?? 500)
    this.timer.unref()
    if (this.options.shared !== undefined) {
      this.reclaimTimer = setInterval(() => void this.requeue(false, 'processing-taken-over', `runs of a router silent for ${this.silentSeconds} s are tried again here or by another router`), this.options.shared.reclaimMs ?? 5000)
      this.reclaimTimer.unref()
    }
  }

  /**
   * Running runs go back to pending: with `own`, this router's (it just started: its previous life
   * left them), and on a shared ledger those of routers silent for silentSeconds; never a live
   * router's, nor, without `own`, this router's own (it may be running them now).
   */
  private async requeue(own: boolean, event: string, why: string): Promise<void> {
    try {
      const requeued = await this.runs.requeueInterrupted({router: this.router, own, silentSeconds: this.silentSeconds})
      if (requeued === 0) return
      if (own) this.options.logger.info(event, {runs: requeued}, why)
      else this.options.logger.warn(event, {runs: requeued}, why)
    } catch (error) {
      this.options.logger.error('processing-failed', {}, `cannot requeue interrupted runs: ${(error as Error).message}`)
    }
  }

  /**
   * Stops following the ledger; running modules are stopped. Their runs are taken up again on the
   * next start; on a shared ledger they are handed back at once, for another router to take.
   */
  async stop(): Promise<void> {
    this.stopped = true
    clearInterval(this.timer)
    clearInterval(this.reclaimTimer)
    this.options.ledger.off('stable', this.onStable)
    // A look for due runs under way may still take one (the ledger answers later): it is stopped with the others.
    await this.ticking
    for (const {controller} of this.running.values()) controller.abort()
    const interrupted = this.running.size
    await Promise.all([...this.running.values()].map((r) => r.done))
    if (this.options.shared !== undefined && interrupted > 0) await this.requeue(true, 'processing-handed-back', 'the runs this router stopped are handed back for another router to take')
  }

  status(): ProcessingStatus {
    this.refreshCounts()
    return {running: this.running.size, runs: this.countsCache}
  }

  /** /status must answer at once: the SQLite ledger's counts are read now, PostgreSQL's arrive for the next call. */
  private refreshCounts(): void {
    if (this.countsRefreshing) return
    let answer: ReturnType<ProcessingLedgerStore['processing']['counts']>
    try {
      answer = this.runs.counts()
    } catch {
      return // the ledger cannot be read: /status must still answer
    }

    if (!(answer instanceof Promise)) {
      this.countsCache = answer
      return
    }

    this.countsRefreshing = true
    answer.then(
      (counts) => (this.countsCache = counts),
      () => {},
    ).finally(() => (this.countsRefreshing = false))
  }

  /**
   * A study became stable: modules that never looked at it are scheduled; a module that did is
   * scheduled again when new instances came (an amendment) and it is configured to re-run, or when
   * it was skipped before (the new instances may match). Processing's own outputs are no news.
   */
  private async studyStable(summary: StudySummary): Promise<void> {
    if (this.modules.size === 0) return
    const uid = summary.studyInstanceUid
    const existing = new Map((await this.runs.forStudy(uid)).map((r) => [r.module, r]))
    const fresh = [...this.modules.keys()].filter((name) => !existing.has(name))
    // ON CONFLICT DO NOTHING: routers that see the study stable at once schedule each module once.
    if (fresh.length > 0) await this.runs.schedule(uid, fresh)
    const settled = [...existing.values()].filter((r) => r.state === 'done' || r.state === 'failed' || r.state === 'skipped')
    if (settled.length === 0) return
    const study = await this.options.runs.study(uid)
    if (study === undefined) return
    const digest = inputsDigest(study.instanceList, await this.runs.outputsOf(uid))
    for (const run of settled) {
      const module = this.modules.get(run.module)
      if (module === undefined || run.inputsDigest === null || run.inputsDigest === digest) continue
      if (run.state !== 'skipped' && !module.config.rerunOnAmendment) continue
      await this.runs.reschedule(uid, run.module)
      this.options.logger.info('processing-rescheduled', {study: uid, module: run.module}, run.state === 'skipped' ? 'new instances: the match is decided again' : 'an amendment brought new instances')
    }
  }

  /** One look for due runs at a time (a slow answer from a shared ledger is not asked again meanwhile). */
  private tick(): Promise<void> {
    this.ticking ??= this.resumed
      .then(() => this.launchDue())
      .catch((error: Error) => this.options.logger.error('processing-failed', {}, `cannot read the processing runs: ${error.message}`))
      .finally(() => (this.ticking = undefined))
    return this.ticking
  }

  private async launchDue(): Promise<void> {
    const concurrency = this.options.config.processing.concurrency
    if (this.stopped || this.running.size >= concurrency) return
    const due = await this.runs.due(Date.now(), 100)
    for (const run of due) {
      if (this.running.size >= concurrency || this.stopped) break
      if (this.running.has(key(run))) continue
      // A module another router of a shared ledger has and this one lacks (a rolling upgrade): that router runs it.
      if (this.options.shared !== undefined && !this.modules.has(run.module)) continue
      const summary = await this.options.runs.summary(run.studyInstanceUid)
      // A module sees the study whole: stable, every instance delivered (routing is never held up: this only waits for it).
      if (summary !== undefined && (summary.state !== 'stable' || summary.delivered.queued > 0)) continue
      // Pending -> running only for the router whose UPDATE passes: on a shared ledger another may have taken it.
      const taken = await this.runs.take(run.studyInstanceUid, run.module, this.router)
      if (taken === undefined) continue
      if (summary === undefined) {
        await this.record(taken, {state: 'skipped', detail: 'the study left the ledger'})
        continue
      }

      void this.launch(taken, this.modules.get(run.module)?.config.retries ?? 0)
    }
  }

  /**
   * Runs one module on one study now, by hand (`ddr process` through the router): a new run of it,
   * one attempt, recorded like any; resolves when it is done. Throws DdrError USAGE for an unknown module or one running on the study now.
   */
  async processNow(studyInstanceUid: string, moduleName: string): Promise<ProcessOutcome> {
    const module = this.modules.get(moduleName)
    if (module === undefined) throw new DdrError('USAGE', `no processing module named ${moduleName} (configured: ${[...this.modules.keys()].join(', ') || 'none'})`)
    const busy = (by?: string | null) => new DdrError('USAGE', `${moduleName} is running on study ${studyInstanceUid} now${by && by !== this.router ? ` (router ${by})` : ''}`, {hint: 'wait for it to finish'})
    if (this.running.has(`${studyInstanceUid}\u0000${moduleName}`)) throw busy()
    const earlier = new Set((await this.runs.get(studyInstanceUid, moduleName))?.outputs ?? [])
    // A new run, taken by this router in one statement, unless a router runs the module on the study now.
    const run = await this.runs.takeNewRun(studyInstanceUid, moduleName, this.router)
    if (run === undefined) throw busy((await this.runs.get(studyInstanceUid, moduleName))?.runner)
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

    const after = (await this.runs.get(studyInstanceUid, moduleName))!
    return {module: moduleName, state: after.state, run: after.run, attempts: after.attempts, detail: after.detail, outputs: after.outputs.filter((uid) => !earlier.has(uid)), ...(result === undefined ? {} : {result})}
  }

  /** The modules configured, by name (`ddr process` without --module runs those that match). */
  moduleNames(): string[] {
    return [...this.modules.keys()]
  }

  /** Runs a run this router has taken (running, its attempt counted). */
  private launch(run: ProcessingRun, retries: number): Promise<void> {
    const controller = new AbortController()
    const done = this.execute(run, retries, controller.signal).finally(() => this.running.delete(key(run)))
    this.running.set(key(run), {controller, done})
    return done
  }

  private async execute(run: ProcessingRun, retries: number, signal: AbortSignal): Promise<void> {
    const {logger} = this.options
    const uid = run.studyInstanceUid
    const attempt = run.attempts
    const log = {study: uid, module: run.module, run: run.run, attempt}
    const module = this.modules.get(run.module)
    const study = await this.options.runs.study(uid)
    if (module === undefined || study === undefined) {
      await this.record(run, {state: 'skipped', detail: module === undefined ? 'the module is no longer configured' : 'the study left the ledger'})
      return
    }

    logger.info('processing-started', log)
    const started = Date.now()
    let attempted: AttemptResult | undefined
    try {
      attempted = await attemptModule(module, study, {
        processingOutputs: await this.runs.outputsOf(uid),
        sources: {kept: (sop) => this.options.runs.kept(sop), backends: this.options.config.backends, callingAeTitle: this.options.config.listen.aeTitle},
        workDir: this.options.config.processing.workDir,
        uidRoot: this.options.config.processing.uidRoot,
        run: run.run,
        attempt,
        signal,
      })
      if (attempted.skipped) {
        logger.info('processing-skipped', log, attempted.reason)
        await this.record(run, {state: 'skipped', detail: attempted.reason, inputsDigest: attempted.inputsDigest})
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
      await this.record(run, {state: 'done', detail, outputs: stored, inputs: attempted.inputs.length, inputsDigest: attempted.inputsDigest}, attempted.result)
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
        await this.record(run, {state: 'pending', detail: failure.detail, nextAttemptAt: Date.now() + delayMs})
      } else {
        logger.error('processing-failed', {...log, kind: failure.kind}, `${failure.detail}; the study is processing-failed${retries > 0 ? ` after ${attempt} attempts` : ''}`)
        await this.record(run, {state: 'failed', detail: failure.detail})
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

  /** Records how an attempt ended, if the run is still this router's (on a shared ledger, a router thought gone may have lost it). */
  private async record(run: ProcessingRun, outcome: ProcessingOutcome, result?: ModuleResult): Promise<void> {
    try {
      const recorded = await this.runs.finish(run.studyInstanceUid, run.module, outcome, Date.now(), this.router)
      if (!recorded) {
        this.options.logger.warn('processing-lost', {study: run.studyInstanceUid, module: run.module, run: run.run}, `the run was taken over while this router ran it (it was silent for ${this.silentSeconds} s): its outcome (${outcome.state}) is left to the router that runs it now`)
        return
      }

      this.refreshCounts()
      const after = await this.runs.get(run.studyInstanceUid, run.module)
      if (after !== undefined) this.emit('finished', after, result)
    } catch (error) {
      this.options.logger.error('processing-failed', {study: run.studyInstanceUid, module: run.module}, `cannot record the run in the ledger: ${(error as Error).message}`)
    }
  }
}

const key = (run: Pick<ProcessingRun, 'studyInstanceUid' | 'module'>) => `${run.studyInstanceUid}\u0000${run.module}`
