import {randomBytes} from 'node:crypto'
import type http from 'node:http'
import path from 'node:path'

import type {DdrConfig} from '../config/schema.js'
import {DdrError} from '../errors.js'
import type {StudyLedger} from '../ledger/ledger.js'
import type {StudyDetail, StudySummary} from '../ledger/types.js'
import type {Logger} from '../output/logger.js'
import {explainRoute} from '../routing/route-explain.js'
import type {DeadLetter} from '../spool/spool.js'
import type {RouterStatus} from '../status/server.js'
import {serveAsset} from './assets.js'
import {type Caller, ConsoleGuard, isLoopbackHost, isRefusal} from './guard.js'
import {RateHistory} from './history.js'
import {type Ingest, UploadError, type UploadResult, ingestParts, receiveMultipart, removeUpload, uploadHttpStatus} from './upload.js'

/** One queued instance as the queue page shows it, what it waits for (Forwarder.waiting() makes them). */
export interface QueueEntry {
  sopInstanceUid: string
  studyInstanceUid?: string
  patientId?: string
  callingAeTitle: string
  /** Epoch ms. */
  receivedAt: number
  bytes: number
  /** `sending`: an attempt is under way; `backoff`: waiting until `notBefore` after a failed attempt; `ready`: waiting for a free, healthy backend. */
  state: 'sending' | 'backoff' | 'ready'
  tries: number
  /** Epoch ms of the next attempt (backoff). */
  notBefore?: number
  /** What the last attempt ran into. */
  lastProblem?: string
}

/** What the console can do with dead letters: the spool's files, and queueing one again. */
export interface DeadLetterActions {
  list(): Promise<DeadLetter[]>
  get(id: string): Promise<DeadLetter | undefined>
  /** Back into the queue: `queued`, `already-queued` (the same instance is queued: the dead letter goes), undefined when there is no such dead letter. */
  retry(id: string): Promise<'queued' | 'already-queued' | undefined>
  discard(id: string): Promise<boolean>
}

/** What the router hands the console (listen/console-wiring.ts). */
export interface ConsoleOptions {
  config: DdrConfig
  logger: Logger
  status(): RouterStatus
  ingest: Ingest
  /** Where uploads wait while they are read (spool.dir/incoming: emptied at start). */
  scratchDir: string
  ledger?: StudyLedger
  /** The store-and-forward queue; absent in pass-through mode. */
  queue?: (limit: number) => {total: number; entries: QueueEntry[]}
  deadLetters?: DeadLetterActions
  /** Chart sampling interval (tests shorten it). */
  historyIntervalMs?: number
  /** How often the fleet stream sends a snapshot (ms). */
  streamIntervalMs?: number
}

/** Answers a request when it is the console's (pages under /console/, the API under /api/): true when it did. */
export type ConsoleHandler = (request: http.IncomingMessage, response: http.ServerResponse) => boolean

export interface Console {
  handle: ConsoleHandler
  close(): void
}

/** A JSON answer. */
const send = (response: http.ServerResponse, status: number, value: unknown, headers: Record<string, string> = {}) => {
  if (response.headersSent) return
  response.writeHead(status, {'content-type': 'application/json', 'cache-control': 'no-store', ...headers}).end(`${JSON.stringify(value)}\n`)
}

/** A client error with its HTTP status (400 unless said). */
class ApiError extends Error {
  constructor(readonly status: number, message: string, readonly code = 'BAD_REQUEST') {
    super(message)
  }
}

const JSON_BODY_LIMIT = 64 * 1024

async function readJson(request: http.IncomingMessage): Promise<Record<string, unknown>> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of request) {
    size += (chunk as Buffer).length
    if (size > JSON_BODY_LIMIT) throw new ApiError(413, `JSON body larger than ${JSON_BODY_LIMIT} bytes`)
    chunks.push(chunk as Buffer)
  }

  const text = Buffer.concat(chunks).toString('utf8').trim()
  if (text === '') return {}
  try {
    const value = JSON.parse(text) as unknown
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('not an object')
    return value as Record<string, unknown>
  } catch (error) {
    throw new ApiError(400, `body is not a JSON object: ${(error as Error).message}`)
  }
}

/** Filters of the dead-letter list and of bulk actions. */
export interface DeadLetterFilter {
  /** Case-insensitive text in the reason. */
  reasonContains?: string
  /** Went to dead-letter at or after this (epoch ms). */
  since?: number
  studyInstanceUid?: string
}

const detail = (letter: DeadLetter, key: string): string | undefined => (typeof letter.details[key] === 'string' ? (letter.details[key] as string) : undefined)

/** Whether a dead letter matches a filter. */
export function matchesDeadLetter(letter: DeadLetter, filter: DeadLetterFilter): boolean {
  if (filter.reasonContains !== undefined && !(detail(letter, 'reason') ?? '').toLowerCase().includes(filter.reasonContains.toLowerCase())) return false
  if (filter.since !== undefined && Date.parse(letter.at) < filter.since) return false
  if (filter.studyInstanceUid !== undefined && detail(letter, 'studyInstanceUid') !== filter.studyInstanceUid) return false
  return true
}

/** The dead letter as the API shows it: the reason file's main fields up front. */
function deadLetterView(letter: DeadLetter) {
  return {
    id: letter.id,
    at: letter.at,
    bytes: letter.bytes,
    reason: detail(letter, 'reason') ?? null,
    status: detail(letter, 'status') ?? null,
    sopInstanceUid: detail(letter, 'sopInstanceUid') ?? null,
    studyInstanceUid: detail(letter, 'studyInstanceUid') ?? null,
    patientId: detail(letter, 'patientId') ?? null,
    callingAeTitle: detail(letter, 'callingAeTitle') ?? null,
    tries: typeof letter.details.tries === 'number' ? letter.details.tries : null,
    history: Array.isArray(letter.details.history) ? letter.details.history : [],
  }
}

function filterFromQuery(query: URLSearchParams): DeadLetterFilter {
  const since = query.get('since')
  return {
    reasonContains: query.get('reason') || undefined,
    since: since === null || since === '' ? undefined : parseNumber('since', since),
    studyInstanceUid: query.get('study') || undefined,
  }
}

function filterFromBody(body: Record<string, unknown>): DeadLetterFilter & {all: boolean} {
  const text = (key: string) => {
    const value = body[key]
    if (value === undefined || value === null || value === '') return undefined
    if (typeof value !== 'string') throw new ApiError(400, `${key} must be a string`)
    return value
  }

  const since = body.since
  if (since !== undefined && since !== null && typeof since !== 'number') throw new ApiError(400, 'since must be epoch milliseconds (a number)')
  return {all: body.all === true, reasonContains: text('reasonContains'), since: typeof since === 'number' ? since : undefined, studyInstanceUid: text('study')}
}

function parseNumber(name: string, text: string): number {
  const value = Number(text)
  if (!Number.isFinite(value)) throw new ApiError(400, `${name}=${text}: not a number`)
  return value
}

/**
 * The operators' console on the status server: static pages under /console/ and a JSON API under
 * /api/ (docs/console.md). Reads what the router already keeps (its status, the ledger, the
 * spool's queue and dead letters); acts only through the router's own paths (the intake for
 * uploads, the forwarder for retries). Nothing here runs on the DICOM path: the chart's samples
 * are taken by a timer from the /status snapshot.
 */
export function createConsole(options: ConsoleOptions): Console {
  const {config, logger} = options
  const guard = new ConsoleGuard(config.status.host, config.status.token, config.status.tls !== undefined)
  const history = new RateHistory(options.status, options.historyIntervalMs)
  const streams = new Set<http.ServerResponse>()
  const streamTimer = setInterval(() => {
    if (streams.size === 0) return
    let event: string
    try {
      event = `event: fleet\ndata: ${JSON.stringify(fleet())}\n\n`
    } catch (error) {
      logger.error('console-error', {path: '/api/fleet/events'}, (error as Error).message)
      return
    }

    for (const response of streams) response.write(event)
  }, options.streamIntervalMs ?? 2000)
  streamTimer.unref()

  const fleet = () => ({status: options.status(), series: history.series()})

  const action = (event: string, fields: Record<string, string | number | boolean | undefined>, caller: Caller, message?: string) =>
    logger.info(event, {...fields, by: caller.address, auth: caller.auth}, message)

  const studies = async (query: URLSearchParams): Promise<{studies: StudySummary[]; ledger: boolean}> => {
    if (options.ledger === undefined) return {studies: [], ledger: false}
    const store = options.ledger.store
    const studyUid = query.get('study')?.trim()
    const state = query.get('state')
    const limit = Math.min(1000, Math.max(1, Number(query.get('limit') ?? 100) || 100))
    if (studyUid) {
      const one = await store.summary(studyUid)
      return {studies: one === undefined ? [] : [one], ledger: true}
    }

    const accession = query.get('accession')?.trim()
    const since = query.get('since')
    // The ledger's query filters by state, patient and time; an accession number is matched here
    // over the newest studies (up to 5000 of them).
    const rows = await store.studies({
      state: state === 'receiving' || state === 'stable' ? state : undefined,
      patientId: query.get('patient')?.trim() || undefined,
      since: since === null || since === '' ? undefined : parseNumber('since', since),
      limit: accession ? 5000 : limit,
    })
    return {studies: accession ? rows.filter((s) => s.accessionNumber === accession).slice(0, limit) : rows, ledger: true}
  }

  /** After an upload with ?wait=: where the stored instances went, by then. */
  const awaitDelivery = async (results: UploadResult[], waitMs: number) => {
    const ledger = options.ledger
    if (ledger === undefined || waitMs <= 0) return
    const deadline = Date.now() + waitMs
    for (;;) {
      let pending = 0
      const byStudy = new Map<string, StudyDetail | undefined>()
      for (const result of results) {
        if (result.status !== 'stored' || result.studyInstanceUid === undefined || result.sopInstanceUid === undefined) continue
        if (!byStudy.has(result.studyInstanceUid)) byStudy.set(result.studyInstanceUid, await ledger.store.study(result.studyInstanceUid))
        const instance = byStudy.get(result.studyInstanceUid)?.instanceList.find((i) => i.sopInstanceUid === result.sopInstanceUid)
        result.delivery = instance?.status ?? 'queued'
        if (instance?.backend) result.backend = instance.backend
        if (result.delivery === 'queued') pending++
      }

      if (pending === 0 || Date.now() >= deadline) return
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  }

  const requireDeadLetters = (): DeadLetterActions => {
    if (options.deadLetters === undefined) throw new ApiError(409, 'no spool: the router runs in pass-through mode (spool.enabled false), so nothing goes to dead-letter', 'NO_SPOOL')
    return options.deadLetters
  }

  const bulk = async (request: http.IncomingMessage, caller: Caller, what: 'retry' | 'discard') => {
    const actions = requireDeadLetters()
    const filter = filterFromBody(await readJson(request))
    if (!filter.all && filter.reasonContains === undefined && filter.since === undefined && filter.studyInstanceUid === undefined) {
      throw new ApiError(400, `say which dead letters to ${what}: a filter (reasonContains, since, study) or "all": true`)
    }

    const matched = (await actions.list()).filter((letter) => matchesDeadLetter(letter, filter))
    const results: Array<{id: string; outcome: string}> = []
    for (const letter of matched) {
      if (what === 'retry') results.push({id: letter.id, outcome: (await actions.retry(letter.id)) ?? 'gone'})
      else results.push({id: letter.id, outcome: (await actions.discard(letter.id)) ? 'discarded' : 'gone'})
    }

    action(what === 'retry' ? 'dead-letters-retried' : 'dead-letters-discarded', {count: results.filter((r) => r.outcome !== 'gone').length, reasonContains: filter.reasonContains, since: filter.since, study: filter.studyInstanceUid, all: filter.all}, caller)
    return {matched: matched.length, results}
  }

  /** The API: a JSON value (status 200), or an ApiError. Actions are authorized before they get here. */
  const api = async (request: http.IncomingMessage, response: http.ServerResponse, pathname: string, query: URLSearchParams, caller: Caller | undefined): Promise<unknown> => {
    const method = request.method ?? 'GET'
    const route = `${method} ${pathname}`
    if (route === 'GET /api/fleet') return fleet()
    if (route === 'GET /api/fleet/events') {
      response.writeHead(200, {'content-type': 'text/event-stream', 'cache-control': 'no-store', connection: 'keep-alive'})
      response.write(`retry: 2000\nevent: fleet\ndata: ${JSON.stringify(fleet())}\n\n`)
      streams.add(response)
      request.on('close', () => streams.delete(response))
      return undefined
    }

    if (route === 'GET /api/session') return {authRequired: guard.authRequired, loggedIn: guard.hasSession(request), version: options.status().version}
    if (route === 'GET /api/studies') return studies(query)
    const study = /^\/api\/studies\/([0-9.]+)$/.exec(pathname)
    if (study !== null && method === 'GET') {
      const detailOf = await options.ledger?.store.study(study[1])
      if (detailOf === undefined) throw new ApiError(404, `study ${study[1]} is not in the ledger`, 'NOT_FOUND')
      return detailOf
    }

    if (route === 'GET /api/queue') {
      const limit = Math.min(5000, Math.max(1, Number(query.get('limit') ?? 500) || 500))
      const waiting = options.queue?.(limit) ?? {total: 0, entries: []}
      const status = options.status()
      return {spool: status.spool !== null, ...waiting, backends: status.backends.map((b) => ({name: b.name, healthy: b.healthy, healthReason: b.healthReason ?? null, inFlight: b.inFlight}))}
    }

    if (route === 'GET /api/dead-letters') {
      if (options.deadLetters === undefined) return {spool: false, total: 0, deadLetters: []}
      const filter = filterFromQuery(query)
      const all = await options.deadLetters.list()
      const matched = all.filter((letter) => matchesDeadLetter(letter, filter))
      const limit = Math.min(5000, Math.max(1, Number(query.get('limit') ?? 500) || 500))
      return {spool: true, total: all.length, matched: matched.length, deadLetters: matched.slice(0, limit).map(deadLetterView)}
    }

    const letter = /^\/api\/dead-letters\/([^/]+)(\/retry)?$/.exec(pathname)
    if (letter !== null && letter[1] !== 'retry' && letter[1] !== 'discard') {
      const id = decodeURIComponent(letter[1])
      const actions = requireDeadLetters()
      if (method === 'GET' && letter[2] === undefined) {
        const found = await actions.get(id)
        if (found === undefined) throw new ApiError(404, `no dead letter ${id}`, 'NOT_FOUND')
        return {...deadLetterView(found), details: found.details}
      }

      if (method === 'POST' && letter[2] === '/retry') {
        const before = await actions.get(id)
        const outcome = await actions.retry(id)
        if (outcome === undefined) throw new ApiError(404, `no dead letter ${id}`, 'NOT_FOUND')
        action('dead-letter-retried', {id, sop: before === undefined ? undefined : detail(before, 'sopInstanceUid'), outcome}, caller!)
        return {id, outcome}
      }

      if (method === 'DELETE' && letter[2] === undefined) {
        const before = await actions.get(id)
        if (!(await actions.discard(id))) throw new ApiError(404, `no dead letter ${id}`, 'NOT_FOUND')
        action('dead-letter-discarded', {id, sop: before === undefined ? undefined : detail(before, 'sopInstanceUid')}, caller!)
        return {id, outcome: 'discarded'}
      }
    }

    if (route === 'POST /api/dead-letters/retry') return bulk(request, caller!, 'retry')
    if (route === 'POST /api/dead-letters/discard') return bulk(request, caller!, 'discard')

    if (route === 'POST /api/upload') {
      const dir = path.join(options.scratchDir, `upload-${randomBytes(8).toString('hex')}`)
      const waitSeconds = Math.min(60, Math.max(0, Number(query.get('wait') ?? 0) || 0))
      try {
        const parts = await receiveMultipart(request, dir, config.status.maxUploadBytes)
        if (parts.length === 0) throw new ApiError(400, 'no file in the upload: send one or more files as multipart/form-data parts')
        const results = await ingestParts(parts, options.ingest, {remoteAddress: caller!.address, maxInstanceBytes: config.listen.maxInstanceBytes})
        await awaitDelivery(results, waitSeconds * 1000)
        const status = uploadHttpStatus(results)
        const count = (what: string) => results.filter((r) => r.status === what).length
        action('upload', {files: parts.length, stored: count('stored'), refused: count('refused'), invalid: count('invalid')}, caller!, parts.map((p) => p.name).join(', ').slice(0, 300))
        send(response, status, {results})
        return undefined
      } catch (error) {
        if (error instanceof UploadError) {
          logger.warn('upload-refused', {by: caller!.address, http: error.status}, error.message)
          // The client may still be sending: answer, then close the connection.
          send(response, error.status, {error: error.message, code: error.status === 413 ? 'TOO_LARGE' : 'BAD_UPLOAD'}, {connection: 'close'})
          return undefined
        }

        throw error
      } finally {
        await removeUpload(dir)
      }
    }

    if (route === 'POST /api/explain') {
      const dir = path.join(options.scratchDir, `explain-${randomBytes(8).toString('hex')}`)
      try {
        const parts = await receiveMultipart(request, dir, config.status.maxUploadBytes)
        if (parts.length !== 1) throw new ApiError(400, `send exactly one file to explain (got ${parts.length})`)
        try {
          return {...(await explainRoute(config, parts[0].path, {callingAeTitle: query.get('callingAeTitle') || undefined})), file: parts[0].name}
        } catch (error) {
          throw new ApiError(400, (error as Error).message.replaceAll(parts[0].path, parts[0].name), 'INVALID_DICOM')
        }
      } finally {
        await removeUpload(dir)
      }
    }

    if (route === 'POST /api/login') {
      const body = await readJson(request)
      const cookie = typeof body.token === 'string' ? guard.login(body.token) : undefined
      if (cookie === undefined) {
        logger.warn('console-login-failed', {by: request.socket.remoteAddress ?? 'unknown'}, guard.authRequired ? 'wrong token' : 'no status.token configured')
        throw new ApiError(guard.authRequired ? 401 : 400, guard.authRequired ? 'wrong token' : 'no status.token is configured: actions need no login on this router', 'UNAUTHORIZED')
      }

      logger.info('console-login', {by: request.socket.remoteAddress ?? 'unknown'})
      send(response, 200, {loggedIn: true}, {'set-cookie': cookie})
      return undefined
    }

    if (route === 'POST /api/logout') {
      send(response, 200, {loggedIn: false}, {'set-cookie': guard.logout(request)})
      return undefined
    }

    throw new ApiError(404, `no such API route: ${method} ${pathname}`, 'NOT_FOUND')
  }

  const handle: ConsoleHandler = (request, response) => {
    const url = new URL(request.url ?? '/', 'http://console')
    const {pathname} = url
    const method = request.method ?? 'GET'
    const isApi = pathname === '/api' || pathname.startsWith('/api/')
    const isPage = pathname === '/console' || pathname.startsWith('/console/')
    // A browser asking for the server's root gets the console; scripts (Accept: JSON or */*) keep /status there.
    const rootPage = pathname === '/' && method === 'GET' && (request.headers.accept ?? '').includes('text/html')
    if (!isApi && !isPage && !rootPage) return false

    const hostProblem = guard.hostProblem(request)
    if (hostProblem !== undefined) {
      send(response, hostProblem.status, {error: hostProblem.error, code: hostProblem.code})
      return true
    }

    if (rootPage || pathname === '/console') {
      response.writeHead(302, {location: '/console/'}).end()
      return true
    }

    if (isPage) {
      if (method !== 'GET' && method !== 'HEAD') {
        response.writeHead(405, {allow: 'GET'}).end()
        return true
      }

      void serveAsset(pathname.slice('/console/'.length), response).then((served) => {
        if (!served) response.writeHead(404, {'content-type': 'text/plain'}).end(`not found: ${pathname}\n`)
      })
      return true
    }

    let caller: Caller | undefined
    if (method !== 'GET' && method !== 'HEAD' && pathname !== '/api/login' && pathname !== '/api/logout') {
      const verdict = guard.authorize(request)
      if (isRefusal(verdict)) {
        logger.warn('console-refused', {method, path: pathname, by: request.socket.remoteAddress ?? 'unknown', http: verdict.status}, verdict.error)
        send(response, verdict.status, {error: verdict.error, code: verdict.code}, verdict.status === 401 ? {'www-authenticate': 'Bearer realm="ddr"'} : {})
        request.resume()
        return true
      }

      caller = verdict
    }

    void api(request, response, pathname, url.searchParams, caller).then(
      (value) => {
        if (value !== undefined) send(response, 200, value)
      },
      (error: Error & {status?: number; code?: string}) => {
        if (error instanceof ApiError) send(response, error.status, {error: error.message, code: error.code})
        else {
          logger.error('console-error', {method, path: pathname}, error.message)
          send(response, error instanceof DdrError && error.code === 'BACKEND_UNREACHABLE' ? 502 : 500, {error: error.message, code: error.code ?? 'INTERNAL'})
        }
      },
    )
    return true
  }

  return {
    handle,
    close() {
      clearInterval(streamTimer)
      history.close()
      for (const response of streams) response.end()
      streams.clear()
    },
  }
}

/**
 * Refuses a console that anyone on the network could act through: status.host not loopback and
 * no status.token. DdrError CONFIG_INVALID naming both ways out.
 */
export function checkConsoleExposure(config: Pick<DdrConfig, 'status'>): void {
  if (!config.status.console || isLoopbackHost(config.status.host) || config.status.token !== undefined) return
  throw new DdrError('CONFIG_INVALID', `status.host is ${config.status.host}, not loopback, and no status.token is set: anyone who reaches that address could upload, retry and discard through the console`, {
    hint: 'set status.token (or DDR_STATUS_TOKEN) to a secret of 16+ characters, or turn the console off with status.console false, or bind status.host to 127.0.0.1',
  })
}
