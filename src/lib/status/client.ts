import got, {HTTPError, RequestError} from 'got'

import type {DdrConfig} from '../config/schema.js'

/** The router's store-and-forward queue, when it has one. */
export interface RouterSpoolStatus {
  depth: number
  bytes: number | null
  oldestAgeSeconds: number | null
  retries: number
  deadLetters: number
  /** Why new instances are being refused (high-water mark), or null. */
  refusing: string | null
}

/** The router's copies for mirror backends. */
export interface RouterMirrorStatus {
  /** Pending copies survive a restart (store-and-forward); null from a router that does not say. */
  durable: boolean | null
  mirrored: number
  pending: number
  /** Copies given up (refused, too many attempts, queue overflow). */
  failed: number
  oldestAgeSeconds: number | null
}

/** What ddr reads of one backend in the router's /status. */
export interface RouterBackendStatus {
  name: string
  healthy: boolean
  healthReason: string | null
  inFlight: number
  /** Recent store latency (EWMA, ms). */
  latencyMs: number | null
  score: number | null
  routed: number
  failed: number
  weight: number | null
}

/**
 * The router's GET /status, as ddr reads it: only the fields balance-status shows, checked one by
 * one so a router of another version (fields added or missing) still reads.
 */
export interface RouterStatusView {
  url: string
  version: string | null
  startedAt: string | null
  uptimeSeconds: number | null
  policy: string | null
  affinity: boolean | null
  associations: number | null
  counters: {received: number; routed: number; failed: number; failovers: number}
  queueDepth: number
  studiesRemembered: number | null
  /** Null when the router has no spool (pass-through mode, or a version without one). */
  spool: RouterSpoolStatus | null
  /** Null from a router version without mirrors. */
  mirrors: RouterMirrorStatus | null
  backends: RouterBackendStatus[]
}

/** Either the router answered, or why not (`running: false` when nothing listens there). */
export type RouterProbe =
  | {url: string; running: true; status: RouterStatusView}
  | {url: string; running: false; error: string}

export interface FetchRouterStatusOptions {
  timeoutMs?: number
  signal?: AbortSignal
}

/** The base URL of the router's status server from config (a wildcard listen address is reached on loopback). */
export function routerStatusUrl(status: DdrConfig['status']): string {
  let host = status.host
  if (host === '0.0.0.0' || host === '') host = '127.0.0.1'
  else if (host === '::') host = '::1'
  if (host.includes(':') && !host.startsWith('[')) host = `[${host}]`
  return `http://${host}:${status.port}`
}

/**
 * Asks a running router for its /status. Never throws: a router that is not running (connection
 * refused), silent, or not a ddr router comes back as `running: false` with the reason.
 */
export async function fetchRouterStatus(baseUrl: string, options: FetchRouterStatusOptions = {}): Promise<RouterProbe> {
  const url = baseUrl.replace(/\/+$/, '')
  let body: unknown
  try {
    body = await got
      .get(`${url}/status`, {timeout: {request: options.timeoutMs ?? 2000}, retry: {limit: 0}, signal: options.signal})
      .json()
  } catch (error) {
    if (error instanceof HTTPError) return {url, running: false, error: `${url}/status answered HTTP ${error.response.statusCode}: not a ddr router?`}
    const code = error instanceof RequestError ? error.code : undefined
    if (code === 'ECONNREFUSED') return {url, running: false, error: `not running (nothing listens on ${url})`}
    if (code === 'ERR_BODY_PARSE_FAILURE') return {url, running: false, error: `${url}/status did not answer JSON: not a ddr router?`}
    return {url, running: false, error: `${url}/status failed: ${code ?? (error as Error).message}`}
  }

  const status = parseRouterStatus(body, url)
  return status === undefined ? {url, running: false, error: `${url}/status answered JSON that is not a ddr router status`} : {url, running: true, status}
}

type Json = Record<string, unknown>

const isObject = (value: unknown): value is Json => typeof value === 'object' && value !== null && !Array.isArray(value)
const num = (value: unknown): number | null => (typeof value === 'number' && Number.isFinite(value) ? value : null)
const str = (value: unknown): string | null => (typeof value === 'string' ? value : null)

/** Reads a /status document; undefined when it does not look like one (no counters or no backends). */
export function parseRouterStatus(body: unknown, url: string): RouterStatusView | undefined {
  if (!isObject(body) || !isObject(body.counters) || !Array.isArray(body.backends)) return undefined
  const counters = body.counters
  const spool = isObject(body.spool) ? body.spool : undefined
  const mirrors = isObject(body.mirrors) ? body.mirrors : undefined
  return {
    url,
    version: str(body.version),
    startedAt: str(body.startedAt),
    uptimeSeconds: num(body.uptimeSeconds),
    policy: str(body.policy),
    affinity: typeof body.affinity === 'boolean' ? body.affinity : null,
    associations: num(body.associations),
    counters: {received: num(counters.received) ?? 0, routed: num(counters.routed) ?? 0, failed: num(counters.failed) ?? 0, failovers: num(counters.failovers) ?? 0},
    queueDepth: num(body.queueDepth) ?? 0,
    studiesRemembered: num(body.studiesRemembered),
    spool:
      spool === undefined
        ? null
        : {
            depth: num(spool.depth) ?? 0,
            bytes: num(spool.bytes),
            oldestAgeSeconds: num(spool.oldestAgeSeconds),
            retries: num(spool.retries) ?? 0,
            deadLetters: num(spool.deadLetters) ?? 0,
            refusing: str(spool.refusing),
          },
    mirrors:
      mirrors === undefined && num(counters.mirrored) === null
        ? null
        : {
            durable: typeof mirrors?.durable === 'boolean' ? mirrors.durable : null,
            mirrored: num(counters.mirrored) ?? 0,
            pending: num(mirrors?.pending) ?? num(counters.mirrorPending) ?? 0,
            failed: num(counters.mirrorFailed) ?? 0,
            oldestAgeSeconds: num(mirrors?.oldestAgeSeconds),
          },
    backends: body.backends.filter(isObject).map((b) => ({
      name: str(b.name) ?? '?',
      healthy: b.healthy === true,
      healthReason: str(b.healthReason),
      inFlight: num(b.inFlight) ?? 0,
      latencyMs: num(b.latencyMs),
      score: num(b.score),
      routed: num(b.routed) ?? 0,
      failed: num(b.failed) ?? 0,
      weight: num(b.weight),
    })),
  }
}
