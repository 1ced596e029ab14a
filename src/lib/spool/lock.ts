import {closeSync, fsyncSync, linkSync, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeSync} from 'node:fs'
import path from 'node:path'

import {DdrError} from '../errors.js'

/** The lock file's name inside a spool folder. */
export const SPOOL_LOCK_FILE = 'ddr.lock'

/** What a lock file says: which process holds the folder, since when. */
interface LockContent {
  pid: number
  at: string
}

function readLock(file: string): LockContent | undefined {
  try {
    const content = JSON.parse(readFileSync(file, 'utf8')) as LockContent
    return typeof content.pid === 'number' ? content : undefined
  } catch {
    return undefined
  }
}

/** Whether a process with this pid runs (EPERM: it runs, as another user). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0)
    return true
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }
}

/**
 * An exclusive hold on a spool folder, so two routers (two `ddr listen`, two workers) never take
 * entries from the same queue: each would deliver and release what the other is delivering, and
 * a journal written by two processes is corrupt. The lock is a file with the holder's pid, made
 * with an atomic link (fails when it exists). A lock whose pid no longer runs (the holder was
 * killed) is taken over: it is renamed aside first, which only one contender can do, then made
 * anew. A lock naming this process's own pid that this process did not take was left by an
 * earlier process with the same pid (a container restarted on the same volume is pid 1 again):
 * stale too. A pid reused by an unrelated process after a crash keeps the folder locked: the
 * message names the pid, so the operator can check it and remove the file.
 */
/** Lock files this process holds now: a lock naming our own pid that is not in here was left by an earlier process that had the same pid (a container's pid 1 after a restart). */
const held = new Set<string>()

export class SpoolLock {
  private released = false

  /** @param takenOverFrom the dead pid whose stale lock was taken over */
  private constructor(readonly dir: string, readonly file: string, readonly takenOverFrom?: number) {}

  /**
   * Takes the folder (created when missing) for this process. Throws DdrError USAGE naming the
   * folder and the holder's pid when a running process holds it.
   */
  static acquire(dir: string): SpoolLock {
    const folder = path.resolve(dir)
    mkdirSync(folder, {recursive: true})
    const file = path.join(folder, SPOOL_LOCK_FILE)
    let takenOverFrom: number | undefined
    for (let attempt = 0; attempt < 20; attempt++) {
      const temporary = `${file}.${process.pid}.${attempt}.tmp`
      const fd = openSync(temporary, 'w', 0o644)
      try {
        writeSync(fd, `${JSON.stringify({pid: process.pid, at: new Date().toISOString()} satisfies LockContent)}\n`)
        fsyncSync(fd)
      } finally {
        closeSync(fd)
      }

      try {
        linkSync(temporary, file)
        held.add(file)
        return new SpoolLock(folder, file, takenOverFrom)
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error
      } finally {
        rmSync(temporary, {force: true})
      }

      const holder = readLock(file)
      if (holder !== undefined && holder.pid !== process.pid && alive(holder.pid)) {
        throw new DdrError('USAGE', `spool folder ${folder} is in use by process ${holder.pid} (lock ${file}, since ${holder.at})`, {
          hint: `two routers must never share a spool folder: stop process ${holder.pid}, or give this one another spool.dir (DDR_SPOOL_DIR); if ${holder.pid} is not a ddr router, remove ${file}`,
        })
      }

      if (holder !== undefined && holder.pid === process.pid && held.has(file)) {
        throw new DdrError('USAGE', `spool folder ${folder} is already in use by this process (lock ${file})`, {hint: 'each router of one process needs a spool.dir of its own'})
      }

      // Stale (its process is gone) or unreadable (a holder killed while writing it): rename it
      // aside; of several contenders one succeeds, the others find the file gone and try again.
      const aside = `${file}.stale-${process.pid}`
      try {
        renameSync(file, aside)
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'ENOENT') continue
        throw error
      }

      const moved = readLock(aside)
      if (moved !== undefined && moved.pid !== holder?.pid && alive(moved.pid)) {
        // A live contender's lock was made between our read and our rename: put it back.
        try {
          linkSync(aside, file)
        } catch {
          // Someone made a new lock meanwhile: theirs stands.
        }

        rmSync(aside, {force: true})
        continue
      }

      rmSync(aside, {force: true})
      takenOverFrom = holder?.pid
    }

    throw new DdrError('USAGE', `spool folder ${folder}: could not take its lock ${file} (other processes keep changing it)`, {hint: 'make sure one router only starts on this spool.dir'})
  }

  /** The pid of the running process that holds a spool folder, or undefined when none does (no lock, or a stale one). */
  static holder(dir: string): number | undefined {
    const file = path.join(path.resolve(dir), SPOOL_LOCK_FILE)
    const content = readLock(file)
    if (content === undefined) return undefined
    if (content.pid === process.pid) return held.has(file) ? content.pid : undefined
    return alive(content.pid) ? content.pid : undefined
  }

  /** Gives the folder up (the file is removed only while it is still ours). */
  release(): void {
    if (this.released) return
    this.released = true
    held.delete(this.file)
    if (readLock(this.file)?.pid === process.pid) rmSync(this.file, {force: true})
  }
}
