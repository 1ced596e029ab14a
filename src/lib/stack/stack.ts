import {existsSync} from 'node:fs'
import path from 'node:path'

import {formatTable, painter} from '../output/table.js'

import type {BackendConfig, DdrConfig} from '../config/schema.js'
import {isDdrError} from '../errors.js'
import {orthancClientFor} from '../orthanc/client.js'
import {clusterDown, clusterExists, clusterStatus, clusterUp, formatClusterTable, type ClusterUpOptions, type StackPartResult} from './cluster.js'
import {DICOMWEB_PLUGIN, ensureOrthancInstalled, orthancStatus, startOrthanc, stopOrthanc} from './orthanc-process.js'
import {LOCAL_HOSTS, type StackBackendState} from './parts.js'

export type {StackBackendState} from './parts.js'
export type {StackPartResult} from './cluster.js'

export interface StackBackendResult {
  name: string
  state: StackBackendState
  aeTitle: string
  dicomPort: number
  /** Absent for a backend without a url (a DICOM SCP that is not Orthanc). */
  httpPort?: number
  url?: string
  /** Folder holding this Orthanc's config, pid file, log and storage. */
  dir: string
  pid?: number
  version?: string
  /** Why it failed or was skipped. */
  message?: string
}

export interface StackResult {
  action: 'down' | 'status' | 'up'
  /** The stack folder (absolute). */
  dir: string
  /** False when an Orthanc (or a part of the cluster) failed to start (up) or to stop (down). */
  ok: boolean
  backends: StackBackendResult[]
  /**
   * The cluster (`stack up --routers N`): PostgreSQL, the routers, HAProxy, in that order. Absent
   * when the stack has none (up without --routers; status and down when none is on disk).
   */
  cluster?: StackPartResult[]
}
export type StackUpResult = StackResult & {action: 'up'}
export type StackDownResult = StackResult & {action: 'down'}
export type StackStatusResult = StackResult & {action: 'status'}

export interface StackUpOptions {
  /** Install the Debian packages when Orthanc is missing and we are root (default true). */
  install?: boolean
  /** Per-Orthanc startup timeout (default 20 s). */
  startTimeoutMs?: number
  /** Called as each backend is handled, for progress output. */
  onBackend?: (result: StackBackendResult) => void
  /** Also the cluster: PostgreSQL, `routers` routers and HAProxy in front of them (docs/cluster.md). */
  cluster?: Omit<ClusterUpOptions, 'install' | 'startTimeoutMs'>
}

/** The stack folder: config.stack.dir resolved against the working directory. */
export function stackDir(config: DdrConfig): string {
  return path.resolve(config.stack.dir)
}

/** Where one backend's Orthanc lives. */
export function backendDir(config: DdrConfig, backend: BackendConfig): string {
  return path.join(stackDir(config), backend.name)
}

/** The HTTP port of a backend, from its URL (80/443 when the URL has none); undefined without a URL. */
export function backendHttpPort(backend: BackendConfig): number | undefined {
  if (backend.url === undefined) return undefined
  const url = new URL(backend.url)
  if (url.port !== '') return Number(url.port)
  return url.protocol === 'https:' ? 443 : 80
}

function describe(config: DdrConfig, backend: BackendConfig, state: StackBackendState): StackBackendResult {
  return {
    name: backend.name,
    state,
    // Folder and dicomweb backends have no DICOM address: "" and 0, as before backends had types of their own.
    aeTitle: backend.aeTitle ?? '',
    dicomPort: backend.port ?? 0,
    httpPort: backendHttpPort(backend),
    url: backend.url,
    dir: backendDir(config, backend),
  }
}

/** What ddr needs to run a backend's Orthanc here: its URL host and HTTP port, or why it cannot. */
type LocalTarget = {host: string; httpPort: number; skip?: undefined} | {skip: string}

function localTarget(backend: BackendConfig): LocalTarget {
  if (backend.url === undefined) return {skip: 'no url: not an Orthanc (ddr stack only starts Orthanc backends)'}
  const url = new URL(backend.url)
  if (url.protocol !== 'http:') return {skip: `${backend.url} is not plain http: ddr stack only starts local HTTP Orthancs`}
  if (!LOCAL_HOSTS.has(url.hostname)) return {skip: `${backend.url} is not on this machine`}
  if (backend.host === undefined) return {skip: `a ${backend.type} backend, not an Orthanc (ddr stack only starts Orthanc backends)`}
  if (!LOCAL_HOSTS.has(backend.host)) return {skip: `DICOM host ${backend.host} is not this machine`}
  if (url.pathname !== '/' && url.pathname !== '') return {skip: `${backend.url} has a path: a local Orthanc serves at the root`}
  const host = url.hostname === '0.0.0.0' ? '127.0.0.1' : url.hostname.replace(/^\[|\]$/g, '')
  return {host, httpPort: backendHttpPort(backend) ?? 80}
}

/**
 * Starts one Orthanc per configured local backend, data under <stack.dir>/<backend name>/.
 * Idempotent: running ones are left alone ("already-running"); one whose ports or AE title changed is restarted.
 * A failure to start one backend is recorded in its result and the others still start.
 */
export async function stackUp(config: DdrConfig, options: StackUpOptions = {}): Promise<StackUpResult> {
  let binary: string | undefined
  const results: StackBackendResult[] = []
  for (const backend of config.backends) {
    const result = describe(config, backend, 'started')
    const target = localTarget(backend)
    if (target.skip !== undefined) {
      result.state = 'skipped'
      result.message = target.skip
    } else {
      const status = await orthancStatus(result.dir, {host: target.host})
      const same = status.dicomPort === result.dicomPort && status.httpPort === target.httpPort && status.aeTitle === result.aeTitle && status.name === backend.name
      if (status.running && same) {
        result.state = 'already-running'
        result.pid = status.pid
        result.version = status.version
      } else {
        if (status.processAlive) {
          await stopOrthanc(result.dir)
          result.state = 'restarted'
        }

        binary ??= await ensureOrthancInstalled({install: options.install})
        try {
          const info = await startOrthanc({
            name: backend.name,
            aeTitle: result.aeTitle,
            dicomPort: result.dicomPort,
            httpPort: target.httpPort,
            dir: result.dir,
            host: target.host,
            // Checked after a possible install; DICOMweb is optional.
            plugins: existsSync(DICOMWEB_PLUGIN) ? [DICOMWEB_PLUGIN] : [],
            binary,
            startTimeoutMs: options.startTimeoutMs,
          })
          result.pid = info.pid
          result.version = info.version
        } catch (error) {
          if (!isDdrError(error)) throw error
          result.state = 'failed'
          result.message = error.message
        }
      }
    }

    options.onBackend?.(result)
    results.push(result)
  }

  const cluster = options.cluster === undefined ? undefined : await clusterUp(config, {...options.cluster, install: options.install, startTimeoutMs: options.startTimeoutMs})
  return {action: 'up', dir: stackDir(config), ok: allOk(results, cluster), backends: results, ...(cluster === undefined ? {} : {cluster})}
}

const allOk = (backends: StackBackendResult[], cluster?: StackPartResult[]) => [...backends, ...(cluster ?? [])].every((part) => part.state !== 'failed')

/**
 * Stops everything of the stack that ddr started; data stays on disk. The cluster first (routers
 * drain into the backends, HAProxy, then PostgreSQL), then the Orthancs.
 */
export async function stackDown(config: DdrConfig, options: {timeoutMs?: number; onBackend?: (result: StackBackendResult) => void; onPart?: (part: StackPartResult) => void} = {}): Promise<StackDownResult> {
  const cluster = (await clusterExists(config)) ? await clusterDown(config, {onPart: options.onPart}) : undefined
  // In parallel: each Orthanc needs 2 to 3 s to shut down cleanly.
  const results = await Promise.all(
    config.backends.map(async (backend) => {
      const result = describe(config, backend, 'not-running')
      const target = localTarget(backend)
      if (target.skip !== undefined) {
        result.state = 'skipped'
        result.message = target.skip
        options.onBackend?.(result)
        return result
      }

      try {
        const stopped = await stopOrthanc(result.dir, {timeoutMs: options.timeoutMs})
        if (stopped.stopped) {
          result.state = 'stopped'
          result.pid = stopped.pid
          if (stopped.killed) result.message = 'did not stop on SIGTERM: killed'
        }
      } catch (error) {
        if (!isDdrError(error)) throw error
        result.state = 'failed'
        result.message = error.message
      }

      options.onBackend?.(result)
      return result
    }),
  )

  return {action: 'down', dir: stackDir(config), ok: allOk(results, cluster), backends: results, ...(cluster === undefined ? {} : {cluster})}
}

/** Which Orthancs of the stack run and answer; also notices an Orthanc that ddr did not start at a backend's URL. */
export async function stackStatus(config: DdrConfig): Promise<StackStatusResult> {
  const results = await Promise.all(
    config.backends.map(async (backend) => {
      const result = describe(config, backend, 'not-running')
      const target = localTarget(backend)
      if (target.skip !== undefined) {
        const version = await probe(backend)
        result.state = version === undefined ? 'skipped' : 'external'
        result.version = version
        result.message = version === undefined ? target.skip : `${target.skip}; an Orthanc answers there`
        return result
      }

      const status = await orthancStatus(result.dir, {host: target.host})
      result.pid = status.pid
      result.version = status.version
      if (status.running) {
        result.state = 'running'
      } else if (status.processAlive) {
        result.state = 'unhealthy'
        result.message = `pid ${status.pid} is alive but GET /system does not answer`
      } else {
        const version = await probe(backend)
        if (version !== undefined) {
          result.state = 'external'
          result.version = version
          result.message = `an Orthanc that ddr did not start answers at ${backend.url}`
        }
      }

      return result
    }),
  )
  const cluster = (await clusterExists(config)) ? await clusterStatus(config) : undefined
  return {action: 'status', dir: stackDir(config), ok: true, backends: results, ...(cluster === undefined ? {} : {cluster})}
}

async function probe(backend: BackendConfig): Promise<string | undefined> {
  if (backend.url === undefined) return undefined
  const client = orthancClientFor(backend, {timeoutMs: 1500})
  try {
    return (await client.system()).Version
  } catch {
    return undefined
  } finally {
    client.close()
  }
}

/** The result as aligned plain-text columns (one line per backend), coloured when `color` is true. */
export function formatStackTable(result: StackResult, options: {color?: boolean} = {}): string {
  const paint = painter(options.color ?? false)
  const colour: Record<StackBackendState, (text: string) => string> = {
    'already-running': paint.green,
    external: paint.yellow,
    failed: paint.red,
    'not-running': paint.dim,
    restarted: paint.green,
    running: paint.green,
    skipped: paint.yellow,
    started: paint.green,
    stopped: paint.dim,
    unhealthy: paint.red,
  }
  const lines = [
    formatTable(
      result.backends,
      [
        {header: 'BACKEND', value: (b) => b.name},
        {header: 'STATE', value: (b) => b.state, paint: (b, text) => colour[b.state](text)},
        {header: 'AE TITLE', value: (b) => b.aeTitle},
        {header: 'DICOM', value: (b) => String(b.dicomPort)},
        {header: 'HTTP URL', value: (b) => b.url ?? '-'},
        {header: 'PID', value: (b) => (b.pid === undefined ? '-' : String(b.pid))},
        {header: 'VERSION', value: (b) => b.version ?? '-'},
      ],
      options,
    ),
  ]
  for (const backend of result.backends) {
    if (backend.message !== undefined) lines.push(`${colour[backend.state](`${backend.name}:`)} ${backend.message}`)
  }

  if (result.cluster !== undefined && result.cluster.length > 0) lines.push('', formatClusterTable(result.cluster, options))
  lines.push(paint.dim(`stack folder: ${result.dir}`))
  return lines.join('\n')
}
