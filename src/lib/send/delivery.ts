import {formatStatus, isStored, statusKind} from '../dimse/status.js'
import type {ReceivedInstance} from '../dicom/received-instance.js'
import {DdrError} from '../errors.js'
import type {Backend} from '../backends/backend.js'
import type {PreparedInstance} from './prepare.js'

/** What happened to one instance on its way to the receiver. */
export interface Delivery {
  instance: PreparedInstance
  /** The receiver stored it (success or warning). */
  stored: boolean
  /** DIMSE status (DIMSE and STOW-RS). */
  status?: number
  /** The receiver's comment, or Orthanc's answer for a refusal. */
  errorComment?: string
  /** Why it was not delivered, when ddr could not deliver it (network, association, bad file). */
  error?: DdrError
  /** A remark on a stored instance ("already stored", a warning status). */
  warning?: string
}

export interface DeliveryOptions {
  signal?: AbortSignal
  /** Called once per instance, as soon as its fate is known. */
  onDelivery?: (delivery: Delivery) => void
}

/** Every instance's fate, and whether the receiver could be reached at all. */
export interface DeliveryReport {
  deliveries: Delivery[]
  /** At least one association (or HTTP request) got through. */
  connected: boolean
  /** The last error that stopped a connection, when some instances could not be tried. */
  connectionError?: DdrError
}

/**
 * How an error thrown by a channel's store() reads for the send:
 * - `instance`: this file's own failure (a bad file, a syntax the receiver does not take);
 * - `interrupted`: the receiver was reached and broke off during this file (tried once more);
 * - `unreachable`: the receiver could not be asked (stops the send while nothing got through).
 */
export type ThrownKind = 'instance' | 'interrupted' | 'unreachable'

/**
 * One target as `ddr send` talks to it: a Backend of src/lib/backends (the router's own classes)
 * and how the send reads its answers. channels.ts makes one per kind of target.
 */
export interface SendChannel {
  backend: Backend
  /** store() calls worth having under way at once. */
  slots: number
  /** Read the next file while the current one is on the wire (DIMSE: the store is written before store() returns). */
  readAhead: boolean
  /** A check before the first file; an error it returns stops the send (a folder that cannot take files). */
  before?(): Promise<DdrError | undefined>
  /** One file as the backends take an instance: its meta header and where its dataset bytes are. */
  prepare(instance: PreparedInstance): Promise<ReceivedInstance>
  /** Stores one; the answer as a Delivery, or a stop (credentials refused: every other file would fail the same way). */
  store(instance: PreparedInstance, received: ReceivedInstance): Promise<Delivery | {stop: DdrError}>
  /** What a thrown error means, and the error as the send shows it (with its hint). */
  classify(error: DdrError): {kind: ThrownKind; error: DdrError}
  /** DIMSE: a worker that cannot get an association ends, leaving its file to the others. */
  unreachableEndsWorker: boolean
  /** Why files were not sent when no error says it ("no association with X"). */
  notSentReason: string
}

/** A queue of instances that workers take from; an instance that met a broken connection goes back once. */
export class WorkQueue {
  private readonly items: Array<{instance: PreparedInstance; attempts: number}>
  readonly deliveries: Delivery[] = []

  constructor(instances: PreparedInstance[], private readonly onDelivery?: (delivery: Delivery) => void) {
    this.items = instances.map((instance) => ({instance, attempts: 0}))
  }

  get size(): number {
    return this.items.length
  }

  take(): {instance: PreparedInstance; attempts: number} | undefined {
    return this.items.shift()
  }

  /** Puts an instance back at the head after a connection failure; false once it had its retry. */
  retry(work: {instance: PreparedInstance; attempts: number}): boolean {
    if (work.attempts >= 1) return false
    this.items.unshift({instance: work.instance, attempts: work.attempts + 1})
    return true
  }

  /** Returns an instance that was taken but not tried (the worker could not connect). */
  giveBack(work: {instance: PreparedInstance; attempts: number}): void {
    this.items.unshift(work)
  }

  record(delivery: Delivery): void {
    this.deliveries.push(delivery)
    this.onDelivery?.(delivery)
  }

  /** Fails everything still queued with one error (the receiver went away, or the run was interrupted). */
  failRemaining(error: DdrError): void {
    for (let work = this.take(); work !== undefined; work = this.take()) this.record({instance: work.instance, stored: false, error})
  }
}

/** An instance's fate from a DICOM status (C-STORE, or STOW-RS mapped to one): stored on success or warning. */
export function answeredDelivery(instance: PreparedInstance, response: {status: number; errorComment?: string}): Delivery {
  const stored = isStored(response.status)
  return {
    instance,
    stored,
    status: response.status,
    errorComment: response.errorComment,
    warning: stored && response.status !== 0 ? `stored with warning status ${formatStatus(response.status)}${response.errorComment ? ` (${response.errorComment})` : ''}` : undefined,
  }
}

/** "refused with status 0xA700 (refused)": how a non-success status reads in results. */
export function describeStatus(status: number): string {
  return `${formatStatus(status)} (${statusKind(status)})`
}

/** The error recorded for instances not tried because the run was interrupted. */
export function interruptedError(): DdrError {
  return new DdrError('ASSOCIATION_ABORTED', 'not sent: interrupted', {hint: 'run the same command again to send the rest (Orthanc keeps one copy of each instance)'})
}

/** Turns anything thrown into a DdrError (keeping DdrErrors as they are). */
export function asDdrError(error: unknown, code: DdrError['code'] = 'BACKEND_UNREACHABLE'): DdrError {
  return error instanceof DdrError ? error : new DdrError(code, (error as Error)?.message ?? String(error), {cause: error})
}

type Work = {instance: PreparedInstance; attempts: number}
type Loaded = {work: Work; received: Promise<{received: ReceivedInstance} | {error: unknown}>}

/**
 * Sends prepared instances through one channel: workers take them from one queue in input order,
 * `channel.slots` at a time, each file as it is (meta header and dataset bytes unchanged). A file
 * whose connection broke is tried once more; a receiver that cannot be reached before anything got
 * through stops the send. Never throws for a refusal or a network failure: each instance's fate is
 * in the report.
 */
export async function deliver(instances: PreparedInstance[], channel: SendChannel, options: DeliveryOptions): Promise<DeliveryReport> {
  const report: DeliveryReport = {deliveries: [], connected: false}
  const queue = new WorkQueue(instances, options.onDelivery)
  let stop = false
  const load = (work: Work | undefined): Loaded | undefined =>
    work === undefined ? undefined : {work, received: channel.prepare(work.instance).then((received) => ({received}), (error: unknown) => ({error}))}

  const worker = async (): Promise<void> => {
    let next: Loaded | undefined
    let work: Work | undefined
    // Files taken but not tried go back in their order: the one at hand, then the one read ahead.
    const giveBackAll = () => {
      if (next !== undefined) queue.giveBack(next.work)
      next = undefined
      if (work !== undefined) queue.giveBack(work)
    }

    try {
      for (;;) {
        if (stop || options.signal?.aborted) return
        const current = next ?? load(queue.take())
        next = undefined
        if (current === undefined) {
          // The queue ran dry: a receiver that serves one association at a time can now take another worker's.
          await channel.backend.releaseIdle?.()
          return
        }

        work = current.work
        const {instance} = work
        const loaded = await current.received
        if ('error' in loaded) {
          queue.record({instance, stored: false, error: asDdrError(loaded.error, 'INVALID_DICOM')})
          continue
        }

        try {
          const storing = channel.store(instance, loaded.received)
          // A DIMSE store is on the wire by now: the next file is read while the receiver works on this one.
          if (channel.readAhead) next = load(queue.take())
          const outcome = await storing
          if ('stop' in outcome) {
            stop = true
            report.connectionError = outcome.stop
            giveBackAll()
            return
          }

          report.connected = true
          queue.record(outcome)
        } catch (thrown) {
          const {kind, error} = channel.classify(asDdrError(thrown))
          if (kind === 'instance') {
            if (error.code !== 'INVALID_DICOM') report.connected = true
            queue.record({instance, stored: false, error})
          } else if (kind === 'interrupted') {
            report.connected = true
            if (!queue.retry(work)) queue.record({instance, stored: false, error})
          } else if (channel.unreachableEndsWorker) {
            // DIMSE: this worker got no association; the others go on with its file (a receiver
            // that serves one association at a time keeps all but one waiting).
            report.connectionError = error
            giveBackAll()
            return
          } else if (!report.connected) {
            // Nothing got through yet: the receiver is not there (or refuses us), stop here.
            stop = true
            report.connectionError ??= error
            giveBackAll()
            return
          } else if (!queue.retry(work)) {
            queue.record({instance, stored: false, error})
          }
        }
      }
    } finally {
      if (next !== undefined) queue.giveBack(next.work)
    }
  }

  try {
    const refusal = await channel.before?.()
    if (refusal === undefined) {
      if (channel.before !== undefined) report.connected = true
      await Promise.all(Array.from({length: Math.max(1, Math.min(channel.slots, instances.length))}, () => worker()))
    } else {
      report.connectionError = refusal
    }
  } finally {
    await channel.backend.close()
  }

  if (queue.size > 0) {
    const cause = report.connectionError
    queue.failRemaining(options.signal?.aborted ? interruptedError() : new DdrError(cause?.code ?? 'BACKEND_UNREACHABLE', `not sent: ${cause?.message ?? channel.notSentReason}`, {hint: cause?.hint, cause}))
  }

  report.deliveries.push(...queue.deliveries)
  return report
}
