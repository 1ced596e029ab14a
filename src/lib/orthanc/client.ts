import got, {type Got, HTTPError, type Method} from 'got'

import type {BackendConfig} from '../config/schema.js'
import type {ClientTlsFiles} from '../dimse/tls.js'
import {DdrError} from '../errors.js'
import {type HttpAgents, backendRequestHint, createHttpAgents, describeRequestFailure, destroyHttpAgents} from '../security/https.js'
import {redactUrl} from '../output/redact.js'

export interface OrthancClientOptions {
  /** Base URL of the Orthanc REST API, e.g. http://127.0.0.1:8042 (a trailing slash is ignored). */
  url: string
  username?: string
  password?: string
  /** Per-request timeout (default 30 s). */
  timeoutMs?: number
  /** Trust for an https:// URL (PEM files); absent: Node's built-in CAs. */
  https?: ClientTlsFiles
  /** How errors name the PEM fields, e.g. "backends.orthanc1.https". */
  httpsField?: string
  /** The configured backend this client is for: hints then name its https settings. */
  backendName?: string
}

/** GET /system, the fields ddr reads. */
export interface OrthancSystem {
  Name: string
  Version: string
  ApiVersion: number
  DicomAet: string
  DicomPort: number
  HttpPort: number
  [key: string]: unknown
}

/** GET /statistics. Orthanc sends the byte sizes as strings (they may exceed 2^53). */
export interface OrthancStatistics {
  CountPatients: number
  CountStudies: number
  CountSeries: number
  CountInstances: number
  TotalDiskSize: string
  TotalDiskSizeMB: number
  TotalUncompressedSize: string
  TotalUncompressedSizeMB: number
  [key: string]: unknown
}

/** What POST /instances answered. `status` is "Success" or "AlreadyStored" (Orthanc keeps the first copy). */
export interface UploadResult {
  id: string
  status: string
  parentPatient?: string
  parentStudy?: string
  parentSeries?: string
}

/** GET /studies/{id}. */
export interface OrthancStudy {
  ID: string
  ParentPatient: string
  Series: string[]
  MainDicomTags: Record<string, string>
  PatientMainDicomTags?: Record<string, string>
  [key: string]: unknown
}

/** GET /series/{id} (and the items of GET /studies/{id}/series). */
export interface OrthancSeries {
  ID: string
  ParentStudy: string
  Instances: string[]
  MainDicomTags: Record<string, string>
  [key: string]: unknown
}

/** GET /instances/{id}. */
export interface OrthancInstance {
  ID: string
  ParentSeries: string
  MainDicomTags: Record<string, string>
  FileSize?: number
  [key: string]: unknown
}

export interface PageOptions {
  /** Index of the first item (Orthanc's `since`). */
  since?: number
  limit?: number
}

/** Query for POST /tools/find: DICOM keyword → value, wildcards and ranges as Orthanc accepts them. */
export type FindQuery = Record<string, string>

/**
 * A small client for the Orthanc REST API. Every failure becomes a DdrError:
 * BACKEND_UNREACHABLE (no connection, timeout) or BACKEND_REFUSED (Orthanc answered with an error status),
 * with a message naming the URL and the request. Connections are kept alive; call close() when done.
 */
export class OrthancClient {
  readonly url: string
  private readonly http: Got
  private readonly agents: HttpAgents
  private readonly backendName?: string

  constructor(options: OrthancClientOptions) {
    this.url = redactUrl(options.url, {credentials: 'drop'})
    this.agents = createHttpAgents({https: options.https, field: options.httpsField, maxSockets: 16})
    this.backendName = options.backendName

    const parsed = new URL(options.url)
    // Credentials embedded in the URL are moved to the options so they never reach a message.
    const username = options.username ?? (parsed.username ? decodeURIComponent(parsed.username) : undefined)
    const password = options.password ?? (parsed.password ? decodeURIComponent(parsed.password) : undefined)
    this.http = got.extend({
      prefixUrl: this.url,
      ...(username === undefined ? {} : {username}),
      ...(password === undefined ? {} : {password}),
      timeout: {request: options.timeoutMs ?? 30_000},
      retry: {limit: 0},
      agent: this.agents,
    })
  }

  /** GET /system: name, version, AE title and ports. */
  system(): Promise<OrthancSystem> {
    return this.json<OrthancSystem>('GET', 'system')
  }

  /** GET /statistics: instance/study counts and disk usage. */
  statistics(): Promise<OrthancStatistics> {
    return this.json<OrthancStatistics>('GET', 'statistics')
  }

  /** The Orthanc id of the instance with this SOPInstanceUID, or undefined when Orthanc does not have it. */
  async lookupInstance(sopInstanceUid: string): Promise<string | undefined> {
    const matches = await this.json<Array<{ID: string; Type: string}>>('POST', 'tools/lookup', {body: sopInstanceUid, headers: {'content-type': 'text/plain'}})
    return matches.find((match) => match.Type === 'Instance')?.ID
  }

  /** The stored Part 10 file of an instance, byte for byte. */
  async instanceFile(id: string): Promise<Buffer> {
    return this.request('GET', `instances/${encodeURIComponent(id)}/file`)
  }

  /** POST /instances with a Part 10 file. */
  async uploadInstance(bytes: Buffer): Promise<UploadResult> {
    const answer = await this.json<{ID: string; Status: string; ParentPatient?: string; ParentStudy?: string; ParentSeries?: string}>('POST', 'instances', {
      body: bytes,
      headers: {'content-type': 'application/dicom'},
    })
    return {id: answer.ID, status: answer.Status, parentPatient: answer.ParentPatient, parentStudy: answer.ParentStudy, parentSeries: answer.ParentSeries}
  }

  /** Orthanc ids of the stored instances (all of them, or one page). */
  listInstances(page: PageOptions = {}): Promise<string[]> {
    return this.json<string[]>('GET', `instances${pageQuery(page)}`)
  }

  /** Orthanc ids of the stored studies. */
  studies(page: PageOptions = {}): Promise<string[]> {
    return this.json<string[]>('GET', `studies${pageQuery(page)}`)
  }

  /** Orthanc ids of the stored patients. */
  patients(page: PageOptions = {}): Promise<string[]> {
    return this.json<string[]>('GET', `patients${pageQuery(page)}`)
  }

  /** GET /studies/{id}: main tags, series. */
  study(id: string): Promise<OrthancStudy> {
    return this.json<OrthancStudy>('GET', `studies/${encodeURIComponent(id)}`)
  }

  /** GET /studies/{id}/series: the study's series, each with its main tags and instance ids. */
  studySeries(id: string): Promise<OrthancSeries[]> {
    return this.json<OrthancSeries[]>('GET', `studies/${encodeURIComponent(id)}/series`)
  }

  /** GET /series/{id}: main tags, parent study, instance ids. */
  series(id: string): Promise<OrthancSeries> {
    return this.json<OrthancSeries>('GET', `series/${encodeURIComponent(id)}`)
  }

  /** GET /instances/{id}: main tags and parent series. */
  instance(id: string): Promise<OrthancInstance> {
    return this.json<OrthancInstance>('GET', `instances/${encodeURIComponent(id)}`)
  }

  /** Orthanc ids of the studies matching a query, e.g. {StudyInstanceUID: '1.2.3'} or {PatientID: 'P*'}. */
  findStudies(query: FindQuery, options: {limit?: number} = {}): Promise<string[]> {
    const body: Record<string, unknown> = {Level: 'Study', Query: query}
    if (options.limit !== undefined) body.Limit = options.limit
    return this.json<string[]>('POST', 'tools/find', {json: body})
  }

  /** The SOP Instance UIDs Orthanc holds for a study (one request, whatever the study's size). */
  async studyInstanceUids(studyInstanceUid: string): Promise<string[]> {
    const found = await this.json<Array<{MainDicomTags?: {SOPInstanceUID?: string}}>>('POST', 'tools/find', {json: {Level: 'Instance', Query: {StudyInstanceUID: studyInstanceUid}, Expand: true}})
    return found.map((instance) => instance.MainDicomTags?.SOPInstanceUID).filter((uid): uid is string => uid !== undefined)
  }

  /** Deletes a patient with all its studies. */
  async deletePatient(id: string): Promise<void> {
    await this.request('DELETE', `patients/${encodeURIComponent(id)}`)
  }

  /** Deletes a study with all its series and instances. */
  async deleteStudy(id: string): Promise<void> {
    await this.request('DELETE', `studies/${encodeURIComponent(id)}`)
  }

  /**
   * Deletes many resources (patients, studies, series or instances, mixed) in one request:
   * POST /tools/bulk-delete (Orthanc >= 1.9.4). Ids Orthanc does not know are ignored.
   * Older Orthancs answer 404 (BACKEND_REFUSED): delete one resource at a time there.
   */
  async bulkDelete(ids: string[]): Promise<void> {
    if (ids.length === 0) return
    await this.request('POST', 'tools/bulk-delete', {json: {Resources: ids}})
  }

  /** Deletes one instance. */
  async deleteInstance(id: string): Promise<void> {
    await this.request('DELETE', `instances/${encodeURIComponent(id)}`)
  }

  /** Closes the kept-alive connections. */
  close(): void {
    destroyHttpAgents(this.agents)
  }

  private async json<T>(method: Method, path: string, options: {body?: string | Buffer; json?: unknown; headers?: Record<string, string>} = {}): Promise<T> {
    const body = await this.request(method, path, options)
    try {
      return JSON.parse(body.toString('utf8')) as T
    } catch (error) {
      throw new DdrError('BACKEND_REFUSED', `${method} ${this.url}/${path}: the answer is not JSON (is this an Orthanc?)`, {cause: error})
    }
  }

  private async request(
    method: Method,
    path: string,
    options: {body?: string | Buffer; json?: unknown; headers?: Record<string, string>} = {},
  ): Promise<Buffer> {
    const where = `${method} ${this.url}/${path}`
    try {
      const response = await this.http(path, {
        method,
        body: options.body,
        json: options.json,
        headers: options.headers,
        responseType: 'buffer',
      })
      return response.body
    } catch (error) {
      if (error instanceof HTTPError) {
        const status = error.response.statusCode
        const detail = orthancErrorDetail(error.response.body)
        const hint =
          status === 401 || status === 403
            ? 'check the backend username and password (DDR_BACKEND_<NAME>_USERNAME / DDR_BACKEND_<NAME>_PASSWORD)'
            : status === 404
              ? 'the resource does not exist on this Orthanc'
              : undefined
        const unauthorized = (status === 401 || status === 403) && !detail ? ' (not authorized)' : ''
        throw new DdrError('BACKEND_REFUSED', `${where} failed: HTTP ${status}${unauthorized}${detail ? ` (${detail})` : ''}`, {cause: error, hint})
      }

      const failure = describeRequestFailure(error)
      throw new DdrError('BACKEND_UNREACHABLE', `${where} failed: ${failure.reason}`, {
        cause: error,
        hint:
          (this.backendName === undefined ? undefined : backendRequestHint(failure, this.backendName)) ??
          (failure.tls === undefined ? 'is Orthanc running at that address? ("ddr stack status" shows the local stack)' : 'check the URL, its scheme (https:// or http://) and the CA that signs the server certificate'),
      })
    }
  }
}

/** A client for a configured backend's REST API: its URL, credentials and HTTPS trust. */
export function orthancClientFor(backend: BackendConfig, options: {timeoutMs?: number} = {}): OrthancClient {
  if (backend.url === undefined) throw new DdrError('CONFIG_INVALID', `backend ${backend.name} has no url (its REST API)`, {hint: 'add "url" to it in the config'})
  return new OrthancClient({
    url: backend.url,
    username: backend.username,
    password: backend.password,
    timeoutMs: options.timeoutMs,
    https: backend.https,
    httpsField: `backends.${backend.name}.https`,
    backendName: backend.name,
  })
}

const MAX_PAGE = 2_147_483_647

function pageQuery(page: PageOptions): string {
  if (page.since === undefined && page.limit === undefined) return ''
  // Orthanc wants both or neither.
  return `?since=${page.since ?? 0}&limit=${page.limit ?? MAX_PAGE}`
}

/** Orthanc explains errors in a JSON body ({Message, Details}); keep it short. */
export function orthancErrorDetail(body: unknown): string | undefined {
  const text = Buffer.isBuffer(body) ? body.toString('utf8') : typeof body === 'string' ? body : undefined
  if (!text) return undefined
  try {
    const parsed = JSON.parse(text) as {Message?: string; Details?: string}
    const parts = [parsed.Message, parsed.Details].filter((part) => typeof part === 'string' && part !== '')
    return parts.length > 0 ? parts.join(': ').slice(0, 200) : undefined
  } catch {
    return text.slice(0, 200)
  }
}
