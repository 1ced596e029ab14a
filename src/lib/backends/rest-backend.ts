import {createReadStream} from 'node:fs'
import {Readable} from 'node:stream'

import got, {HTTPError, TimeoutError} from 'got'

import type {BackendConfig} from '../config/schema.js'
import {credentialVariables} from '../config/env.js'
import {STORE_TIMEOUT_DEFAULT_MS} from '../config/validate.js'
import {DdrError} from '../errors.js'
import type {DimseResponse} from '../dimse/scu.js'
import {Status} from '../dimse/status.js'
import {type HttpAgents, backendRequestHint, createHttpAgents, describeRequestFailure, destroyHttpAgents} from '../security/https.js'
import {redactUrl} from '../output/redact.js'
import {type ReceivedInstance, datasetBuffers} from '../dicom/received-instance.js'
import {type OrthancClient, orthancClientFor, orthancErrorDetail} from '../orthanc/client.js'
import type {Backend, BackendCheck, CheckOptions} from './backend.js'
import {askOrthanc, emptyCheck, roundMs} from './check.js'

/** Part 10 bytes of an instance, streamed: meta header, then the dataset exactly as received. */
export function part10Stream(instance: ReceivedInstance): Readable {
  if (instance.path !== undefined) return createReadStream(instance.path)
  const source = instance.dataset
  const inMemory = datasetBuffers(source)
  if (inMemory !== undefined) return Readable.from([instance.metaHeader, ...inMemory])
  if (!('path' in source)) throw new Error('unreachable: a dataset in memory was streamed above')
  return Readable.from(
    (async function* () {
      yield instance.metaHeader
      yield* createReadStream(source.path, {start: source.offset, end: source.offset + source.length - 1})
    })(),
  )
}

/**
 * A BACKEND_UNREACHABLE error for a request to a backend's URL that got no HTTP answer (or an
 * error status): the URL without credentials, and for TLS refusals the reason and what to set.
 */
export function backendRequestError(config: BackendConfig, what: string, error: unknown): DdrError {
  if (error instanceof HTTPError) {
    const status = error.response.statusCode
    // The router retries these and marks the backend down (the instance is not at fault); the hint is for the operator.
    if (status === 401 || status === 403) {
      return new DdrError('BACKEND_UNREACHABLE', `${what} failed: HTTP ${status} (not authorized)`, {cause: error, hint: `check the username and password of backend ${config.name} (${credentialVariables(config.name)})`})
    }

    return new DdrError('BACKEND_UNREACHABLE', `${what} failed: HTTP ${status}`, {cause: error})
  }

  const failure = describeRequestFailure(error)
  return new DdrError('BACKEND_UNREACHABLE', `${what} failed: ${failure.reason}`, {cause: error, hint: backendRequestHint(failure, config.name)})
}

/** True for a request that was under way when it failed: timed out waiting, or the connection was reset. */
function brokeOffMidRequest(error: unknown): boolean {
  const code = (error as {code?: string}).code
  if (error instanceof TimeoutError) return error.event === 'request' || error.event === 'response' || error.event === 'send'
  return code === 'ECONNRESET' || code === 'EPIPE' || code === 'ERR_STREAM_PREMATURE_CLOSE'
}

/**
 * What Orthanc answered to one POST /instances: its Status on HTTP 200, or the HTTP error status
 * and Orthanc's message.
 */
export type OrthancUploadAnswer = {httpStatus: 200; orthancStatus?: string} | {httpStatus: number; detail?: string; error: HTTPError}

/** Whether Orthanc's Status means it holds the instance ("AlreadyStored": it kept its first copy). */
export function orthancStored(answer: OrthancUploadAnswer): boolean {
  return !('error' in answer) && (answer.orthancStatus === 'Success' || answer.orthancStatus === 'AlreadyStored')
}

export interface OrthancRestOptions {
  /** Per upload (default: the config's storeTimeoutMs). */
  timeoutMs?: number
  /** Connections at once (default: no limit). */
  maxSockets?: number
  /** How errors name the `https` PEM fields (default "backends.<name>.https"; `ddr send --rest URL` says "https"). */
  httpsField?: string
}

/**
 * Stores instances with Orthanc's REST API (POST /instances): the router's backends configured
 * with transport "rest", and `ddr send --rest`.
 */
export class OrthancRestBackend implements Backend {
  private readonly client
  private readonly agents: HttpAgents
  private readonly url: string
  /** Orthanc's REST API for /system and /statistics, opened at the first check. */
  private statisticsClient?: OrthancClient

  constructor(readonly config: BackendConfig, timeoutOrOptions: number | OrthancRestOptions = {}) {
    const options = typeof timeoutOrOptions === 'number' ? {timeoutMs: timeoutOrOptions} : timeoutOrOptions
    if (config.url === undefined) throw new DdrError('CONFIG_INVALID', `backend ${config.name} has transport "rest" but no url`)
    this.url = redactUrl(config.url, {credentials: 'drop'})
    this.agents = createHttpAgents({https: config.https, field: options.httpsField ?? `backends.${config.name}.https`, maxSockets: options.maxSockets})
    this.client = got.extend({
      prefixUrl: config.url,
      username: config.username,
      password: config.password,
      timeout: {request: options.timeoutMs ?? config.storeTimeoutMs ?? STORE_TIMEOUT_DEFAULT_MS},
      retry: {limit: 0},
      agent: this.agents,
    })
  }

  /**
   * Posts one instance, its Part 10 bytes as they are, and resolves with what Orthanc answered,
   * HTTP error statuses included. Throws a DdrError (BACKEND_UNREACHABLE, naming the URL and, for
   * TLS, the reason) when no answer came; marked duringRequest when the request broke off midway.
   */
  async upload(instance: ReceivedInstance): Promise<OrthancUploadAnswer> {
    try {
      const answer = await this.client
        .post('instances', {body: part10Stream(instance), headers: {'content-type': 'application/dicom', 'content-length': String(instance.metaHeader.length + instance.datasetLength)}})
        .json<{Status?: string}>()
      return {httpStatus: 200, orthancStatus: answer.Status}
    } catch (error) {
      if (error instanceof HTTPError) return {httpStatus: error.response.statusCode, detail: orthancErrorDetail(error.response.body), error}
      const failure = backendRequestError(this.config, `POST ${this.url}/instances`, error)
      // The request reached the server and broke off there: this instance's failure, not an unreachable backend.
      if (brokeOffMidRequest(error)) throw new DdrError(failure.code, failure.message, {cause: error, hint: failure.hint, duringRequest: true})
      throw failure
    }
  }

  async store(instance: ReceivedInstance): Promise<DimseResponse> {
    const answer = await this.upload(instance)
    if (!('error' in answer)) {
      if (orthancStored(answer)) return {status: Status.success}
      return {status: Status.processingFailure, errorComment: `Orthanc answered ${answer.orthancStatus ?? 'no status'}`}
    }

    const status = answer.httpStatus
    if (status >= 400 && status < 500 && status !== 401 && status !== 403) return {status: Status.cannotUnderstand, errorComment: `Orthanc refused: HTTP ${status}`}
    // Credentials and server errors say nothing about the instance: the router tries later or elsewhere.
    throw backendRequestError(this.config, `POST ${this.url}/instances`, answer.error)
  }

  async echo(timeoutMs: number): Promise<number> {
    const started = performance.now()
    try {
      await this.client.get('system', {timeout: {request: timeoutMs}}).json()
    } catch (error) {
      throw backendRequestError(this.config, `GET ${this.url}/system`, error)
    }

    return performance.now() - started
  }

  /** GET /system (its round trip is the echo; left out when passive, unless in a survey), then a timed GET /statistics. */
  async check(options: CheckOptions): Promise<BackendCheck> {
    const check = emptyCheck()
    this.statisticsClient ??= orthancClientFor(this.config, {timeoutMs: options.timeoutMs})
    const systemMs = await askOrthanc(this.statisticsClient, check, {system: options.survey === true || !options.passive})
    if (systemMs !== undefined) check.echoMs = roundMs(systemMs)
    return check
  }

  async close(): Promise<void> {
    this.statisticsClient?.close()
    destroyHttpAgents(this.agents)
  }
}
