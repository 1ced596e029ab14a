/**
 * Retrieval across the fleet: which backend holds each instance of what was asked for (an
 * IMAGE-level C-FIND to every backend), and its bytes exactly as that backend stores them: from
 * Orthanc's REST API, or by C-GET from a backend's DICOM port (cget-fetcher.ts).
 */
import {createHash} from 'node:crypto'
import {readFile} from 'node:fs/promises'
import path from 'node:path'

import type {Got} from 'got'

import {folderLayout} from '../backends/folder-backend.js'

import type {BackendConfig, DicomBackendConfig} from '../config/schema.js'
import {Identifier, type QueryLevel} from '../dicom/identifier.js'
import {readTopLevelElements} from '../dicom/dataset-reader.js'
import {readMetaHeader} from '../dicom/part10.js'
import {Tag} from '../dicom/tags.js'
import {DdrError} from '../errors.js'
import {type OrthancClient, orthancClientFor} from '../orthanc/client.js'
import {CGetFetcher} from './cget-fetcher.js'
import {dicomwebClient} from './qido-source.js'
import {wadoInstance} from './wado.js'
import {Channel} from './channel.js'
import {type FleetQueryResult, queryFleet} from './find.js'
import type {FetchedInstance, LocatedInstance, QuerySource} from './types.js'

export type {FetchedInstance, LocatedInstance} from './types.js'

export interface Located {
  instances: LocatedInstance[]
  missing: FleetQueryResult['missing']
}

/** What a retrieval asks for: a level and the unique keys at that level and above. */
export interface RetrieveRequest {
  level: QueryLevel
  patientId?: string
  studyInstanceUids?: string[]
  seriesInstanceUids?: string[]
  sopInstanceUids?: string[]
}

/** Reads a C-MOVE/C-GET identifier: its level and unique keys. Throws DdrError USAGE when one is missing. */
export function retrieveRequestOf(identifier: Identifier): RetrieveRequest {
  const level = identifier.level()
  if (level === undefined) throw new DdrError('USAGE', `the retrieve identifier has no valid Query/Retrieve Level (got "${identifier.get(Tag.QueryRetrieveLevel) ?? ''}")`)
  const request: RetrieveRequest = {
    level,
    patientId: identifier.get(Tag.PatientID) || undefined,
    studyInstanceUids: identifier.list(Tag.StudyInstanceUID),
    seriesInstanceUids: identifier.list(Tag.SeriesInstanceUID),
    sopInstanceUids: identifier.list(Tag.SOPInstanceUID),
  }
  const needs: Record<QueryLevel, [string, unknown[] | string | undefined]> = {
    PATIENT: ['PatientID', request.patientId],
    STUDY: ['StudyInstanceUID', request.studyInstanceUids],
    SERIES: ['SeriesInstanceUID', request.seriesInstanceUids],
    IMAGE: ['SOPInstanceUID', request.sopInstanceUids],
  }
  const [name, value] = needs[level]
  if (value === undefined || value.length === 0) throw new DdrError('USAGE', `a ${level}-level retrieve needs ${name}`)
  return request
}

/** A query source that also asks for the SOP class of each match (it costs Orthanc 1.10 a read of each instance's stored JSON). */
function askingSopClass(source: QuerySource): QuerySource {
  return {name: source.name, find: (query, options) => source.find(query.clone().set(Tag.SOPClassUID, ''), options)}
}

/**
 * A query source that also learns the SOP classes of each match, for a backend fetched by C-GET
 * (its contexts are proposed per class). Asking SOPClassUID of each instance costs Orthanc 1.10 a
 * read of each instance's stored JSON (about 20 ms per 100); so, when the request names its
 * studies (or its patient), one STUDY-level query asks their SOP Classes in Study meanwhile, and
 * each match carries its study's classes in SOPClassesInStudy. A backend that leaves that key
 * empty for a study is asked the locate again, SOPClassUID per instance. `onStudyClasses` gets
 * the classes the STUDY-level answer named (none when it failed or named none) as soon as it is
 * in, usually well before the locate.
 */
function learningSopClasses(source: QuerySource, request: RetrieveRequest, onStudyClasses: (classes: string[]) => void): QuerySource | undefined {
  const studies = request.studyInstanceUids ?? []
  if (studies.length === 0 && (request.level !== 'PATIENT' || !request.patientId)) return undefined
  const studyQuery = Identifier.of([
    [Tag.QueryRetrieveLevel, 'STUDY'],
    [Tag.PatientID, request.patientId ?? ''],
    [Tag.StudyInstanceUID, studies.join('\\')],
    [Tag.SOPClassesInStudy, ''],
  ])
  return {
    name: source.name,
    async find(query, options) {
      const classes = new Map<string, string>()
      const learned = new Set<string>()
      const byStudy = source
        .find(studyQuery, {
          ...options,
          onMatch(match) {
            const study = match.get(Tag.StudyInstanceUID)
            const uids = match.list(Tag.SOPClassesInStudy).filter((uid) => uid !== '')
            if (study && uids.length > 0) classes.set(study, uids.join('\\'))
            for (const uid of uids) learned.add(uid)
          },
        })
        .catch(() => {})
        .then(() => onStudyClasses([...learned]))
      const matches: Identifier[] = []
      await Promise.all([source.find(query, {...options, onMatch: (match) => matches.push(match)}), byStudy])
      if (matches.some((match) => !match.get(Tag.SOPClassUID) && !classes.has(match.get(Tag.StudyInstanceUID) ?? ''))) {
        await askingSopClass(source).find(query, options)
        return
      }

      for (const match of matches) {
        const uids = classes.get(match.get(Tag.StudyInstanceUID) ?? '')
        if (uids !== undefined) match.set(Tag.SOPClassesInStudy, uids)
        options.onMatch(match)
      }
    },
  }
}

/**
 * Finds every instance the request covers on every backend; an instance on two backends is
 * fetched from the first that answered. The SOP classes are asked only of the backends for which
 * `sopClassFrom` says so (those fetched by C-GET); the others' fetched files say them.
 * `onSopClasses` is called once, as soon as each of those backends answered its STUDY-level
 * question, with the SOP classes each named (a C-MOVE opens its destination's association then).
 */
export async function locateInstances(
  request: RetrieveRequest,
  sources: readonly QuerySource[],
  options: {model: string; timeoutMs: number; signal?: AbortSignal; sopClassFrom?: (backend: string) => boolean; onSopClasses?: (classesByBackend: ReadonlyMap<string, readonly string[]>) => void},
): Promise<Located> {
  const query = Identifier.of([
    [Tag.QueryRetrieveLevel, 'IMAGE'],
    [Tag.PatientID, request.patientId ?? ''],
    [Tag.StudyInstanceUID, (request.studyInstanceUids ?? []).join('\\')],
    [Tag.SeriesInstanceUID, (request.seriesInstanceUids ?? []).join('\\')],
    [Tag.SOPInstanceUID, (request.sopInstanceUids ?? []).join('\\')],
  ])
  const learned = new Map<string, readonly string[]>()
  let waiting = 0
  const asked = sources.map((source) => {
    if (!options.sopClassFrom?.(source.name)) return source
    const learning = learningSopClasses(source, request, (classes) => {
      if (classes.length > 0) learned.set(source.name, classes)
      if (--waiting === 0) options.onSopClasses?.(learned)
    })
    if (learning === undefined) return askingSopClass(source)
    waiting++
    return learning
  })
  const result = await queryFleet(query, asked, options)
  const instances: LocatedInstance[] = []
  /** Per backend and series: how many instances it holds, and whether any of them is fetched from another backend. */
  const held = new Map<string, {count: number; shared: boolean}>()
  for (const match of result.matches) {
    const sopInstanceUid = match.identifier.get(Tag.SOPInstanceUID)
    if (!sopInstanceUid) continue
    const instance: LocatedInstance = {
      sopInstanceUid,
      seriesInstanceUid: match.identifier.get(Tag.SeriesInstanceUID) ?? '',
      studyInstanceUid: match.identifier.get(Tag.StudyInstanceUID) ?? '',
      patientId: match.identifier.get(Tag.PatientID) ?? '',
      backend: match.backends[0],
    }
    const sopClassUid = match.identifier.get(Tag.SOPClassUID)
    const studyClasses = match.identifier.list(Tag.SOPClassesInStudy)
    if (sopClassUid) instance.sopClassUid = sopClassUid
    else if (studyClasses.length > 0) instance.sopClassUids = studyClasses
    instances.push(instance)
    for (const [index, backend] of match.backends.entries()) {
      const key = seriesKey(backend, instance)
      const entry = held.get(key) ?? {count: 0, shared: false}
      entry.count++
      if (index > 0) entry.shared = true
      held.set(key, entry)
    }
  }

  // Above IMAGE level, a backend's whole series (as the locate found it) may be asked for as such.
  if (request.level !== 'IMAGE') {
    for (const instance of instances) {
      const entry = held.get(seriesKey(instance.backend, instance))!
      if (!entry.shared) instance.seriesCount = entry.count
    }
  }

  const order = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0)
  instances.sort((a, b) => order(a.studyInstanceUid, b.studyInstanceUid) || order(a.seriesInstanceUid, b.seriesInstanceUid) || order(a.sopInstanceUid, b.sopInstanceUid))
  return {instances, missing: result.missing}
}

function seriesKey(backend: string, instance: LocatedInstance): string {
  return `${backend}\u0000${instance.studyInstanceUid}\u0000${instance.seriesInstanceUid}`
}

/** One located instance, fetched or not (with why). */
export type FetchOutcome = {instance: LocatedInstance; fetched: FetchedInstance; why?: undefined} | {instance: LocatedInstance; fetched?: undefined; why: string}

/** Where a retrieval gets the instances it sends: each located instance exactly once, in the order they arrive. */
export interface InstanceSource {
  fetchAll(instances: readonly LocatedInstance[], options: {signal?: AbortSignal; ahead: number}): AsyncIterable<FetchOutcome>
}

/** How ddr fetches a backend's instances: Orthanc's REST API, C-GET from its DICOM port, a folder backend's files, WADO-RS, or not at all (with why). */
export type FetchMethod = {by: 'rest'} | {by: 'dimse'; restFallback: boolean} | {by: 'file'} | {by: 'wado'} | {by: 'none'; why: string}

/**
 * The fetch method of a backend: `retrieveTransport` when given; else C-GET from its DICOM port
 * (with REST as fallback when it has a url), except for an Orthanc that ddr stores to over REST
 * (`transport: "rest"`): Orthanc keeps an uploaded file as it came, and only REST gives it back so
 * (its DICOM layer writes datasets anew: explicit lengths). What Orthanc received by C-STORE it
 * stores as its DICOM layer wrote it, and C-GET gives back those very bytes.
 */
export function fetchMethodOf(backend: BackendConfig): FetchMethod {
  const type = backend.type ?? 'orthanc'
  if (type === 'orthanc' || type === 'dimse') {
    const hasRest = type === 'orthanc' && backend.url !== undefined
    const by = backend.retrieveTransport ?? (hasRest && backend.transport === 'rest' ? 'rest' : 'dimse')
    return by === 'rest' ? {by: 'rest'} : {by: 'dimse', restFallback: hasRest}
  }

  if (type === 'folder') return {by: 'file'}
  if (type === 'dicomweb') return {by: 'wado'}
  return {by: 'none', why: `instances of a ${type} backend are not fetched`}
}

/** After a C-GET that brought nothing, a backend with a REST fallback is fetched over REST for this long before C-GET is tried again. */
const CGET_RETRY_AFTER_MS = 5 * 60_000

export interface InstanceFetcherOptions {
  /** Fetching one instance (REST), connecting and each next PDU (C-GET) may take this long (ms). */
  timeoutMs: number
  /** Our AE title towards backends fetched by C-GET. */
  callingAeTitle: string
  /** A backend's C-GET did not bring these instances, and they are fetched over REST instead (for the log). */
  onFallback?: (backend: string, instances: number, why: string) => void
}

/**
 * Fetches instances' stored bytes from the backends of the config: REST (Orthanc's
 * /instances/{id}/file, several at once) or C-GET (one per series, cget-fetcher.ts), each backend
 * as fetchMethodOf says; a C-GET that fails falls back to REST where the backend has a url.
 */
export class InstanceFetcher implements InstanceSource {
  private readonly clients = new Map<string, OrthancClient>()
  private readonly webClients = new Map<string, Got>()
  /** Backends whose C-GET brought nothing, and until when they are fetched over REST instead. */
  private readonly cgetFailing = new Map<string, number>()

  constructor(private readonly backends: readonly BackendConfig[], private readonly options: InstanceFetcherOptions) {}

  /** How a backend's instances are fetched now: its fetchMethodOf, or REST for a while after its C-GET failed. */
  methodOf(backend: BackendConfig): FetchMethod {
    const method = fetchMethodOf(backend)
    if (method.by === 'dimse' && method.restFallback && (this.cgetFailing.get(backend.name) ?? 0) > Date.now()) return {by: 'rest'}
    return method
  }

  /** Whether a backend (by name) is fetched by C-GET now: the locate query then asks it for the SOP class. */
  readonly fetchesByCGet = (name: string): boolean => {
    const backend = this.backends.find((b) => b.name === name)
    return backend !== undefined && this.methodOf(backend).by === 'dimse'
  }

  /** One instance (a C-GET of it alone from a backend fetched by DIMSE). */
  async fetch(instance: LocatedInstance): Promise<FetchedInstance> {
    const backend = this.backendOf(instance)
    const method = this.methodOf(backend)
    if (method.by === 'none') throw new DdrError('NOT_IMPLEMENTED', `${backend.name}: ${method.why}`)
    if (method.by === 'rest') return this.fetchRest(backend, instance)
    if (method.by === 'file') return this.fetchFile(backend, instance)
    if (method.by === 'wado') return this.fetchWado(backend, instance)
    let fetched: FetchedInstance | undefined
    const missing = await new CGetFetcher(backend as DicomBackendConfig, this.options).retrieve([instance], {
      onArrival: async (_instance, arrived) => {
        fetched = arrived
      },
    })
    if (fetched !== undefined) return fetched
    const why = missing[0]?.why ?? `${backend.name} did not send ${instance.sopInstanceUid}`
    if (!method.restFallback) throw new DdrError('BACKEND_REFUSED', why)
    this.fellBack(backend.name, 1, why, true)
    return this.fetchRest(backend, instance)
  }

  private fellBack(backend: string, instances: number, why: string, nothingCame: boolean): void {
    if (nothingCame) this.cgetFailing.set(backend, Date.now() + CGET_RETRY_AFTER_MS)
    this.options.onFallback?.(backend, instances, why)
  }

  /**
   * Every instance, from each backend at once, as they arrive; at most `ahead` wait for the
   * consumer (a backend fetched by C-GET is then held at its next sub-operation). Stops fetching
   * when the consumer stops iterating or `signal` aborts.
   */
  async *fetchAll(instances: readonly LocatedInstance[], options: {signal?: AbortSignal; ahead: number}): AsyncGenerator<FetchOutcome> {
    const controller = new AbortController()
    const stop = () => controller.abort()
    options.signal?.addEventListener('abort', stop, {once: true})
    const channel = new Channel<FetchOutcome>(options.ahead)
    const byBackend = new Map<string, LocatedInstance[]>()
    for (const instance of instances) {
      const list = byBackend.get(instance.backend)
      if (list === undefined) byBackend.set(instance.backend, [instance])
      else list.push(instance)
    }

    const producers = Promise.all([...byBackend].map(([name, list]) => this.produce(name, list, channel, {signal: controller.signal, ahead: options.ahead})))
    void producers.finally(() => channel.end())
    try {
      yield* channel
    } finally {
      controller.abort()
      channel.cancel()
      options.signal?.removeEventListener('abort', stop)
      await producers
    }
  }

  /** One backend's share: pushes exactly one outcome per instance; never rejects. */
  private async produce(name: string, instances: readonly LocatedInstance[], channel: Channel<FetchOutcome>, options: {signal: AbortSignal; ahead: number}): Promise<void> {
    const backend = this.backends.find((b) => b.name === name)
    const method: FetchMethod = backend === undefined ? {by: 'none', why: `no backend named ${name} in the config`} : this.methodOf(backend)
    if (method.by === 'none') {
      for (const instance of instances) await channel.push({instance, why: `${name}: ${method.why}`})
      return
    }

    if (method.by !== 'dimse') {
      const fetchOne = {rest: this.fetchRest, file: this.fetchFile, wado: this.fetchWado}[method.by].bind(this, backend!)
      await this.produceEach(instances, fetchOne, channel, options)
      return
    }

    const missing = await new CGetFetcher(backend as DicomBackendConfig, this.options).retrieve(instances, {
      signal: options.signal,
      onArrival: (instance, fetched) => channel.push({instance, fetched}),
    })
    if (method.restFallback && !options.signal.aborted && missing.length > 0) {
      this.fellBack(name, missing.length, missing[0].why, missing.length === instances.length)
      const why = new Map(missing.map((m) => [m.instance.sopInstanceUid, m.why]))
      await this.produceEach(
        missing.map((m) => m.instance),
        (instance) => this.fetchRest(backend!, instance).catch((error: Error) => {
          throw new Error(`${why.get(instance.sopInstanceUid)}; then over REST: ${error.message}`)
        }),
        channel,
        options,
      )
      return
    }

    for (const {instance, why} of missing) await channel.push({instance, why})
  }

  /** One fetch per instance (REST, files), `ahead` at a time, pushed in order. */
  private async produceEach(instances: readonly LocatedInstance[], fetchOne: (instance: LocatedInstance) => Promise<FetchedInstance>, channel: Channel<FetchOutcome>, options: {signal: AbortSignal; ahead: number}): Promise<void> {
    const fetches: Array<Promise<FetchedInstance> | undefined> = []
    const start = (index: number) => {
      if (index >= instances.length || fetches[index] !== undefined) return
      const fetching = fetchOne(instances[index])
      fetching.catch(() => {})
      fetches[index] = fetching
    }

    for (const [index, instance] of instances.entries()) {
      if (options.signal.aborted) {
        await channel.push({instance, why: 'cancelled'})
        continue
      }

      for (let ahead = index; ahead < index + options.ahead; ahead++) start(ahead)
      try {
        const fetched = await fetches[index]!
        fetches[index] = undefined
        await channel.push({instance, fetched})
      } catch (error) {
        fetches[index] = undefined
        await channel.push({instance, why: (error as Error).message})
      }
    }
  }

  private backendOf(instance: LocatedInstance): BackendConfig {
    const backend = this.backends.find((b) => b.name === instance.backend)
    if (backend === undefined) throw new DdrError('USAGE', `no backend named ${instance.backend}`)
    return backend
  }

  /** A DICOMweb backend's copy of the instance by WADO-RS, as stored. */
  private async fetchWado(backend: BackendConfig, instance: LocatedInstance): Promise<FetchedInstance> {
    let web = this.webClients.get(backend.name)
    if (web === undefined) {
      web = dicomwebClient(backend, this.options.timeoutMs).client
      this.webClients.set(backend.name, web)
    }

    return storedFile(await wadoInstance(web, backend.name, instance), `${backend.name}'s copy of ${instance.sopInstanceUid} (WADO-RS)`)
  }

  /** A folder backend's file of the instance, where it wrote it (PatientID/Study/Series/SOP.dcm below its path). */
  private async fetchFile(backend: BackendConfig, instance: LocatedInstance): Promise<FetchedInstance> {
    const file = path.join(path.resolve(backend.path!), folderLayout(instance))
    const bytes = await readFile(file).catch((error: NodeJS.ErrnoException) => {
      throw new DdrError('BACKEND_REFUSED', error.code === 'ENOENT' ? `${backend.name} no longer holds ${instance.sopInstanceUid} (no ${file})` : `${backend.name}: cannot read ${file}: ${error.message}`)
    })
    return storedFile(bytes, `${backend.name}'s copy of ${instance.sopInstanceUid} (${file})`)
  }

  private async fetchRest(backend: BackendConfig, instance: LocatedInstance): Promise<FetchedInstance> {
    if ((backend.type ?? 'orthanc') !== 'orthanc' || backend.url === undefined) {
      throw new DdrError('NOT_IMPLEMENTED', `${backend.name}: instances are fetched over Orthanc's REST API, and this backend has no url`, {
        hint: `give backends[${backend.name}].url (the Orthanc REST API) so ddr can fetch its instances`,
      })
    }

    let client = this.clients.get(backend.name)
    if (client === undefined) {
      client = orthancClientFor(backend, {timeoutMs: this.options.timeoutMs})
      this.clients.set(backend.name, client)
    }

    // Orthanc names an instance by a hash of its four identifiers: one request instead of two.
    // A PatientID written differently (or none in the answer) falls back to a lookup by SOP UID.
    let file: Buffer | undefined
    if (instance.patientId !== '') file = await client.instanceFile(orthancInstanceId(instance)).catch(() => undefined)
    if (file === undefined) {
      const id = await client.lookupInstance(instance.sopInstanceUid)
      if (id === undefined) throw new DdrError('BACKEND_REFUSED', `${backend.name} no longer holds ${instance.sopInstanceUid}`)
      file = await client.instanceFile(id)
    }

    return storedFile(file, `${backend.name}'s copy of ${instance.sopInstanceUid}`)
  }
}

/** A stored Part 10 file as fetched: its transfer syntax and SOP class from the meta header (else the dataset). */
function storedFile(file: Buffer, source: string): FetchedInstance {
  const meta = readMetaHeader(file, {source})
  // The SOP class comes from the stored file (the locate query asks it only of backends fetched by C-GET).
  const sopClassUid = meta.mediaStorageSopClassUid ?? readTopLevelElements(file.subarray(meta.datasetOffset), meta.transferSyntaxUid, [Tag.SOPClassUID], {endOfData: true}).values.get(Tag.SOPClassUID)
  if (sopClassUid === undefined) throw new DdrError('INVALID_DICOM', `${source} names no SOP class`)
  return {file, transferSyntaxUid: meta.transferSyntaxUid, sopClassUid, dataset: file.subarray(meta.datasetOffset)}
}

/** Orthanc's id of an instance: SHA-1 of "PatientID|StudyUID|SeriesUID|SOPUID", in five groups of eight hex digits. */
export function orthancInstanceId(instance: Pick<LocatedInstance, 'patientId' | 'studyInstanceUid' | 'seriesInstanceUid' | 'sopInstanceUid'>): string {
  const hex = createHash('sha1').update(`${instance.patientId}|${instance.studyInstanceUid}|${instance.seriesInstanceUid}|${instance.sopInstanceUid}`).digest('hex')
  return hex.match(/.{8}/g)!.join('-')
}
