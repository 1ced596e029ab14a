import {randomBytes} from 'node:crypto'
import {type FileHandle, mkdir, open, rename, rm} from 'node:fs/promises'
import path from 'node:path'

const dirSyncs = new Map<string, {running?: Promise<void>; next?: Promise<void>; handle?: FileHandle}>()

/**
 * fsync a folder so the renames in it survive a crash. Concurrent callers share rounds: a caller
 * that arrives while a sync runs waits for the next one (which starts after its rename). The
 * folder stays open between rounds (one call per sync, not open + fsync + close): for a few hot
 * folders (the spool's); use fsyncPath for folders synced once.
 */
export function syncDir(dir: string): Promise<void> {
  let state = dirSyncs.get(dir)
  if (state === undefined) {
    state = {}
    dirSyncs.set(dir, state)
  }

  const current = state
  if (current.running === undefined) {
    current.running = (async () => {
      current.handle ??= await open(dir, 'r')
      try {
        await current.handle.sync()
      } catch (error) {
        const stale = current.handle
        current.handle = undefined
        await stale?.close().catch(() => {})
        throw error
      }
    })().finally(() => {
      current.running = undefined
    })
    return current.running
  }

  current.next ??= current.running
    .catch(() => {})
    .then(() => {
      current.next = undefined
      return syncDir(dir)
    })
  return current.next
}

/** fsync a file or a folder once (open, sync, close). */
export async function fsyncPath(target: string): Promise<void> {
  const handle = await open(target, 'r')
  try {
    await handle.sync()
  } finally {
    await handle.close()
  }
}

/** fdatasync a file once (its data, not its metadata). */
export async function datasyncFile(file: string): Promise<void> {
  const handle = await open(file, 'r+')
  try {
    await handle.datasync()
  } finally {
    await handle.close()
  }
}

export async function ensureDir(dir: string): Promise<void> {
  await mkdir(dir, {recursive: true})
}

/** Options for writeFileAtomic. */
export interface AtomicWriteOptions {
  mode?: number
  /** The temporary file (default: a hidden, unique name in the target's folder). It must be in the same folder. */
  temp?: string
  /** fsync (data and metadata) instead of fdatasync: for files whose size or mode matters after a crash. */
  fullSync?: boolean
  /** fsync the folder after the rename, so the new name survives a crash too (default false: callers that rename many files sync once). */
  syncFolder?: boolean
}

/**
 * Writes `data` to a temporary file beside `target`, syncs it, renames it over `target`: a reader
 * (or a crash) sees the old file or the whole new one, never half of it. The temporary file is
 * removed when anything fails.
 */
export async function writeFileAtomic(target: string, data: Buffer | Iterable<Buffer> | AsyncIterable<Buffer>, options: AtomicWriteOptions = {}): Promise<void> {
  const temp = options.temp ?? path.join(path.dirname(target), `.${path.basename(target)}.${process.pid}-${randomBytes(4).toString('hex')}.part`)
  try {
    const handle = await open(temp, 'w', options.mode ?? 0o644)
    try {
      if (Buffer.isBuffer(data)) await handle.writeFile(data)
      else for await (const chunk of data) await handle.write(chunk)
      await (options.fullSync ? handle.sync() : handle.datasync())
    } finally {
      await handle.close()
    }

    await rename(temp, target)
  } catch (error) {
    await rm(temp, {force: true})
    throw error
  }

  if (options.syncFolder) await fsyncPath(path.dirname(target))
}

/** `length` bytes of a file from `offset` (fewer when the file is shorter). */
export async function readFileSlice(file: string, offset: number, length: number): Promise<Buffer> {
  const handle = await open(file, 'r')
  try {
    const bytes = Buffer.alloc(length)
    const {bytesRead} = await handle.read(bytes, 0, length, offset)
    return bytes.subarray(0, bytesRead)
  } finally {
    await handle.close()
  }
}
