import {EventEmitter} from 'node:events'
import {hostname} from 'node:os'
import path from 'node:path'

import type {BackendConfig, DdrConfig} from '../config/schema.js'
import type {ReceivedInstance} from '../dicom/received-instance.js'
import {DdrError} from '../errors.js'
import type {Logger} from '../output/logger.js'
import {redactUrl} from '../output/redact.js'
import {studyHoldings} from './holdings.js'
import {type RetentionLocation, RetentionStore} from './retention.js'
import {PostgresLedgerStore} from './postgres-store.js'
import {SqliteLedgerStore, isSqliteBusy} from './sqlite-store.js'
import type {LedgerStore} from './store.js'
import type {InstanceOutcome, InstanceReceipt, Receipt, StudyCounts, StudySummary} from './types.js'

/** Queues a kept copy for delivery again (a repair); provided by the pipeline that owns the spool. */
export type Resender = (kept: RetentionLocation, sopInstanceUid: string) => Promise<void>

/** Where a config's ledger lives, for messages: the SQLite file, or the database URL with its password masked. */
export function ledgerLabel(config: Pick<DdrConfig, 'ledger' | 'spool'>): string {
  const url = config.ledger.url
  return url !== undefined && !url.startsWith('sqlite:') ? redactUrl(url) : ledgerFile(config)
}

/** The ledger file a config names: `ledger.url` (sqlite:PATH), else spool.dir/ledger.db. */
export function ledgerFile(config: Pick<DdrConfig, 'ledger' | 'spool'>): string {
  const url = config.ledger.url
  if (url !== undefined && !url.startsWith('sqlite:')) throw new DdrError('CONFIG_INVALID', `ledger.url ${redactUrl(url)} is not an SQLite ledger file`, {hint: 'this command reads the SQLite ledger; a PostgreSQL ledger is read through its router'})
  return url === undefined ? path.resolve(config.spool.dir, 'ledger.db') : path.resolve(url.slice('sqlite:'.length))
}

/** What the backends hold of a study against what the ledger says they stored. */
export interface HoldingsComparison {
  expected: number
  found: number
  missing: string[]
  /** Backends that cannot be asked. */
  unverifiable: string[]
}

/**
 * Asks each backend that stored instances of a study what it holds (see studyHoldings) and
 * compares SOP Instance UIDs; undefined when the ledger does not know the study. Throws DdrError
 * BACKEND_UNREACHABLE when a backend does not answer.
 */
export async function compareHoldings(store: LedgerStore, backends: readonly BackendConfig[], studyInstanceUid: string, callingAeTitle?: string): Promise<HoldingsComparison | undefined> {
  const study = await store.summary(studyInstanceUid)
  if (study === undefined) return undefined
  const comparison: HoldingsComparison = {expected: 0, found: 0, missing: [], unverifiable: []}
  for (const [name, sops] of await store.storedByBackend(studyInstanceUid)) {
    const backend = backends.find((b) => b.name === name)
    const held = backend === undefined ? undefined : await studyHoldings(backend, studyInstanceUid, study.patientId, {callingAeTitle})
    if (held === undefined) {
      comparison.unverifiable.push(name)
      continue
    }

    comparison.expected += sops.length
    for (const sop of sops) {
      if (held.has(sop)) comparison.found++
      else comparison.missing.push(sop)
    }
  }

  return comparison
}

/** The receipt a comparison makes (repaired: how many missing ones were queued again). */
export function receiptFromComparison(comparison: HoldingsComparison, repaired: number): Receipt {
  const {expected, found, missing, unverifiable} = comparison
  const state = missing.length === 0 ? (unverifiable.length > 0 && expected === 0 ? 'unverifiable' : 'verified') : repaired > 0 ? 'repairing' : 'incomplete'
  return {
    state,
    expected,
    found,
    missing,
    repaired,
    checkedAt: new Date().toISOString(),
    ...(unverifiable.length > 0 ? {detail: `cannot ask ${unverifiable.join(', ')} what it holds (a DICOM SCP without a REST API)`} : {}),
  }
}

/** Options for StudyLedger. */
export interface StudyLedgerOptions {
  stableSeconds: number
  keepDays: number
  logger: Logger
  /** How often the completion timer looks (default 1 s, at most stableSeconds / 4). */
  tickMs?: number
  /** The configured backends, to ask what they hold of a study (receipts). */
  backends?: readonly BackendConfig[]
  /** Our AE title when a receipt asks a DICOM backend by C-FIND. */
  callingAeTitle?: string
  /** Delivered instances kept for repairs. */
  retention?: RetentionStore
  /** Check receipts of stable, delivered studies in the background (default true with backends). */
  autoReceipts?: boolean
  /**
   * A study whose every instance carried ImagesInAcquisition, with every acquisition whole, is
   * stable after this much quiet instead of stableSeconds (default 5 s, never more than stableSeconds).
   */
  countedQuietMs?: number
}

/** What a receiving study's count tags say: per acquisition (series and AcquisitionNumber) how many images, and which arrived. */
interface StudyCount {
  /** Some instance came without ImagesInAcquisition: the study cannot be known whole by count. */
  uncounted: boolean
  acquisitions: Map<string, {expected: number; seen: Set<string>}>
}

const COUNTED_QUIET_MS = 5000

const DAY_MS = 86_400_000
/**
 * Writes are gathered this long (or up to FLUSH_MAX of them) into one transaction: a commit (and
 * the log sync that follows outcomes) costs about as much for one instance as for fifty, and a
 * sender waiting for each Success would otherwise pay one per instance. Measured with a serial
 * sender (~250 instances/s): the ledger costs ~0.29 ms CPU per instance with 10 ms, ~0.15 ms with
 * 25 ms. Nothing waits for it but the spool's release of delivered instances.
 */
const FLUSH_MS = 25
const FLUSH_MAX = 256

/** Receipts kept in memory while a shared ledger is unreachable, before new instances are refused. */
const MAX_UNWRITTEN = 100_000
/** How soon a write that failed on a shared ledger is tried again. */
const RETRY_MS = 1000

/** This router's name in a shared ledger: ledger.routerName, else the host name and listen port. */
export function routerName(config: Pick<DdrConfig, 'ledger' | 'listen'>): string {
  return config.ledger.routerName ?? `${hostname().split('.')[0]}-${config.listen.port}`
}

/** Opens the store a config names: PostgreSQL for a postgres:// ledger.url, else the SQLite file. */
export async function openLedgerStore(config: Pick<DdrConfig, 'ledger' | 'spool' | 'listen'>, options: {readonly?: boolean; logger?: Logger; shared?: boolean} = {}): Promise<LedgerStore> {
  const url = config.ledger.url
  // shared: an SQLite file several workers of one `ddr listen --workers N` write (claims, heartbeats).
  if (url === undefined || url.startsWith('sqlite:')) return new SqliteLedgerStore(ledgerFile(config), {readonly: options.readonly, shared: options.shared && !options.readonly ? {router: routerName(config)} : undefined})
  return PostgresLedgerStore.open(url, {
    router: routerName(config),
    password: config.ledger.password,
    tls: config.ledger.tls,
    readonly: options.readonly,
    onIdleError: (error) => options.logger?.warn('ledger-connection-lost', {}, `study ledger ${redactUrl(url)}: ${error.message}; reconnecting at the next write`),
  })
}

/** What the ledger tells those who follow it: `stable` once a study's completion timer ran out (again after an amendment). */
export interface StudyLedgerEvents {
  stable: [study: StudySummary]
}

/**
 * The router's record of studies: every acknowledged instance, gathered into one transaction every
 * FLUSH_MS (Success does not wait for it: the spool holds the instance until its outcome is
 * committed, and recovered() records what a crash left unrecorded); what became of each; and each study's completion: receiving
 * while instances arrive, stable after stableSeconds without one, re-opened by a late instance (an
 * amendment, logged). Old studies are pruned after keepDays. Emits `stable` (StudySummary) when a
 * study becomes stable, after it is recorded so: what processing modules wait for.
 *
 * The store is the embedded SQLite file or a PostgreSQL database shared by several routers. A
 * shared one may be unreachable for a while (a restart, a failover): its writes are kept in memory
 * and tried again every RETRY_MS, instances are still acknowledged and routed, and the spool lets
 * a delivered instance go only once its outcome is written. Only MAX_UNWRITTEN receipts waiting
 * make the router refuse new instances.
 */
export class StudyLedger extends EventEmitter<StudyLedgerEvents> {
  private pendingReceipts: InstanceReceipt[] = []
  private pendingOutcomes: Array<{outcome: InstanceOutcome; resolve: () => void}> = []
  private flushScheduled = false
  private flushTimer?: NodeJS.Timeout
  /** The write under way (one at a time, so a retried batch keeps its order). */
  private writing?: Promise<void>
  private writeAgain = false
  /** Studies receiving, with their last arrival (epoch ms). */
  private readonly receivingSince = new Map<string, number>()
  /** Receiving studies' count tags (in memory: after a restart the timer alone decides). */
  private readonly countTags = new Map<string, StudyCount>()
  private readonly timer: NodeJS.Timeout
  private lastPrune = 0
  /** Set when a write failed: new instances are refused until a write works again. */
  private failure?: string
  /** Since when a shared ledger has not taken writes (they wait in memory). */
  private unreachableSince?: number
  private resender?: Resender
  /** A background receipt check is running (one at a time). */
  private checking = false
  private ticking = false
  private countsCache?: {at: number; counts: StudyCounts | null}
  private countsRefreshing = false
  private closed = false
  /** Flushes a shared SQLite file's write lock turned back (tried again). */
  private busyWrites = 0

  constructor(readonly store: LedgerStore, private readonly options: StudyLedgerOptions) {
    super()
    void Promise.resolve()
      .then(() => store.receiving())
      .then((studies) => {
        for (const study of studies) if (!this.receivingSince.has(study.studyInstanceUid)) this.receivingSince.set(study.studyInstanceUid, study.lastReceived)
      })
      .catch((error: Error) => options.logger.error('ledger-failed', {}, `study ledger ${store.file}: cannot read the receiving studies: ${error.message}`))
    const tick = options.tickMs ?? Math.max(100, Math.min(1000, (options.stableSeconds * 1000) / 4))
    this.timer = setInterval(() => void this.tick(), tick)
    this.timer.unref()
  }

  /** Opens (or creates) the ledger a config names, with its retention store. */
  static async open(config: Pick<DdrConfig, 'ledger' | 'spool' | 'studies' | 'backends' | 'listen'>, logger: Logger, options: {shared?: boolean} = {}): Promise<StudyLedger> {
    // retentionHours 0 or retentionBytes 0: no copies kept (receipts then find, but cannot repair).
    const keep = config.studies.retentionHours > 0 && config.studies.retentionBytes > 0
    const retention = keep ? new RetentionStore(path.resolve(config.spool.dir, 'retention'), {maxAgeMs: config.studies.retentionHours * 3_600_000, maxBytes: config.studies.retentionBytes}) : undefined
    await retention?.open()
    return new StudyLedger(await openLedgerStore(config, {logger, shared: options.shared}), {
      stableSeconds: config.studies.stableSeconds,
      keepDays: config.studies.keepDays,
      logger,
      backends: config.backends,
      callingAeTitle: config.listen.aeTitle,
      retention,
      autoReceipts: config.studies.receipts,
    })
  }

  /** Who re-sends missing instances from retention (the listener, which owns the spool). */
  setResender(resender: Resender): void {
    this.resender = resender
  }

  /**
   * A backend stored an instance: the outcome is written (resolves once committed) and a copy is
   * kept in retention, both before the spool lets the instance go.
   */
  async delivered(instance: ReceivedInstance, backend: string): Promise<void> {
    let kept: RetentionLocation | undefined
    try {
      kept = await this.options.retention?.keep(instance)
    } catch (error) {
      this.options.logger.warn('retention-failed', {sop: instance.sopInstanceUid}, (error as Error).message)
    }

    await this.outcome({sopInstanceUid: instance.sopInstanceUid, status: 'stored', backend, at: Date.now(), kept})
  }

  /**
   * Asks the backends what they hold of a study and compares it with what the ledger says they
   * stored. Missing instances found in retention are queued again (with `repair`), which makes
   * the receipt `repairing` until they are delivered and checked again. Throws DdrError
   * BACKEND_UNREACHABLE when a backend does not answer (the receipt is left as it was).
   */
  async verify(studyInstanceUid: string, options: {repair: boolean}): Promise<Receipt | undefined> {
    const compared = await compareHoldings(this.store, this.options.backends ?? [], studyInstanceUid, this.options.callingAeTitle)
    if (compared === undefined) return undefined
    const {expected, found, missing} = compared
    let repaired = 0
    if (options.repair && missing.length > 0 && this.resender !== undefined && this.options.retention !== undefined) {
      const resend: Array<{sop: string; kept: RetentionLocation}> = []
      for (const sop of missing) {
        const kept = await this.store.kept(sop)
        if (kept !== undefined && this.options.retention.holds(kept)) resend.push({sop, kept})
      }

      await this.store.requeued(resend.map((r) => r.sop))
      for (const {sop, kept} of resend) {
        await this.resender(kept, sop)
        repaired++
      }
    }

    const receipt = receiptFromComparison(compared, repaired)
    const state = receipt.state
    await this.store.setReceipt(studyInstanceUid, receipt)
    const log = {study: studyInstanceUid, expected, found, missing: missing.length || undefined, repaired: repaired || undefined}
    if (state === 'verified') this.options.logger.info('receipt-verified', log)
    else if (state === 'unverifiable') this.options.logger.info('receipt-unverifiable', log, receipt.detail)
    else this.options.logger.warn(`receipt-${state}`, log, `${missing.length} instance(s) the backend should hold are missing${repaired > 0 ? `; ${repaired} re-sent from retention` : ''}${missing.length > repaired ? `; ${missing.length - repaired} not in retention` : ''}`)
    return receipt
  }

  /** Why new instances must be refused now (the last write failed), or undefined. */
  refusal(): string | undefined {
    return this.failure
  }

  /** Since when (epoch ms) a shared ledger has not taken writes, or undefined when it does. */
  unreachable(): number | undefined {
    return this.unreachableSince
  }

  /**
   * Records an acknowledged instance, with the others of the next few milliseconds in one
   * transaction. Nothing waits for it: the instance is already safe in the spool, and if the
   * process dies before the commit, the spool hands it back on restart and recovered() records it.
   */
  received(receipt: InstanceReceipt): void {
    this.pendingReceipts.push(receipt)
    this.scheduleFlush()
  }

  /** Instances read back from the spool after a restart: recorded where the ledger does not know them. */
  async recovered(receipts: InstanceReceipt[]): Promise<void> {
    if (receipts.length === 0) return
    await this.store.received(receipts, true)
    for (const receipt of receipts) if (!this.receivingSince.has(receipt.studyInstanceUid)) this.receivingSince.set(receipt.studyInstanceUid, receipt.receivedAt)
  }

  /**
   * What became of an instance; resolves once written (with the others of this turn), never
   * rejects (a failed write is logged). The forwarder waits for it before the spool lets the
   * instance go, so a crash in between delivers it again rather than leave the ledger behind.
   */
  outcome(outcome: InstanceOutcome): Promise<void> {
    return new Promise((resolve) => {
      this.pendingOutcomes.push({outcome, resolve})
      this.scheduleFlush()
    })
  }

  /**
   * Studies by state and receipt, at most a second or two old (monitoring polls /status often, and
   * the counts are two grouped queries); null when the ledger cannot be read (/status must still answer).
   */
  counts(): StudyCounts | null {
    const now = Date.now()
    if (this.countsCache === undefined || now - this.countsCache.at >= 1000) this.refreshCounts(now)
    return this.countsCache?.counts ?? null
  }

  private refreshCounts(now: number): void {
    if (this.countsRefreshing) return
    let answer: ReturnType<LedgerStore['counts']>
    try {
      answer = this.store.counts()
    } catch {
      this.countsCache = {at: now, counts: null}
      return
    }

    if (!(answer instanceof Promise)) {
      this.countsCache = {at: now, counts: answer}
      return
    }

    this.countsRefreshing = true
    answer
      .then(
        (counts) => (this.countsCache = {at: Date.now(), counts}),
        () => (this.countsCache = {at: Date.now(), counts: null}),
      )
      .finally(() => (this.countsRefreshing = false))
  }

  /** Writes what is pending (a shared ledger that does not answer gets one more try) and stops the timers. */
  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    clearInterval(this.timer)
    clearTimeout(this.flushTimer)
    await this.writing
    await this.writePending()
    // A shared SQLite file's busy lock: a few more tries before the store closes (what is still
    // not written then is in the spool, and the next start records it).
    for (let attempt = 0; attempt < 20 && this.pendingReceipts.length + this.pendingOutcomes.length > 0 && !this.store.transientFailures; attempt++) {
      await new Promise((resolve) => setTimeout(resolve, 50))
      await this.writePending()
    }

    if (this.pendingReceipts.length + this.pendingOutcomes.length > 0 && !this.store.transientFailures) {
      this.options.logger.error('ledger-failed', {unrecorded: this.pendingReceipts.length + this.pendingOutcomes.length}, `study ledger ${this.store.file} stayed busy until the router stopped; the spool still holds those instances, and the next start records them`)
    }

    this.options.retention?.close()
    await this.store.close()
  }

  /**
   * verify() with repair, then, while missing instances are being re-sent, waits (up to waitMs)
   * for them to be delivered and checks again: the receipt an operator asked for.
   */
  async verifyAndRepair(studyInstanceUid: string, waitMs = 60_000): Promise<Receipt | undefined> {
    let receipt = await this.verify(studyInstanceUid, {repair: true})
    const deadline = Date.now() + waitMs
    while (receipt?.state === 'repairing' && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 200))
      if (((await this.store.summary(studyInstanceUid))?.delivered.queued ?? 0) > 0) continue
      receipt = await this.verify(studyInstanceUid, {repair: false})
    }

    return receipt
  }

  private scheduleFlush(): void {
    if (this.closed) return
    if (this.pendingReceipts.length + this.pendingOutcomes.length >= FLUSH_MAX && this.unreachableSince === undefined) {
      clearTimeout(this.flushTimer)
      this.flushScheduled = false
      this.flush()
      return
    }

    if (this.flushScheduled) return
    this.flushScheduled = true
    this.flushTimer = setTimeout(() => this.flush(), this.unreachableSince === undefined ? FLUSH_MS : RETRY_MS)
  }

  private flush(): void {
    this.flushScheduled = false
    if (this.writing !== undefined) {
      this.writeAgain = true
      return
    }

    this.writing = this.writePending().finally(() => {
      this.writing = undefined
      if (this.writeAgain || (this.unreachableSince !== undefined && this.pendingReceipts.length + this.pendingOutcomes.length > 0)) {
        this.writeAgain = false
        this.scheduleFlush()
      }
    })
  }

  /** Records a write did not take go back to the front of the queue, in their order, for the next try. */
  private putBack(receipts: InstanceReceipt[], outcomes: Array<{outcome: InstanceOutcome; resolve: () => void}>): void {
    if (receipts.length > 0) this.pendingReceipts = [...receipts, ...this.pendingReceipts]
    if (outcomes.length > 0) this.pendingOutcomes = [...outcomes, ...this.pendingOutcomes]
  }

  /** One write of everything pending: receipts, then outcomes (an outcome updates its receipt's row). */
  private async writePending(): Promise<void> {
    const receipts = this.pendingReceipts
    const outcomes = this.pendingOutcomes
    if (receipts.length === 0 && outcomes.length === 0) return
    this.pendingReceipts = []
    this.pendingOutcomes = []
    if (this.store.transientFailures) return this.writeShared(receipts, outcomes)
    const outcomeList = outcomes.map((o) => o.outcome)
    let amended: string[] = []
    let receiptError: Error | undefined
    let outcomeError: Error | undefined
    try {
      // One commit for both (a commit costs about as much for one row as for fifty).
      amended = await this.store.record(receipts, outcomeList)
    } catch (error) {
      // An SQLite file shared by several workers whose write lock another one held too long:
      // nothing was written (the transaction takes the lock first); all of it is tried again.
      if (isSqliteBusy(error)) {
        this.putBack(receipts, outcomes)
        this.writeAgain = true
        this.busyWrites++
        if (this.busyWrites === 1 || this.busyWrites % 100 === 0) this.options.logger.warn('ledger-busy', {waiting: this.pendingReceipts.length + this.pendingOutcomes.length, times: this.busyWrites}, `study ledger ${this.store.file}: ${(error as Error).message}; another worker holds its write lock: the records wait and are written at the next try`)
        return
      }

      // Each part on its own, so one that fails does not keep the other from being recorded.
      if (receipts.length > 0) {
        try {
          amended = await this.store.received(receipts)
        } catch (error) {
          receiptError = error as Error
        }
      }

      if (outcomes.length > 0) {
        try {
          await this.store.outcomes(outcomeList)
        } catch (error) {
          outcomeError = error as Error
        }
      }
    }

    // A part that found the shared file's lock busy is tried again, not given up.
    if (receiptError !== undefined && isSqliteBusy(receiptError)) {
      this.putBack(receipts, [])
      this.writeAgain = true
    } else if (receipts.length > 0) {
      if (receiptError === undefined) {
        this.afterReceipts(receipts, amended)
      } else {
        const message = `study ledger ${this.store.file}: ${receiptError.message}`
        // They are safe in the spool and will be delivered; a restart records those it still holds.
        this.options.logger.error('ledger-failed', {unrecorded: receipts.length}, `${message}; ${receipts.map((r) => r.sopInstanceUid).join(' ')} acknowledged but not recorded; refusing new instances with A700`)
        this.failure = message
      }
    }

    if (outcomeError !== undefined && isSqliteBusy(outcomeError)) {
      this.putBack([], outcomes)
      this.writeAgain = true
    } else if (outcomes.length > 0) {
      if (outcomeError !== undefined) {
        this.options.logger.error('ledger-failed', {}, `study ledger ${this.store.file}: could not record ${outcomes.length} delivery outcomes: ${outcomeError.message}`)
      }

      // The spool lets these instances go once resolved: the outcome (and every receipt before it)
      // must be on disk first, so a power loss cannot leave an instance in neither.
      const synced = outcomeError === undefined ? this.store.syncLog() : Promise.resolve()
      void synced
        .catch((error: Error) => this.options.logger.error('ledger-failed', {}, `study ledger ${this.store.file}: could not sync its log: ${error.message}`))
        .finally(() => {
          for (const o of outcomes) o.resolve()
        })
    }
  }

  /**
   * A shared ledger: receipts and outcomes in one transaction. When it fails they go back to the
   * front of the queue (order kept) and are tried again; the outcomes' instances stay in the spool
   * until then, so a router that dies meanwhile delivers them again rather than lose their record.
   */
  private async writeShared(receipts: InstanceReceipt[], outcomes: Array<{outcome: InstanceOutcome; resolve: () => void}>): Promise<void> {
    try {
      const amended = await this.store.record(receipts, outcomes.map((o) => o.outcome))
      this.afterReceipts(receipts, amended)
      for (const o of outcomes) o.resolve()
      if (this.unreachableSince !== undefined) {
        this.options.logger.info('ledger-reachable', {after: `${Math.round((Date.now() - this.unreachableSince) / 1000)}s`, receipts: receipts.length, outcomes: outcomes.length}, `study ledger ${this.store.file} takes writes again: what waited is written`)
        this.unreachableSince = undefined
      }
    } catch (error) {
      this.putBack(receipts, outcomes)
      if (this.unreachableSince === undefined) {
        this.unreachableSince = Date.now()
        this.options.logger.error('ledger-unreachable', {waiting: this.pendingReceipts.length + this.pendingOutcomes.length}, `study ledger ${this.store.file}: ${(error as Error).message}; instances are still acknowledged and routed, their records wait in memory and are written when it answers`)
      }

      if (this.pendingReceipts.length > MAX_UNWRITTEN && this.failure === undefined) {
        this.failure = `study ledger ${this.store.file} has not taken writes for ${Math.round((Date.now() - this.unreachableSince) / 1000)} s and ${this.pendingReceipts.length} records wait`
        this.options.logger.error('ledger-failed', {waiting: this.pendingReceipts.length}, `${this.failure}; refusing new instances with A700`)
      }

      if (this.closed) {
        this.options.logger.error('ledger-failed', {unrecorded: this.pendingReceipts.length}, `study ledger ${this.store.file} did not answer before the router stopped; the spool still holds what was not delivered, and a restart records it`)
        for (const o of this.pendingOutcomes) o.resolve()
      }
    }
  }

  private afterReceipts(receipts: InstanceReceipt[], amended: string[]): void {
    const now = Date.now()
    for (const receipt of receipts) {
      this.receivingSince.set(receipt.studyInstanceUid, Math.max(now, receipt.receivedAt))
      this.count(receipt)
    }

    for (const study of amended) this.options.logger.info('study-amended', {study}, 'an instance arrived after the study was stable: it is receiving again')
    if (this.failure !== undefined) this.options.logger.info('ledger-writable', {}, 'the study ledger takes writes again: accepting instances')
    this.failure = undefined
  }

  private count(receipt: InstanceReceipt): void {
    let study = this.countTags.get(receipt.studyInstanceUid)
    if (study === undefined) {
      study = {uncounted: false, acquisitions: new Map()}
      this.countTags.set(receipt.studyInstanceUid, study)
    }

    if (receipt.imagesInAcquisition === undefined) {
      study.uncounted = true
      return
    }

    const key = `${receipt.seriesInstanceUid ?? ''}|${receipt.acquisitionNumber ?? ''}`
    let acquisition = study.acquisitions.get(key)
    if (acquisition === undefined) {
      acquisition = {expected: receipt.imagesInAcquisition, seen: new Set()}
      study.acquisitions.set(key, acquisition)
    }

    acquisition.seen.add(receipt.sopInstanceUid)
  }

  /** Whether the count tags say the study is whole: every instance counted, every acquisition complete. */
  private wholeByCount(studyInstanceUid: string): number | undefined {
    const study = this.countTags.get(studyInstanceUid)
    if (study === undefined || study.uncounted || study.acquisitions.size === 0) return undefined
    for (const acquisition of study.acquisitions.values()) if (acquisition.seen.size < acquisition.expected) return undefined
    return study.acquisitions.size
  }

  private async tick(): Promise<void> {
    if (this.ticking) return
    this.ticking = true
    try {
      await this.completion()
      this.receipts()
      await this.pruneOld()
    } finally {
      this.ticking = false
    }
  }

  private async completion(): Promise<void> {
    const now = Date.now()
    const quietSince = now - this.options.stableSeconds * 1000
    const countedQuietSince = now - Math.min(this.options.countedQuietMs ?? COUNTED_QUIET_MS, this.options.stableSeconds * 1000)
    const due = [...this.receivingSince].filter(([, last]) => last <= quietSince).map(([uid]) => uid)
    const counted = [...this.receivingSince].filter(([uid, last]) => last > quietSince && last <= countedQuietSince && this.wholeByCount(uid) !== undefined).map(([uid]) => uid)
    if (due.length === 0 && counted.length === 0) return
    const stable: StudySummary[] = []
    try {
      const log = (study: StudySummary, why: string) =>
        this.options.logger.info('study-stable', {study: study.studyInstanceUid, patient: study.patientId ?? undefined, instances: study.instances, backend: study.backend ?? undefined, amendments: study.amendments || undefined}, why)
      for (const study of await this.store.markStable(due, quietSince, now)) {
        log(study, `no new instance for ${this.options.stableSeconds} s`)
        stable.push(study)
      }

      for (const study of await this.store.markStable(counted, countedQuietSince, now)) {
        log(study, `every acquisition is whole by ImagesInAcquisition (${this.wholeByCount(study.studyInstanceUid)} acquisition(s)), quiet for ${Math.round((now - countedQuietSince) / 1000)} s`)
        stable.push(study)
      }

      for (const uid of [...due, ...counted]) {
        // An instance that arrived meanwhile keeps the study receiving, with its new time.
        if ((this.receivingSince.get(uid) ?? 0) > now) continue
        this.receivingSince.delete(uid)
        this.countTags.delete(uid)
      }
    } catch (error) {
      // Busy (another worker of a shared file writes): the studies stay receiving and are marked at a later tick.
      if (isSqliteBusy(error)) this.options.logger.debug('ledger-busy', {}, `study ledger ${this.store.file}: completion waits: ${(error as Error).message}`)
      else this.options.logger.error('ledger-failed', {}, `study ledger ${this.store.file}: ${(error as Error).message}`)
    }

    for (const study of stable) {
      try {
        this.emit('stable', study)
      } catch (error) {
        this.options.logger.error('study-stable-listener-failed', {study: study.studyInstanceUid}, (error as Error).message)
      }
    }
  }

  private receipts(): void {
    if (!(this.options.autoReceipts ?? true) || this.options.backends === undefined || this.checking) return
    this.checking = true
    void (async () => {
      let study: string | undefined
      try {
        ;[study] = await this.store.dueForReceipt(1)
      } catch (error) {
        // The database went away (closed, unreadable): the write path says so; receipts wait.
        this.options.logger.debug('receipt-skipped', {}, (error as Error).message)
      }

      if (study === undefined) return
      try {
        await this.verify(study, {repair: true})
      } catch (error) {
        const unreachable = error instanceof DdrError && error.code === 'BACKEND_UNREACHABLE'
        this.options.logger.warn('receipt-failed', {study}, `${(error as Error).message}${unreachable ? '; checked again later' : ''}`)
        // Not checked again at once: a backend that is down would be asked every tick.
        if (!unreachable) await this.store.setReceipt(study, {state: 'unverifiable', expected: 0, found: 0, missing: [], repaired: 0, checkedAt: new Date().toISOString(), detail: (error as Error).message})
      }
    })()
      .catch((error: Error) => this.options.logger.error('ledger-failed', {}, `study ledger ${this.store.file}: ${error.message}`))
      .finally(() => {
        this.checking = false
      })
  }

  private async pruneOld(): Promise<void> {
    const now = Date.now()
    if (now - this.lastPrune <= 3_600_000) return
    this.lastPrune = now
    try {
      const removed = await this.store.prune(now - this.options.keepDays * DAY_MS)
      if (removed > 0) this.options.logger.info('ledger-pruned', {studies: removed}, `studies older than ${this.options.keepDays} days left the ledger`)
    } catch (error) {
      // Another worker of a shared file holds its write lock: pruned at a later tick.
      if (isSqliteBusy(error)) {
        this.lastPrune = 0
        this.options.logger.debug('ledger-busy', {}, `study ledger ${this.store.file}: pruning waits: ${(error as Error).message}`)
        return
      }

      this.options.logger.error('ledger-failed', {}, `study ledger ${this.store.file}: pruning failed: ${(error as Error).message}`)
    }
  }
}
