/**
 * The router as one query/retrieve SCP for the whole fleet: C-FIND fans out to the backends and
 * merges; C-MOVE and C-GET find each instance where it is and send it on. Wired into the DICOM
 * listener by listen/service.ts.
 */
import {storableTransferSyntaxes} from '../backends/capabilities.js'
import type {BackendConfig, DdrConfig} from '../config/schema.js'
import {Identifier} from '../dicom/identifier.js'
import {Tag} from '../dicom/tags.js'
import {type QueryOutcome, type QueryRequest, type QueryResponder, QueryModel, type SubOperations} from '../dimse/scp.js'
import type {ContextRequest} from '../dimse/scu.js'
import {Status, formatStatus} from '../dimse/status.js'
import type {Logger} from '../output/logger.js'
import {proposalOrder} from './cget-fetcher.js'
import {type RetrieveSink, MoveDestinationSink, deliverInstances} from './deliver.js'
import {type MissingAnswer, queryFleet} from './find.js'
import {type FetchedInstance, InstanceFetcher, type LocatedInstance, locateInstances, retrieveRequestOf} from './retrieve.js'
import type {StoredInstances} from './ledger-source.js'
import {findModelFor, querySources} from './sources.js'

export const QUERY_MODELS: readonly string[] = Object.values(QueryModel)

/**
 * At most one Pending C-MOVE/C-GET response per this many ms. They are optional (PS3.4 C.4.2.3.1,
 * C.4.3.3.1: the SCP "may" send them during the sub-operations) and each costs a write, a wake-up
 * of the requester and its handling: one per instance was a measurable part of a retrieval's CPU
 * (movescu 80 ms against 30 for 500 instances, and ddr's own share). The final response carries
 * the final counts.
 */
export const PROGRESS_INTERVAL_MS = 100

/** How many of a backend's likely transfer syntaxes the destination is offered per SOP class before any instance came. */
const SYNTAXES_EXPECTED = 4

/**
 * The contexts a retrieval's instances will likely need at a C-MOVE destination: each SOP class
 * learned of a backend (the backends fetched by C-GET), in the syntaxes that backend most often
 * stores. Empty when no class is known (the association then opens with the first instance).
 */
export function expectedContexts(classesByBackend: ReadonlyMap<string, Iterable<string>>, backends: readonly BackendConfig[]): ContextRequest[] {
  const expected = new Map<string, ContextRequest>()
  for (const [name, classes] of classesByBackend) {
    const backend = backends.find((b) => b.name === name)
    const syntaxes = backend === undefined ? [] : proposalOrder(storableTransferSyntaxes(backend)).slice(0, SYNTAXES_EXPECTED)
    for (const abstractSyntax of classes) for (const transferSyntax of syntaxes) expected.set(`${abstractSyntax}|${transferSyntax}`, {abstractSyntax, transferSyntax})
  }

  return [...expected.values()]
}

/** The SOP classes the locate learned of each backend's instances (their own, or their study's). */
export function sopClassesByBackend(instances: readonly LocatedInstance[]): Map<string, Set<string>> {
  const classes = new Map<string, Set<string>>()
  for (const instance of instances) {
    const known = instance.sopClassUid ? [instance.sopClassUid] : (instance.sopClassUids ?? [])
    if (known.length === 0) continue
    let set = classes.get(instance.backend)
    if (set === undefined) classes.set(instance.backend, (set = new Set()))
    for (const uid of known) set.add(uid)
  }

  return classes
}

/**
 * Paces progress reports: the first is sent at once, then at most one per `intervalMs` (the
 * latest counts; those in between are skipped, never delayed).
 */
export function pacedProgress(send: (counts: SubOperations) => void, intervalMs = PROGRESS_INTERVAL_MS, now: () => number = Date.now): (counts: SubOperations) => void {
  let last = Number.NEGATIVE_INFINITY
  return (counts) => {
    const at = now()
    if (at - last < intervalMs) return
    last = at
    send(counts)
  }
}

export interface QueryServiceOptions {
  config: DdrConfig
  logger: Logger
  /** Whether a backend is up now; a backend that is down is not asked and is named in the warning. */
  isHealthy?: (backend: string) => boolean
  /** The study ledger's record of what each backend stored: folder backends are answered from it. */
  stored?: StoredInstances
}

function peerOf(request: QueryRequest): string {
  return `${request.association.remoteAddress}:${request.association.remotePort}`
}

function describeMissing(missing: readonly MissingAnswer[]): string {
  return missing.map((m) => `${m.backend}: ${m.why}`).join('; ')
}

/** The handler the DICOM listener calls for C-FIND, C-MOVE and C-GET (never rejects). */
export function createQueryHandler(options: QueryServiceOptions): (request: QueryRequest, responder: QueryResponder) => Promise<QueryOutcome> {
  const {config, logger} = options
  const timeoutMs = config.retrieve.queryTimeoutMs
  const fetcher = new InstanceFetcher(config.backends, {
    timeoutMs: Math.max(timeoutMs, 30_000),
    callingAeTitle: config.listen.aeTitle,
    onFallback: (backend, instances, why) => logger.warn('retrieve-fallback', {backend, instances}, `fetched over REST instead: ${why}`),
  })

  const fleet = () => {
    const {sources, unqueryable} = querySources(config.backends, {callingAeTitle: config.listen.aeTitle, timeoutMs, stored: options.stored})
    const up = sources.filter((source) => options.isHealthy?.(source.name) ?? true)
    const down: MissingAnswer[] = sources.filter((source) => !up.includes(source)).map((source) => ({backend: source.name, why: 'down (health checks)'}))
    return {sources: up, skipped: [...down, ...unqueryable.map((u) => ({backend: u.backend, why: u.why}))]}
  }

  const find = async (request: QueryRequest, responder: QueryResponder, identifier: Identifier): Promise<QueryOutcome> => {
    const started = Date.now()
    const {sources, skipped} = fleet()
    const result = await queryFleet(identifier, sources, {
      model: findModelFor(request.sopClassUid),
      timeoutMs,
      signal: request.signal,
      skipped,
      onMatch: (match) => {
        const answer = match.identifier.clone()
        // Retrieve from the router, not from the backend that answered.
        if (answer.has(Tag.RetrieveAETitle)) answer.set(Tag.RetrieveAETitle, config.listen.aeTitle)
        responder.match(answer.encode(request.transferSyntaxUid))
      },
    })
    const fields = {id: request.association.id, from: request.association.callingAeTitle, peer: peerOf(request), level: result.level, matches: result.matches.length, backends: result.answered.length, ms: Date.now() - started}
    if (result.cancelled) {
      logger.info('query-cancelled', fields, 'the requester sent C-CANCEL')
      return {status: Status.cancel}
    }

    if (result.missing.length > 0) {
      const comment = `no answer from ${describeMissing(result.missing)}`
      logger.warn('query', {...fields, status: formatStatus(Status.subOperationsCompleteWithFailures)}, comment)
      return {status: Status.subOperationsCompleteWithFailures, errorComment: `partial: no answer from ${result.missing.map((m) => m.backend).join(', ')}`}
    }

    logger.info('query', fields)
    return {status: Status.success}
  }

  const retrieve = async (request: QueryRequest, responder: QueryResponder, identifier: Identifier): Promise<QueryOutcome> => {
    const started = Date.now()
    let sink: RetrieveSink
    let target: string
    if (request.kind === 'move') {
      const destination = config.retrieve.destinations.find((d) => d.aeTitle === request.moveDestination)
      if (destination === undefined) {
        logger.warn('retrieve-refused', {id: request.association.id, from: request.association.callingAeTitle, peer: peerOf(request), destination: request.moveDestination ?? ''}, `move destination "${request.moveDestination ?? ''}" is not in retrieve.destinations`)
        return {status: Status.moveDestinationUnknown, errorComment: `move destination unknown: ${request.moveDestination ?? ''}`}
      }

      target = `${destination.aeTitle}@${destination.host}:${destination.port}`
      sink = new MoveDestinationSink(destination, {
        callingAeTitle: config.listen.aeTitle,
        moveOriginatorAeTitle: request.association.callingAeTitle,
        moveOriginatorMessageId: request.messageId,
        timeoutMs: Math.max(timeoutMs, 30_000),
      })
    } else {
      target = `${request.association.callingAeTitle} (C-GET)`
      sink = {
        store: async (instance: LocatedInstance, fetched: FetchedInstance) => {
          if (!responder.canStore(fetched.sopClassUid, fetched.transferSyntaxUid)) {
            throw new Error(`the requester did not offer ${fetched.sopClassUid} in ${fetched.transferSyntaxUid} (the syntax ${instance.backend} stores it in) with the SCP role`)
          }

          return responder.store({sopClassUid: fetched.sopClassUid, sopInstanceUid: instance.sopInstanceUid, transferSyntaxUid: fetched.transferSyntaxUid, dataset: {buffer: fetched.dataset}})
        },
        close: async () => {},
      }
    }

    let wanted
    try {
      wanted = retrieveRequestOf(identifier)
    } catch (error) {
      await sink.close()
      return {status: Status.identifierDoesNotMatchSopClass, errorComment: (error as Error).message}
    }

    const {sources, skipped} = fleet()
    // The destination's association opens as soon as the SOP classes are known (while the
    // instances are located), else once they are located (while the first ones are fetched).
    const open = (classes: ReadonlyMap<string, Iterable<string>>) => {
      if (sink instanceof MoveDestinationSink) sink.open(expectedContexts(classes, config.backends))
    }

    const located = await locateInstances(wanted, sources, {model: QueryModel.studyRootFind, timeoutMs, signal: request.signal, sopClassFrom: fetcher.fetchesByCGet, onSopClasses: open}).catch(async (error: unknown) => {
      await sink.close().catch(() => {})
      throw error
    })
    if (located.instances.length > 0) open(sopClassesByBackend(located.instances))
    const missing = [...skipped, ...located.missing]
    const fields = {id: request.association.id, from: request.association.callingAeTitle, peer: peerOf(request), kind: request.kind, to: target, level: wanted.level, instances: located.instances.length}
    logger.info('retrieve-start', {...fields, backends: [...new Set(located.instances.map((i) => i.backend))].join(',')}, missing.length > 0 ? `not located on ${describeMissing(missing)}` : undefined)
    const progress = pacedProgress((counts) => responder.progress(counts))
    const result = await deliverInstances(located.instances, fetcher, sink, {
      signal: request.signal,
      onProgress: (counts: SubOperations, done) => {
        if (done?.why !== undefined) logger.warn('retrieve-failed', {...fields, sop: done.instance.sopInstanceUid, backend: done.instance.backend}, done.why)
        if (counts.remaining > 0) progress(counts)
      },
    })
    const failedUids = result.failures.map((f) => f.sopInstanceUid)
    const summary = {...fields, completed: result.counts.completed, failed: result.counts.failed, warning: result.counts.warning, bytes: result.bytes, ms: Date.now() - started}
    if (result.cancelled) {
      logger.info('retrieve-cancelled', summary, 'the requester sent C-CANCEL')
      return {status: Status.cancel, counts: result.counts, failedSopInstanceUids: failedUids}
    }

    let status: number = Status.success
    let comment: string | undefined
    if (result.counts.failed > 0 || result.counts.warning > 0) {
      status = result.counts.completed + result.counts.warning === 0 ? 0xa702 : Status.subOperationsCompleteWithFailures
      comment = result.failures[0]?.why
    } else if (missing.length > 0) {
      // Everything found was sent, but a backend that did not answer may hold more.
      status = Status.subOperationsCompleteWithFailures
      comment = `not located on ${missing.map((m) => m.backend).join(', ')}`
    }

    const final = {status, counts: {...result.counts, remaining: 0}, failedSopInstanceUids: failedUids, errorComment: comment}
    if (status === Status.success) logger.info('retrieve', summary)
    else logger.warn('retrieve', {...summary, status: formatStatus(status)}, comment)
    return final
  }

  return async (request, responder) => {
    let identifier: Identifier
    try {
      identifier = Identifier.decode(request.identifier, request.transferSyntaxUid, `the ${request.kind.toUpperCase()} identifier from ${request.association.callingAeTitle}`)
    } catch (error) {
      logger.warn('query-refused', {id: request.association.id, from: request.association.callingAeTitle, peer: peerOf(request)}, (error as Error).message)
      return {status: Status.identifierDoesNotMatchSopClass, errorComment: (error as Error).message}
    }

    try {
      if (request.kind === 'find') {
        if (identifier.level() === undefined) return {status: Status.identifierDoesNotMatchSopClass, errorComment: 'no valid Query/Retrieve Level (0008,0052)'}
        return await find(request, responder, identifier)
      }

      return await retrieve(request, responder, identifier)
    } catch (error) {
      logger.error('query-failed', {id: request.association.id, from: request.association.callingAeTitle, kind: request.kind}, (error as Error).message)
      return {status: Status.unableToProcess, errorComment: (error as Error).message}
    }
  }
}
