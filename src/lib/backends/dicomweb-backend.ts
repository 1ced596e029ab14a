import {randomBytes} from 'node:crypto'
import {Readable} from 'node:stream'

import got, {HTTPError, type Response} from 'got'

import {type BackendConfig, DICOMWEB_BATCH_DEFAULTS} from '../config/schema.js'
import type {DimseResponse} from '../dimse/scu.js'
import {Status, formatStatus} from '../dimse/status.js'
import {DdrError} from '../errors.js'
import type {ReceivedInstance} from '../dicom/received-instance.js'
import {type HttpAgents, backendHttpAgents, destroyHttpAgents} from '../security/https.js'
import {redactUrl} from '../output/redact.js'
import type {Backend, BackendCheck, CheckOptions} from './backend.js'
import {emptyCheck, roundMs} from './check.js'
import {backendRequestError, part10Stream} from './rest-backend.js'

/** STOW-RS response attributes (PS3.18 10.5.3), as DICOM JSON keys. */
const FAILED_SOP_SEQUENCE = '00081198'
const REFERENCED_SOP_SEQUENCE = '00081199'
const FAILURE_REASON = '00081197'
const WARNING_REASON = '00081196'
const REFERENCED_SOP_INSTANCE_UID = '00081155'

type DicomJson = Record<string, {vr?: string; Value?: unknown[]} | undefined>

function sequenceItems(body: DicomJson | undefined, key: string): DicomJson[] {
  const items = body?.[key]?.Value
  return Array.isArray(items) ? (items.filter((i) => i !== null && typeof i === 'object') as DicomJson[]) : []
}

function firstNumber(item: DicomJson, key: string): number | undefined {
  const value = item[key]?.Value?.[0]
  return typeof value === 'number' ? value : undefined
}

function referencedUid(item: DicomJson): string | undefined {
  const uid = item[REFERENCED_SOP_INSTANCE_UID]?.Value?.[0]
  return typeof uid === 'string' ? uid : undefined
}

function parseJson(text: string): DicomJson | undefined {
  try {
    const parsed = JSON.parse(text) as unknown
    return parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed) ? (parsed as DicomJson) : undefined
  } catch {
    return undefined
  }
}

function failure(httpStatus: number, item: DicomJson): DimseResponse {
  const reason = firstNumber(item, FAILURE_REASON) ?? Status.cannotUnderstand
  // A failure reason of 0 would read as "stored": a failed item is never a success.
  return {status: reason === 0 ? Status.cannotUnderstand : reason, errorComment: `STOW-RS HTTP ${httpStatus}, failure reason ${formatStatus(reason)}`}
}

/**
 * What a STOW-RS answer (PS3.18 10.5.3) says about each instance of the request, by SOP Instance
 * UID; `undefined` for an instance the answer leaves open, which can only happen when the request
 * held several (the caller then sends that one again on its own).
 *
 * - A FailedSOPSequence (0008,1198) item naming the instance: not stored, its FailureReason
 *   (0008,1197); an A7xx reason stays "out of resources", so the router retries it.
 * - A ReferencedSOPSequence (0008,1199) item naming it: stored, whatever the HTTP status (Orthanc
 *   answers 400 when one part of a request is not DICOM, and lists the others it stored); its
 *   WarningReason (0008,1196) if any, 0xB000 when the answer is 202 without failures.
 * - Not named: HTTP 200 without failed items means every instance was stored. Otherwise, for a
 *   request of one instance: an unnamed failed item is its failure, 200 is success, 202 a warning
 *   (stored with remarks), 409 and other 4xx a refusal (0xC000); for a request of several, unknown.
 *
 * An instance is never reported stored unless the answer says so (200, or a referenced item).
 */
export function stowOutcomes(httpStatus: number, body: DicomJson | undefined, sopInstanceUids: readonly string[]): Array<DimseResponse | undefined> {
  const failed = sequenceItems(body, FAILED_SOP_SEQUENCE)
  const referenced = sequenceItems(body, REFERENCED_SOP_SEQUENCE)
  const failedByUid = new Map<string, DicomJson>()
  for (const item of failed) {
    const uid = referencedUid(item)
    if (uid !== undefined && !failedByUid.has(uid)) failedByUid.set(uid, item)
  }

  const referencedByUid = new Map<string, DicomJson>()
  for (const item of referenced) {
    const uid = referencedUid(item)
    if (uid !== undefined && !referencedByUid.has(uid)) referencedByUid.set(uid, item)
  }

  const anonymousFailure = failed.find((item) => referencedUid(item) === undefined)
  const single = sopInstanceUids.length === 1
  return sopInstanceUids.map((uid): DimseResponse | undefined => {
    const failedItem = failedByUid.get(uid) ?? (single ? anonymousFailure : undefined)
    if (failedItem !== undefined) return failure(httpStatus, failedItem)
    const stored = referencedByUid.get(uid)
    if (stored !== undefined) {
      const warning = firstNumber(stored, WARNING_REASON)
      if (warning !== undefined && warning !== 0) return {status: warning, errorComment: `STOW-RS HTTP ${httpStatus}, warning reason ${formatStatus(warning)}`}
      return httpStatus === 202 && failed.length === 0 ? {status: Status.coercionOfDataElements, errorComment: 'STOW-RS HTTP 202 (stored with warnings)'} : {status: Status.success}
    }

    if (httpStatus === 200 && failed.length === 0) return {status: Status.success}
    if (!single) return undefined
    if (httpStatus === 200) return {status: Status.success}
    if (httpStatus === 202) {
      const warning = referenced.length === 1 ? firstNumber(referenced[0], WARNING_REASON) : undefined
      return {status: warning || Status.coercionOfDataElements, errorComment: 'STOW-RS HTTP 202 (stored with warnings)'}
    }

    return {status: Status.cannotUnderstand, errorComment: `STOW-RS refused: HTTP ${httpStatus}`}
  })
}

/** HTTP answers that say nothing about the instances: the server or our credentials are the problem, so try again later. */
function isRetryableHttp(status: number): boolean {
  return status >= 500 || status === 401 || status === 403 || status === 407 || status === 408 || status === 429
}

/** One store() call waiting for a request. */
interface Waiting {
  instance: ReceivedInstance
  /** Part 10 bytes: meta header and dataset. */
  bytes: number
  /** Send in a request of its own: its batch's answer did not say what became of it. */
  alone: boolean
  resolve(response: DimseResponse): void
  reject(error: Error): void
}

/** What the backend has sent so far (logs, tests, benchmarks). */
export interface StowStats {
  requests: number
  instances: number
  /** The most instances one request carried. */
  largestBatch: number
  /** Instances sent again on their own because their batch's answer left them open. */
  resentAlone: number
}

/**
 * Stores instances with DICOMweb STOW-RS `POST <url>/studies`: multipart/related bodies of
 * application/dicom parts, each the Part 10 bytes exactly as received (streamed from disk for
 * large instances).
 *
 * Batching: store() calls wait in a queue; whenever one of the `maxAssociations` request slots is
 * free, the waiting instances go together in one request, up to `batchMaxInstances` instances and
 * `batchMaxBytes` bytes (an instance larger than that goes alone), never two with the same SOP
 * Instance UID. Instances that arrive while every slot is busy share the next request, so under
 * load requests fill up by themselves, and a lone instance waits for nothing (`batchWindowMs` adds
 * a wait for company). Each caller gets its own outcome from the answer (see stowOutcomes); an
 * instance the answer leaves open is sent again alone. Network failures, timeouts, 5xx, 401, 403,
 * 407, 408 and 429 reject every instance of the request (the router retries elsewhere or later).
 * Health is a QIDO-RS `GET <url>/studies?limit=1`.
 */
export class DicomwebBackend implements Backend {
  private readonly client
  private readonly agents: HttpAgents
  /** The url for messages: credentials in it are never shown. */
  private readonly shownUrl: string
  private readonly maxInstances: number
  private readonly maxBytes: number
  private readonly windowMs: number
  private queue: Waiting[] = []
  private requests = 0
  private scheduled?: {now: boolean; cancel(): void}
  private closed = false
  readonly stats: StowStats = {requests: 0, instances: 0, largestBatch: 0, resentAlone: 0}

  constructor(readonly config: BackendConfig, private readonly timeoutMs = 60_000) {
    if (config.url === undefined) throw new DdrError('CONFIG_INVALID', `backend ${config.name} has type "dicomweb" but no url`)
    this.shownUrl = redactUrl(config.url, {credentials: 'drop'})
    this.agents = backendHttpAgents(config)
    this.maxInstances = config.batchMaxInstances ?? DICOMWEB_BATCH_DEFAULTS.maxInstances
    this.maxBytes = config.batchMaxBytes ?? DICOMWEB_BATCH_DEFAULTS.maxBytes
    this.windowMs = config.batchWindowMs ?? DICOMWEB_BATCH_DEFAULTS.windowMs
    this.client = got.extend({
      prefixUrl: config.url,
      username: config.username,
      password: config.password,
      headers: config.token === undefined ? {} : {authorization: `Bearer ${config.token}`},
      timeout: {request: timeoutMs},
      retry: {limit: 0},
      throwHttpErrors: false,
      agent: this.agents,
    })
  }

  /** Enough store() calls to fill every request slot with a full batch. */
  get storeSlots(): number {
    return this.config.maxAssociations * this.maxInstances
  }

  store(instance: ReceivedInstance): Promise<DimseResponse> {
    if (this.closed) return Promise.reject(new DdrError('BACKEND_UNREACHABLE', `backend ${this.config.name} is closed`))
    return new Promise((resolve, reject) => {
      this.queue.push({instance, bytes: instance.metaHeader.length + instance.datasetLength, alone: false, resolve, reject})
      this.schedule()
    })
  }

  async echo(timeoutMs: number): Promise<number> {
    const started = performance.now()
    try {
      await this.client.get('studies', {searchParams: {limit: 1}, headers: {accept: 'application/dicom+json'}, timeout: {request: timeoutMs}, throwHttpErrors: true})
    } catch (error) {
      throw backendRequestError(this.config, `QIDO-RS GET ${this.shownUrl}/studies?limit=1`, error)
    }

    return performance.now() - started
  }

  /**
   * QIDO-RS `GET <url>/studies?limit=1` with the backend's credentials (unless passive; in a
   * survey twice, the second timed on the connection the first opened). Any HTTP answer counts as
   * an answer: the server is there, even when it refuses us or fails.
   */
  async check(options: CheckOptions): Promise<BackendCheck> {
    const check = emptyCheck()
    if (options.passive) return check
    try {
      if (options.survey) await this.echo(options.timeoutMs)
      check.echoMs = roundMs(await this.echo(options.timeoutMs))
      check.answered = true
    } catch (error) {
      if ((error as Error).cause instanceof HTTPError) check.answered = true
      check.problems.push(`QIDO-RS: ${(error as Error).message}`)
    }

    return check
  }

  /** Instances still waiting for a request are rejected (the router keeps them in its spool). */
  async close(): Promise<void> {
    this.closed = true
    destroyHttpAgents(this.agents)
    this.scheduled?.cancel()
    this.scheduled = undefined
    const error = new DdrError('BACKEND_UNREACHABLE', `backend ${this.config.name} closed before the instance was sent`)
    for (const waiting of this.queue.splice(0)) waiting.reject(error)
  }

  /**
   * Flushes on the next turn of the event loop, so every store() call made in this one (a
   * forwarder pump starts several at once) can share a request; or after batchWindowMs.
   */
  private schedule(): void {
    if (this.closed || this.queue.length === 0) return
    const now = this.windowMs === 0 || this.queue.length >= this.maxInstances
    if (this.scheduled !== undefined) {
      if (this.scheduled.now || !now) return
      this.scheduled.cancel()
    }

    if (now) {
      const immediate = setImmediate(() => this.flush())
      this.scheduled = {now, cancel: () => clearImmediate(immediate)}
    } else {
      const timer = setTimeout(() => this.flush(), this.windowMs)
      this.scheduled = {now, cancel: () => clearTimeout(timer)}
    }
  }

  private flush(): void {
    this.scheduled = undefined
    while (this.requests < this.config.maxAssociations && this.queue.length > 0) {
      const batch = this.take()
      this.requests++
      void this.send(batch).finally(() => {
        this.requests--
        this.schedule()
      })
    }
  }

  /** The next request's instances, oldest first; the others keep their place. */
  private take(): Waiting[] {
    const first = this.queue[0]
    if (first.alone || this.maxInstances === 1 || first.bytes >= this.maxBytes) return [this.queue.shift()!]
    const batch: Waiting[] = []
    const rest: Waiting[] = []
    const uids = new Set<string>()
    let bytes = 0
    for (const waiting of this.queue) {
      const fits = batch.length < this.maxInstances && !waiting.alone && !uids.has(waiting.instance.sopInstanceUid) && (batch.length === 0 || bytes + waiting.bytes <= this.maxBytes)
      if (!fits) {
        rest.push(waiting)
        continue
      }

      batch.push(waiting)
      uids.add(waiting.instance.sopInstanceUid)
      bytes += waiting.bytes
    }

    this.queue = rest
    return batch
  }

  private async send(batch: Waiting[]): Promise<void> {
    this.stats.requests++
    this.stats.instances += batch.length
    this.stats.largestBatch = Math.max(this.stats.largestBatch, batch.length)
    let response: Response<string>
    try {
      response = await this.post(batch)
    } catch (error) {
      const failed = backendRequestError(this.config, `STOW-RS POST ${this.shownUrl}/studies`, error)
      for (const waiting of batch) waiting.reject(failed)
      return
    }

    const status = response.statusCode
    if (isRetryableHttp(status)) {
      const hint = status === 401 || status === 403 ? `check the credentials of backend ${this.config.name} (username and password, DDR_BACKEND_<NAME>_USERNAME / _PASSWORD, or token)` : undefined
      const failed = new DdrError('BACKEND_UNREACHABLE', `STOW-RS POST ${this.shownUrl}/studies answered HTTP ${status}`, {hint})
      for (const waiting of batch) waiting.reject(failed)
      return
    }

    const outcomes = stowOutcomes(status, parseJson(response.body), batch.map((w) => w.instance.sopInstanceUid))
    const open: Waiting[] = []
    for (const [index, waiting] of batch.entries()) {
      const outcome = outcomes[index]
      if (outcome === undefined) open.push(waiting)
      else waiting.resolve(outcome)
    }

    if (open.length > 0) {
      // Asked again one by one: a single instance's answer is never ambiguous.
      this.stats.resentAlone += open.length
      for (const waiting of open) waiting.alone = true
      this.queue.unshift(...open)
    }
  }

  private post(batch: Waiting[]): Promise<Response<string>> {
    const boundary = `ddr-${randomBytes(12).toString('hex')}`
    // RFC 2046: the CRLF before each delimiter belongs to the delimiter, not to the part before it.
    const heads = batch.map((waiting, index) => Buffer.from(`${index === 0 ? '' : '\r\n'}--${boundary}\r\nContent-Type: application/dicom\r\nContent-Length: ${waiting.bytes}\r\n\r\n`))
    const tail = Buffer.from(`\r\n--${boundary}--\r\n`)
    const length = heads.reduce((sum, head) => sum + head.length, 0) + batch.reduce((sum, waiting) => sum + waiting.bytes, 0) + tail.length
    const body = Readable.from(
      (async function* () {
        for (const [index, waiting] of batch.entries()) {
          yield heads[index]
          yield* part10Stream(waiting.instance)
        }

        yield tail
      })(),
    )
    return this.client.post('studies', {
      body,
      headers: {'content-type': `multipart/related; type="application/dicom"; boundary=${boundary}`, 'content-length': String(length), accept: 'application/dicom+json'},
    })
  }
}
