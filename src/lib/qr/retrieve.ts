/**
 * Retrieval across the fleet: which backend holds each instance of what was asked for (an
 * IMAGE-level C-FIND to every backend), and its bytes exactly as that backend stores them.
 */
import {createHash} from 'node:crypto'

import type {BackendConfig} from '../config/schema.js'
import {Identifier, type QueryLevel} from '../dicom/identifier.js'
import {readTopLevelElements} from '../dicom/dataset-reader.js'
import {readMetaHeader} from '../dicom/part10.js'
import {Tag} from '../dicom/tags.js'
import {DdrError} from '../errors.js'
import {type OrthancClient, orthancClientFor} from '../orthanc/client.js'
import {type FleetQueryResult, queryFleet} from './find.js'
import type {QuerySource} from './sources.js'

/** One instance and the backend it will be fetched from. */
export interface LocatedInstance {
  sopInstanceUid: string
  seriesInstanceUid: string
  studyInstanceUid: string
  patientId: string
  backend: string
}

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

/** Finds every instance the request covers on every backend; an instance on two backends is fetched from the first that answered. */
export async function locateInstances(request: RetrieveRequest, sources: readonly QuerySource[], options: {model: string; timeoutMs: number; signal?: AbortSignal}): Promise<Located> {
  const query = Identifier.of([
    [Tag.QueryRetrieveLevel, 'IMAGE'],
    [Tag.PatientID, request.patientId ?? ''],
    [Tag.StudyInstanceUID, (request.studyInstanceUids ?? []).join('\\')],
    [Tag.SeriesInstanceUID, (request.seriesInstanceUids ?? []).join('\\')],
    [Tag.SOPInstanceUID, (request.sopInstanceUids ?? []).join('\\')],
    // Not SOPClassUID: Orthanc 1.10 answers it only by reading every file; the fetched file's meta header has it.
  ])
  const result = await queryFleet(query, sources, options)
  const instances: LocatedInstance[] = []
  for (const match of result.matches) {
    const sopInstanceUid = match.identifier.get(Tag.SOPInstanceUID)
    if (!sopInstanceUid) continue
    instances.push({
      sopInstanceUid,
      seriesInstanceUid: match.identifier.get(Tag.SeriesInstanceUID) ?? '',
      studyInstanceUid: match.identifier.get(Tag.StudyInstanceUID) ?? '',
      patientId: match.identifier.get(Tag.PatientID) ?? '',
      backend: match.backends[0],
    })
  }

  instances.sort((a, b) => a.studyInstanceUid.localeCompare(b.studyInstanceUid) || a.seriesInstanceUid.localeCompare(b.seriesInstanceUid) || a.sopInstanceUid.localeCompare(b.sopInstanceUid))
  return {instances, missing: result.missing}
}

/** One instance's stored bytes: the Part 10 file, and where its dataset starts. */
export interface FetchedInstance {
  file: Buffer
  transferSyntaxUid: string
  sopClassUid: string
  /** The dataset bytes (a view into `file`), exactly as stored. */
  dataset: Buffer
}

/** Fetches instances' stored bytes from the backends of the config. */
export class InstanceFetcher {
  private readonly clients = new Map<string, OrthancClient>()

  constructor(private readonly backends: readonly BackendConfig[], private readonly options: {timeoutMs: number}) {}

  async fetch(instance: LocatedInstance): Promise<FetchedInstance> {
    const backend = this.backends.find((b) => b.name === instance.backend)
    if (backend === undefined) throw new DdrError('USAGE', `no backend named ${instance.backend}`)
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

    const meta = readMetaHeader(file, {source: `${backend.name}'s copy of ${instance.sopInstanceUid}`})
    // The SOP class comes from the stored file (the locate query does not ask it: see locateInstances).
    const sopClassUid = meta.mediaStorageSopClassUid ?? readTopLevelElements(file.subarray(meta.datasetOffset), meta.transferSyntaxUid, [Tag.SOPClassUID], {endOfData: true}).values.get(Tag.SOPClassUID)
    if (sopClassUid === undefined) throw new DdrError('INVALID_DICOM', `${backend.name}'s copy of ${instance.sopInstanceUid} names no SOP class`)
    return {file, transferSyntaxUid: meta.transferSyntaxUid, sopClassUid, dataset: file.subarray(meta.datasetOffset)}
  }
}

/** Orthanc's id of an instance: SHA-1 of "PatientID|StudyUID|SeriesUID|SOPUID", in five groups of eight hex digits. */
export function orthancInstanceId(instance: Pick<LocatedInstance, 'patientId' | 'studyInstanceUid' | 'seriesInstanceUid' | 'sopInstanceUid'>): string {
  const hex = createHash('sha1').update(`${instance.patientId}|${instance.studyInstanceUid}|${instance.seriesInstanceUid}|${instance.sopInstanceUid}`).digest('hex')
  return hex.match(/.{8}/g)!.join('-')
}
