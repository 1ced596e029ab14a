/**
 * An instance from a DICOMweb backend: WADO-RS (PS3.18 10.4), the instance resource asked for
 * `application/dicom` in the syntax it is stored in (`transfer-syntax=*`), so the Part 10 file
 * comes back as stored.
 */
import type {Got} from 'got'

import {DdrError} from '../errors.js'
import type {LocatedInstance} from './types.js'

/** The one part a multipart/related answer carries (or the whole body when the server answered application/dicom). */
export function firstMultipartPart(body: Buffer, contentType: string): Buffer {
  if (!/^multipart\//i.test(contentType)) return body
  const boundary = /boundary="?([^";]+)"?/i.exec(contentType)?.[1]
  if (boundary === undefined) throw new Error(`a multipart answer without a boundary (${contentType})`)
  const opening = body.indexOf(`--${boundary}`)
  const headersEnd = opening < 0 ? -1 : body.indexOf('\r\n\r\n', opening)
  if (headersEnd < 0) throw new Error('a multipart answer without a part')
  const start = headersEnd + 4
  const end = body.indexOf(`\r\n--${boundary}`, start)
  if (end < 0) throw new Error('a multipart answer whose part does not end')
  return body.subarray(start, end)
}

/** GET <url>/studies/{study}/series/{series}/instances/{sop}: the instance's Part 10 file as the backend stores it. */
export async function wadoInstance(client: Got, backendName: string, instance: LocatedInstance): Promise<Buffer> {
  const resource = `studies/${encodeURIComponent(instance.studyInstanceUid)}/series/${encodeURIComponent(instance.seriesInstanceUid)}/instances/${encodeURIComponent(instance.sopInstanceUid)}`
  const response = await client.get(resource, {headers: {accept: 'multipart/related; type="application/dicom"; transfer-syntax=*'}, responseType: 'buffer'}).catch((error: Error) => {
    throw new DdrError('BACKEND_UNREACHABLE', `WADO-RS ${backendName} ${resource}: ${error.message}`, {cause: error})
  })
  if (response.statusCode === 404) throw new DdrError('BACKEND_REFUSED', `${backendName} no longer holds ${instance.sopInstanceUid} (WADO-RS answered 404)`)
  if (response.statusCode !== 200) throw new DdrError('BACKEND_REFUSED', `WADO-RS ${backendName} ${resource} answered HTTP ${response.statusCode}`)
  try {
    return firstMultipartPart(response.body, String(response.headers['content-type'] ?? ''))
  } catch (error) {
    throw new DdrError('BACKEND_REFUSED', `WADO-RS ${backendName} ${resource}: ${(error as Error).message}`)
  }
}
