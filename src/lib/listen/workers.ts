/*
 * `ddr listen --workers N` (listen.workers): several router processes on one host, sharing the
 * DICOM port, without HAProxy or PostgreSQL (docs/cluster.md, "Several cores on one host").
 *
 * The primary forks N workers with Node's cluster module; on Linux it accepts each connection and
 * hands it to the workers in turn, so one association stays on one worker. Each worker is a whole
 * router (startRouterService) with its own spool folder (spool.dir/worker-<i>, locked), the name
 * `<routerName>-w<i>`, and the SQLite ledger spool.dir/ledger.db shared with the others, opened
 * with study claims: a study whose associations land on several workers has one home. Worker 1
 * also takes over spool folders no worker owns (the root spool of a single-process run, workers
 * beyond N of an earlier run). The primary serves the status port (listen/status-aggregate.ts),
 * restarts a worker that dies (same index, so its spool is delivered), and stops or drains them all.
 */
import cluster, {type Worker} from 'node:cluster'
import {randomBytes} from 'node:crypto'
import path from 'node:path'

import type {DdrConfig} from '../config/schema.js'
import {checkConsoleExposure} from '../console/console.js'
import {DdrError} from '../errors.js'
import {openLedgerStore, routerName} from '../ledger/ledger.js'
import type {Logger} from '../output/logger.js'
import {statusServerTls} from '../security/status-tls.js'
import {workerFolderName, workerFolders} from './adopt.js'
import {startRouterService} from './service.js'
import {StatusFront, type WorkerEndpoint} from './status-aggregate.js'

export const WORKER_INDEX_ENV = 'DDR_WORKER_INDEX'
export const WORKER_SECRET_ENV = 'DDR_WORKER_SECRET'

/** Messages between the primary and its workers (over cluster's IPC channel). */
type FromWorker =
  | {ddr: 'ready'; index: number; pid: number; port: number; statusPort: number}
  | {ddr: 'fatal'; index: number; code?: string; message: string; hint?: string}
  | {ddr: 'drain-requested'; index: number}
type ToWorker = {ddr: 'drain'; timeoutMs: number} | {ddr: 'stop'}

/** This process's index when it is a worker of `ddr listen --workers` (forked by the primary), else undefined. */
export function listenWorkerIndex(): number | undefined {
  return cluster.isWorker && process.env[WORKER_INDEX_ENV] !== undefined ? Number(process.env[WORKER_INDEX_ENV]) : undefined
}

/** Checks what workers need; throws DdrError CONFIG_INVALID naming the field. */
export function checkWorkersConfig(config: DdrConfig): void {
  const n = config.listen.workers
  if (n <= 1) return
  if (!config.spool.enabled) {
    throw new DdrError('CONFIG_INVALID', `listen.workers is ${n}, but spool.enabled is false: workers need store-and-forward (pass-through has no ledger, so a study arriving on several workers could be split)`, {hint: 'turn the spool on, or run one process (listen.workers 1)'})
  }

  if (!config.studies.enabled && config.routing.affinity) {
    throw new DdrError('CONFIG_INVALID', `listen.workers is ${n}, but studies.enabled is false: the workers agree on a study's home through the study ledger`, {hint: 'turn studies.enabled on, routing.affinity off, or run one process (listen.workers 1)'})
  }
}

/** The configuration of worker `index`: its own spool folder, the shared ledger, its name, a private status port. */
export function workerConfig(config: DdrConfig, index: number, secret: string): DdrConfig {
  const root = path.resolve(config.spool.dir)
  const worker = structuredClone(config)
  worker.spool.dir = path.join(root, workerFolderName(index))
  worker.ledger.url ??= `sqlite:${path.join(root, 'ledger.db')}`
  worker.ledger.routerName = `${routerName(config)}-w${index}`
  // Private: loopback, any free port, plain HTTP (it never leaves the host), actions need the secret.
  worker.status = {...worker.status, host: '127.0.0.1', port: 0, tls: undefined, token: secret}
  return worker
}

export interface WorkersOptions {
  logger: Logger
  version: string
  /** How long a drain waits for open associations and the queue (ms). */
  drainTimeoutMs: number
  /** Resolves when the primary should drain all (besides SIGUSR2 and POST /drain); for tests and embedding. */
  signal?: AbortSignal
}

/** What a primary did, when it returns. */
export interface WorkersResult {
  drained: boolean
  restarts: number
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * Runs in a worker: the router with the worker's configuration until the primary says stop or
 * drain (or the primary goes away); then exits the process. Never returns.
 */
export async function runListenWorker(config: DdrConfig, options: WorkersOptions): Promise<never> {
  const index = Number(process.env[WORKER_INDEX_ENV])
  const secret = process.env[WORKER_SECRET_ENV] ?? ''
  // Not for the processes this worker starts (processing modules): only primary and workers know it.
  delete process.env[WORKER_SECRET_ENV]
  const {logger} = options
  const send = (message: FromWorker) => process.send?.(message)
  const root = path.resolve(config.spool.dir)
  // Worker 1 holds the root spool (a single-process run's queue) and the folders beyond N.
  const adopt = index === 1 ? [root, ...(await workerFolders(root)).filter((folder) => folder.index > config.listen.workers).map((folder) => folder.dir)] : []
  let service
  try {
    service = await startRouterService(workerConfig(config, index, secret), {logger, version: options.version, adopt, exclusiveStatusPort: true, sharedLedger: true})
  } catch (error) {
    const ddr = error as DdrError
    // The primary logs it (and stops the start, or restarts this worker later).
    send({ddr: 'fatal', index, code: ddr.code, message: ddr.message, hint: ddr.hint})
    await delay(100)
    process.exit(2)
  }

  send({ddr: 'ready', index, pid: process.pid, port: service.port, statusPort: service.statusPort ?? 0})
  void service.drainRequested.then(() => send({ddr: 'drain-requested', index}))
  let stopping = false
  const stop = async (drainMs?: number) => {
    if (stopping) return
    stopping = true
    if (drainMs !== undefined) await service.drain(drainMs)
    await service.stop()
    logger.info('worker-stopped', {worker: index, routed: service.router.counters.routed, failed: service.router.counters.failed})
    process.exit(0)
  }

  process.on('message', (message: ToWorker) => {
    if (message?.ddr === 'drain') void stop(message.timeoutMs)
    else if (message?.ddr === 'stop') void stop()
  })
  // A terminal's Ctrl-C reaches the whole process group; the primary sends stop as well.
  process.once('SIGINT', () => void stop())
  process.once('SIGTERM', () => void stop())
  // Drains are the primary's to start (it drains every worker); a worker's own SIGUSR2 is ignored.
  process.on('SIGUSR2', () => {})
  // A primary killed outright (SIGKILL): Node's cluster ends the worker as soon as the IPC channel
  // closes. What it acknowledged is fsynced in its spool and delivered at the next start.
  return new Promise<never>(() => {})
}

/**
 * Runs the primary: forks the workers, serves the status port, restarts a worker that dies, and
 * returns once all stopped (SIGINT, SIGTERM) or drained (SIGUSR2, POST /drain, `ddr listen --drain`).
 * Throws DdrError when a worker cannot start (a locked spool folder, a busy port), naming it.
 */
export async function runListenPrimary(config: DdrConfig, options: WorkersOptions): Promise<WorkersResult> {
  const {logger} = options
  const n = config.listen.workers
  checkWorkersConfig(config)
  // The primary's status port is the one the network sees: the same refusal as a single router's.
  checkConsoleExposure(config)
  const tls = statusServerTls(config.status)
  const secret = randomBytes(24).toString('base64url')
  // The shared ledger made once before the workers race to create its tables.
  if (config.ledger.url === undefined || config.ledger.url.startsWith('sqlite:')) {
    const store = await openLedgerStore(workerConfig(config, 1, secret), {shared: true, logger})
    await store.close()
  }

  cluster.schedulingPolicy = cluster.SCHED_RR
  const endpoints = new Map<number, WorkerEndpoint>()
  const processes = new Map<number, Worker>()
  const crashes = new Map<number, number[]>()
  let restarts = 0
  let phase: 'starting' | 'running' | 'stopping' | 'draining' = 'starting'
  let port = 0

  let settleStart!: (error?: Error) => void
  const started = new Promise<void>((resolve, reject) => (settleStart = (error) => (error === undefined ? resolve() : reject(error))))
  let finish!: (drained: boolean) => void
  const finished = new Promise<boolean>((resolve) => (finish = resolve))

  const fork = (index: number) => {
    const worker = cluster.fork({[WORKER_INDEX_ENV]: String(index), [WORKER_SECRET_ENV]: secret})
    processes.set(index, worker)
    worker.on('error', (error) => logger.warn('worker-ipc-failed', {worker: index}, error.message))
    worker.on('message', (message: FromWorker) => {
      if (message?.ddr === 'ready') {
        endpoints.set(index, {index, pid: message.pid, statusPort: message.statusPort})
        port = message.port
        logger.info('worker-ready', {worker: index, pid: message.pid, port: message.port, restarts: crashes.get(index)?.length || undefined})
        if (phase === 'starting' && endpoints.size === n) settleStart()
      } else if (message?.ddr === 'fatal') {
        logger.error('worker-failed', {worker: index, pid: worker.process.pid}, message.message)
        if (phase === 'starting') settleStart(new DdrError((message.code as DdrError['code'] | undefined) ?? 'USAGE', `worker ${index}: ${message.message}`, {hint: message.hint}))
      } else if (message?.ddr === 'drain-requested') {
        drainAll('POST /drain on a worker')
      }
    })
    worker.on('exit', (code, signal) => {
      endpoints.delete(index)
      if (processes.get(index) === worker) processes.delete(index)
      if (phase === 'stopping' || phase === 'draining' || phase === 'starting') {
        logger.info('worker-exited', {worker: index, pid: worker.process.pid, code: code ?? undefined, signal: signal ?? undefined})
        if (phase === 'starting') settleStart(new DdrError('USAGE', `worker ${index} exited while starting (code ${code ?? signal})`, {hint: 'see its log lines above (worker=' + index + ')'}))
        if (processes.size === 0 && phase !== 'starting') finish(phase === 'draining')
        return
      }

      // Died while running: restarted on the same index, so what its spool acknowledged is delivered.
      const now = Date.now()
      const recent = [...(crashes.get(index) ?? []).filter((at) => now - at < 60_000), now]
      crashes.set(index, recent)
      const wait = Math.min(10_000, 250 * 2 ** (recent.length - 1))
      restarts++
      logger.warn('worker-died', {worker: index, pid: worker.process.pid, code: code ?? undefined, signal: signal ?? undefined, restartIn: `${wait}ms`}, 'restarting it on the same spool folder: what it acknowledged is delivered')
      setTimeout(() => {
        if (phase === 'running') fork(index)
      }, wait)
    })
  }

  const tell = (worker: Worker, message: ToWorker) => {
    try {
      if (worker.isConnected()) worker.send(message)
    } catch {
      // Gone meanwhile: its exit is handled.
    }
  }

  // A worker that does not stop within this time (a hung backend send) is killed; its spool keeps what it acknowledged.
  let killTimer: NodeJS.Timeout | undefined
  const killAfter = (ms: number) => {
    killTimer = setTimeout(() => {
      for (const [index, worker] of processes) {
        logger.warn('worker-killed', {worker: index, pid: worker.process.pid}, `did not stop within ${Math.round(ms / 1000)} s: killed (its spool keeps what it acknowledged)`)
        worker.process.kill('SIGKILL')
      }
    }, ms)
    killTimer.unref()
  }

  const stopAll = (why: string) => {
    if (phase === 'stopping' || phase === 'draining') return
    phase = 'stopping'
    logger.info('stopping', {signal: why, workers: processes.size}, 'no new associations; every worker finishes its in-flight instances')
    for (const worker of processes.values()) tell(worker, {ddr: 'stop'})
    killAfter(60_000)
    if (processes.size === 0) finish(false)
  }

  const drainAll = (why: string) => {
    if (phase === 'stopping' || phase === 'draining') return
    phase = 'draining'
    logger.info('draining', {by: why, workers: processes.size}, `every worker stops taking associations, finishes its queue (up to ${Math.round(options.drainTimeoutMs / 1000)} s), then exits`)
    for (const worker of processes.values()) tell(worker, {ddr: 'drain', timeoutMs: options.drainTimeoutMs})
    killAfter(options.drainTimeoutMs + 60_000)
    if (processes.size === 0) finish(true)
  }

  const onInt = () => stopAll('SIGINT')
  const onTerm = () => stopAll('SIGTERM')
  const onUsr2 = () => drainAll('SIGUSR2')
  process.on('SIGINT', onInt)
  process.on('SIGTERM', onTerm)
  process.on('SIGUSR2', onUsr2)
  options.signal?.addEventListener('abort', () => drainAll('abort'))

  const front = new StatusFront({config, logger, version: options.version, expected: n, secret, tls, drain: () => drainAll('POST /drain'), workers: () => [...endpoints.values()].sort((a, b) => a.index - b.index)})
  let statusPort: number | undefined
  try {
    for (let index = 1; index <= n; index++) fork(index)
    await started
    phase = 'running'
    statusPort = await front.listen(config.status.port, config.status.host).catch((error: Error) => {
      throw new DdrError('USAGE', `cannot serve status on ${config.status.host}:${config.status.port}: ${error.message}`, {hint: 'choose another port with status.port or DDR_STATUS_PORT'})
    })
  } catch (error) {
    phase = 'stopping'
    for (const worker of processes.values()) tell(worker, {ddr: 'stop'})

    if (processes.size > 0) await Promise.race([finished, delay(30_000)])
    for (const worker of processes.values()) worker.process.kill('SIGKILL')
    process.off('SIGINT', onInt)
    process.off('SIGTERM', onTerm)
    process.off('SIGUSR2', onUsr2)
    throw error
  }

  const scheme = tls === undefined ? 'http' : 'https'
  logger.info('listening', {ae: config.listen.aeTitle, port, workers: n, status: `${scheme}://${config.status.host}:${statusPort}/status`, console: config.status.console ? `${scheme}://${config.status.host}:${statusPort}/console/` : undefined, policy: config.routing.policy, affinity: config.routing.affinity, spool: path.resolve(config.spool.dir), config: config.source})
  const drained = await finished
  clearTimeout(killTimer)
  await front.close()
  process.off('SIGINT', onInt)
  process.off('SIGTERM', onTerm)
  process.off('SIGUSR2', onUsr2)
  logger.info('stopped', {workers: n, restarts, drained})
  return {drained, restarts}
}
