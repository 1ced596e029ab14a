import path from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {HTTPError} from 'got'

import {DicomwebBackend} from '../backends/dicomweb-backend.js'
import {checkFolder} from '../backends/folder-backend.js'
import type {BackendConfig, BackendTransport, BackendType, DdrConfig, DicomBackendConfig} from '../config/schema.js'
import {redactUrl} from '../output/redact.js'
import {ScuAssociation} from '../dimse/scu.js'
import {DdrError, ExitCode, type ExitCodeValue} from '../errors.js'
import {orthancClientFor} from '../orthanc/client.js'
import {formatTable, painter} from '../output/table.js'
import {formatBytes, formatDuration} from '../output/units.js'
import {type RouterProbe, type RouterStatusView, fetchRouterStatus, routerStatusUrl} from './client.js'

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
  const checks = await Promise.all(backends.map((backend) => checkBackend(backend, {timeoutMs, callingAeTitle: config.listen.aeTitle})))
  // Asked after the backends, not beside them: the latencies measured are then the backends' own.
  const probe = await fetchRouterStatus(routerStatusUrl(config.status), {timeoutMs: Math.min(timeoutMs, 2000), signal: options.signal})
  return combine(probe, checks, backends)
}

/** What we measured ourselves. */
interface DirectCheck {
  problems: string[]
  answered: boolean
  echoMs: number | null
  restMs: number | null
  instances: number | null
  studies: number | null
  diskBytes: number | null
  freeBytes: number | null
  minFreeBytes: number | null
}

function emptyCheck(): DirectCheck {
  return {problems: [], answered: false, echoMs: null, restMs: null, instances: null, studies: null, diskBytes: null, freeBytes: null, minFreeBytes: null}
}

async function checkBackend(backend: BackendConfig, options: {timeoutMs: number; callingAeTitle: string}): Promise<DirectCheck> {
  if (backend.type === 'folder') return checkFolderBackend(backend)
  if (backend.type === 'dicomweb') return checkDicomwebBackend(backend, options.timeoutMs)
  const check = emptyCheck()
  // One check after the other, so neither's timing includes the other's work.
  if (backend.transport === 'dimse') {
    const result = await echoBackend(backend, options)
    if (typeof result === 'number') {
      check.echoMs = result
      check.answered = true
    } else {
      if (result.answered) check.answered = true
      check.problems.push(`C-ECHO: ${result.message}`)
    }
  }

  if (backend.url !== undefined) {
    const client = orthancClientFor(backend, {timeoutMs: options.timeoutMs})
    try {
      // GET /system first opens the kept-alive connection and warms the HTTP client up: the timed
      // /statistics then measures Orthanc, not this process starting.
      await client.system()
      const started = performance.now()
      const stats = await client.statistics()
      check.restMs = round(performance.now() - started)
      check.answered = true
      check.instances = stats.CountInstances
      check.studies = stats.CountStudies
      check.diskBytes = Number(stats.TotalDiskSize)
    } catch (error) {
      // An HTTP error status is still an answer: the server is there.
      if (error instanceof DdrError && error.code === 'BACKEND_REFUSED') check.answered = true
      check.problems.push(`REST: ${(error as Error).message}`)
    } finally {
      client.close()
    }
  }

  return check
}

/** A folder backend: exists, writable, free space above minFreeMb, and its files counted when cheap. Creates nothing. */
async function checkFolderBackend(backend: BackendConfig): Promise<DirectCheck> {
  const health = await checkFolder(path.resolve(backend.path ?? ''), backend.minFreeMb, {count: true})
  return {...emptyCheck(), problems: health.problems.map((problem) => `folder: ${problem}`), answered: health.exists, instances: health.files, freeBytes: health.freeBytes, minFreeBytes: health.minFreeBytes}
}

/** A dicomweb backend: QIDO-RS `GET <url>/studies?limit=1` with its credentials (a first one warms the connection up, the second is timed). */
async function checkDicomwebBackend(backend: BackendConfig, timeoutMs: number): Promise<DirectCheck> {
  const check = emptyCheck()
  const web = new DicomwebBackend(backend, timeoutMs)
  try {
    await web.echo(timeoutMs)
    check.restMs = round(await web.echo(timeoutMs))
    check.answered = true
  } catch (error) {
    // An HTTP error status is still an answer: the server is there (but refuses us, or fails).
    if ((error as Error).cause instanceof HTTPError) check.answered = true
    check.problems.push(`QIDO-RS: ${(error as Error).message}`)
  } finally {
    await web.close()
  }

  return check
}

/** Opens an association, sends one C-ECHO, releases; the time of association + echo, or why it failed. */
async function echoBackend(backend: DicomBackendConfig, options: {timeoutMs: number; callingAeTitle: string}): Promise<number | {message: string; answered: boolean}> {
  const started = performance.now()
  let timedOut = false
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      timedOut = true
      reject(new DdrError('TIMEOUT', `no C-ECHO answer from ${address(backend)} within ${options.timeoutMs} ms`))
    }, options.timeoutMs)
  })
  const attempt = async () => {
    const association = await ScuAssociation.connect({
      host: backend.host,
      port: backend.port,
      callingAeTitle: options.callingAeTitle,
      calledAeTitle: backend.aeTitle,
      contexts: [],
      connectTimeoutMs: options.timeoutMs,
      requestTimeoutMs: options.timeoutMs,
    })
    try {
      if (timedOut) throw new DdrError('TIMEOUT', 'timed out')
      return await association.echo()
    } finally {
      // Released in the background (aborted if the peer does not answer): the result is known already.
      association.release(1000).catch(() => association.abort())
    }
  }

  try {
    const response = await Promise.race([attempt(), timeout])
    const elapsed = round(performance.now() - started)
    if (response.status !== 0) return {message: `${address(backend)} answered C-ECHO with status 0x${response.status.toString(16).padStart(4, '0')}`, answered: true}
    return elapsed
  } catch (error) {
    // A rejected association is an answer too: the SCP is up but does not accept us.
    return {message: (error as Error).message, answered: error instanceof DdrError && error.code === 'ASSOCIATION_REJECTED'}
  } finally {
    clearTimeout(timer)
  }
}

function combine(probe: RouterProbe, checks: DirectCheck[], backends: BackendConfig[]): BalanceStatusResult {
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
      echoMs: check.echoMs,
      restMs: check.restMs,
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

function round(ms: number): number {
  return Math.round(ms * 10) / 10
}

function formatMs(ms: number): string {
  return ms < 10 ? `${ms.toFixed(1)} ms` : `${Math.round(ms)} ms`
}
