import {readdir} from 'node:fs/promises'
import path from 'node:path'

import got from 'got'

import {safePathComponent} from '../backends/folder-backend.js'
import type {BackendConfig} from '../config/schema.js'
import {Identifier} from '../dicom/identifier.js'
import {Tag} from '../dicom/tags.js'
import {QueryModel} from '../dimse/scp.js'
import {DdrError, isDdrError} from '../errors.js'
import {orthancClientFor} from '../orthanc/client.js'
import {DimseQuerySource} from '../qr/sources.js'
import {redactUrl} from '../output/redact.js'
import {backendHttpAgents, destroyHttpAgents} from '../security/https.js'

/** SopInstanceUID (0008,0018) in DICOM JSON (PS3.18 F.2). */
const SOP_INSTANCE_UID_JSON = '00080018'

/**
 * The SOP Instance UIDs a backend holds for a study, asked the way the backend answers best:
 * Orthanc's REST API (one tools/find), DICOMweb QIDO-RS (`/studies/UID/instances`), a folder
 * backend's files (PatientID/StudyUID/SeriesUID/SOP.dcm); a DICOM backend without a REST API
 * (a plain SCP, an Orthanc without url) by an IMAGE-level C-FIND, and when it does not answer
 * C-FIND (refuses the association's query context or the query): undefined, unverifiable. Throws
 * DdrError BACKEND_UNREACHABLE when the backend does not answer at all.
 */
export async function studyHoldings(backend: BackendConfig, studyInstanceUid: string, patientId: string | null, options: {timeoutMs?: number; callingAeTitle?: string} = {}): Promise<Set<string> | undefined> {
  const timeoutMs = options.timeoutMs ?? 30_000
  const type = backend.type ?? 'orthanc'
  if (type === 'orthanc' && backend.url !== undefined) {
    const client = orthancClientFor(backend, {timeoutMs})
    try {
      return new Set(await client.studyInstanceUids(studyInstanceUid))
    } finally {
      client.close()
    }
  }

  if (type === 'dicomweb' && backend.url !== undefined) return qidoInstances(backend, backend.url, studyInstanceUid, timeoutMs)
  if (type === 'folder' && backend.path !== undefined) {
    const studyDir = path.join(path.resolve(backend.path), safePathComponent(patientId ?? undefined), safePathComponent(studyInstanceUid))
    const held = new Set<string>()
    const series = await readdir(studyDir, {withFileTypes: true}).catch(() => [])
    for (const entry of series) {
      if (!entry.isDirectory()) continue
      for (const file of await readdir(path.join(studyDir, entry.name))) if (file.endsWith('.dcm') && !file.startsWith('.')) held.add(file.slice(0, -4))
    }

    return held
  }

  if (backend.aeTitle !== undefined) return cFindInstances(backend as Extract<BackendConfig, {aeTitle: string}>, studyInstanceUid, options.callingAeTitle ?? 'DDR', timeoutMs)
  return undefined
}

/** The SOP Instance UIDs of a study by C-FIND; undefined when the SCP does not answer queries. */
async function cFindInstances(backend: Extract<BackendConfig, {aeTitle: string}>, studyInstanceUid: string, callingAeTitle: string, timeoutMs: number): Promise<Set<string> | undefined> {
  const held = new Set<string>()
  const query = Identifier.of([
    [Tag.QueryRetrieveLevel, 'IMAGE'],
    [Tag.StudyInstanceUID, studyInstanceUid],
    [Tag.SeriesInstanceUID, ''],
    [Tag.SOPInstanceUID, ''],
  ])
  try {
    await new DimseQuerySource(backend, {callingAeTitle, timeoutMs}).find(query, {
      model: QueryModel.studyRootFind,
      onMatch: (match) => {
        const uid = match.get(Tag.SOPInstanceUID)
        if (uid) held.add(uid)
      },
    })
  } catch (error) {
    // It answered, but not to C-FIND: the study cannot be verified there (not an outage).
    if (isDdrError(error, 'BACKEND_REFUSED') || isDdrError(error, 'ASSOCIATION_REJECTED')) return undefined
    throw error
  }

  return held
}

async function qidoInstances(backend: BackendConfig, url: string, studyInstanceUid: string, timeoutMs: number): Promise<Set<string>> {
  const agents = backendHttpAgents(backend)
  try {
    const response = await got(`${url.replace(/\/+$/, '')}/studies/${encodeURIComponent(studyInstanceUid)}/instances`, {
      username: backend.username,
      password: backend.password,
      headers: {accept: 'application/dicom+json', ...(backend.token === undefined ? {} : {authorization: `Bearer ${backend.token}`})},
      timeout: {request: timeoutMs},
      retry: {limit: 0},
      throwHttpErrors: false,
      agent: agents,
    })
    if (response.statusCode === 204 || response.statusCode === 404) return new Set()
    if (response.statusCode !== 200) throw new DdrError('BACKEND_UNREACHABLE', `QIDO-RS ${redactUrl(url, {credentials: 'drop'})}/studies/${studyInstanceUid}/instances answered HTTP ${response.statusCode}`)
    const body = JSON.parse(response.body) as Array<Record<string, {Value?: string[]}>>
    return new Set(body.map((item) => item[SOP_INSTANCE_UID_JSON]?.Value?.[0]).filter((uid): uid is string => uid !== undefined))
  } catch (error) {
    if (error instanceof DdrError) throw error
    throw new DdrError('BACKEND_UNREACHABLE', `QIDO-RS ${redactUrl(url, {credentials: 'drop'})}: ${(error as Error).message}`, {cause: error})
  } finally {
    destroyHttpAgents(agents)
  }
}
