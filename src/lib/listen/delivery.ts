import type {DdrConfig, RoutingRule} from '../config/schema.js'
import type {ReceivedInstance} from '../dicom/received-instance.js'
import type {StoreOutcome} from '../dimse/scp.js'
import type {DimseResponse} from '../dimse/scu.js'
import {Status, formatStatus, isStored, isTransientRefusal} from '../dimse/status.js'
import {isDdrError, isRequestInterruption} from '../errors.js'
import type {Logger} from '../output/logger.js'
import type {BackendState} from '../routing/backend-state.js'
import {DROP_STATUS, Placer} from '../routing/router.js'
import {MirrorQueue, type MirrorQueueOptions} from './mirrors.js'

export interface RouterOptions {
  policy: DdrConfig['routing']['policy']
  affinity: boolean
  /** File that remembers study → backend across restarts (undefined: memory only). */
  affinityFile?: string
  failThreshold: number
  /** How long the C-ECHO that follows a broken-off delivery may take (health.timeoutMs). */
  probeTimeoutMs?: number
  logger: Logger
  /** Routing rules (first match wins); backends with `mirror: true` get copies whatever the rules. */
  rules?: RoutingRule[]
  /** Where pending mirror copies are kept (see MirrorQueueOptions); undefined: in memory. */
  mirrorQueue?: Pick<MirrorQueueOptions, 'dir' | 'durable' | 'scratchDir'>
}

/**
 * Delivers instances where routing places them: one attempt at a time to one backend, classified
 * (stored, refused, busy, interrupted, unreachable), with the backend's load, health and counters
 * kept up to date and mirror copies queued; or, in pass-through mode, failing over until one
 * backend has stored it. The decisions themselves are routing's (Placer).
 */
export class Router {
  readonly placer: Placer
  readonly mirrors: MirrorQueue
  counters = {received: 0, routed: 0, failed: 0, failovers: 0, bytes: 0, dropped: 0, mirrored: 0, mirrorFailed: 0, mirrorPending: 0}

  constructor(readonly backends: BackendState[], private readonly options: RouterOptions) {
    this.placer = new Placer(backends, options)
    this.mirrors = new MirrorQueue(this.counters, {...options.mirrorQueue, logger: options.logger, failThreshold: options.failThreshold})
  }

  get affinity(): Placer['affinity'] {
    return this.placer.affinity
  }

  /** Resolves when no mirror copy is pending. */
  mirrorsIdle(): Promise<void> {
    return this.mirrors.idle()
  }

  /**
   * One delivery attempt to one backend, classified: stored (success or warning), refused (the
   * backend understood and said no: Cxxx, A9xx, other failures), busy (A7xx out of resources:
   * may work later or elsewhere), interrupted (the backend broke off during this instance),
   * unreachable (no connection or association at all). Updates the
   * backend's load, health and counters and the study's remembered home. Never rejects.
   */
  async attempt(instance: ReceivedInstance, backend: BackendState, why: string): Promise<AttemptResult> {
    const log = this.options.logger
    const decision = this.placer.rules.empty ? undefined : this.placer.rules.decide(instance)
    if (decision?.drop !== undefined) {
      // Reached only when the instance was acknowledged before routing (store-and-forward): it goes to
      // dead-letter with the rule's reason instead of vanishing. The backend is not contacted.
      this.counters.dropped++
      const reason = `dropped by rule ${decision.rule}: ${decision.drop}`
      log.warn('dropped', {sop: instance.sopInstanceUid, study: instance.studyInstanceUid, from: instance.callingAeTitle, rule: decision.rule}, decision.drop)
      return {kind: 'refused', response: {status: DROP_STATUS, errorComment: reason.slice(0, 64)}, reason}
    }

    const started = performance.now()
    backend.inFlight++
    let counted = true
    const done = () => {
      if (counted) backend.inFlight--
      counted = false
    }

    try {
      const response = await backend.backend.store(instance)
      const ms = performance.now() - started
      backend.recordLatency(ms)
      backend.markSuccess(1)
      backend.lastStoredAt = Date.now()
      if (isStored(response.status)) {
        backend.routed++
        backend.bytes += instance.datasetLength
        this.counters.routed++
        this.counters.bytes += instance.datasetLength
        this.placer.remember(instance.studyInstanceUid, backend.name)
        log.info('routed', {sop: instance.sopInstanceUid, study: instance.studyInstanceUid, from: instance.callingAeTitle, backend: backend.name, why, status: response.status === 0 ? undefined : formatStatus(response.status), ms: Math.round(ms * 10) / 10, bytes: instance.datasetLength})
        if (decision !== undefined && decision.mirrors.length > 0) {
          // The backend's work is done (its load no longer counts this instance); the copies are
          // queued before returning: the caller may delete the instance's file once it is stored.
          done()
          await this.mirrors.copy(instance, this.backends.filter((b) => b !== backend && decision.mirrors.includes(b.name)))
        }

        return {kind: 'stored', response}
      }

      backend.failed++
      const reason = `${backend.name} answered ${formatStatus(response.status)}${response.errorComment ? ` (${response.errorComment})` : ''}`
      if (isTransientRefusal(response.status)) return {kind: 'busy', response, reason}
      log.warn('refused', {sop: instance.sopInstanceUid, study: instance.studyInstanceUid, from: instance.callingAeTitle, backend: backend.name, status: formatStatus(response.status)}, reason)
      return {kind: 'refused', response, reason}
    } catch (error) {
      backend.failed++
      const message = `${backend.name}: ${(error as Error).message}`
      if (isDdrError(error, 'BACKEND_REFUSED')) return {kind: 'refused', response: {status: Status.sopClassNotSupported, errorComment: (error as Error).message}, reason: message}
      if (isDdrError(error, 'INVALID_DICOM')) return {kind: 'refused', response: {status: Status.cannotUnderstand, errorComment: (error as Error).message}, reason: message}
      if (isRequestInterruption(error)) {
        // The backend took the association and broke off during this instance (abort, closed
        // connection, stall, store timeout). A C-ECHO tells the two causes apart: a backend that
        // answers it is up and this instance is the problem (not marked down: other instances keep
        // flowing); one that does not answer went away, which is a failover like any outage.
        const alive = await backend.backend.echo(this.options.probeTimeoutMs ?? 3000).then(
          () => true,
          () => false,
        )
        if (alive) {
          log.warn('delivery-interrupted', {sop: instance.sopInstanceUid, study: instance.studyInstanceUid, backend: backend.name}, `${message}; the backend answers C-ECHO, so this instance is the problem`)
          return {kind: 'interrupted', reason: message, backendAlive: true}
        }

        if (backend.markFailure(message, this.options.failThreshold)) log.warn('backend-down', {backend: backend.name}, message)
        log.warn('delivery-failed', {sop: instance.sopInstanceUid, backend: backend.name}, `${message}; no C-ECHO answer afterwards`)
        return {kind: 'interrupted', reason: message, backendAlive: false}
      }

      if (backend.markFailure(message, this.options.failThreshold)) log.warn('backend-down', {backend: backend.name}, message)
      log.warn('delivery-failed', {sop: instance.sopInstanceUid, backend: backend.name}, message)
      return {kind: 'unreachable', reason: message}
    } finally {
      done()
    }
  }

  /**
   * Pass-through delivery: tries the placement order at once until a backend stores the instance;
   * resolves with the status the sender should get. Never rejects.
   */
  async deliver(instance: ReceivedInstance): Promise<StoreOutcome> {
    this.counters.received++
    const placement = this.placer.place(instance, true)
    this.placer.explain(instance, placement)
    if (placement.drop !== undefined) {
      // Refused, not "Success and discarded": the sender keeps the instance and knows why.
      this.counters.dropped++
      const reason = `dropped by rule ${placement.rule}: ${placement.drop}`
      this.options.logger.warn('dropped', {sop: instance.sopInstanceUid, study: instance.studyInstanceUid, from: instance.callingAeTitle, rule: placement.rule, status: formatStatus(DROP_STATUS)}, placement.drop)
      return {status: DROP_STATUS, errorComment: reason.slice(0, 64)}
    }

    const problems: string[] = []
    for (const [index, backend] of placement.order.entries()) {
      if (!backend.healthy && index > 0) continue
      const result = await this.attempt(instance, backend, index > 0 ? `failover after: ${problems.join('; ')}` : placement.why)
      if (result.kind === 'stored') {
        if (index > 0) this.counters.failovers++
        return result.response
      }

      if (result.kind === 'refused') {
        // The backend understood and refused this instance: another backend would refuse it too.
        this.counters.failed++
        return {status: result.response.status, errorComment: result.response.errorComment ?? result.reason}
      }

      if (result.kind === 'interrupted' && result.backendAlive) {
        // Not tried elsewhere: an instance that breaks a live backend off would hold each backend
        // in turn (up to storeTimeoutMs each) while the sender waits. The sender keeps it and is told.
        this.counters.failed++
        this.options.logger.error('failed', {sop: instance.sopInstanceUid, study: instance.studyInstanceUid, from: instance.callingAeTitle, status: formatStatus(Status.outOfResources)}, `not stored: ${result.reason}`)
        return {status: Status.outOfResources, errorComment: `not stored: ${result.reason}`.slice(0, 64)}
      }

      problems.push(result.reason)
    }

    this.counters.failed++
    const reason = placement.order.length === 0 ? 'no healthy backend' : problems.join('; ')
    this.options.logger.error('failed', {sop: instance.sopInstanceUid, study: instance.studyInstanceUid, from: instance.callingAeTitle, status: formatStatus(Status.outOfResources)}, `not stored anywhere: ${reason}`)
    return {status: Status.outOfResources, errorComment: `not stored: ${reason}`.slice(0, 64)}
  }
}

export type AttemptResult =
  | {kind: 'stored'; response: DimseResponse}
  | {kind: 'refused'; response: DimseResponse; reason: string}
  | {kind: 'busy'; response: DimseResponse; reason: string}
  /**
   * The backend broke off while this instance was under way (abort, closed connection, store
   * timeout); `backendAlive` when it answered a C-ECHO right after (then the instance is the problem).
   */
  | {kind: 'interrupted'; reason: string; backendAlive: boolean}
  | {kind: 'unreachable'; reason: string}
