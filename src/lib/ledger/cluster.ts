/*
 * Several routers sharing one PostgreSQL ledger (docs/cluster.md): each study's home is claimed
 * once, by whichever router sees the study first, and every router follows the claim; each router
 * says every few seconds that it is alive, with its counters.
 */
import type {Logger} from '../output/logger.js'
import type {ClaimStore, RouterHeartbeat, RouterRecord, RouterRegistry} from './store.js'

/** Where a study goes, and whether the shared ledger said so. */
export interface StudyHome {
  backend: string
  /** False when the ledger did not answer in time: this router's own choice, to be reconciled. */
  confirmed: boolean
  /** The router whose claim holds (confirmed only). */
  router?: string
}

export interface StudyClaimsOptions {
  /** This router's name. */
  router: string
  /** How long to wait for the ledger before routing on our own choice. */
  timeoutMs: number
  logger: Logger
  /** How often unconfirmed choices are claimed again (default 2 s). */
  reconcileMs?: number
  /**
   * A claim reconciled after an outage names another backend than the one this router chose:
   * the study's later instances should follow it (the caller updates its study affinity).
   */
  onConflict?: (studyInstanceUid: string, backend: string) => void
}

/**
 * A study's home across routers. The caller asks once per study it does not know (its study
 * affinity is the cache: the database is never asked per instance). The first router's claim
 * wins; the others follow it. When the database does not answer within timeoutMs, the router's
 * own choice (rendezvous hashing, the same on every router that sees the same healthy backends)
 * is used, logged as unconfirmed, and claimed again until the database answers.
 */
export class StudyClaims {
  private readonly unconfirmed = new Map<string, string>()
  private readonly timer: NodeJS.Timeout
  private reconciling = false
  counters = {claimed: 0, followed: 0, unconfirmed: 0, conflicts: 0}

  constructor(private readonly store: ClaimStore, private readonly options: StudyClaimsOptions) {
    this.timer = setInterval(() => void this.reconcile(), options.reconcileMs ?? 2000)
    this.timer.unref()
  }

  /** Studies routed on this router's own choice, waiting for the ledger to confirm. */
  get pending(): number {
    return this.unconfirmed.size
  }

  /**
   * The study's home: the claim that holds (`choice` when this router's claim is the first), or,
   * when the ledger is silent, `unconfirmedChoice`, unconfirmed. That one should be the rendezvous
   * choice, the same on every router that sees the same healthy backends, whatever their loads:
   * then routers cut off from the ledger together still agree. Never rejects.
   */
  async home(studyInstanceUid: string, choice: string, unconfirmedChoice = choice): Promise<StudyHome> {
    const log = this.options.logger
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${this.options.timeoutMs} ms`)), this.options.timeoutMs)
    })
    try {
      const claim = await Promise.race([this.store.claim(studyInstanceUid, choice, this.options.router), timeout])
      if (claim.won) {
        this.counters.claimed++
        log.debug('study-claimed', {study: studyInstanceUid, backend: claim.backend})
      } else {
        this.counters.followed++
        if (claim.backend !== choice) log.info('study-claim-followed', {study: studyInstanceUid, backend: claim.backend, by: claim.router}, `router ${claim.router} claimed the study first: its instances go to ${claim.backend} (this router would have chosen ${choice})`)
      }

      return {backend: claim.backend, confirmed: true, router: claim.router}
    } catch (error) {
      this.counters.unconfirmed++
      this.unconfirmed.set(studyInstanceUid, unconfirmedChoice)
      log.warn('study-claim-unconfirmed', {study: studyInstanceUid, backend: unconfirmedChoice}, `the shared ledger did not confirm the study's home (${(error as Error).message}): routing it to ${unconfirmedChoice}, the rendezvous choice every router makes alike, and claiming it again when the ledger answers`)
      return {backend: unconfirmedChoice, confirmed: false}
    } finally {
      clearTimeout(timer)
    }
  }

  /** Claims again what was routed unconfirmed; a claim another router made meanwhile wins, and is followed from now on. */
  async reconcile(): Promise<void> {
    if (this.reconciling || this.unconfirmed.size === 0) return
    this.reconciling = true
    try {
      for (const [study, backend] of [...this.unconfirmed].slice(0, 500)) {
        const claim = await this.store.claim(study, backend, this.options.router)
        this.unconfirmed.delete(study)
        if (claim.backend === backend) {
          this.options.logger.info('study-claim-reconciled', {study, backend, by: claim.router}, claim.won ? 'the ledger answers again: this router\'s choice is now the claim' : `router ${claim.router} claimed the same backend`)
        } else {
          this.counters.conflicts++
          this.options.logger.warn('study-claim-conflict', {study, backend: claim.backend, by: claim.router, ours: backend}, `while the ledger did not answer, this router sent instances of the study to ${backend}, but router ${claim.router} claimed ${claim.backend}: later instances go there; the study is split (ddr study shows where each instance is)`)
          this.options.onConflict?.(study, claim.backend)
        }
      }
    } catch {
      // Still unreachable: tried again at the next tick.
    } finally {
      this.reconciling = false
    }
  }

  close(): void {
    clearInterval(this.timer)
  }
}

/**
 * A router of a shared ledger not heard from for this long (three heartbeats at the default 5 s) is
 * taken for gone: `ddr balance-status` calls it silent, and its running processing runs are taken over.
 */
export const SILENT_ROUTER_SECONDS = 15

export interface RouterPresenceOptions {
  logger: Logger
  /** How often to say we are alive (default 5 s). */
  intervalMs?: number
}

/**
 * This router's line in the shared ledger's router table, written every intervalMs with what
 * `heartbeat()` says, and the table as last read (for /status, balance-status and the console).
 */
export class RouterPresence {
  private readonly timer: NodeJS.Timeout
  private last: RouterRecord[] = []
  private failing = false
  private beating?: Promise<void>

  constructor(private readonly registry: RouterRegistry, private readonly heartbeat: () => RouterHeartbeat, private readonly options: RouterPresenceOptions) {
    this.timer = setInterval(() => void this.beat(), options.intervalMs ?? 5000)
    this.timer.unref()
    void this.beat()
  }

  /** The routers of the shared ledger at the last heartbeat, with how long ago each was heard from. */
  routers(): RouterRecord[] {
    return this.last
  }

  /** Writes the heartbeat and reads the table (a beat under way is waited for, not doubled). */
  beat(): Promise<void> {
    this.beating ??= this.write().finally(() => (this.beating = undefined))
    return this.beating
  }

  private async write(): Promise<void> {
    try {
      await this.registry.heartbeat(this.heartbeat())
      this.last = await this.registry.routers()
      if (this.failing) this.options.logger.info('cluster-heartbeat', {}, 'the shared ledger takes heartbeats again')
      this.failing = false
    } catch (error) {
      if (!this.failing) this.options.logger.warn('cluster-heartbeat-failed', {}, `cannot write this router's heartbeat: ${(error as Error).message}`)
      this.failing = true
    }
  }

  close(): void {
    clearInterval(this.timer)
  }
}
