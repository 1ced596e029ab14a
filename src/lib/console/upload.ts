import {createWriteStream} from 'node:fs'
import {mkdir, readFile, rm, stat} from 'node:fs/promises'
import type http from 'node:http'
import path from 'node:path'
import {pipeline} from 'node:stream/promises'

import {Busboy, type BusboyHeaders} from '@fastify/busboy'

import {readPart10Elements} from '../dicom/dataset-reader.js'
import {Tag} from '../dicom/tags.js'
import {DdrError} from '../errors.js'
import {ZipArchive, looksLikeZip} from '../send/zip.js'

/** What the router's intake says of one instance (RouterService.ingest's answer). */
export interface IngestAnswer {
  sopInstanceUid?: string
  outcome: 'stored' | 'refused' | 'invalid'
  status?: number
  reason?: string
}

/** RouterService.ingest, as the console calls it. */
export type Ingest = (file: Buffer, from: {callingAeTitle: string; remoteAddress?: string; source: string}) => Promise<IngestAnswer>

/** One line of POST /api/upload's answer. */
export interface UploadResult {
  /** The uploaded file's name; for a ZIP entry `archive.zip!path/in/archive.dcm`. */
  file: string
  sopInstanceUid?: string
  studyInstanceUid?: string
  status: 'stored' | 'refused' | 'invalid'
  /** The backend that stored it (when known: pass-through, or `?wait=` in store-and-forward). */
  backend?: string
  /** After `?wait=`: what became of a stored instance by then. */
  delivery?: 'queued' | 'stored' | 'dead-letter'
  reason?: string
}

/** A file part of the multipart body, written to disk as it arrived. */
export interface UploadedPart {
  name: string
  path: string
  bytes: number
}

/** The calling AE title that uploaded instances carry in logs and the ledger. */
export const UPLOAD_AE_TITLE = 'HTTP-UPLOAD'
/** The SOP class of a DICOMDIR (a CD's index): not an instance to store. */
const MEDIA_STORAGE_DIRECTORY = '1.2.840.10008.1.3.10'

/** An upload the server cannot take: the HTTP status to answer and why. */
export class UploadError extends Error {
  override readonly name = 'UploadError'

  constructor(readonly status: 400 | 413 | 415, message: string) {
    super(message)
  }
}

/**
 * Reads a multipart/form-data body into files under `dir` (never into memory: an upload can be a
 * CD's worth of images), at most `maxBytes` in all. Names from the client are only labels; files
 * on disk are numbered. Rejects with UploadError 413 past the limit, 400 for a malformed body
 * (naming the part it was in), 415 when the body is not multipart.
 */
export async function receiveMultipart(request: http.IncomingMessage, dir: string, maxBytes: number): Promise<UploadedPart[]> {
  const type = request.headers['content-type'] ?? ''
  if (!/^multipart\/form-data\b/i.test(type)) throw new UploadError(415, `expected multipart/form-data (one or more files), got ${type || 'no Content-Type'}`)
  const declared = Number(request.headers['content-length'])
  if (Number.isFinite(declared) && declared > maxBytes) throw new UploadError(413, `upload of ${declared} bytes is larger than status.maxUploadBytes (${maxBytes})`)
  await mkdir(dir, {recursive: true})

  let parser
  try {
    parser = Busboy({headers: request.headers as BusboyHeaders, limits: {fileSize: maxBytes, fieldSize: 64 * 1024, parts: 100_000}})
  } catch (error) {
    throw new UploadError(400, `malformed multipart request: ${(error as Error).message}`)
  }

  const parts: UploadedPart[] = []
  const writes: Array<Promise<void>> = []
  let total = 0
  let current = '(before the first part)'
  let failure: UploadError | undefined
  const fail = (error: UploadError) => {
    failure ??= error
    request.unpipe(parser)
    request.resume()
    parser.destroy()
  }

  parser.on('file', (_field, stream, filename) => {
    const name = filename || `part-${parts.length + 1}`
    current = name
    const part: UploadedPart = {name, path: path.join(dir, `${String(parts.length + 1).padStart(6, '0')}.part`), bytes: 0}
    parts.push(part)
    stream.on('data', (chunk: Buffer) => {
      part.bytes += chunk.length
      total += chunk.length
      if (total > maxBytes) fail(new UploadError(413, `upload is larger than status.maxUploadBytes (${maxBytes}): stopped in ${name}`))
    })
    stream.on('limit', () => fail(new UploadError(413, `${name} is larger than status.maxUploadBytes (${maxBytes})`)))
    writes.push(pipeline(stream, createWriteStream(part.path)).catch((error: Error) => fail(new UploadError(400, `${name}: the upload broke off: ${error.message}`))))
  })

  await new Promise<void>((resolve) => {
    parser.on('finish', () => resolve())
    parser.on('error', (error: unknown) => {
      fail(new UploadError(400, `malformed multipart body in ${current}: ${(error as Error).message}`))
      resolve()
    })
    parser.on('close', () => resolve())
    request.on('aborted', () => {
      fail(new UploadError(400, `the client broke off the upload in ${current}`))
      resolve()
    })
    request.pipe(parser)
  })
  await Promise.all(writes)
  if (failure !== undefined) throw failure
  return parts
}

/** The names an instance is known by before the intake sees it (and whether it is a DICOMDIR). */
function peek(file: Buffer): {studyInstanceUid?: string; directory: boolean} {
  try {
    const read = readPart10Elements(file, [Tag.StudyInstanceUID, Tag.SOPClassUID])
    const sopClass = read.meta.mediaStorageSopClassUid ?? read.values.get(Tag.SOPClassUID)
    return {studyInstanceUid: read.values.get(Tag.StudyInstanceUID) || undefined, directory: sopClass === MEDIA_STORAGE_DIRECTORY}
  } catch {
    return {directory: false} // the intake says why
  }
}

/**
 * Each uploaded file, or each file inside an uploaded ZIP archive, through the router's intake
 * (RouterService.ingest: the same checks, rules, spool and ledger as a C-STORE), one after the
 * other. A file that is not DICOM, a DICOMDIR or an unreadable archive is `invalid` with its name;
 * nothing stops the others.
 */
export async function ingestParts(parts: UploadedPart[], ingest: Ingest, from: {remoteAddress?: string; maxInstanceBytes: number}): Promise<UploadResult[]> {
  const results: UploadResult[] = []
  const one = async (name: string, bytes: Buffer) => {
    const seen = peek(bytes)
    if (seen.directory) {
      results.push({file: name, status: 'invalid', reason: `${name}: a DICOMDIR (the index of a CD) is not an instance: skipped`})
      return
    }

    const answer = await ingest(bytes, {callingAeTitle: UPLOAD_AE_TITLE, remoteAddress: from.remoteAddress, source: name})
    results.push({
      file: name,
      ...(answer.sopInstanceUid === undefined ? {} : {sopInstanceUid: answer.sopInstanceUid}),
      ...(seen.studyInstanceUid === undefined || answer.outcome === 'invalid' ? {} : {studyInstanceUid: seen.studyInstanceUid}),
      status: answer.outcome,
      ...(answer.reason === undefined || answer.outcome === 'stored' ? {} : {reason: answer.reason}),
    })
  }

  for (const part of parts) {
    if (part.bytes > 0 && (await looksLikeZip(part.path))) {
      let archive: ZipArchive
      try {
        archive = await ZipArchive.open(part.path)
      } catch (error) {
        results.push({file: part.name, status: 'invalid', reason: (error as Error).message.replace(part.path, part.name)})
        continue
      }

      try {
        if (archive.entries.length === 0) results.push({file: part.name, status: 'invalid', reason: `${part.name}: the ZIP archive holds no files`})
        for (const entry of archive.entries) {
          const name = `${part.name}!${entry.name}`
          if (entry.size > from.maxInstanceBytes) {
            results.push({file: name, status: 'refused', reason: `${name}: ${entry.size} bytes, larger than listen.maxInstanceBytes (${from.maxInstanceBytes})`})
            continue
          }

          let bytes: Buffer
          try {
            bytes = await archive.read(entry)
          } catch (error) {
            results.push({file: name, status: 'invalid', reason: (error as DdrError).message.replace(part.path, part.name)})
            continue
          }

          await one(name, bytes)
        }
      } finally {
        archive.close()
      }

      continue
    }

    if ((await stat(part.path)).size > from.maxInstanceBytes) {
      results.push({file: part.name, status: 'refused', reason: `${part.name}: ${part.bytes} bytes, larger than listen.maxInstanceBytes (${from.maxInstanceBytes})`})
      continue
    }

    await one(part.name, await readFile(part.path))
  }

  return results
}

/** 200 when every instance was stored, 400 when none could be read, 207 otherwise. */
export function uploadHttpStatus(results: UploadResult[]): 200 | 207 | 400 {
  if (results.length > 0 && results.every((r) => r.status === 'stored')) return 200
  if (results.every((r) => r.status === 'invalid')) return 400
  return 207
}

/** Removes an upload's scratch folder. */
export async function removeUpload(dir: string): Promise<void> {
  await rm(dir, {recursive: true, force: true})
}
