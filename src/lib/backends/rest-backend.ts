import {createReadStream} from 'node:fs'
import {Readable} from 'node:stream'

import got, {HTTPError, TimeoutError} from 'got'

import type {BackendConfig} from '../config/schema.js'
import {STORE_TIMEOUT_DEFAULT_MS} from '../config/validate.js'
import {DdrError} from '../errors.js'
import type {DimseResponse} from '../dimse/scu.js'
import {Status} from '../dimse/status.js'
import {type HttpAgents, backendHttpAgents, backendRequestHint, describeRequestFailure, destroyHttpAgents} from '../security/https.js'
import {redactUrl} from '../output/redact.js'
import type {ReceivedInstance} from '../dicom/received-instance.js'
import type {Backend} from './backend.js'

/** Part 10 bytes of an instance, streamed: meta header, then the dataset exactly as received. */
export function part10Stream(instance: ReceivedInstance): Readable {
  if (instance.path !== undefined) return createReadStream(instance.path)
  const source = instance.dataset
  if ('buffer' in source) return Readable.from([instance.metaHeader, source.buffer])
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
  if (error instanceof HTTPError) return new DdrError('BACKEND_UNREACHABLE', `${what} failed: HTTP ${error.response.statusCode}`, {cause: error})
  const failure = describeRequestFailure(error)
  return new DdrError('BACKEND_UNREACHABLE', `${what} failed: ${failure.reason}`, {cause: error, hint: backendRequestHint(failure, config.name)})
}

/** True for a request that was under way when it failed: timed out waiting, or the connection was reset. */
function brokeOffMidRequest(error: unknown): boolean {
  const code = (error as {code?: string}).code
  if (error instanceof TimeoutError) return error.event === 'request' || error.event === 'response' || error.event === 'send'
  return code === 'ECONNRESET' || code === 'EPIPE' || code === 'ERR_STREAM_PREMATURE_CLOSE'
}

/** Forwards instances with Orthanc's REST API (POST /instances), for backends configured with transport "rest". */
export class OrthancRestBackend implements Backend {
  private readonly client
  private readonly agents: HttpAgents
  private readonly url: string

  constructor(readonly config: BackendConfig, private readonly timeoutMs = config.storeTimeoutMs ?? STORE_TIMEOUT_DEFAULT_MS) {
    if (config.url === undefined) throw new DdrError('CONFIG_INVALID', `backend ${config.name} has transport "rest" but no url`)
    this.url = redactUrl(config.url, {credentials: 'drop'})
    this.agents = backendHttpAgents(config)
    this.client = got.extend({
      prefixUrl: config.url,
      username: config.username,
      password: config.password,
      timeout: {request: timeoutMs},
      retry: {limit: 0},
      agent: this.agents,
    })
  }

  async store(instance: ReceivedInstance): Promise<DimseResponse> {
    try {
      const answer = await this.client
        .post('instances', {body: part10Stream(instance), headers: {'content-type': 'application/dicom', 'content-length': String(instance.metaHeader.length + instance.datasetLength)}})
        .json<{Status?: string}>()
      if (answer.Status === 'Success' || answer.Status === 'AlreadyStored') return {status: Status.success}
      return {status: Status.processingFailure, errorComment: `Orthanc answered ${answer.Status ?? 'no status'}`}
    } catch (error) {
      if (error instanceof HTTPError && error.response.statusCode >= 400 && error.response.statusCode < 500 && error.response.statusCode !== 401 && error.response.statusCode !== 403) {
        return {status: Status.cannotUnderstand, errorComment: `Orthanc refused: HTTP ${error.response.statusCode}`}
      }

      const failure = backendRequestError(this.config, `POST ${this.url}/instances`, error)
      // The request reached the server and broke off there: this instance's failure, not an unreachable backend.
      if (brokeOffMidRequest(error)) throw new DdrError(failure.code, failure.message, {cause: error, hint: failure.hint, duringRequest: true})
      throw failure
    }
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

  async close(): Promise<void> {
    destroyHttpAgents(this.agents)
  }
}
