import path from 'node:path'

import type {DdrConfig} from '../config/schema.js'
import type {Logger} from '../output/logger.js'
import {SqliteLedgerStore} from './sqlite-store.js'
import type {InstanceOutcome, InstanceReceipt, StudyCounts} from './types.js'

/** The ledger file a config names: `ledger.url` (sqlite:PATH), else spool.dir/ledger.db. */
export function ledgerFile(config: Pick<DdrConfig, 'ledger' | 'spool'>): string {
  const url = config.ledger.url
  return url === undefined ? path.resolve(config.spool.dir, 'ledger.db') : path.resolve(url.slice('sqlite:'.length))
}

/** Options for StudyLedger. */
export interface StudyLedgerOptions {
  stableSeconds: number
  keepDays: number
  logger: Logger
  /** How often the completion timer looks (default 1 s, at most stableSeconds / 4). */
  tickMs?: number
}

const DAY_MS = 86_400_000

/**
 * The router's record of studies: every acknowledged instance, batched into one transaction per
 * event-loop turn (the receive path waits for that commit before Success, so an acknowledged
 * instance is always in the ledger); what became of each; and each study's completion: receiving
 * while instances arrive, stable after stableSeconds without one, re-opened by a late instance (an
 * amendment, logged). Old studies are pruned after keepDays.
 */
export class StudyLedger {
  private pendingReceipts: Array<{receipt: InstanceReceipt; resolve: () => void; reject: (error: Error) => void}> = []
  private pendingOutcomes: Array<{outcome: InstanceOutcome; resolve: () => void}> = []
  private flushScheduled = false
  /** Studies receiving, with their last arrival (epoch ms). */
  private readonly receivingSince = new Map<string, number>()
  private readonly timer: NodeJS.Timeout
  private lastPrune = 0
  /** Set when a write failed: new instances are refused until a write works again. */
  private failure?: string

  constructor(readonly store: SqliteLedgerStore, private readonly options: StudyLedgerOptions) {
    for (const study of store.receiving()) this.receivingSince.set(study.studyInstanceUid, study.lastReceived)
    const tick = options.tickMs ?? Math.max(100, Math.min(1000, (options.stableSeconds * 1000) / 4))
    this.timer = setInterval(() => this.tick(), tick)
    this.timer.unref()
  }

  /** Opens (or creates) the ledger a config names. */
  static open(config: Pick<DdrConfig, 'ledger' | 'spool' | 'studies'>, logger: Logger): StudyLedger {
    return new StudyLedger(new SqliteLedgerStore(ledgerFile(config)), {stableSeconds: config.studies.stableSeconds, keepDays: config.studies.keepDays, logger})
  }

  /** Why new instances must be refused now (the last write failed), or undefined. */
  refusal(): string | undefined {
    return this.failure
  }

  /** Records an acknowledged instance; resolves once it is committed (with the others of this turn). */
  received(receipt: InstanceReceipt): Promise<void> {
    return new Promise((resolve, reject) => {
      this.pendingReceipts.push({receipt, resolve, reject})
      this.scheduleFlush()
    })
  }

  /** Instances read back from the spool after a restart: recorded where the ledger does not know them. */
  recovered(receipts: InstanceReceipt[]): void {
    if (receipts.length === 0) return
    this.store.received(receipts, true)
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

  counts(): StudyCounts {
    return this.store.counts()
  }

  /** Writes what is pending and stops the timer. */
  close(): void {
    clearInterval(this.timer)
    this.flush()
    this.store.close()
  }

  private scheduleFlush(): void {
    if (this.flushScheduled) return
    this.flushScheduled = true
    setImmediate(() => this.flush())
  }

  private flush(): void {
    this.flushScheduled = false
    const receipts = this.pendingReceipts
    const outcomes = this.pendingOutcomes
    this.pendingReceipts = []
    this.pendingOutcomes = []
    if (receipts.length > 0) {
      try {
        const amended = this.store.received(receipts.map((r) => r.receipt))
        const now = Date.now()
        for (const {receipt} of receipts) this.receivingSince.set(receipt.studyInstanceUid, Math.max(now, receipt.receivedAt))
        for (const study of amended) this.options.logger.info('study-amended', {study}, 'an instance arrived after the study was stable: it is receiving again')
        if (this.failure !== undefined) this.options.logger.info('ledger-writable', {}, 'the study ledger takes writes again: accepting instances')
        this.failure = undefined
        for (const r of receipts) r.resolve()
      } catch (error) {
        const message = `study ledger ${this.store.file}: ${(error as Error).message}`
        if (this.failure === undefined) this.options.logger.error('ledger-failed', {}, `${message}; refusing new instances with A700`)
        this.failure = message
        for (const r of receipts) r.reject(new Error(message))
      }
    }

    if (outcomes.length > 0) {
      try {
        this.store.outcomes(outcomes.map((o) => o.outcome))
      } catch (error) {
        this.options.logger.error('ledger-failed', {}, `study ledger ${this.store.file}: could not record ${outcomes.length} delivery outcomes: ${(error as Error).message}`)
      }

      for (const o of outcomes) o.resolve()
    }
  }

  private tick(): void {
    const now = Date.now()
    const quietSince = now - this.options.stableSeconds * 1000
    const due = [...this.receivingSince].filter(([, last]) => last <= quietSince).map(([uid]) => uid)
    if (due.length > 0) {
      try {
        for (const study of this.store.markStable(due, quietSince, now)) {
          this.options.logger.info('study-stable', {study: study.studyInstanceUid, patient: study.patientId ?? undefined, instances: study.instances, backend: study.backend ?? undefined, amendments: study.amendments || undefined}, `no new instance for ${this.options.stableSeconds} s`)
        }

        for (const uid of due) this.receivingSince.delete(uid)
      } catch (error) {
        this.options.logger.error('ledger-failed', {}, `study ledger ${this.store.file}: ${(error as Error).message}`)
      }
    }

    if (now - this.lastPrune > 3_600_000) {
      this.lastPrune = now
      try {
        const removed = this.store.prune(now - this.options.keepDays * DAY_MS)
        if (removed > 0) this.options.logger.info('ledger-pruned', {studies: removed}, `studies older than ${this.options.keepDays} days left the ledger`)
      } catch (error) {
        this.options.logger.error('ledger-failed', {}, `study ledger ${this.store.file}: pruning failed: ${(error as Error).message}`)
      }
    }
  }
}
