import path from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import type {Backend, BackendCheck} from '../backends/backend.js'
import {checkBackend, emptyCheck} from '../backends/check.js'
import {createBackend} from '../backends/factory.js'
import type {BackendConfig, BackendTransport, BackendType, DdrConfig} from '../config/schema.js'
import {redactUrl} from '../output/redact.js'
import {ExitCode, type ExitCodeValue} from '../errors.js'
import {formatTable, painter} from '../output/table.js'
import {formatBytes, formatDuration} from '../output/units.js'
import {type RouterProbe, type RouterStatusView, fetchRouterStatus, routerHttpsAgent, routerStatusUrl} from './client.js'

/** One backend as `ddr balance-status` sees it: our own checks, plus the router's view when it runs. */
export interface BackendBalance {
  name: string
  /** What it is: orthanc (default), dimse (any SCP), folder or dicomweb. */
  type: BackendType
  /** A mirror: it gets copies of every instance and takes no part in placement. */
  mirror: boolean
  /** Where it is: AE@host:port (DICOM), `folder <path>`, `DICOMweb <url>`. */
  address: string
  url: string | null
  transport: BackendTransport
  weight: number
  /**
   * Every check we made passed: C-ECHO for DIMSE backends, GET /statistics for an Orthanc with a
   * url, QIDO-RS for a dicomweb backend, folder writable with free space above minFreeMb for a folder.
   */
  healthy: boolean
  /** Why not healthy (null when healthy). */
  healthReason: string | null
  /** At least one check got an answer (a folder: it exists): false means the backend is unreachable. */
  reachable: boolean
  /** Association + C-ECHO round trip (ms); null for REST backends or when it failed. */
  echoMs: number | null
  /** HTTP check round trip (ms), on a warm connection: Orthanc GET /statistics, DICOMweb QIDO-RS. */
  restMs: number | null
  /** From Orthanc's /statistics; for a folder, its .dcm files (when cheap to count); else null. */
  instances: number | null
  studies: number | null
  diskBytes: number | null
  /** Folder backends: free space on the folder's file system, and the least it must keep (minFreeMb). */
  freeBytes: number | null
  minFreeBytes: number | null
  /** From the router's /status: null when the router is not running (or does not know this backend). */
  routed: number | null
  failed: number | null
  inFlight: number | null
  /** Recent store latency through the router (EWMA, ms). */
  storeLatencyMs: number | null
  /** The router's load score (lower takes new studies first). */
  score: number | null
  routerHealthy: boolean | null
  routerHealthReason: string | null
}

/** The router's own state, when it is running. */
export type RouterBalance = Omit<RouterStatusView, 'backends'>

/** What `ddr balance-status --json` prints. */
export interface BalanceStatusResult {
  checkedAt: string
  /** Where the router's status was asked (from config status.host/port). */
  routerUrl: string
  /** Null when no router answers there; `routerError` says why. */
  router: RouterBalance | null
  routerError: string | null
  backends: BackendBalance[]
}

export interface GatherBalanceOptions {
  /** Only these backends (default: all configured). */
  backends?: BackendConfig[]
  /** Per check (default: config.health.timeoutMs). */
  timeoutMs?: number
  signal?: AbortSignal
}

/**
 * Checks every backend directly (C-ECHO, Orthanc /statistics; the backends in parallel), then asks
 * the router's status port. Never throws for a down backend or a missing router: that is what it reports.
 */
export async function gatherBalance(config: DdrConfig, options: GatherBalanceOptions = {}): Promise<BalanceStatusResult> {
  const timeoutMs = options.timeoutMs ?? config.health.timeoutMs
  const backends = options.backends ?? config.backends
  // Made first: an unreadable status.tls file is a config error, found before the checks.
  const https = routerHttpsAgent(config)
  try {
    const checks = await Promise.all(backends.map((backend) => surveyBackend(backend, {timeoutMs, callingAeTitle: config.listen.aeTitle})))
    // Asked after the backends, not beside them: the latencies measured are then the backends' own.
    const probe = await fetchRouterStatus(routerStatusUrl(config.status), {timeoutMs: Math.min(timeoutMs, 2000), signal: options.signal, https})
    return combine(probe, checks, backends)
  } finally {
    https?.destroy()
  }
}

/**
 * Asks one backend directly, with the same check the router's health monitor makes (a survey: a
 * fresh association for the C-ECHO, HTTP timed on a warm connection, a folder looked at, not
 * created), then lets go of it.
 */
async function surveyBackend(config: BackendConfig, options: {timeoutMs: number; callingAeTitle: string}): Promise<BackendCheck> {
  let backend: Backend
  try {
    backend = createBackend(config, {callingAeTitle: options.callingAeTitle, connectTimeoutMs: options.timeoutMs})
  } catch (error) {
    // A DICOM TLS file that cannot be read (the config check leaves those to first use): this backend's problem, not the command's.
    return {...emptyCheck(), problems: [`${isDicom(config) ? 'C-ECHO' : 'REST'}: ${(error as Error).message}`]}
  }

  try {
    return await checkBackend(backend, {timeoutMs: options.timeoutMs, survey: true})
  } finally {
    await backend.close()
  }
}

function combine(probe: RouterProbe, checks: BackendCheck[], backends: BackendConfig[]): BalanceStatusResult {
  const status = probe.running ? probe.status : undefined
  const rows = backends.map((backend, index): BackendBalance => {
    const check = checks[index]
    const seen = status?.backends.find((b) => b.name.toLowerCase() === backend.name.toLowerCase())
    return {
      name: backend.name,
      type: backend.type ?? 'orthanc',
      mirror: backend.mirror === true,
      address: address(backend),
      url: backend.url === undefined ? null : redactUrl(backend.url),
      // Folder and dicomweb backends say "rest", as they did before backends had types of their own.
      transport: backend.transport ?? 'rest',
      weight: backend.weight,
      healthy: check.problems.length === 0,
      healthReason: check.problems.length === 0 ? null : check.problems.join('; '),
      reachable: check.answered,
      // The C-ECHO column is DICOM's; a dicomweb backend's QIDO-RS is its REST round trip, an Orthanc's is /statistics.
      echoMs: isDicom(backend) ? check.echoMs : null,
      restMs: backend.type === 'dicomweb' ? check.echoMs : check.statisticsMs,
      instances: check.instances,
      studies: check.studies,
      diskBytes: check.diskBytes,
      freeBytes: check.freeBytes,
      minFreeBytes: check.minFreeBytes,
      routed: seen?.routed ?? null,
      failed: seen?.failed ?? null,
      inFlight: seen?.inFlight ?? null,
      storeLatencyMs: seen?.latencyMs ?? null,
      score: seen?.score ?? null,
      routerHealthy: seen?.healthy ?? null,
      routerHealthReason: seen === undefined || seen.healthy ? null : seen.healthReason,
    }
  })
  let router: RouterBalance | null = null
  if (status !== undefined) {
    const {backends: _backends, ...rest} = status
    router = rest
  }

  return {checkedAt: new Date().toISOString(), routerUrl: probe.url, router, routerError: probe.running ? null : probe.error, backends: rows}
}

/** 3 (peer failure) when no backend answered at all; 0 otherwise, even with some down (that is what it reports). */
export function balanceExitCode(result: BalanceStatusResult): ExitCodeValue {
  return result.backends.length > 0 && result.backends.every((b) => !b.reachable) ? ExitCode.peer : ExitCode.ok
}

export interface WatchBalanceOptions {
  intervalMs: number
  signal: AbortSignal
  /** Called with each result, as soon as it is gathered. */
  onResult: (result: BalanceStatusResult) => void
}

/**
 * Gathers again and again, `intervalMs` after each round ends, until the signal aborts (a round in
 * progress is dropped). Returns the last result, or undefined when aborted before the first one.
 */
export async function watchBalance(gather: () => Promise<BalanceStatusResult>, options: WatchBalanceOptions): Promise<BalanceStatusResult | undefined> {
  const {signal} = options
  let last: BalanceStatusResult | undefined
  const aborted = new Promise<undefined>((resolve) => {
    if (signal.aborted) resolve(undefined)
    signal.addEventListener('abort', () => resolve(undefined), {once: true})
  })
  while (!signal.aborted) {
    const result = await Promise.race([gather(), aborted])
    if (result === undefined || signal.aborted) break
    last = result
    options.onResult(result)
    await sleep(options.intervalMs, undefined, {signal}).catch(() => undefined)
  }

  return last
}

/** The human view: a line about the router, one table row per backend, then why each is down. */
export function formatBalance(result: BalanceStatusResult, options: {color?: boolean} = {}): string {
  const paint = painter(options.color ?? false)
  const lines: string[] = []
  const {router} = result
  if (router === null) {
    lines.push(`router: ${result.routerError ?? 'not running'}; backends asked directly`)
  } else {
    const counters = router.counters
    const about = [router.version ? `ddr ${router.version}` : undefined, router.uptimeSeconds === null ? undefined : `up ${formatDuration(router.uptimeSeconds)}`].filter(Boolean).join(', ')
    const policy = [router.policy ? `policy ${router.policy}` : undefined, router.affinity === null ? undefined : `affinity ${router.affinity ? 'on' : 'off'}`].filter(Boolean).join(', ')
    lines.push(
      `router ${router.url}${about ? ` (${about})` : ''}${policy ? `: ${policy}` : ''}`,
      `  received ${counters.received}, routed ${counters.routed}, failed ${counters.failed}, failovers ${counters.failovers}; queue depth ${router.queueDepth}` +
        (router.associations === null ? '' : `; ${router.associations} association${router.associations === 1 ? '' : 's'} open`),
    )
    if (router.spool !== null) {
      const spool = router.spool
      const text =
        `  spool: ${spool.depth} waiting${spool.bytes === null ? '' : ` (${formatBytes(spool.bytes)})`}` +
        `${spool.oldestAgeSeconds === null ? '' : `, oldest ${formatDuration(spool.oldestAgeSeconds)}`}, ${spool.retries} retries, ${spool.deadLetters} dead letters` +
        `${spool.refusing === null ? '' : `; refusing new instances: ${spool.refusing}`}`
      lines.push(spool.refusing !== null || spool.deadLetters > 0 ? paint.yellow(text) : text)
    }

    const mirrors = router.mirrors
    if (mirrors !== null && (mirrors.mirrored + mirrors.pending + mirrors.failed > 0 || result.backends.some((b) => b.mirror))) {
      const text =
        `  mirrors: ${mirrors.mirrored} copied, ${mirrors.pending} pending${mirrors.durable === null ? '' : mirrors.durable ? ' (on disk)' : ' (in memory)'}` +
        `${mirrors.oldestAgeSeconds === null ? '' : `, oldest ${formatDuration(mirrors.oldestAgeSeconds)}`}, ${mirrors.failed} given up`
      lines.push(mirrors.failed > 0 ? paint.yellow(text) : text)
    }

    const studies = router.studies
    if (studies !== null) {
      const r = studies.receipts
      const text = `  studies: ${studies.receiving} receiving, ${studies.stable} stable (receipts: ${r.verified} verified, ${r.repairing} repairing, ${r.incomplete} incomplete, ${r.unverifiable} unverifiable, ${r.unchecked} not checked yet)`
      lines.push(r.incomplete > 0 ? paint.yellow(text) : text)
    }

    const cluster = router.cluster
    if (cluster !== null) {
      const c = cluster.claims
      lines.push(`  cluster: this router is ${cluster.router}; study claims: ${c.claimed} made, ${c.followed} followed${c.unconfirmed > 0 ? `, ${c.unconfirmed} routed unconfirmed` : ''}${c.pending > 0 ? `, ${c.pending} waiting for the ledger` : ''}${c.conflicts > 0 ? `, ${c.conflicts} conflicts` : ''}`)
      if (cluster.ledgerUnreachableSince !== null) lines.push(paint.red(`  the shared ledger has not answered since ${cluster.ledgerUnreachableSince}: records wait in memory`))
      lines.push(
        '',
        formatTable(
          cluster.routers,
          [
            {header: 'ROUTER', value: (r) => r.name},
            {header: 'STATUS ADDRESS', value: (r) => r.address},
            // A router silent for 15 s (three heartbeats) is taken for gone.
            {header: 'STATE', value: (r) => (r.ageSeconds > 15 ? 'silent' : r.healthy ? 'up' : r.reasons.join('; ') || 'not ready'), paint: (r, text) => (r.ageSeconds <= 15 && r.healthy ? paint.green(text) : paint.red(text))},
            {header: 'HEARD', value: (r) => `${Math.round(r.ageSeconds)}s ago`, align: 'right'},
            {header: 'RECEIVED', value: (r) => String(r.received), align: 'right'},
            {header: 'ROUTED', value: (r) => String(r.routed), align: 'right'},
            {header: 'FAILED', value: (r) => String(r.failed), align: 'right'},
            {header: 'QUEUE', value: (r) => String(r.spoolDepth), align: 'right'},
            {header: 'VERSION', value: (r) => r.version},
          ],
          {color: options.color},
        ),
      )
    }
  }

  const withRouter = router !== null
  const dash = (value: number | null, format: (v: number) => string = String) => (value === null ? '-' : format(value))
  lines.push(
    '',
    formatTable(
      result.backends,
      [
        {header: 'BACKEND', value: (b) => b.name},
        {header: 'ADDRESS', value: (b) => b.address},
        {header: 'HEALTH', value: (b) => (b.healthy ? 'up' : b.reachable ? 'degraded' : 'down'), paint: (b, text) => (b.healthy ? paint.green(text) : paint.red(text))},
        {header: 'REST', value: (b) => dash(b.restMs, formatMs), align: 'right'},
        {header: 'C-ECHO', value: (b) => dash(b.echoMs, formatMs), align: 'right'},
        {header: 'INSTANCES', value: (b) => dash(b.instances), align: 'right'},
        {header: 'STUDIES', value: (b) => dash(b.studies), align: 'right'},
        {header: 'DISK', value: (b) => dash(b.diskBytes, formatBytes), align: 'right'},
        ...(result.backends.some((b) => b.freeBytes !== null) ? [{header: 'FREE', value: (b: BackendBalance) => dash(b.freeBytes, formatBytes), align: 'right' as const}] : []),
        {header: 'WEIGHT', value: (b) => (b.mirror ? 'mirror' : String(b.weight)), align: 'right'},
        ...(withRouter
          ? [
              {header: 'ROUTED', value: (b: BackendBalance) => dash(b.routed), align: 'right' as const},
              {header: 'FAILED', value: (b: BackendBalance) => dash(b.failed), align: 'right' as const, paint: (b: BackendBalance, text: string) => ((b.failed ?? 0) > 0 ? paint.yellow(text) : text)},
              {header: 'IN-FLIGHT', value: (b: BackendBalance) => dash(b.inFlight), align: 'right' as const},
              {header: 'SCORE', value: (b: BackendBalance) => dash(b.score), align: 'right' as const},
            ]
          : []),
      ],
      {color: options.color},
    ),
  )
  for (const b of result.backends) {
    if (!b.healthy) lines.push(paint.red(`${b.name}: ${b.healthReason}`))
    if (b.routerHealthy === false) lines.push(paint.yellow(`${b.name}: the router sees it down: ${b.routerHealthReason ?? 'no reason given'}`))
    else if (b.routerHealthy === null && withRouter) lines.push(paint.yellow(`${b.name}: the running router does not route to it (another config?)`))
  }

  if (balanceExitCode(result) === ExitCode.peer) lines.push(paint.red('no backend answers'))
  return lines.join('\n')
}

/**
 * One refresh of `--watch`: a time line and the table. `inPlace` (a terminal) draws over the previous
 * frame: cursor home, each line cleared to its end, then the rest of the screen, so nothing flickers
 * and nothing stale stays; otherwise frames follow each other, separated by a blank line.
 */
export function formatWatchFrame(result: BalanceStatusResult, options: {intervalSeconds: number; inPlace: boolean; color?: boolean}): string {
  const frame = `${new Date(result.checkedAt).toLocaleTimeString()}, every ${options.intervalSeconds} s (Ctrl-C to stop)\n\n${formatBalance(result, {color: options.color})}`
  return options.inPlace ? `\u001B[H${frame.split('\n').join('\u001B[K\n')}\u001B[K\n\u001B[J` : `${frame}\n\n`
}

function address(backend: BackendConfig): string {
  if (backend.type === 'folder') return `folder ${path.resolve(backend.path ?? '')}`
  if (backend.type === 'dicomweb') return `DICOMweb ${redactUrl(backend.url ?? '')}`
  return `${backend.aeTitle}@${backend.host}:${backend.port}`
}

/** Stores over DIMSE: its check's round trip is a C-ECHO. */
function isDicom(backend: BackendConfig): boolean {
  return backend.type === 'dimse' || ((backend.type ?? 'orthanc') === 'orthanc' && backend.transport !== 'rest')
}

function formatMs(ms: number): string {
  return ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`
}
