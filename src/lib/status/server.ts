import http from 'node:http'
import https from 'node:https'
import type {AddressInfo} from 'node:net'
import type tls from 'node:tls'

import type {BackendSnapshot} from '../routing/backend-state.js'
import type {SpoolStats} from '../spool/spool.js'

/** The mirror queue in /status. */
export interface MirrorQueueStats {
  /** Pending copies survive a restart. */
  durable: boolean
  /** Copies waiting or in flight. */
  pending: number
  /** Age of the oldest pending copy's instance (seconds since it was received). */
  oldestAgeSeconds: number | null
}

export interface RouterStatus {
  version: string
  startedAt: string
  uptimeSeconds: number
  listen: {host: string; port: number; aeTitle: string}
  policy: string
  affinity: boolean
  associations: number
  counters: {received: number; routed: number; failed: number; failovers: number; bytes: number; dropped: number; mirrored: number; mirrorFailed: number; mirrorPending: number}
  queueDepth: number
  /** Copies for mirror backends: durable (on disk, survive a restart) with the spool on. */
  mirrors: MirrorQueueStats
  /** Store-and-forward queue; null in pass-through mode. */
  spool: (SpoolStats & {retries: number}) | null
  studiesRemembered: number
  /** Studies in the ledger by state, and stable ones by receipt; null without a ledger (pass-through, or studies.enabled false). */
  studies?: {receiving: number; stable: number; receipts: Record<string, number>} | null
  /**
   * With a shared (PostgreSQL) ledger: this router's name, its study claims (claimed first,
   * followed another router's, routed unconfirmed while the ledger was silent, conflicts found
   * after), and every router of the ledger as its last heartbeat said.
   */
  cluster?: {
    router: string
    claims: {claimed?: number; followed?: number; unconfirmed?: number; conflicts?: number; pending: number}
    ledgerUnreachableSince: string | null
    routers: Array<{name: string; address: string; version: string; startedAt: string; heartbeatAt: string; ageSeconds: number; status: {healthy: boolean; reasons: string[]; received: number; routed: number; failed: number; spoolDepth: number}}>
  }
  /** Processing module runs by module and state (failed: the study is processing-failed), and how many run now; null without modules. */
  processing?: {running: number; runs: Array<{module: string; state: string; runs: number}>} | null
  backends: BackendSnapshot[]
}

/**
 * More JSON routes, served by whoever owns the data (the listener serves the study ledger): the
 * value to send (or a promise of it), null for "not found", undefined for "not mine". A DdrError
 * thrown (or rejected) is answered 502 for an unreachable backend, 500 otherwise, with its message.
 */
export type StatusRoutes = (method: string, pathname: string, query: URLSearchParams) => unknown

/**
 * A handler that answers some requests itself, with the raw request and response (the console:
 * pages, request bodies, event streams): true when it took the request. Asked first.
 */
export type StatusHandler = (request: http.IncomingMessage, response: http.ServerResponse) => boolean

/** Answers with `value` as indented JSON (and any extra headers). */
export const json = (response: http.ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}): void => {
  response.writeHead(status, {'content-type': 'application/json', ...headers}).end(`${JSON.stringify(value, null, 2)}\n`)
}

export interface StatusServerOptions {
  /** Serve https with these options (security/status-tls.ts, from status.tls); absent: plain HTTP. */
  tls?: tls.TlsOptions
  /**
   * Whether a request that is not GET (drain, verify, process) may act: undefined to let it, or the
   * refusal to answer (status.token, same-origin; console/guard.ts). Absent: every caller may.
   */
  authorize?: (request: http.IncomingMessage) => {status: number; error: string; code: string} | undefined
  /** Told of each TLS handshake that failed (a plain HTTP client, an untrusted or missing client certificate); the socket is closed. */
  onTlsError?: (peer: string, message: string) => void
}

/** Serves GET /status (JSON) and GET /metrics (Prometheus text) from a snapshot function. */
export class StatusServer {
  private readonly server: http.Server | https.Server

  /**
   * `health` decides /healthz (200 "ok", or 503 with the reasons: what a load balancer's health
   * check reads); without it /healthz always answers ok. With `options.tls` the server speaks only
   * TLS: a plain HTTP request fails the handshake and gets no answer.
   */
  constructor(private readonly snapshot: () => RouterStatus, private readonly routes?: StatusRoutes, private readonly handler?: StatusHandler, private readonly health?: () => {ok: boolean; reasons: string[]}, options: StatusServerOptions = {}) {
    const serve = (request: http.IncomingMessage, response: http.ServerResponse) => {
      if (this.handler?.(request, response)) return
      const parsed = new URL(request.url ?? '/', 'http://status')
      const url = parsed.pathname
      let extra: unknown
      const refusal = request.method === 'GET' || request.method === 'HEAD' || this.routes === undefined ? undefined : options.authorize?.(request)
      if (refusal !== undefined) {
        json(response, refusal.status, {error: refusal.error, code: refusal.code})
        return
      }

      try {
        extra = this.routes?.(request.method ?? 'GET', url, parsed.searchParams)
      } catch (error) {
        extra = Promise.reject(error)
      }

      if (extra !== undefined) {
        void Promise.resolve(extra).then(
          (value) => (value === null ? json(response, 404, {error: `not found: ${url}`}) : json(response, 200, value)),
          (error: Error & {code?: string}) => json(response, error.code === 'BACKEND_UNREACHABLE' ? 502 : 500, {error: error.message, code: error.code}),
        )
      } else if (request.method !== 'GET') {
        response.writeHead(405).end()
      } else if (url === '/status' || url === '/') {
        response.writeHead(200, {'content-type': 'application/json'}).end(`${JSON.stringify(this.snapshot(), null, 2)}\n`)
      } else if (url === '/metrics') {
        response.writeHead(200, {'content-type': 'text/plain; version=0.0.4'}).end(prometheus(this.snapshot()))
      } else if (url === '/healthz') {
        const health = this.health?.() ?? {ok: true, reasons: []}
        response.writeHead(health.ok ? 200 : 503, {'content-type': 'text/plain'}).end(health.ok ? 'ok\n' : `unavailable: ${health.reasons.join('; ')}\n`)
      } else {
        response.writeHead(404, {'content-type': 'text/plain'}).end('not found: try /status or /metrics\n')
      }
    }

    if (options.tls === undefined) {
      this.server = http.createServer(serve)
    } else {
      const server = https.createServer(options.tls, serve)
      server.on('tlsClientError', (error, socket) => {
        options.onTlsError?.(socket.remoteAddress ?? '', error.message)
        socket.destroy()
      })
      this.server = server
    }
  }

  /** `exclusive`: in a cluster worker, a port of this process's own (not shared through the primary). */
  listen(port: number, host: string, exclusive = false): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen({port, host, exclusive}, () => {
        this.server.off('error', reject)
        resolve((this.server.address() as AddressInfo).port)
      })
    })
  }

  close(): Promise<void> {
    this.server.closeAllConnections()
    return new Promise((resolve) => this.server.close(() => resolve()))
  }
}

/** Prometheus text exposition of the router status. */
export function prometheus(status: RouterStatus): string {
  const lines: string[] = []
  const metric = (name: string, type: string, help: string, samples: Array<[Record<string, string>, number | undefined]>) => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`)
    for (const [labels, value] of samples) {
      if (value === undefined) continue
      const text = Object.entries(labels).map(([k, v]) => `${k}="${v.replace(/["\\\n]/g, '_')}"`).join(',')
      lines.push(`${name}${text ? `{${text}}` : ''} ${value}`)
    }
  }

  metric('ddr_instances_received_total', 'counter', 'Instances received from senders.', [[{}, status.counters.received]])
  metric('ddr_instances_routed_total', 'counter', 'Instances stored by a backend.', [[{}, status.counters.routed]])
  metric('ddr_instances_failed_total', 'counter', 'Instances no backend stored.', [[{}, status.counters.failed]])
  metric('ddr_failovers_total', 'counter', 'Instances stored by another backend than the first choice.', [[{}, status.counters.failovers]])
  metric('ddr_bytes_routed_total', 'counter', 'Dataset bytes stored by backends.', [[{}, status.counters.bytes]])
  metric('ddr_associations', 'gauge', 'Open inbound associations.', [[{}, status.associations]])
  metric('ddr_queue_depth', 'gauge', 'Instances received and not yet stored by a backend.', [[{}, status.queueDepth]])
  if (status.spool !== null) {
    metric('ddr_spool_depth', 'gauge', 'Acknowledged instances waiting in the spool.', [[{}, status.spool.depth]])
    metric('ddr_spool_bytes', 'gauge', 'Bytes waiting in the spool.', [[{}, status.spool.bytes]])
    metric('ddr_spool_oldest_age_seconds', 'gauge', 'Age of the oldest spooled instance.', [[{}, status.spool.oldestAgeSeconds ?? 0]])
    metric('ddr_spool_retries_total', 'counter', 'Delivery retries.', [[{}, status.spool.retries]])
    metric('ddr_dead_letters', 'gauge', 'Instances in the dead-letter folder.', [[{}, status.spool.deadLetters]])
    metric('ddr_spool_refusing', 'gauge', '1 while new instances are refused (high-water mark).', [[{}, status.spool.refusing === null ? 0 : 1]])
  }

  if (status.studies != null) {
    metric('ddr_studies', 'gauge', 'Studies in the ledger by state.', [
      [{state: 'receiving'}, status.studies.receiving],
      [{state: 'stable'}, status.studies.stable],
    ])
    metric('ddr_study_receipts', 'gauge', 'Stable studies by receipt state (unchecked: not asked yet).', Object.entries(status.studies.receipts).map(([state, n]) => [{state}, n]))
  }

  if (status.processing != null) {
    metric('ddr_processing_running', 'gauge', 'Processing module attempts running now.', [[{}, status.processing.running]])
    metric('ddr_processing_runs', 'gauge', 'Processing runs in the ledger by module and state (failed: the study is processing-failed).', status.processing.runs.map((r) => [{module: r.module, state: r.state}, r.runs]))
  }

  metric('ddr_mirror_copies_total', 'counter', 'Copies stored by mirror backends.', [[{}, status.counters.mirrored]])
  metric('ddr_mirror_failed_total', 'counter', 'Mirror copies given up.', [[{}, status.counters.mirrorFailed]])
  metric('ddr_mirror_pending', 'gauge', 'Mirror copies waiting or in flight.', [[{}, status.mirrors.pending]])
  metric('ddr_mirror_oldest_age_seconds', 'gauge', 'Age of the oldest pending mirror copy.', [[{}, status.mirrors.oldestAgeSeconds ?? 0]])
  const per = (pick: (b: BackendSnapshot) => number | undefined) => status.backends.map((b): [Record<string, string>, number | undefined] => [{backend: b.name}, pick(b)])
  metric('ddr_backend_up', 'gauge', 'Backend health (1 up, 0 down).', per((b) => (b.healthy ? 1 : 0)))
  metric('ddr_backend_in_flight', 'gauge', 'Instances being sent to the backend.', per((b) => b.inFlight))
  metric('ddr_backend_latency_ms', 'gauge', 'Recent store latency (EWMA).', per((b) => b.latencyMs))
  metric('ddr_backend_routed_total', 'counter', 'Instances the backend stored.', per((b) => b.routed))
  metric('ddr_backend_failed_total', 'counter', 'Failed deliveries to the backend.', per((b) => b.failed))
  metric('ddr_backend_stored_instances', 'gauge', 'Instances the backend holds (Orthanc /statistics).', per((b) => b.storedInstances))
  return `${lines.join('\n')}\n`
}
