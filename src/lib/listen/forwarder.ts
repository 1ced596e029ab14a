import {storeSlots} from '../backends/backend.js'
import type {DdrConfig} from '../config/schema.js'
import type {DatasetSource, ReceivedInstance} from '../dicom/received-instance.js'
import {Status, formatStatus} from '../dimse/status.js'
import type {Logger} from '../output/logger.js'
import type {BackendState} from '../routing/backend-state.js'
import type {StudyClaims} from '../ledger/cluster.js'
import type {StudyLedger} from '../ledger/ledger.js'
import {backoffDelay} from './backoff.js'
import type {Router} from './delivery.js'
import type {Spool} from '../spool/spool.js'
import type {QueueEntry} from '../console/console.js'

interface Entry {
  instance: ReceivedInstance
  /** Out-of-resources answers so far (network failures do not count: they wait for the backend). */
  busyAnswers: number
  /** Attempts a backend broke off while this instance was under way (abort, closed connection, store timeout). */
  interruptions: number
  tries: number
  notBefore: number
  /** Backends that answered out-of-resources twice for this entry: tried last. */
  avoid: Set<string>
  history: string[]
}

/** Queue entries one pump looks at, at most. */
const MAX_SCAN = 1000
/** Dataset bytes the queue keeps in memory for sending; beyond it instances are sent from their spool file. */
const IN_MEMORY_BYTES = 16 * 1024 * 1024
/** Two out-of-resources answers from one backend move the entry on to the next backend. */
const BUSY_ANSWERS_BEFORE_FAILOVER = 2
/**
 * A backend that broke off this often while this instance was under way, and not for other work,
 * has told us enough: the instance goes to dead-letter instead of holding the backend again.
 */
export const INTERRUPTIONS_BEFORE_DEAD_LETTER = 3

/** Where a spooled instance's dataset bytes are on disk: its own file, or its journal record. */
function spooledDataset(instance: ReceivedInstance): DatasetSource | undefined {
  if (instance.journal !== undefined) {
    return {path: instance.journal.segment.path, offset: instance.journal.payloadOffset + instance.metaHeader.length, length: instance.datasetLength}
  }

  return instance.path === undefined ? undefined : {path: instance.path, offset: instance.metaHeader.length, length: instance.datasetLength}
}

/**
 * Drains the spool to the backends. Each entry goes where the router places it (study affinity,
 * health, load); a backend's out-of-resources answer is retried with exponential backoff and
 * jitter, then elsewhere; a transfer the backend broke off is retried and, after
 * INTERRUPTIONS_BEFORE_DEAD_LETTER of them, dead-lettered; charged attempts (answers and broken-off
 * transfers) never exceed spool.maxAttempts; a refusal (Cxxx, A9xx) goes to dead-letter at once; an
 * unreachable backend is marked down by the router and the entry waits, with backoff, for a healthy
 * one (that never dead-letters). See docs/reliability.md.
 */
export class Forwarder {
  /**
   * Entries to send, oldest first, from `head` on (a queue without O(n) shifts). Slots before
   * `head` are emptied as entries are taken: a taken entry (and its dataset, held in memory) must
   * not stay reachable from here until the array is next compacted.
   */
  private ready: Array<Entry | undefined> = []
  private head = 0
  /** Entries waiting for their retry time. */
  private delayed: Entry[] = []
  private readonly active = new Map<string, number>()
  private readonly bySop = new Map<string, Entry>()
  private readonly timer: NodeJS.Timeout
  private inFlight = 0
  /** Stored instances whose ledger record and spool release are still being written. */
  private releasing = 0
  /** Bytes of queued datasets held in memory (see IN_MEMORY_BYTES). */
  private memoryBytes = 0
  private stopping = false
  /** Studies whose home is being claimed in the shared ledger (their entries wait, keeping their place). */
  private readonly claiming = new Set<string>()
  private idleWaiters: Array<() => void> = []
  counters = {retries: 0, deadLetters: 0}

  constructor(
    private readonly router: Router,
    private readonly spool: Spool,
    private readonly settings: DdrConfig['spool'],
    private readonly logger: Logger,
    private readonly ledger?: StudyLedger,
    /** A shared ledger's study claims: a study this router does not know waits for its home to be claimed or followed. */
    private readonly claims?: StudyClaims,
  ) {
    this.timer = setInterval(() => this.pump(), 200)
    this.timer.unref()
  }

  get depth(): number {
    return this.ready.length - this.head + this.delayed.length + this.inFlight + this.releasing
  }

  private release(instance: ReceivedInstance, backend: string, ledger: StudyLedger): void {
    this.releasing++
    void ledger
      .delivered(instance, backend)
      .then(() => this.spool.remove(instance))
      .catch((error: Error) => this.logger.error('spool-error', {sop: instance.sopInstanceUid}, `${error.message}; the instance stays in the spool and is delivered again after a restart`))
      .finally(() => {
        this.releasing--
        if (this.depth === 0) for (const resolve of this.idleWaiters.splice(0)) resolve()
      })
  }

  /** What waits, oldest first (at most `limit`), for the console's queue page; `total` counts all. */
  waiting(limit = 500): {total: number; entries: QueueEntry[]} {
    const ready = new Set<Entry | undefined>(this.ready.slice(this.head))
    const delayed = new Set(this.delayed)
    const all = [...this.bySop.values()].sort((a, b) => a.instance.receivedAt - b.instance.receivedAt)
    return {
      total: all.length,
      entries: all.slice(0, limit).map((entry): QueueEntry => {
        const i = entry.instance
        return {
          sopInstanceUid: i.sopInstanceUid,
          studyInstanceUid: i.studyInstanceUid,
          patientId: i.patientId,
          callingAeTitle: i.callingAeTitle,
          receivedAt: i.receivedAt,
          bytes: i.datasetLength,
          state: delayed.has(entry) ? 'backoff' : ready.has(entry) ? 'ready' : 'sending',
          tries: entry.tries,
          notBefore: delayed.has(entry) ? entry.notBefore : undefined,
          lastProblem: entry.history.at(-1),
        }
      }),
    }
  }

  /** Whether an instance with this SOP Instance UID is already queued (an identical re-send). */
  has(sopInstanceUid: string): boolean {
    return this.bySop.has(sopInstanceUid)
  }

  /** Queues an acknowledged (durably spooled) instance; `recovered` ones were received before a restart. */
  enqueue(instance: ReceivedInstance, recovered = false): void {
    if (!recovered) this.router.counters.received++
    // Small instances are sent from memory while the queue holds little; beyond the budget (a
    // backend outage, a burst of large instances) only the spool files are kept, so memory does
    // not grow with the backlog.
    if (!('path' in instance.dataset)) {
      const onDisk = spooledDataset(instance)
      if (onDisk !== undefined && this.memoryBytes + instance.datasetLength > IN_MEMORY_BYTES) instance.dataset = onDisk
      else this.memoryBytes += instance.datasetLength
    }

    const entry: Entry = {instance, busyAnswers: 0, interruptions: 0, tries: 0, notBefore: 0, avoid: new Set(), history: []}
    this.spool.added(instance)
    this.bySop.set(instance.sopInstanceUid, entry)
    this.ready.push(entry)
    this.pump()
  }

  /** Resolves when nothing is queued or in flight (tests, graceful stop). */
  idle(): Promise<void> {
    if (this.depth === 0) return Promise.resolve()
    return new Promise((resolve) => this.idleWaiters.push(resolve))
  }

  /** Stops starting new deliveries and waits (up to graceMs) for those in flight. */
  async stop(graceMs: number): Promise<void> {
    this.stopping = true
    clearInterval(this.timer)
    const deadline = Date.now() + graceMs
    while ((this.inFlight > 0 || this.releasing > 0) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
  }

  private pump(): void {
    if (this.stopping) return
    // Free sending slots on healthy backends: with none (all down or all busy) the scan is skipped,
    // so a large backlog during an outage costs nothing.
    let free = 0
    for (const backend of this.router.backends) {
      if (backend.healthy) free += Math.max(0, storeSlots(backend.backend) - (this.active.get(backend.name) ?? 0))
    }

    const now = Date.now()
    if (this.delayed.length > 0) {
      const due = this.delayed.filter((entry) => entry.notBefore <= now)
      if (due.length > 0) {
        this.delayed = this.delayed.filter((entry) => entry.notBefore > now)
        this.ready.push(...due)
      }
    }

    // Entries whose backend is saturated are skipped (and keep their place); the scan is bounded
    // so one pump never walks a whole backlog.
    const skipped: Entry[] = []
    for (let scanned = 0; this.head < this.ready.length && free > 0 && scanned < MAX_SCAN; scanned++) {
      const entry = this.ready[this.head]!
      this.ready[this.head++] = undefined
      const target = this.target(entry)
      if (target === undefined) {
        skipped.push(entry)
        continue
      }

      free--
      void this.send(entry, target.backend, target.why)
    }

    this.head -= skipped.length
    for (const [offset, entry] of skipped.entries()) this.ready[this.head + offset] = entry
    if (this.head > 1024 && this.head * 2 > this.ready.length) {
      this.ready = this.ready.slice(this.head)
      this.head = 0
    }
  }

  /** The backend for an entry now, or undefined when it must wait (none healthy, or its backend is saturated). */
  private target(entry: Entry): {backend: BackendState; why: string} | undefined {
    if (this.awaitingClaim(entry) || this.awaitingHome(entry)) return undefined
    const placement = this.router.placer.place(entry.instance, true)
    if (placement.order.length === 0) return undefined
    const preferred = placement.order.filter((b) => !entry.avoid.has(b.name))
    const backend = (preferred.length > 0 ? preferred : placement.order)[0]
    // As many at once as the backend's association pool holds (or its batched requests take), so
    // no request waits inside the pool.
    if ((this.active.get(backend.name) ?? 0) >= storeSlots(backend.backend)) return undefined
    if (entry.tries === 0) this.router.placer.explain(entry.instance, placement)
    return {backend, why: entry.tries === 0 ? placement.why : `retry ${entry.tries} after: ${entry.history.at(-1)}`}
  }

  /**
   * Whether the entry's study needs its home from the shared ledger first: a study this router
   * does not know yet. The claim is made once per study (its study affinity caches the answer);
   * the pump runs again when it is settled.
   */
  private awaitingClaim(entry: Entry): boolean {
    const claims = this.claims
    const affinity = this.router.affinity
    const study = entry.instance.studyInstanceUid
    if (claims === undefined || affinity === undefined || !study || affinity.get(study) !== undefined) return false
    if (this.claiming.has(study)) return true
    const proposal = this.router.placer.claimProposal({...entry.instance, studyInstanceUid: study})
    if (proposal === undefined) return false
    this.claiming.add(study)
    void claims
      .home(study, proposal.preferred, proposal.rendezvous)
      .then((home) => affinity.set(study, home.backend))
      .finally(() => {
        this.claiming.delete(study)
        this.pump()
      })
    return true
  }

  /** With a shared ledger, a first try waits while its study's home is briefly down (routing's Placer.homeBrieflyDown says why). */
  private awaitingHome(entry: Entry): boolean {
    const study = entry.instance.studyInstanceUid
    return this.claims !== undefined && !!study && entry.tries === 0 && this.router.placer.homeBrieflyDown(study)
  }

  private async send(entry: Entry, backend: BackendState, why: string): Promise<void> {
    this.inFlight++
    this.active.set(backend.name, (this.active.get(backend.name) ?? 0) + 1)
    entry.tries++
    try {
      const result = await this.router.attempt(entry.instance, backend, why)
      if (result.kind === 'stored') {
        if (entry.history.length > 0) this.router.counters.failovers++
        if (this.ledger === undefined) {
          await this.spool.remove(entry.instance)
          this.forget(entry)
        } else {
          // The slot is free at once; the spool lets the instance go only after the ledger has
          // recorded where it went (a crash in between delivers it again instead of leaving the
          // ledger behind). Still counted in depth, so idle() means released too.
          this.forget(entry)
          this.release(entry.instance, backend.name, this.ledger)
        }
      } else if (result.kind === 'refused') {
        await this.toDeadLetter(entry, result.reason, result.response.status)
      } else if (result.kind === 'busy') {
        entry.busyAnswers++
        entry.history.push(result.reason)
        if (entry.history.filter((h) => h.startsWith(`${backend.name} `)).length >= BUSY_ANSWERS_BEFORE_FAILOVER) entry.avoid.add(backend.name)
        if (this.charged(entry) >= this.settings.maxAttempts) await this.toDeadLetter(entry, `out of resources ${entry.busyAnswers} times: ${entry.history.slice(-3).join('; ')}`, result.response.status)
        else this.retryLater(entry)
      } else if (result.kind === 'interrupted') {
        // Charged whether or not the backend answered a C-ECHO after: an instance that makes a
        // backend fall over would otherwise take it down again after every recovery.
        entry.interruptions++
        entry.history.push(`${result.reason}${result.backendAlive ? ' (C-ECHO still answered)' : ' (no C-ECHO answer after)'}`)
        if (entry.interruptions >= INTERRUPTIONS_BEFORE_DEAD_LETTER || this.charged(entry) >= this.settings.maxAttempts) {
          await this.toDeadLetter(entry, `backends broke off ${entry.interruptions} times while this instance was under way: ${entry.history.slice(-3).join('; ')}`, Status.processingFailure)
        } else {
          this.retryLater(entry)
        }
      } else {
        entry.history.push(result.reason)
        this.retryLater(entry)
      }
    } catch (error) {
      // Spool file operations failed (disk): keep the entry and try again later.
      entry.history.push(`spool: ${(error as Error).message}`)
      this.logger.error('spool-error', {sop: entry.instance.sopInstanceUid}, (error as Error).message)
      this.retryLater(entry)
    } finally {
      this.inFlight--
      this.active.set(backend.name, (this.active.get(backend.name) ?? 1) - 1)
      if (this.depth === 0) for (const resolve of this.idleWaiters.splice(0)) resolve()
      this.pump()
    }
  }

  /**
   * Attempts charged to the instance itself: answers it got and attempts broken off while it was
   * under way. Attempts that found no backend at all (connection refused, association rejected)
   * wait for the backend and are not charged, so a backend outage never dead-letters healthy instances.
   */
  private charged(entry: Entry): number {
    return entry.busyAnswers + entry.interruptions
  }

  /** The entry left the queue (stored or dead-lettered). */
  private forget(entry: Entry): void {
    this.bySop.delete(entry.instance.sopInstanceUid)
    if (!('path' in entry.instance.dataset)) this.memoryBytes -= entry.instance.datasetLength
  }

  private retryLater(entry: Entry): void {
    this.counters.retries++
    const delay = backoffDelay(entry.tries, this.settings.retryBaseMs, this.settings.retryMaxMs)
    entry.notBefore = Date.now() + delay
    this.delayed.push(entry)
    this.logger.debug('retry-scheduled', {sop: entry.instance.sopInstanceUid, tries: entry.tries, inMs: Math.round(delay)}, entry.history.at(-1))
  }

  private async toDeadLetter(entry: Entry, reason: string, status: number): Promise<void> {
    const instance = entry.instance
    await this.ledger?.outcome({sopInstanceUid: instance.sopInstanceUid, status: 'dead-letter', at: Date.now(), detail: reason})
    const file = await this.spool.deadLetter(instance, {
      reason,
      status: formatStatus(status),
      sopInstanceUid: instance.sopInstanceUid,
      sopClassUid: instance.sopClassUid,
      studyInstanceUid: instance.studyInstanceUid,
      patientId: instance.patientId,
      callingAeTitle: instance.callingAeTitle,
      tries: entry.tries,
      busyAnswers: entry.busyAnswers,
      interruptions: entry.interruptions,
      history: entry.history,
    })
    this.forget(entry)
    this.counters.deadLetters++
    this.router.counters.failed++
    this.logger.error('dead-letter', {sop: instance.sopInstanceUid, study: instance.studyInstanceUid, from: instance.callingAeTitle, status: formatStatus(status), file}, reason)
  }
}
