/*
 * The status port of `ddr listen --workers N`, served by the primary. Each worker runs its own
 * status server on a private loopback port; the primary answers what concerns them all (health,
 * status, metrics, dead letters, drain) from their answers, and hands the rest (console pages,
 * the ledger's studies, upload) to one worker. The primary applies the console's guard
 * (status.token, same origin, loopback Host) exactly as a single router does, then calls the
 * workers with a secret only it and they know: a local user who finds a private port can read
 * there what the status port shows anyway, and act on nothing.
 */
import http from 'node:http'
import https from 'node:https'
import type {AddressInfo} from 'node:net'
import type tls from 'node:tls'

import type {DdrConfig} from '../config/schema.js'
import {ConsoleGuard, isRefusal} from '../console/guard.js'
import type {Logger} from '../output/logger.js'
import {type RouterStatus, json, prometheus} from '../status/server.js'

/** A worker that said it is ready, and where its private status server answers. */
export interface WorkerEndpoint {
  index: number
  pid: number
  statusPort: number
}

/** What the primary's status server needs from the primary. */
export interface StatusFrontOptions {
  config: DdrConfig
  logger: Logger
  version: string
  /** The workers that answer now, lowest index first. */
  workers: () => WorkerEndpoint[]
  /** How many workers there should be. */
  expected: number
  /** The secret the workers' actions need (their status.token). */
  secret: string
  /** POST /drain (or `ddr listen --drain`): every worker drains, then the primary exits. */
  drain: () => void
  tls?: tls.TlsOptions
}

/** A worker's status as the primary's /status lists it. */
export interface WorkerStatusEntry {
  worker: number
  pid: number
  statusPort: number
  router?: string
  healthy?: boolean
  reasons?: string[]
  status?: RouterStatus
  error?: string
}

/** /status of a primary: the workers' statuses summed, and each one's own. */
export type AggregateStatus = RouterStatus & {workers: {expected: number; running: number; entries: WorkerStatusEntry[]}}

const ASK_TIMEOUT_MS = 5000

/** Headers a worker must not see from the outside: the primary has already judged them. */
const STRIPPED = new Set(['host', 'origin', 'referer', 'cookie', 'authorization', 'sec-fetch-site', 'sec-fetch-mode', 'sec-fetch-dest', 'sec-fetch-user', 'connection', 'keep-alive'])

function forwardHeaders(request: http.IncomingMessage, worker: WorkerEndpoint, secret: string): http.OutgoingHttpHeaders {
  const headers: http.OutgoingHttpHeaders = {}
  for (const [name, value] of Object.entries(request.headers)) if (!STRIPPED.has(name) && value !== undefined) headers[name] = value
  headers.host = `127.0.0.1:${worker.statusPort}`
  headers.authorization = `Bearer ${secret}`
  return headers
}

/** One request to a worker's private status server; the JSON (or text) it answered. */
export function askWorker(worker: WorkerEndpoint, secret: string, method: string, pathAndQuery: string, body?: Buffer): Promise<{status: number; body: unknown; text: string}> {
  return new Promise((resolve, reject) => {
    const headers: http.OutgoingHttpHeaders = {host: `127.0.0.1:${worker.statusPort}`, authorization: `Bearer ${secret}`, accept: 'application/json'}
    if (body !== undefined) {
      headers['content-type'] = 'application/json'
      headers['content-length'] = body.length
    }

    const request = http.request({host: '127.0.0.1', port: worker.statusPort, method, path: pathAndQuery, headers, timeout: ASK_TIMEOUT_MS}, (response) => {
      const chunks: Buffer[] = []
      response.on('data', (chunk: Buffer) => chunks.push(chunk))
      response.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8')
        let parsed: unknown = text
        try {
          parsed = JSON.parse(text)
        } catch {
          // Not JSON (/healthz, /metrics): the text.
        }

        resolve({status: response.statusCode ?? 502, body: parsed, text})
      })
      response.on('error', reject)
    })
    request.on('timeout', () => request.destroy(new Error(`worker ${worker.index} did not answer within ${ASK_TIMEOUT_MS} ms`)))
    request.on('error', reject)
    request.end(body)
  })
}

function readBody(request: http.IncomingMessage, limit = 1024 * 1024): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = []
    let size = 0
    request.on('data', (chunk: Buffer) => {
      size += chunk.length
      if (size > limit) request.destroy(new Error('request body too large'))
      else chunks.push(chunk)
    })
    request.on('end', () => resolve(Buffer.concat(chunks)))
    request.on('error', reject)
  })
}

const sum = (values: Array<number | undefined | null>) => values.reduce<number>((total, value) => total + (value ?? 0), 0)
const max = (values: Array<number | undefined | null>) => {
  const present = values.filter((value): value is number => typeof value === 'number')
  return present.length === 0 ? null : Math.max(...present)
}

/**
 * The workers' statuses as one: counters, associations, queues and spools summed; backends from
 * the first worker with their per-worker counts summed; `workers` lists each one's own status.
 */
export function aggregateStatus(entries: WorkerStatusEntry[], expected: number, version: string): AggregateStatus | undefined {
  const statuses = entries.map((entry) => entry.status).filter((status): status is RouterStatus => status !== undefined)
  const first = statuses[0]
  if (first === undefined) return undefined
  const counters = {...first.counters}
  for (const key of Object.keys(counters) as Array<keyof RouterStatus['counters']>) counters[key] = sum(statuses.map((s) => s.counters[key]))
  const spools = statuses.map((s) => s.spool).filter((spool) => spool !== null)
  const processing = statuses.map((s) => s.processing).filter((p) => p != null)
  return {
    ...first,
    version,
    associations: sum(statuses.map((s) => s.associations)),
    counters,
    queueDepth: sum(statuses.map((s) => s.queueDepth)),
    mirrors: {durable: first.mirrors.durable, pending: sum(statuses.map((s) => s.mirrors.pending)), oldestAgeSeconds: max(statuses.map((s) => s.mirrors.oldestAgeSeconds))},
    spool:
      spools.length === 0
        ? null
        : {
            depth: sum(spools.map((s) => s.depth)),
            bytes: sum(spools.map((s) => s.bytes)),
            oldestAgeSeconds: max(spools.map((s) => s.oldestAgeSeconds)),
            deadLetters: sum(spools.map((s) => s.deadLetters)),
            refusing: spools.find((s) => s.refusing !== null)?.refusing ?? null,
            retries: sum(spools.map((s) => s.retries)),
          },
    studiesRemembered: sum(statuses.map((s) => s.studiesRemembered)),
    processing: processing.length === 0 ? (first.processing ?? null) : {running: sum(processing.map((p) => p!.running)), runs: processing[0]!.runs},
    backends: first.backends.map((backend) => {
      const all = statuses.map((s) => s.backends.find((b) => b.name === backend.name)).filter((b) => b !== undefined)
      return {...backend, inFlight: sum(all.map((b) => b.inFlight)), routed: sum(all.map((b) => b.routed)), failed: sum(all.map((b) => b.failed))}
    }),
    workers: {expected, running: entries.length, entries: entries.map(({status, ...entry}) => ({...entry, status}))},
  }
}

/** A dead letter's id through the primary: `w<worker>-<its id in that worker's spool>`. */
const workerLetterId = (worker: number, id: string) => `w${worker}-${id}`
const LETTER_ID = /^w(\d+)-(.+)$/

interface DeadLetterList {
  spool: boolean
  total: number
  matched?: number
  deadLetters: Array<{id: string} & Record<string, unknown>>
}

/** The primary's status server (see the top of this file). */
export class StatusFront {
  private readonly server: http.Server | https.Server
  private readonly guard: ConsoleGuard

  constructor(private readonly options: StatusFrontOptions) {
    this.guard = new ConsoleGuard(options.config.status.host, options.config.status.token, options.tls !== undefined)
    const serve = (request: http.IncomingMessage, response: http.ServerResponse) => {
      this.serve(request, response).catch((error: Error) => {
        options.logger.error('status-error', {path: request.url}, error.message)
        if (!response.headersSent) json(response, 502, {error: error.message, code: 'WORKER_UNREACHABLE'})
        else response.destroy()
      })
    }

    this.server = options.tls === undefined ? http.createServer(serve) : https.createServer(options.tls, serve)
  }

  listen(port: number, host: string): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen({port, host, exclusive: true}, () => {
        this.server.off('error', reject)
        resolve((this.server.address() as AddressInfo).port)
      })
    })
  }

  close(): Promise<void> {
    this.server.closeAllConnections()
    return new Promise((resolve) => this.server.close(() => resolve()))
  }

  /** Every worker's /status (or why it did not answer). */
  async entries(): Promise<WorkerStatusEntry[]> {
    return Promise.all(
      this.options.workers().map(async (worker): Promise<WorkerStatusEntry> => {
        const base = {worker: worker.index, pid: worker.pid, statusPort: worker.statusPort}
        try {
          const [status, health] = await Promise.all([askWorker(worker, this.options.secret, 'GET', '/status'), askWorker(worker, this.options.secret, 'GET', '/healthz')])
          const body = status.body as RouterStatus
          return {...base, router: body.cluster?.router, healthy: health.status === 200, reasons: health.status === 200 ? [] : [health.text.replace(/^unavailable: /, '').trim()], status: body}
        } catch (error) {
          return {...base, healthy: false, reasons: [(error as Error).message], error: (error as Error).message}
        }
      }),
    )
  }

  private async serve(request: http.IncomingMessage, response: http.ServerResponse): Promise<void> {
    const url = new URL(request.url ?? '/', 'http://status')
    const {pathname} = url
    const method = request.method ?? 'GET'
    const isConsole = pathname === '/api' || pathname.startsWith('/api/') || pathname === '/console' || pathname.startsWith('/console/') || (pathname === '/' && (request.headers.accept ?? '').includes('text/html'))
    if (isConsole) {
      const problem = this.guard.hostProblem(request)
      if (problem !== undefined) return json(response, problem.status, {error: problem.error, code: problem.code})
    }

    const reading = method === 'GET' || method === 'HEAD'
    if (!reading && pathname !== '/api/login' && pathname !== '/api/logout') {
      const verdict = this.guard.authorize(request)
      if (isRefusal(verdict)) {
        this.options.logger.warn('status-action-refused', {path: request.url, by: request.socket.remoteAddress ?? 'unknown'}, verdict.error)
        request.resume()
        return json(response, verdict.status, {error: verdict.error, code: verdict.code}, verdict.status === 401 ? {'www-authenticate': 'Bearer realm="ddr"'} : {})
      }

      this.options.logger.info('status-action', {path: request.url, by: verdict.address, auth: verdict.auth})
    }

    const route = `${method} ${pathname}`
    if (route === 'GET /healthz') return this.healthz(response)
    if (route === 'GET /status' || (route === 'GET /' && !isConsole)) return this.status(response)
    if (route === 'GET /metrics') return this.metrics(response)
    if (route === 'POST /drain') return this.drain(response)
    if (route === 'POST /api/login') return this.login(request, response)
    if (route === 'POST /api/logout') return json(response, 200, {loggedIn: false}, {'set-cookie': this.guard.logout(request)})
    if (route === 'GET /api/session') return json(response, 200, {authRequired: this.guard.authRequired, loggedIn: this.guard.hasSession(request), version: this.options.version})
    if (route === 'GET /api/dead-letters') return this.deadLetters(response, url.search)
    if (route === 'POST /api/dead-letters/retry' || route === 'POST /api/dead-letters/discard') return this.bulk(request, response, pathname)
    const letter = /^\/api\/dead-letters\/([^/]+)(\/retry)?$/.exec(pathname)
    if (letter !== null) return this.oneLetter(request, response, decodeURIComponent(letter[1]), letter[2] ?? '')
    return this.proxy(request, response)
  }

  private async healthz(response: http.ServerResponse): Promise<void> {
    const entries = await this.entries()
    const ready = entries.filter((entry) => entry.healthy)
    const lines = entries.map((entry) => `worker ${entry.worker}: ${entry.healthy ? 'ok' : `unavailable: ${entry.reasons?.join('; ')}`}`)
    const missing = this.options.expected - entries.length
    if (missing > 0) lines.push(`${missing} worker(s) not running`)
    if (ready.length > 0) {
      response.writeHead(200, {'content-type': 'text/plain'}).end(`ok\n${lines.join('\n')}\n`)
      return
    }

    response.writeHead(503, {'content-type': 'text/plain'}).end(`unavailable: no worker can take traffic\n${lines.join('\n')}\n`)
  }

  private async status(response: http.ServerResponse): Promise<void> {
    const aggregate = aggregateStatus(await this.entries(), this.options.expected, this.options.version)
    if (aggregate === undefined) return json(response, 503, {error: 'no worker answers yet', code: 'WORKER_UNREACHABLE'})
    json(response, 200, aggregate)
  }

  private async metrics(response: http.ServerResponse): Promise<void> {
    const entries = await this.entries()
    const aggregate = aggregateStatus(entries, this.options.expected, this.options.version)
    if (aggregate === undefined) {
      response.writeHead(503, {'content-type': 'text/plain'}).end('no worker answers yet\n')
      return
    }

    const lines = ['# HELP ddr_worker_up Worker processes of ddr listen --workers (1 ready, 0 not).', '# TYPE ddr_worker_up gauge']
    for (let index = 1; index <= this.options.expected; index++) lines.push(`ddr_worker_up{worker="${index}"} ${entries.some((entry) => entry.worker === index && entry.healthy) ? 1 : 0}`)
    lines.push('# HELP ddr_worker_instances_received_total Instances received, per worker.', '# TYPE ddr_worker_instances_received_total counter')
    for (const entry of entries) if (entry.status !== undefined) lines.push(`ddr_worker_instances_received_total{worker="${entry.worker}"} ${entry.status.counters.received}`)
    response.writeHead(200, {'content-type': 'text/plain; version=0.0.4'}).end(`${prometheus(aggregate)}${lines.join('\n')}\n`)
  }

  /** Answers as one router's /drain does (`ddr listen --drain` prints it), for all workers together. */
  private async drain(response: http.ServerResponse): Promise<void> {
    const statuses = (await this.entries()).map((entry) => entry.status).filter((status) => status !== undefined)
    this.options.drain()
    json(response, 200, {draining: true, workers: this.options.workers().length, associations: sum(statuses.map((s) => s.associations)), queued: sum(statuses.map((s) => s.queueDepth))})
  }

  private async login(request: http.IncomingMessage, response: http.ServerResponse): Promise<void> {
    let token: unknown
    try {
      token = (JSON.parse((await readBody(request)).toString('utf8')) as {token?: unknown}).token
    } catch {
      return json(response, 400, {error: 'send {"token": "..."} as JSON', code: 'BAD_REQUEST'})
    }

    const cookie = typeof token === 'string' ? this.guard.login(token) : undefined
    if (cookie === undefined) {
      this.options.logger.warn('console-login-failed', {by: request.socket.remoteAddress ?? 'unknown'}, this.guard.authRequired ? 'wrong token' : 'no status.token configured')
      return json(response, this.guard.authRequired ? 401 : 400, {error: this.guard.authRequired ? 'wrong token' : 'no status.token is configured: actions need no login on this router', code: 'UNAUTHORIZED'})
    }

    this.options.logger.info('console-login', {by: request.socket.remoteAddress ?? 'unknown'})
    json(response, 200, {loggedIn: true}, {'set-cookie': cookie})
  }

  /** GET /api/dead-letters: every worker's, ids made `w<i>-<id>`. */
  private async deadLetters(response: http.ServerResponse, search: string): Promise<void> {
    const merged: DeadLetterList = {spool: false, total: 0, matched: 0, deadLetters: []}
    const workers: Array<{worker: number; total?: number; error?: string}> = []
    for (const worker of this.options.workers()) {
      try {
        const answer = await askWorker(worker, this.options.secret, 'GET', `/api/dead-letters${search}`)
        if (answer.status !== 200) throw new Error(`HTTP ${answer.status}: ${answer.text.slice(0, 200)}`)
        const list = answer.body as DeadLetterList
        merged.spool ||= list.spool
        merged.total += list.total
        merged.matched! += list.matched ?? list.deadLetters.length
        for (const letter of list.deadLetters) merged.deadLetters.push({...letter, id: workerLetterId(worker.index, letter.id), worker: worker.index})
        workers.push({worker: worker.index, total: list.total})
      } catch (error) {
        workers.push({worker: worker.index, error: (error as Error).message})
      }
    }

    const limit = Math.min(5000, Math.max(1, Number(new URLSearchParams(search).get('limit') ?? 500) || 500))
    merged.deadLetters.sort((a, b) => String(b.at ?? '').localeCompare(String(a.at ?? '')))
    merged.deadLetters = merged.deadLetters.slice(0, limit)
    json(response, 200, {...merged, workers})
  }

  /** GET, DELETE /api/dead-letters/w<i>-<id>, POST …/retry: to the worker whose spool holds it. */
  private async oneLetter(request: http.IncomingMessage, response: http.ServerResponse, id: string, suffix: string): Promise<void> {
    const parsed = LETTER_ID.exec(id)
    const worker = parsed === null ? undefined : this.options.workers().find((w) => w.index === Number(parsed[1]))
    if (parsed === null || worker === undefined) {
      request.resume()
      return json(response, 404, {error: parsed === null ? `no dead letter ${id}: through ddr listen --workers, dead letter ids read w<worker>-<id>` : `no dead letter ${id}: worker ${parsed[1]} is not running`, code: 'NOT_FOUND'})
    }

    const body = request.method === 'GET' || request.method === 'HEAD' ? undefined : await readBody(request)
    const answer = await askWorker(worker, this.options.secret, request.method ?? 'GET', `/api/dead-letters/${encodeURIComponent(parsed[2])}${suffix}`, body)
    const value = answer.body as Record<string, unknown>
    if (typeof value === 'object' && value !== null && typeof value.id === 'string') value.id = workerLetterId(worker.index, value.id)
    json(response, answer.status, value)
  }

  /** POST /api/dead-letters/retry|discard with a filter: every worker acts on its own, the results merged. */
  private async bulk(request: http.IncomingMessage, response: http.ServerResponse, pathname: string): Promise<void> {
    const body = await readBody(request)
    let matched = 0
    const results: Array<{id: string; outcome: string}> = []
    for (const worker of this.options.workers()) {
      const answer = await askWorker(worker, this.options.secret, 'POST', pathname, body)
      if (answer.status !== 200) return json(response, answer.status, answer.body)
      const value = answer.body as {matched: number; results: Array<{id: string; outcome: string}>}
      matched += value.matched
      for (const result of value.results) results.push({...result, id: workerLetterId(worker.index, result.id)})
    }

    json(response, 200, {matched, results})
  }

  /** Anything else (console pages and API, the ledger's studies, upload): to the first worker that runs. */
  private proxy(request: http.IncomingMessage, response: http.ServerResponse): void {
    const worker = this.options.workers()[0]
    if (worker === undefined) {
      request.resume()
      return json(response, 503, {error: 'no worker runs yet', code: 'WORKER_UNREACHABLE'})
    }

    const upstream = http.request({host: '127.0.0.1', port: worker.statusPort, method: request.method, path: request.url, headers: forwardHeaders(request, worker, this.options.secret)}, (answer) => {
      response.writeHead(answer.statusCode ?? 502, answer.headers)
      answer.pipe(response)
    })
    upstream.on('error', (error) => {
      if (!response.headersSent) json(response, 502, {error: `worker ${worker.index}: ${error.message}`, code: 'WORKER_UNREACHABLE'})
      else response.destroy()
    })
    // An event stream (the console's fleet) ends when the browser goes.
    response.on('close', () => upstream.destroy())
    request.pipe(upstream)
  }
}
