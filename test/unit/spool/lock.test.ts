import {type ChildProcess, spawn} from 'node:child_process'
import {existsSync} from 'node:fs'
import {mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {DdrError} from '../../../src/lib/errors.js'
import {SPOOL_LOCK_FILE, SpoolLock} from '../../../src/lib/spool/lock.js'

describe('SpoolLock: one process per spool folder', () => {
  let dir: string
  let sleeper: ChildProcess | undefined

  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'ddr-lock-'))
  })

  afterEach(async () => {
    sleeper?.kill('SIGKILL')
    sleeper = undefined
    await rm(dir, {recursive: true, force: true})
  })

  const lockOf = (pid: number) => writeFile(path.join(dir, SPOOL_LOCK_FILE), `${JSON.stringify({pid, at: '2026-12-01T00:00:00.000Z'})}\n`)

  it('writes its pid, refuses a second holder in the same process, and releases', async () => {
    const lock = SpoolLock.acquire(dir)
    expect(JSON.parse(await readFile(path.join(dir, SPOOL_LOCK_FILE), 'utf8')).pid).toBe(process.pid)
    expect(() => SpoolLock.acquire(dir)).toThrow(/already in use by this process/)
    lock.release()
    expect(existsSync(path.join(dir, SPOOL_LOCK_FILE))).toBe(false)
    SpoolLock.acquire(dir).release()
  })

  it('refuses a folder a running process holds, naming the folder and the pid', async () => {
    sleeper = spawn('sleep', ['30'])
    await lockOf(sleeper.pid!)
    let error: unknown
    try {
      SpoolLock.acquire(dir)
    } catch (caught) {
      error = caught
    }

    expect(error).toBeInstanceOf(DdrError)
    expect((error as DdrError).message).toContain(`spool folder ${dir} is in use by process ${sleeper.pid}`)
    expect((error as DdrError).code).toBe('USAGE')
    // Still the holder's.
    expect(JSON.parse(await readFile(path.join(dir, SPOOL_LOCK_FILE), 'utf8')).pid).toBe(sleeper.pid)
  })

  it('takes over the lock of a process that is gone', async () => {
    const dead = spawn('true')
    await new Promise((resolve) => dead.on('exit', resolve))
    await lockOf(dead.pid!)
    const lock = SpoolLock.acquire(dir)
    expect(lock.takenOverFrom).toBe(dead.pid)
    expect(JSON.parse(await readFile(path.join(dir, SPOOL_LOCK_FILE), 'utf8')).pid).toBe(process.pid)
    lock.release()
  })

  it('takes over a lock with its own pid that it did not take (a container restarted as pid 1 on the same volume)', async () => {
    await lockOf(process.pid)
    const lock = SpoolLock.acquire(dir)
    expect(lock.takenOverFrom).toBe(process.pid)
    expect(() => SpoolLock.acquire(dir)).toThrow(/already in use by this process/)
    lock.release()
  })

  it('takes over an unreadable lock file (a holder killed while writing it)', async () => {
    await writeFile(path.join(dir, SPOOL_LOCK_FILE), '{"pi')
    const lock = SpoolLock.acquire(dir)
    expect(JSON.parse(await readFile(path.join(dir, SPOOL_LOCK_FILE), 'utf8')).pid).toBe(process.pid)
    lock.release()
  })
})
