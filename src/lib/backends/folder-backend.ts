import {randomBytes} from 'node:crypto'
import {constants, createReadStream} from 'node:fs'
import {access, mkdir, open, readFile, rename, rm, stat, statfs} from 'node:fs/promises'
import path from 'node:path'

import type {BackendConfig} from '../config/schema.js'
import type {DimseResponse} from '../dimse/scu.js'
import {Status} from '../dimse/status.js'
import {DdrError} from '../errors.js'
import type {ReceivedInstance} from '../routing/instance.js'
import type {Backend} from './backend.js'

/** A path component from a DICOM identifier: anything but letters, digits, ".", "-" and "_" becomes "_". */
export function safePathComponent(value: string | undefined): string {
  const cleaned = (value ?? '').trim().replaceAll(/[^\w.-]/g, '_').replace(/^\.+$/, '_').slice(0, 128)
  return cleaned === '' ? 'unknown' : cleaned
}

/** Where an instance goes below a folder backend's root: PatientID/StudyUID/SeriesUID/SOPInstanceUID.dcm. */
export function folderLayout(instance: Pick<ReceivedInstance, 'patientId' | 'studyInstanceUid' | 'seriesInstanceUid' | 'sopInstanceUid'>): string {
  return path.join(safePathComponent(instance.patientId), safePathComponent(instance.studyInstanceUid), safePathComponent(instance.seriesInstanceUid), `${safePathComponent(instance.sopInstanceUid)}.dcm`)
}

async function* part10Chunks(instance: ReceivedInstance): AsyncGenerator<Buffer> {
  if (instance.path !== undefined) {
    yield* createReadStream(instance.path)
    return
  }

  yield instance.metaHeader
  const source = instance.dataset
  if ('buffer' in source) yield source.buffer
  else if (source.length > 0) yield* createReadStream(source.path, {start: source.offset, end: source.offset + source.length - 1})
}

async function sameContent(file: string, instance: ReceivedInstance): Promise<boolean> {
  const size = instance.metaHeader.length + instance.datasetLength
  const info = await stat(file).catch(() => undefined)
  if (info === undefined || info.size !== size) return false
  // Instances are compared whole: one at a time, and only when the file already exists (a re-send).
  const existing = await readFile(file)
  let offset = 0
  for await (const chunk of part10Chunks(instance)) {
    if (!existing.subarray(offset, offset + chunk.length).equals(chunk)) return false
    offset += chunk.length
  }

  return offset === size
}

/**
 * Writes each instance as a Part 10 file below a root folder (PatientID/StudyInstanceUID/
 * SeriesInstanceUID/SOPInstanceUID.dcm): the instance's meta header and its dataset bytes exactly
 * as received. Atomic: a temp file is written, fsynced and renamed, then the folder is fsynced,
 * so a reader never sees half a file and a crash never leaves one under the final name.
 */
export class FolderBackend implements Backend {
  readonly root: string
  private readonly minFreeBytes: number

  constructor(readonly config: BackendConfig) {
    if (config.path === undefined || config.path === '') throw new DdrError('CONFIG_INVALID', `backend ${config.name} has type "folder" but no path`)
    this.root = path.resolve(config.path)
    this.minFreeBytes = (config.minFreeMb ?? 100) * 1024 * 1024
  }

  async store(instance: ReceivedInstance): Promise<DimseResponse> {
    const target = path.join(this.root, folderLayout(instance))
    const folder = path.dirname(target)
    const temporary = path.join(folder, `.${path.basename(target)}.${randomBytes(6).toString('hex')}.part`)
    try {
      await mkdir(folder, {recursive: true})
      if (await sameContent(target, instance)) return {status: Status.success}
      const handle = await open(temporary, 'wx')
      try {
        for await (const chunk of part10Chunks(instance)) await handle.write(chunk)
        await handle.datasync()
      } finally {
        await handle.close()
      }

      await rename(temporary, target)
      await syncFolder(folder)
      return {status: Status.success}
    } catch (error) {
      await rm(temporary, {force: true}).catch(() => undefined)
      const code = (error as NodeJS.ErrnoException).code
      // A full or read-only disk may heal (another backend may take it meanwhile): the router retries.
      throw new DdrError('BACKEND_UNREACHABLE', `writing ${target} for backend ${this.config.name} failed: ${code ?? (error as Error).message}`, {cause: error})
    }
  }

  /** Health: the root exists (created if need be), is writable, and has more free space than minFreeMb. */
  async echo(): Promise<number> {
    const started = performance.now()
    await mkdir(this.root, {recursive: true})
    await access(this.root, constants.W_OK)
    const fs = await statfs(this.root)
    const free = fs.bavail * fs.bsize
    if (free < this.minFreeBytes) throw new DdrError('BACKEND_UNREACHABLE', `${this.root} has ${Math.round(free / 1024 / 1024)} MB free, below minFreeMb ${this.minFreeBytes / 1024 / 1024}`)
    return performance.now() - started
  }

  async close(): Promise<void> {}
}

async function syncFolder(folder: string): Promise<void> {
  const handle = await open(folder, 'r')
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}
