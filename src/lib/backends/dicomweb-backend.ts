import {randomBytes} from 'node:crypto'
import {Readable} from 'node:stream'

import got from 'got'

import type {BackendConfig} from '../config/schema.js'
import type {DimseResponse} from '../dimse/scu.js'
import {Status, formatStatus} from '../dimse/status.js'
import {DdrError} from '../errors.js'
import type {ReceivedInstance} from '../routing/instance.js'
import {type HttpAgents, backendHttpAgents, destroyHttpAgents} from '../security/https.js'
import {displayUrl} from '../security/secrets.js'
import type {Backend} from './backend.js'
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

function isFor(item: DicomJson, sopInstanceUid: string): boolean {
  const uid = item[REFERENCED_SOP_INSTANCE_UID]?.Value?.[0]
  return uid === undefined || uid === sopInstanceUid
}

function parseJson(text: string): DicomJson | undefined {
  try {
    const parsed = JSON.parse(text) as unknown
    return parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed) ? (parsed as DicomJson) : undefined
  } catch {
    return undefined
  }
}

/**
 * The DICOM status for a STOW-RS answer about one instance: a failed-SOP item for it gives its
 * FailureReason (A700 stays "out of resources", so the router retries); 409 or a 4xx without one
 * is a refusal (C000); 200 is success, 202 a warning (stored, with remarks).
 */
export function stowStatus(httpStatus: number, body: DicomJson | undefined, sopInstanceUid: string): DimseResponse {
  const failed = sequenceItems(body, FAILED_SOP_SEQUENCE).find((item) => isFor(item, sopInstanceUid))
  if (failed !== undefined) {
    const reason = firstNumber(failed, FAILURE_REASON) ?? Status.cannotUnderstand
    return {status: reason === 0 ? Status.cannotUnderstand : reason, errorComment: `STOW-RS HTTP ${httpStatus}, failure reason ${formatStatus(reason)}`}
  }

  if (httpStatus === 200) return {status: Status.success}
  if (httpStatus === 202) {
    const referenced = sequenceItems(body, REFERENCED_SOP_SEQUENCE).find((item) => isFor(item, sopInstanceUid))
    const warning = referenced === undefined ? undefined : firstNumber(referenced, WARNING_REASON)
    return {status: warning ?? Status.coercionOfDataElements, errorComment: 'STOW-RS HTTP 202 (stored with warnings)'}
  }

  return {status: Status.cannotUnderstand, errorComment: `STOW-RS refused: HTTP ${httpStatus}`}
}

/**
 * Stores instances with DICOMweb STOW-RS: one `POST <url>/studies` per instance, a
 * multipart/related body with a single application/dicom part holding the Part 10 bytes exactly
 * as received (streamed from disk for large instances). Network failures, 5xx, 401 and 403 throw
 * (the router retries elsewhere or later); other answers become DICOM statuses (see stowStatus).
 * Health is a QIDO-RS `GET <url>/studies?limit=1`.
 */
export class DicomwebBackend implements Backend {
  private readonly client
  private readonly agents: HttpAgents
  private readonly url: string

  constructor(readonly config: BackendConfig, private readonly timeoutMs = 60_000) {
    if (config.url === undefined) throw new DdrError('CONFIG_INVALID', `backend ${config.name} has type "dicomweb" but no url`)
    this.url = displayUrl(config.url)
    this.agents = backendHttpAgents(config)
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

  async store(instance: ReceivedInstance): Promise<DimseResponse> {
    const boundary = `ddr-${randomBytes(12).toString('hex')}`
    const head = Buffer.from(`--${boundary}\r\nContent-Type: application/dicom\r\nContent-Length: ${instance.metaHeader.length + instance.datasetLength}\r\n\r\n`)
    const tail = Buffer.from(`\r\n--${boundary}--\r\n`)
    const length = head.length + instance.metaHeader.length + instance.datasetLength + tail.length
    const body = Readable.from(
      (async function* () {
        yield head
        yield* part10Stream(instance)
        yield tail
      })(),
    )
    let response
    try {
      response = await this.client.post('studies', {
        body,
        headers: {'content-type': `multipart/related; type="application/dicom"; boundary=${boundary}`, 'content-length': String(length), accept: 'application/dicom+json'},
      })
    } catch (error) {
      throw backendRequestError(this.config, `STOW-RS POST ${this.url}/studies`, error)
    }

    const status = response.statusCode
    if (status >= 500 || status === 401 || status === 403 || status === 407 || status === 408 || status === 429) {
      throw new DdrError('BACKEND_UNREACHABLE', `STOW-RS POST ${this.url}/studies answered HTTP ${status}`)
    }

    return stowStatus(status, parseJson(response.body), instance.sopInstanceUid)
  }

  async echo(timeoutMs: number): Promise<number> {
    const started = performance.now()
    try {
      await this.client.get('studies', {searchParams: {limit: 1}, headers: {accept: 'application/dicom+json'}, timeout: {request: timeoutMs}, throwHttpErrors: true})
    } catch (error) {
      throw backendRequestError(this.config, `QIDO-RS GET ${this.url}/studies?limit=1`, error)
    }

    return performance.now() - started
  }

  async close(): Promise<void> {
    destroyHttpAgents(this.agents)
  }
}
