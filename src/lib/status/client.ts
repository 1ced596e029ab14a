import {type Static, type TSchema, Type} from '@sinclair/typebox'
import {Value} from '@sinclair/typebox/value'
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
  /** The study ledger's studies by state, and stable ones by receipt; null without a ledger. */
  studies: RouterStudiesStatus | null
  backends: RouterBackendStatus[]
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
}

/** The base URL of the router's status server from config (a wildcard listen address is reached on loopback). */
export function routerStatusUrl(status: Pick<DdrConfig['status'], 'host' | 'port'>): string {
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
    backends: body.backends.filter((backend) => Value.Check(AnObject, backend)).map((backend) => read(BackendDocument, backend)),
  }
}
