import {randomBytes} from 'node:crypto'
import {constants, createReadStream} from 'node:fs'
import {access, mkdir, readdir, readFile, rm, stat, statfs} from 'node:fs/promises'

import {writeFileAtomic} from '../fs/durable.js'
import path from 'node:path'

import type {BackendConfig} from '../config/schema.js'
import type {DimseResponse} from '../dimse/scu.js'
import {Status} from '../dimse/status.js'
import {DdrError} from '../errors.js'
import {type ReceivedInstance, datasetBuffers} from '../dicom/received-instance.js'
import type {Backend, BackendCheck, CheckOptions} from './backend.js'
import {emptyCheck, roundMs} from './check.js'

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
  const inMemory = datasetBuffers(source)
  if (inMemory !== undefined) yield* inMemory
  else if ('path' in source && source.length > 0) yield* createReadStream(source.path, {start: source.offset, end: source.offset + source.length - 1})
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

  constructor(readonly config: BackendConfig) {
    if (config.path === undefined || config.path === '') throw new DdrError('CONFIG_INVALID', `backend ${config.name} has type "folder" but no path`)
    this.root = path.resolve(config.path)
  }

  async store(instance: ReceivedInstance): Promise<DimseResponse> {
    const target = path.join(this.root, folderLayout(instance))
    const folder = path.dirname(target)
    const temporary = path.join(folder, `.${path.basename(target)}.${randomBytes(6).toString('hex')}.part`)
    try {
      await mkdir(folder, {recursive: true})
      if (await sameContent(target, instance)) return {status: Status.success}
      // The folder is synced once here (fsyncPath): a folder backend spreads over many study/series folders.
      await writeFileAtomic(target, part10Chunks(instance), {temp: temporary, syncFolder: true})
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
    const health = await checkFolder(this.root, this.config.minFreeMb, {create: true})
    if (health.problems.length > 0) throw new DdrError('BACKEND_UNREACHABLE', health.problems.join('; '))
    return performance.now() - started
  }

  /**
   * The folder's health (unless passive): the router's check creates a missing root, a survey
   * only reports it and counts the files (see checkFolder).
   */
  async check(options: CheckOptions): Promise<BackendCheck> {
    const check = emptyCheck()
    if (options.passive) return check
    const started = performance.now()
    const health = await checkFolder(this.root, this.config.minFreeMb, options.survey ? {count: true} : {create: true})
    check.problems = health.problems.map((problem) => `folder: ${problem}`)
    check.answered = health.exists
    if (check.problems.length === 0) check.echoMs = roundMs(performance.now() - started)
    check.instances = health.files
    check.freeBytes = health.freeBytes
    check.minFreeBytes = health.minFreeBytes
    return check
  }

  async close(): Promise<void> {}
}

/** What checkFolder found. */
export interface FolderHealth {
  root: string
  exists: boolean
  writable: boolean
  freeBytes: number | null
  minFreeBytes: number
  /** `.dcm` files below the root, when counting them was cheap (see checkFolder); else null. */
  files: number | null
  /** Why the folder cannot take instances now; empty when it can. */
  problems: string[]
}

/** Folder entries checkFolder walks at most to count the files (a big archive is not walked). */
export const FOLDER_COUNT_LIMIT = 20_000

/**
 * A folder backend's health: its root exists and is a writable folder, and its file system has
 * more free space than minFreeMb (default 100). With `create` (the router) a missing root is
 * created; without (balance-status) it is reported. With `count`, the `.dcm` files below the root
 * are counted unless there are more than FOLDER_COUNT_LIMIT entries to walk.
 */
export async function checkFolder(root: string, minFreeMb: number | undefined, options: {create?: boolean; count?: boolean} = {}): Promise<FolderHealth> {
  const minFreeBytes = (minFreeMb ?? 100) * 1024 * 1024
  const health: FolderHealth = {root, exists: false, writable: false, freeBytes: null, minFreeBytes, files: null, problems: []}
  try {
    if (options.create) await mkdir(root, {recursive: true})
    const info = await stat(root)
    if (!info.isDirectory()) {
      health.problems.push(`${root} is not a folder`)
      return health
    }

    health.exists = true
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    health.problems.push(code === 'ENOENT' ? `${root} does not exist (the router creates it on first use, if it may)` : `${root}: ${code ?? (error as Error).message}`)
    return health
  }

  try {
    await access(root, constants.W_OK)
    health.writable = true
  } catch {
    health.problems.push(`${root} is not writable`)
  }

  try {
    const fs = await statfs(root)
    health.freeBytes = fs.bavail * fs.bsize
    if (health.freeBytes < minFreeBytes) health.problems.push(`${root} has ${Math.round(health.freeBytes / 1024 / 1024)} MB free, below minFreeMb ${minFreeBytes / 1024 / 1024}`)
  } catch (error) {
    health.problems.push(`${root}: free space unknown: ${(error as Error).message}`)
  }

  if (options.count) health.files = await countFiles(root, FOLDER_COUNT_LIMIT)
  return health
}

/** `.dcm` files below a folder (hidden `.part` files left out), or null when more than `limit` entries would have to be read. */
async function countFiles(root: string, limit: number): Promise<number | null> {
  let files = 0
  let seen = 0
  const folders = [root]
  while (folders.length > 0) {
    const folder = folders.pop()!
    let entries
    try {
      entries = await readdir(folder, {withFileTypes: true})
    } catch {
      continue
    }

    seen += entries.length
    if (seen > limit) return null
    for (const entry of entries) {
      if (entry.isDirectory()) folders.push(path.join(folder, entry.name))
      else if (entry.isFile() && entry.name.endsWith('.dcm') && !entry.name.startsWith('.')) files++
    }
  }

  return files
}
