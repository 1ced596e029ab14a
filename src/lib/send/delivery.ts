import {formatStatus, isStored} from '../dimse/status.js'
import {DdrError} from '../errors.js'
import type {PreparedInstance} from './prepare.js'

/** What happened to one instance on its way to the receiver. */
export interface Delivery {
  instance: PreparedInstance
  /** The receiver stored it (success or warning). */
  stored: boolean
  /** DIMSE status (DIMSE only). */
  status?: number
  /** The receiver's comment, or Orthanc's answer for a refusal. */
  errorComment?: string
  /** Why it was not delivered, when ddr could not deliver it (network, association, bad file). */
  error?: DdrError
  /** A remark on a stored instance ("already stored", a warning status). */
  warning?: string
}

export interface DeliveryOptions {
  /** Associations or HTTP connections at once. */
  concurrency: number
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

/** The error recorded for instances not tried because the run was interrupted. */
export function interruptedError(): DdrError {
  return new DdrError('ASSOCIATION_ABORTED', 'not sent: interrupted', {hint: 'run the same command again to send the rest (Orthanc keeps one copy of each instance)'})
}

/** Turns anything thrown into a DdrError (keeping DdrErrors as they are). */
export function asDdrError(error: unknown, code: DdrError['code'] = 'BACKEND_UNREACHABLE'): DdrError {
  return error instanceof DdrError ? error : new DdrError(code, (error as Error)?.message ?? String(error), {cause: error})
}
