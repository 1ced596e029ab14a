import {readFile, rm} from 'node:fs/promises'
import {hostname} from 'node:os'
import path from 'node:path'

import type {Backend} from '../backends/backend.js'
import {createBackend} from '../backends/factory.js'
import type {DdrConfig} from '../config/schema.js'
import {DdrError} from '../errors.js'
import {DimseServer, type StoreRequest, type StoreSink} from '../dimse/scp.js'
import {listenerSecurityOptions} from '../security/listener.js'
import {configPermissionWarning} from '../security/secrets.js'
import {statusServerTls} from '../security/status-tls.js'
import {redactUrl} from '../output/redact.js'
import {Status, formatStatus} from '../dimse/status.js'
import {transferSyntaxInfo} from '../dicom/uids.js'
import {readMetaHeader} from '../dicom/part10.js'
import {readTopLevelElements} from '../dicom/dataset-reader.js'
import {Tag} from '../dicom/tags.js'
import {listenerTransferSyntaxes} from '../backends/capabilities.js'
import type {Logger} from '../output/logger.js'
import {Forwarder} from './forwarder.js'
import {datasyncFile, ensureDir, syncDir} from '../fs/durable.js'
import {DiscardSink, InstanceSink, newInstanceId} from './intake.js'
import {Spool} from '../spool/spool.js'
import {type RouterStatus, type StatusRoutes, StatusServer} from '../status/server.js'
import {type RouterAnswer, callRouter, isRouterNotRunning, routerStatusUrl} from '../status/client.js'
import {BackendState} from '../routing/backend-state.js'
import {HealthMonitor} from '../routing/health.js'
import {DROP_STATUS} from '../routing/router.js'
import {type ReceivedInstance, readPart10Instance} from '../dicom/received-instance.js'
import {RouterPresence, StudyClaims} from '../ledger/cluster.js'
import {StudyLedger, routerName} from '../ledger/ledger.js'
import {extractRetained} from '../ledger/retention.js'
import {SqliteLedgerStore} from '../ledger/sqlite-store.js'
import type {InstanceReceipt} from '../ledger/types.js'
import {QUERY_MODELS, createQueryHandler} from '../qr/service.js'
import {ProcessingService} from '../processing/service.js'
import {Router} from './delivery.js'
import {checkConsoleExposure} from '../console/console.js'
import {ConsoleGuard, isRefusal} from '../console/guard.js'
import {routerConsole} from './console-wiring.js'
import {SpoolAdoption, workerFolders} from './adopt.js'
import {SpoolLock} from '../spool/lock.js'

export interface RouterServiceOptions {
  logger: Logger
  /** Instances up to this size are held in memory while being forwarded; larger ones go to disk. */
  memoryLimitBytes?: number
  /** Skip the status HTTP server (tests that do not need it). */
  statusServer?: boolean
  version?: string
  /**
   * Spool folders no router owns, whose queues this router takes over (locked while it runs).
   * Default: the worker folders (spool.dir/worker-<i>) a run with listen.workers > 1 left.
   */
  adopt?: string[]
  /** The status server binds only for this process (a worker's private port; cluster would share it). */
  exclusiveStatusPort?: boolean
  /** The SQLite ledger is written by several workers: study claims and heartbeats on (listen/workers.ts). */
  sharedLedger?: boolean
}

export interface RouterService {
  port: number
  statusPort?: number
  router: Router
  backends: BackendState[]
  /** The spool's drain, when store-and-forward is on. */
  forwarder?: Forwarder
  status(): RouterStatus
  /** The study ledger (store-and-forward with studies.enabled). */
  ledger?: StudyLedger
  /** Processing modules on stable studies (with the ledger and processing.modules). */
  processing?: ProcessingService
  /**
   * One Part 10 file through the same intake as a C-STORE (checks, rules, spool, ledger), for
   * instances that do not come over DICOM: HTTP uploads, processing results. Resolves with the
   * status a DICOM sender would have got; never rejects.
   */
  ingest(file: Buffer, from: IngestSource): Promise<IngestResult>
  /** Stops accepting, lets in-flight instances finish, closes associations. */
  stop(graceMs?: number): Promise<void>
  /** Whether the router can take traffic now (GET /healthz): not draining, the spool and ledger accept. */
  health(): {ok: boolean; reasons: string[]}
  /**
   * Rolling upgrades: no new associations (/healthz says draining), open ones go on until their
   * senders end them, then the queue drains; resolves when both are done or `timeoutMs` passed
   * (what is still queued stays safe in the spool for the next start). Call stop() after it.
   */
  drain(timeoutMs?: number): Promise<{associationsLeft: number; queued: number}>
  /** Resolves when someone asks the router to drain (POST /drain on the status port). */
  drainRequested: Promise<void>
}

/** An epoch-ms time as ISO text, or null. */
const isoOrNull = (ms: number | undefined) => (ms === undefined ? null : new Date(ms).toISOString())

/** Who hands an instance to ingest(): shown in logs and the ledger as the sender. */
export interface IngestSource {
  /** Recorded as the calling AE title (e.g. "HTTP-UPLOAD", a module's name). */
  callingAeTitle: string
  remoteAddress?: string
  /** Names the file in messages (its name in an upload, a path). */
  source: string
  /** Made by a processing module from a study (its SR): re-opens a stable study without counting as an amendment. */
  derived?: boolean
}

export interface IngestResult {
  sopInstanceUid?: string
  /** `stored`: safe in the spool (or delivered, in pass-through); `refused`: the status says why; `invalid`: not a DICOM file. */
  outcome: 'stored' | 'refused' | 'invalid'
  status?: number
  reason?: string
}

/** Bytes handed to the intake at once, as a DIMSE fragment would be. */
const INGEST_CHUNK = 256 * 1024

/** What the ledger records of an acknowledged instance (`derived`: a processing module's output). */
function receiptOf(instance: ReceivedInstance, remoteAddress?: string, derived = false): InstanceReceipt {
  return {
    sopInstanceUid: instance.sopInstanceUid,
    sopClassUid: instance.sopClassUid,
    studyInstanceUid: instance.studyInstanceUid!,
    seriesInstanceUid: instance.seriesInstanceUid,
    patientId: instance.patientId,
    accessionNumber: instance.accessionNumber,
    modality: instance.modality,
    studyDate: instance.studyDate,
    acquisitionNumber: instance.acquisitionNumber,
    imagesInAcquisition: instance.imagesInAcquisition,
    callingAeTitle: instance.callingAeTitle,
    remoteAddress,
    bytes: instance.datasetLength,
    receivedAt: instance.receivedAt,
    ...(derived ? {derived} : {}),
  }
}

function peerOf(request: StoreRequest): string {
  // Port 0: not a network peer (an instance handed to ingest()).
  return request.association.remotePort === 0 ? request.association.remoteAddress : `${request.association.remoteAddress}:${request.association.remotePort}`
}

function makeBackend(config: DdrConfig['backends'][number], callingAeTitle: string): Backend {
  return createBackend(config, {callingAeTitle})
}

/**
 * Starts the router: backends and their health checks, the DICOM listener, the status server.
 * The spool folder is locked for this process first (two routers never share one), and folders
 * left by another number of workers are taken over (listen/adopt.ts).
 */
export async function startRouterService(config: DdrConfig, options: RouterServiceOptions): Promise<RouterService> {
  // A configuration problem is named before the spool folder's lock (which a running router may
  // hold): an exposed console, or a bad status.tls file (the field and the file named).
  if (options.statusServer !== false) checkConsoleExposure(config)
  const statusTls = options.statusServer === false ? undefined : statusServerTls(config.status)

  const spoolDir = path.resolve(config.spool.dir)
  const lock = SpoolLock.acquire(spoolDir)
  if (lock.takenOverFrom !== undefined) options.logger.info('spool-lock-taken-over', {folder: spoolDir, from: lock.takenOverFrom}, `process ${lock.takenOverFrom}, which held the spool folder, is gone`)
  let adoption: SpoolAdoption | undefined
  let service: RouterService
  try {
    const adopt = options.adopt ?? (await workerFolders(spoolDir)).map((folder) => folder.dir)
    if (adopt.length > 0) {
      adoption = new SpoolAdoption(adopt, (file, from) => service.ingest(file, from), config, options.logger)
      adoption.lock()
    }

    service = await startLockedRouterService(config, options, statusTls)
  } catch (error) {
    await adoption?.close()
    lock.release()
    throw error
  }

  void adoption?.start()
  const stop = service.stop.bind(service)
  service.stop = async (graceMs) => {
    try {
      await adoption?.close()
      await stop(graceMs)
    } finally {
      lock.release()
    }
  }

  return service
}

async function startLockedRouterService(config: DdrConfig, options: RouterServiceOptions, statusTls: ReturnType<typeof statusServerTls>): Promise<RouterService> {
  const {logger} = options
  const startedAt = new Date()
  const spoolDir = path.resolve(config.spool.dir)
  // Pass-through instances too large for memory wait here; none survives a restart (never acknowledged).
  const incomingDir = path.join(spoolDir, 'incoming')
  await rm(incomingDir, {recursive: true, force: true})
  await ensureDir(incomingDir)

  const backends = config.backends.map((b) => new BackendState(makeBackend(b, config.listen.aeTitle)))
  const router = new Router(backends, {
    policy: config.routing.policy,
    affinity: config.routing.affinity,
    affinityFile: path.join(spoolDir, 'affinity.jsonl'),
    failThreshold: config.health.failThreshold,
    probeTimeoutMs: config.health.timeoutMs,
    logger,
    rules: config.rules,
    // Store-and-forward: a mirror copy is on disk before the spool drops its instance, so it
    // survives a restart. Pass-through: copies wait in memory (or as links in incoming/), and
    // only those a store-and-forward run left are taken up.
    mirrorQueue: {dir: path.join(spoolDir, 'mirror'), durable: config.spool.enabled, scratchDir: path.join(incomingDir, 'mirror')},
  })
  await router.mirrors.recover(backends)
  const health = new HealthMonitor(backends, config.health, logger)
  await health.start()
  for (const b of backends) {
    const c = b.backend.config
    const dimse = c.type === undefined || c.type === 'orthanc' || c.type === 'dimse'
    logger.info('backend', {backend: b.name, type: c.type ?? 'orthanc', address: dimse ? `${c.aeTitle}@${c.host}:${c.port}` : undefined, url: c.url === undefined ? undefined : redactUrl(c.url), path: c.path, transport: dimse ? c.transport : undefined, weight: b.weight, mirror: c.mirror, health: b.health}, b.healthy ? undefined : b.healthReason)
    if (c.https?.rejectUnauthorized === false && c.url !== undefined) {
      logger.warn('https-unverified', {backend: b.name, url: redactUrl(c.url)}, 'https.rejectUnauthorized is false: the server certificate is not checked, so anyone on the path can read and alter what goes there (give https.ca instead)')
    }
  }

  let passThroughInFlight = 0
  let spool: Spool | undefined
  let forwarder: Forwarder | undefined
  let ledger: StudyLedger | undefined
  let claims: StudyClaims | undefined
  if (config.spool.enabled) {
    spool = new Spool(spoolDir, config.spool)
    const recovered = await spool.open()
    // The ledger follows the spool: what the spool still holds after a crash is recorded again.
    if (config.studies.enabled) {
      ledger = await StudyLedger.open(config, logger, {shared: options.sharedLedger})
      await ledger.recovered(recovered.pending.filter((i) => i.studyInstanceUid).map((i) => receiptOf(i)))
    }

    // Several routers on one shared ledger: a new study's home is claimed there (docs/cluster.md).
    const claimStore = ledger?.store.claims
    if (claimStore !== undefined && config.routing.affinity) {
      claims = new StudyClaims(claimStore, {router: routerName(config), timeoutMs: config.ledger.claimTimeoutMs, logger, onConflict: (study, backend) => router.affinity?.set(study, backend)})
    }

    forwarder = new Forwarder(router, spool, config.spool, logger, ledger, claims)
    for (const instance of recovered.pending) forwarder.enqueue(instance, true)
    const queue = forwarder
    const queueDir = spool.queueDir
    // A repair: the kept copy becomes a spool file of its own again and goes through the forwarder
    // like any instance (durable, retried, bytes unchanged, to the study's backend).
    ledger?.setResender(async (kept) => {
      const id = newInstanceId()
      const target = path.join(queueDir, `${id}.dcm`)
      await extractRetained(kept, target)
      await datasyncFile(target)
      await syncDir(queueDir)
      queue.enqueue(await readPart10Instance(target, id), true)
    })
    if (recovered.pending.length > 0 || recovered.discardedPartial > 0 || recovered.unreadable.length > 0) {
      logger.info('spool-recovered', {queued: recovered.pending.length, discardedPartial: recovered.discardedPartial, unreadable: recovered.unreadable.length}, recovered.unreadable.join('; ') || undefined)
    }
  }

  let refusing: string | undefined
  // `derived`: an instance a processing module made from a study (handed to ingest()).
  const beginStore = (request: StoreRequest, derived = false): StoreSink => {
    const log = {sop: request.sopInstanceUid, from: request.association.callingAeTitle}
    if (spool === undefined || forwarder === undefined) {
      return new InstanceSink(request, {
        dir: incomingDir,
        memoryLimitBytes: options.memoryLimitBytes ?? 1024 * 1024,
        durable: false,
        deliver: async (instance) => {
          passThroughInFlight++
          try {
            return await router.deliver(instance)
          } finally {
            passThroughInFlight--
          }
        },
        onReceiveError: (_req, error) => logger.error('receive-failed', log, error.message),
        onRefused: (_req, outcome, why) => logger.warn('instance-refused', {...log, peer: peerOf(request), status: formatStatus(outcome.status)}, why),
      })
    }

    const refusal = spool.refusal()
    if (refusal !== refusing) {
      if (refusal === undefined) logger.info('spool-accepting', {}, 'below the high-water mark again: accepting instances')
      else logger.warn('spool-full', {}, `refusing new instances with A700: ${refusal}`)
      refusing = refusal
    }

    if (refusal !== undefined) {
      logger.warn('refused-incoming', {...log, status: '0xA700'}, refusal)
      return new DiscardSink({status: Status.outOfResources, errorComment: 'router spool full, try again later'})
    }

    const ledgerRefusal = ledger?.refusal()
    if (ledgerRefusal !== undefined) {
      logger.warn('refused-incoming', {...log, status: '0xA700'}, ledgerRefusal)
      return new DiscardSink({status: Status.outOfResources, errorComment: 'router cannot record studies, try again later'})
    }

    if (forwarder.has(request.sopInstanceUid)) {
      logger.info('duplicate', log, 'already queued: acknowledged without queueing it twice')
      return new DiscardSink({status: Status.success})
    }

    const queue = forwarder
    return new InstanceSink(request, {
      dir: spool.queueDir,
      memoryLimitBytes: options.memoryLimitBytes ?? 128 * 1024,
      durable: true,
      journal: spool.journal,
      deliver: async (instance) => {
        // A rule that drops the instance refuses it now, before it is acknowledged.
        const drop = router.placer.dropReason(instance)
        if (drop !== undefined) {
          router.counters.dropped++
          await spool.remove(instance)
          logger.warn('dropped', {...log, study: instance.studyInstanceUid, status: formatStatus(DROP_STATUS)}, drop)
          return {status: DROP_STATUS, errorComment: `dropped by rule: ${drop}`.slice(0, 64)}
        }

        // Recorded with the others of the next few ms; the spool already holds the instance.
        if (ledger !== undefined && instance.studyInstanceUid) ledger.received(receiptOf(instance, peerOf(request), derived))
        queue.enqueue(instance)
        return {status: Status.success}
      },
      onReceiveError: (_req, error) => logger.error('receive-failed', log, `${error.message}; answered A700`),
      onRefused: (_req, outcome, why) => logger.warn('instance-refused', {...log, peer: peerOf(request), status: formatStatus(outcome.status)}, why),
    })
  }

  const syntaxes = listenerTransferSyntaxes(config.backends)
  if (syntaxes.accepted.length === 0) {
    await health.stop()
    throw new DdrError('CONFIG_INVALID', 'the backends have no transfer syntax in common: the listener could accept no instance', {hint: 'check backends[].transferSyntaxes'})
  }

  const accepted = new Set(syntaxes.accepted)
  const ingest = async (file: Buffer, from: IngestSource): Promise<IngestResult> => {
    let meta
    let values
    try {
      meta = readMetaHeader(file, {source: from.source})
      values = readTopLevelElements(file.subarray(meta.datasetOffset), meta.transferSyntaxUid, [Tag.SOPClassUID, Tag.SOPInstanceUID], {endOfData: true, source: from.source}).values
    } catch (error) {
      return {outcome: 'invalid', reason: (error as Error).message}
    }

    const sopInstanceUid = meta.mediaStorageSopInstanceUid ?? values.get(Tag.SOPInstanceUID)
    const sopClassUid = meta.mediaStorageSopClassUid ?? values.get(Tag.SOPClassUID)
    if (!sopInstanceUid || !sopClassUid) return {outcome: 'invalid', reason: `${from.source}: no SOP Class UID or SOP Instance UID in its meta header or dataset`}
    if (!accepted.has(meta.transferSyntaxUid)) {
      const reason = `${from.source}: transfer syntax ${transferSyntaxInfo(meta.transferSyntaxUid)?.name ?? meta.transferSyntaxUid} cannot be stored by every backend`
      logger.warn('instance-refused', {sop: sopInstanceUid, from: from.callingAeTitle, peer: from.remoteAddress}, reason)
      return {sopInstanceUid, outcome: 'refused', status: Status.sopClassNotSupported, reason}
    }

    const request: StoreRequest = {
      association: {id: 0, callingAeTitle: from.callingAeTitle, calledAeTitle: config.listen.aeTitle, remoteAddress: from.remoteAddress ?? '', remotePort: 0},
      messageId: 0,
      sopClassUid,
      sopInstanceUid,
      transferSyntaxUid: meta.transferSyntaxUid,
      priority: 0,
    }
    const sink = beginStore(request, from.derived ?? false)
    const dataset = file.subarray(meta.datasetOffset)
    for (let offset = 0; offset < dataset.length; offset += INGEST_CHUNK) {
      if (!sink.write(dataset.subarray(offset, offset + INGEST_CHUNK))) await sink.waitDrain()
    }

    const outcome = await sink.finish()
    const stored = outcome.status === Status.success || (outcome.status & 0xf000) === 0xb000
    return {sopInstanceUid, outcome: stored ? 'stored' : 'refused', status: outcome.status, reason: outcome.errorComment}
  }

  // Processing follows the ledger's completion; what a module writes comes back in through ingest().
  let processing: ProcessingService | undefined
  if (config.processing.modules.length > 0) {
    if (ledger === undefined) {
      logger.warn('processing-off', {modules: config.processing.modules.length}, 'processing modules need the study ledger (store-and-forward with studies.enabled): none will run')
    } else {
      // On a shared ledger every router follows the same processing table: each run is taken by one of them.
      processing = new ProcessingService({
        config,
        ledger,
        runs: ledger.store,
        router: routerName(config),
        ...(ledger.store.registry === undefined ? {} : {shared: {}}),
        logger,
        store: async (file, module) => {
          const result = await ingest(await readFile(file), {callingAeTitle: config.listen.aeTitle, remoteAddress: `processing/${module}`, source: `${module}'s ${path.basename(file)}`, derived: true})
          return {stored: result.outcome === 'stored', status: result.status, reason: result.reason}
        },
      })
    }
  }

  const server = new DimseServer({
    aeTitle: config.listen.aeTitle,
    transferSyntaxes: syntaxes.accepted,
    maxAssociations: config.listen.maxAssociations,
    beginStore,
    ...listenerSecurityOptions(config.listen),
    ...(config.listen.allowQuery
      ? {query: {models: [...QUERY_MODELS], handle: createQueryHandler({config, logger, isHealthy: (name) => backends.find((b) => b.name === name)?.healthy ?? true, stored: ledger?.store instanceof SqliteLedgerStore ? ledger.store : undefined})}}
      : {}),
  })
  server.on('instanceRefused', (r) => logger.warn('instance-refused', {id: r.info.id, from: r.info.callingAeTitle, peer: `${r.info.remoteAddress}:${r.info.remotePort}`, sop: r.sopInstanceUid, status: formatStatus(r.status)}, r.why))
  server.on('contextRejected', (r) => {
    const why =
      r.reason === 'abstractSyntax'
        ? `${r.abstractSyntax} is not a storage SOP class or Verification`
        : `none of the proposed transfer syntaxes can be stored by every backend: ${r.transferSyntaxes.map((uid: string) => `${transferSyntaxInfo(uid)?.name ?? uid}${syntaxes.refusedBy.has(uid) ? ` (not ${syntaxes.refusedBy.get(uid)!.join(', ')})` : ''}`).join('; ')}`
    logger.info('context-rejected', {id: r.info.id, from: r.info.callingAeTitle, context: r.contextId, sopClass: r.abstractSyntax}, why)
  })
  server.on('tlsError', (e) => logger.warn('tls-refused', {peer: e.remoteAddress}, e.message))
  server.on('proxyError', (e) => logger.warn('proxy-header-refused', {peer: e.remoteAddress}, e.message))
  const permissionWarning = configPermissionWarning(config.source)
  if (permissionWarning !== undefined) logger.warn('config-readable', {file: config.source}, permissionWarning)
  server.on('association', (a) => logger.info('association', {id: a.id, from: a.callingAeTitle, to: a.calledAeTitle, peer: `${a.remoteAddress}:${a.remotePort}`}))
  server.on('associationEnd', (a) => logger.info('association-end', {id: a.id, from: a.callingAeTitle, stored: a.stored, failed: a.failed, bytes: a.bytes, ms: a.durationMs}, a.ending))
  server.on('rejected', (r) => logger.warn('association-rejected', {from: r.callingAeTitle, peer: r.remoteAddress}, r.why))
  server.on('protocolError', (e) => logger.warn('association-aborted', {id: e.info.id, from: e.info.callingAeTitle, peer: e.info.remoteAddress}, e.message))

  let port: number
  try {
    port = await server.listen(config.listen.port, config.listen.host)
  } catch (error) {
    await health.stop()
    throw new DdrError('USAGE', `cannot listen on ${config.listen.host}:${config.listen.port}: ${(error as Error).message}`, {
      hint: 'another router (or program) may hold the port: choose another with listen.port or DDR_LISTEN_PORT',
      cause: error,
    })
  }

  const status = (): RouterStatus => ({
    version: options.version ?? 'dev',
    startedAt: startedAt.toISOString(),
    uptimeSeconds: Math.round((Date.now() - startedAt.getTime()) / 1000),
    listen: {host: config.listen.host, port, aeTitle: config.listen.aeTitle},
    policy: config.routing.policy,
    affinity: config.routing.affinity,
    associations: server.activeAssociations,
    counters: {...router.counters},
    queueDepth: (forwarder?.depth ?? 0) + passThroughInFlight,
    mirrors: router.mirrors.stats(),
    spool: spool === undefined || forwarder === undefined ? null : {...spool.stats(), retries: forwarder.counters.retries},
    studiesRemembered: router.affinity?.size ?? 0,
    studies: ledger?.counts() ?? null,
    processing: processing?.status() ?? null,
    backends: backends.map((b) => b.snapshot()),
    ...(presence === undefined ? {} : {cluster: {router: routerName(config), claims: {...claims?.counters, pending: claims?.pending ?? 0}, ledgerUnreachableSince: isoOrNull(ledger?.unreachable()), routers: presence.routers()}}),
  })
  let presence: RouterPresence | undefined

  let draining = false
  const readiness = (): {ok: boolean; reasons: string[]} => {
    const reasons: string[] = []
    if (draining) reasons.push('draining')
    const spoolRefusal = spool?.refusal()
    if (spoolRefusal !== undefined) reasons.push(`spool: ${spoolRefusal}`)
    const ledgerRefusal = ledger?.refusal()
    if (ledgerRefusal !== undefined) reasons.push(`ledger: ${ledgerRefusal}`)
    // Pass-through answers only what a backend stored: with none up it can take nothing.
    if (spool === undefined && !backends.some((b) => b.healthy)) reasons.push('no healthy backend (pass-through)')
    return {ok: reasons.length === 0, reasons}
  }

  let requestDrain = () => {}
  const drainRequested = new Promise<void>((resolve) => (requestDrain = resolve))
  const drain = async (timeoutMs = 120_000): Promise<{associationsLeft: number; queued: number}> => {
    draining = true
    const deadline = Date.now() + timeoutMs
    server.stopAccepting()
    logger.info('draining', {associations: server.activeAssociations, queued: forwarder?.depth ?? 0}, `no new associations; waiting up to ${Math.round(timeoutMs / 1000)} s for open ones to end and the queue to drain`)
    while (server.activeAssociations > 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 100))
    if (forwarder !== undefined) {
      let timer: NodeJS.Timeout | undefined
      await Promise.race([forwarder.idle(), new Promise((resolve) => (timer = setTimeout(resolve, Math.max(0, deadline - Date.now()))))])
      clearTimeout(timer)
    }

    const left = {associationsLeft: server.activeAssociations, queued: forwarder?.depth ?? 0}
    logger.info('drained', left, left.associationsLeft === 0 && left.queued === 0 ? 'ready to stop' : 'time is up: what is queued stays in the spool for the next start')
    return left
  }

  const routes = ledger === undefined ? undefined : studyRoutes(ledger, processing)
  const withDrain: StatusRoutes = (method, pathname, query) => {
    if (method === 'POST' && pathname === '/drain') {
      requestDrain()
      return {draining: true, associations: server.activeAssociations, queued: forwarder?.depth ?? 0}
    }

    return routes?.(method, pathname, query)
  }

  let statusServer: StatusServer | undefined
  let statusPort: number | undefined
  // The web console and /api/ on the status server (src/lib/console).
  const webConsole = options.statusServer === false ? undefined : routerConsole({config, logger, status, ingest, scratchDir: incomingDir, spool, forwarder, ledger})
  if (options.statusServer !== false) {
    // Drain, verify and process act: the console's rules apply (status.token, same origin).
    const guard = new ConsoleGuard(config.status.host, config.status.token, statusTls !== undefined)
    statusServer = new StatusServer(status, withDrain, webConsole?.handle, readiness, {
      tls: statusTls,
      onTlsError: (peer, message) => logger.warn('status-tls-refused', {peer}, message),
      authorize: (request) => {
        const verdict = guard.authorize(request)
        if (isRefusal(verdict)) {
          logger.warn('status-action-refused', {path: request.url, by: request.socket.remoteAddress ?? 'unknown'}, verdict.error)
          return verdict
        }

        logger.info('status-action', {path: request.url, by: verdict.address, auth: verdict.auth})
        return undefined
      },
    })
    try {
      statusPort = await statusServer.listen(config.status.port, config.status.host, options.exclusiveStatusPort)
    } catch (error) {
      webConsole?.close()
      await server.close(0)
      await health.stop()
      throw new DdrError('USAGE', `cannot serve status on ${config.status.host}:${config.status.port}: ${(error as Error).message}`, {
        hint: 'choose another port with status.port or DDR_STATUS_PORT',
      })
    }
  }

  // Each router of a shared ledger says it is alive, with its counters (balance-status, the console).
  const registry = ledger?.store.registry
  if (registry !== undefined) {
    const address = `${config.status.host === '0.0.0.0' || config.status.host === '::' ? hostname() : config.status.host}:${statusPort ?? config.status.port}`
    presence = new RouterPresence(
      registry,
      () => {
        const ready = readiness()
        return {
          name: routerName(config),
          address,
          version: options.version ?? 'dev',
          startedAt: startedAt.getTime(),
          status: {healthy: ready.ok, reasons: ready.reasons, received: router.counters.received, routed: router.counters.routed, failed: router.counters.failed, spoolDepth: forwarder?.depth ?? 0},
        }
      },
      {logger},
    )
  }

  processing?.start()
  return {
    port,
    statusPort,
    router,
    backends,
    status,
    forwarder,
    async stop(graceMs = 30_000) {
      await server.close(graceMs)
      await processing?.stop()
      await forwarder?.stop(graceMs)
      router.mirrors.stop()
      await health.stop()
      webConsole?.close()
      await statusServer?.close()
      presence?.close()
      claims?.close()
      await ledger?.close()
      await Promise.all(backends.map((b) => b.backend.close()))
    },
    ledger,
    processing,
    ingest,
    health: readiness,
    drain,
    drainRequested,
  }
}

/** `ddr listen --drain`: asks the router on this status address (http or https, as status.tls says) to drain; says what it answered. */
export async function requestDrain(config: Pick<DdrConfig, 'status' | 'listen'>): Promise<string> {
  const url = `${routerStatusUrl(config.status)}/drain`
  let answer: RouterAnswer
  try {
    answer = await callRouter(config, 'POST', '/drain', {timeoutMs: 10_000, withToken: true})
  } catch (error) {
    const {message, hint} = error as DdrError
    throw new DdrError('BACKEND_UNREACHABLE', message, {hint: isRouterNotRunning(error) ? 'give the config (or --status-port) of the running router' : hint, cause: error})
  }

  if (!answer.ok) throw new DdrError('BACKEND_REFUSED', `${url} answered HTTP ${answer.statusCode}`)
  const body = answer.body as {associations: number; queued: number}
  return `draining: the router takes no new associations; ${body.associations} open, ${body.queued} queued; it exits once they are done`
}

/** GET /studies (?state, patient, since in ms, limit) and GET /studies/UID: the ledger as JSON; POST /studies/UID/process?module=: a module by hand. */
function studyRoutes(ledger: StudyLedger, processing?: ProcessingService): StatusRoutes {
  return (method, pathname, query) => {
    const process = /^\/studies\/([0-9.]+)\/process$/.exec(pathname)
    if (process !== null && method === 'POST' && processing !== undefined) return processStudyRoute(ledger, processing, process[1], query.get('module') ?? undefined)

    const verify = /^\/studies\/([0-9.]+)\/verify$/.exec(pathname)
    if (verify !== null && method === 'POST') {
      return ledger.verifyAndRepair(verify[1]).then(async (receipt) => (receipt === undefined ? null : {receipt, study: await ledger.store.study(verify[1])}))
    }

    if (method !== 'GET') return undefined
    if (pathname === '/studies') {
      const state = query.get('state')
      const since = query.get('since')
      const limit = query.get('limit')
      return Promise.resolve(
        ledger.store.studies({
          state: state === 'receiving' || state === 'stable' ? state : undefined,
          patientId: query.get('patient') ?? undefined,
          since: since === null ? undefined : Number(since),
          limit: limit === null ? undefined : Number(limit),
        }),
      ).then((studies) => ({studies}))
    }

    const match = /^\/studies\/([0-9.]+)$/.exec(pathname)
    if (match === null) return undefined
    return Promise.resolve(ledger.store.study(match[1])).then((study) => study ?? null)
  }
}

/** `ddr process` through the router: the named module (or every module, those that do not match skipped), one attempt each, now. */
async function processStudyRoute(ledger: StudyLedger, processing: ProcessingService, studyInstanceUid: string, module: string | undefined): Promise<unknown> {
  if ((await ledger.store.summary(studyInstanceUid)) === undefined) return null
  const names = module === undefined ? processing.moduleNames() : [module]
  const runs = []
  for (const name of names) runs.push(await processing.processNow(studyInstanceUid, name))
  return {studyInstanceUid, runs}
}
