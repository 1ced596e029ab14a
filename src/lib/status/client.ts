import {Agent as HttpsAgent} from 'node:https'

import {type Static, type TSchema, Type} from '@sinclair/typebox'
import {Value} from '@sinclair/typebox/value'
import got, {HTTPError, RequestError} from 'got'

import type {DdrConfig} from '../config/schema.js'
import {DdrError} from '../errors.js'
import {describeRequestFailure} from '../security/https.js'
import {type StatusTlsConfig, statusClientTls} from '../security/status-tls.js'

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
  /** The study ledger's studies by state, and stable ones by receipt; null without a ledger. */
  studies: RouterStudiesStatus | null
  /** With a shared (PostgreSQL) ledger: this router's name and every router of the ledger; null otherwise. */
  cluster: RouterClusterStatus | null
  backends: RouterBackendStatus[]
}

/** The routers sharing a ledger, as their heartbeats in it say (docs/cluster.md). */
export interface RouterClusterStatus {
  router: string
  claims: {claimed: number; followed: number; unconfirmed: number; conflicts: number; pending: number}
  ledgerUnreachableSince: string | null
  routers: Array<{name: string; address: string; version: string; ageSeconds: number; healthy: boolean; reasons: string[]; received: number; routed: number; failed: number; spoolDepth: number}>
}

/** Studies in the router's ledger. */
export interface RouterStudiesStatus {
  receiving: number
  stable: number
  receipts: {verified: number; repairing: number; incomplete: number; unverifiable: number; unchecked: number}
}

/** Either the router answered, or why not (`running: false` when nothing listens there). */
export type RouterProbe =
  | {url: string; running: true; status: RouterStatusView}
  | {url: string; running: false; error: string}

export interface FetchRouterStatusOptions {
  timeoutMs?: number
  signal?: AbortSignal
  /** For an https:// URL: the agent that trusts the router (routerHttpsAgent). */
  https?: HttpsAgent
}

/**
 * The base URL of the router's status server from config: https:// with status.tls, else http://
 * (a wildcard listen address is reached on loopback).
 */
export function routerStatusUrl(status: Pick<DdrConfig['status'], 'host' | 'port' | 'tls'>): string {
  let host = status.host
  if (host === '0.0.0.0' || host === '') host = '127.0.0.1'
  else if (host === '::') host = '::1'
  if (host.includes(':') && !host.startsWith('[')) host = `[${host}]`
  return `${status.tls === undefined ? 'http' : 'https'}://${host}:${status.port}`
}

/**
 * The https agent that trusts the router's status server (security/status-tls.ts: its own
 * certificate, and status.tls.ca or listen.tls.ca); undefined without status.tls. Reads the PEM
 * files now (CONFIG_INVALID naming the field). Destroy it when done.
 */
export function routerHttpsAgent(config: StatusTlsConfig): HttpsAgent | undefined {
  const tls = statusClientTls(config)
  return tls === undefined ? undefined : new HttpsAgent(tls)
}

/** What ddr's commands need of the config to reach the running router. */
export interface RouterClientConfig extends StatusTlsConfig {
  status: Pick<DdrConfig['status'], 'host' | 'port' | 'tls' | 'token'>
}

export interface CallRouterOptions {
  /** Sent as JSON. */
  json?: unknown
  /** Send status.token as `Authorization: Bearer` (never in the URL). */
  withToken?: boolean
  /** Give up after this long (default: wait as long as the router takes). */
  timeoutMs?: number
  signal?: AbortSignal
}

/** The router's answer: its HTTP status and its JSON body ({} when it is not JSON). */
export interface RouterAnswer {
  statusCode: number
  /** 2xx. */
  ok: boolean
  body: any
}

/**
 * One request to the running router's status server (/drain, /studies/…, /api/…), over https when
 * status.tls says so, trusting what routerHttpsAgent trusts. Any HTTP answer is returned; when none
 * came, DdrError ROUTER_UNREACHABLE says why (isRouterNotRunning tells "nothing listens there"
 * apart from a router that could not be talked to, e.g. a TLS refusal).
 */
export async function callRouter(config: RouterClientConfig, method: 'GET' | 'POST' | 'DELETE', path: string, options: CallRouterOptions = {}): Promise<RouterAnswer> {
  const base = routerStatusUrl(config.status)
  const agent = routerHttpsAgent(config)
  try {
    const response = await got(`${base}${path}`, {
      method,
      ...(options.json === undefined ? {} : {json: options.json}),
      headers: options.withToken && config.status.token !== undefined ? {authorization: `Bearer ${config.status.token}`} : {},
      ...(agent === undefined ? {} : {agent: {https: agent}}),
      ...(options.timeoutMs === undefined ? {} : {timeout: {request: options.timeoutMs}}),
      signal: options.signal,
      retry: {limit: 0},
      throwHttpErrors: false,
    })
    let body: unknown = {}
    try {
      body = JSON.parse(response.body)
    } catch {
      // not JSON: the caller reads the status code
    }

    return {statusCode: response.statusCode, ok: response.statusCode >= 200 && response.statusCode <= 299, body}
  } catch (error) {
    throw routerUnreachable(base, config, error)
  } finally {
    agent?.destroy()
  }
}

function routerUnreachable(base: string, config: RouterClientConfig, error: unknown): DdrError {
  const failure = describeRequestFailure(error)
  const code = (error as {code?: string}).code
  let hint = 'start `ddr listen` with this config, or give the config (status.host, status.port) of the running router'
  if (failure.tls === 'untrusted') hint = "the router's certificate is not this config's status.tls.cert: give the same status.tls as the running router (or status.tls.ca: the CA that signs its certificate)"
  else if (failure.tls === 'handshake') hint = 'the status port does not speak TLS as status.tls here says: give the same status.tls as the running router'
  // A TLS server closes a plain HTTP request without an answer.
  else if (config.status.tls === undefined && code === 'ECONNRESET') hint = 'if the running router serves its status port over TLS, give this config the same status.tls'
  return new DdrError('ROUTER_UNREACHABLE', `no router answers at ${base}: ${failure.reason}`, {hint, cause: error})
}

/** Whether callRouter failed because nothing listens on the status port (connection refused): no router runs there. */
export function isRouterNotRunning(error: unknown): boolean {
  return error instanceof DdrError && error.code === 'ROUTER_UNREACHABLE' && (error.cause as {code?: string} | undefined)?.code === 'ECONNREFUSED'
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
      .get(`${url}/status`, {timeout: {request: options.timeoutMs ?? 2000}, retry: {limit: 0}, signal: options.signal, ...(options.https === undefined ? {} : {agent: {https: options.https}})})
      .json()
  } catch (error) {
    if (error instanceof HTTPError) return {url, running: false, error: `${url}/status answered HTTP ${error.response.statusCode}: not a ddr router?`}
    const code = error instanceof RequestError ? error.code : undefined
    if (code === 'ECONNREFUSED') return {url, running: false, error: `not running (nothing listens on ${url})`}
    if (code === 'ERR_BODY_PARSE_FAILURE') return {url, running: false, error: `${url}/status did not answer JSON: not a ddr router?`}
    return {url, running: false, error: `${url}/status failed: ${describeRequestFailure(error).reason}`}
  }

  const status = parseRouterStatus(body, url)
  return status === undefined ? {url, running: false, error: `${url}/status answered JSON that is not a ddr router status`} : {url, running: true, status}
}

/*
 * The /status document as ddr reads it, as TypeBox schemas (the config's machinery): every field a
 * default, so Value.Cast keeps the fields that have the right type and puts the default in place
 * of a missing or wrong one. A router of another version (fields added or missing) still reads.
 */
const count = () => Type.Number({default: 0})
const orNull = <T extends TSchema>(schema: T) => Type.Union([schema, Type.Null()], {default: null})

/** What makes a document a router status at all. */
const RouterStatusShape = Type.Object({counters: Type.Object({}), backends: Type.Array(Type.Unknown()), spool: Type.Optional(Type.Unknown()), mirrors: Type.Optional(Type.Unknown())})
const AnObject = Type.Object({})

/** `value` read as `schema` says: right fields kept, others defaulted, unknown ones left out; `value` itself is not touched. */
function read<T extends TSchema>(schema: T, value: unknown): Static<T> {
  return Value.Clean(schema, Value.Cast(schema, Value.Clone(value))) as Static<T>
}

const RouterStatusDocument = Type.Object({
  version: orNull(Type.String()),
  startedAt: orNull(Type.String()),
  uptimeSeconds: orNull(Type.Number()),
  policy: orNull(Type.String()),
  affinity: orNull(Type.Boolean()),
  associations: orNull(Type.Number()),
  counters: Type.Object({
    received: count(),
    routed: count(),
    failed: count(),
    failovers: count(),
    mirrored: orNull(Type.Number()),
    mirrorPending: orNull(Type.Number()),
    mirrorFailed: count(),
  }),
  queueDepth: count(),
  studiesRemembered: orNull(Type.Number()),
})

const SpoolDocument = Type.Object({
  depth: count(),
  bytes: orNull(Type.Number()),
  oldestAgeSeconds: orNull(Type.Number()),
  retries: count(),
  deadLetters: count(),
  refusing: orNull(Type.String()),
})

const StudiesDocument = Type.Object({
  receiving: count(),
  stable: count(),
  receipts: Type.Object({verified: count(), repairing: count(), incomplete: count(), unverifiable: count(), unchecked: count()}, {default: {}}),
})

const ClusterDocument = Type.Object({
  router: Type.String({default: '?'}),
  claims: Type.Object({claimed: count(), followed: count(), unconfirmed: count(), conflicts: count(), pending: count()}, {default: {}}),
  ledgerUnreachableSince: orNull(Type.String()),
})

const ClusterRouterDocument = Type.Object({
  name: Type.String({default: '?'}),
  address: Type.String({default: '?'}),
  version: Type.String({default: '?'}),
  ageSeconds: Type.Number({default: 0}),
  status: Type.Object({healthy: Type.Boolean({default: false}), reasons: Type.Array(Type.String(), {default: []}), received: count(), routed: count(), failed: count(), spoolDepth: count()}, {default: {}}),
})

const MirrorsDocument = Type.Object({durable: orNull(Type.Boolean()), pending: orNull(Type.Number()), oldestAgeSeconds: orNull(Type.Number())})

const BackendDocument = Type.Object({
  name: Type.String({default: '?'}),
  healthy: Type.Boolean({default: false}),
  healthReason: orNull(Type.String()),
  inFlight: count(),
  latencyMs: orNull(Type.Number()),
  score: orNull(Type.Number()),
  routed: count(),
  failed: count(),
  weight: orNull(Type.Number()),
})

/** Reads a /status document; undefined when it does not look like one (no counters or no backends). */
export function parseRouterStatus(body: unknown, url: string): RouterStatusView | undefined {
  if (!Value.Check(RouterStatusShape, body)) return undefined
  const {counters, ...status} = read(RouterStatusDocument, body)
  const spool = Value.Check(AnObject, body.spool) ? read(SpoolDocument, body.spool) : null
  const mirrors = Value.Check(AnObject, body.mirrors) ? read(MirrorsDocument, body.mirrors) : undefined
  const studiesBody = (body as {studies?: unknown}).studies
  const studies = Value.Check(AnObject, studiesBody) ? read(StudiesDocument, studiesBody) : null
  const clusterBody = (body as {cluster?: {routers?: unknown}}).cluster
  const cluster: RouterClusterStatus | null = Value.Check(AnObject, clusterBody)
    ? {
        ...read(ClusterDocument, clusterBody),
        routers: (Array.isArray(clusterBody.routers) ? clusterBody.routers : [])
          .filter((r) => Value.Check(AnObject, r))
          .map((r) => {
            const {status: state, ...rest} = read(ClusterRouterDocument, r)
            return {...rest, ...state}
          }),
      }
    : null
  return {
    url,
    ...status,
    counters: {received: counters.received, routed: counters.routed, failed: counters.failed, failovers: counters.failovers},
    spool,
    mirrors:
      mirrors === undefined && counters.mirrored === null
        ? null
        : {
            durable: mirrors?.durable ?? null,
            mirrored: counters.mirrored ?? 0,
            pending: mirrors?.pending ?? counters.mirrorPending ?? 0,
            failed: counters.mirrorFailed,
            oldestAgeSeconds: mirrors?.oldestAgeSeconds ?? null,
          },
    studies,
    cluster,
    backends: body.backends.filter((backend) => Value.Check(AnObject, backend)).map((backend) => read(BackendDocument, backend)),
  }
}
