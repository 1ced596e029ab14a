import {readdirSync, readFileSync} from 'node:fs'
import {mkdtemp, rm} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {type PostgresInfo, runPsql, startPostgres, stopPostgres} from '../../src/lib/stack/postgres-process.js'
import {signalProcess} from '../../src/lib/stack/processes.js'
import {freePort} from './ports.js'

export interface TestPostgres {
  /** postgres://ddr@127.0.0.1:PORT/ddr (no password in it: give `password` as ledger.password). */
  url: string
  port: number
  user: string
  database: string
  /** The password `user` needs over TCP, when started with one. */
  password?: string
  /** The cluster's folder (its log: postgres.log). */
  dir: string
  pid: number
  /** SQL as the superuser over the unix socket (default database: the test database); unaligned output. */
  psql(sql: string, database?: string): Promise<string>
  /** Stops the server, keeps the cluster (an outage): fast = clean stop, immediate = like a crash (recovery at resume). */
  halt(mode?: 'fast' | 'immediate'): Promise<void>
  /** Starts it again after halt(), same port, same data. */
  resume(): Promise<void>
  /** SIGSTOP to the server and all its processes: connections hang instead of failing (a stalled database). */
  freeze(): void
  /** SIGCONT after freeze(). */
  thaw(): void
  /** Stops the server and removes its folder; safe to call twice. */
  stop(): Promise<void>
}

/**
 * A throwaway PostgreSQL on a free port in a fresh temp folder (fsync off: tests need no
 * durability), database and role "ddr", trusted on loopback unless `password` is given.
 * Always call stop() (afterAll).
 */
export async function startTestPostgres(options: {password?: string; keepDir?: boolean} = {}): Promise<TestPostgres> {
  // mkdtemp's folder is only root's: the cluster folder itself is handed to the postgres user.
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ddr-pg-'))
  const port = await freePort()
  const startOptions = {dir, port, password: options.password, fsync: false, startTimeoutMs: 30_000}
  let info: PostgresInfo
  try {
    info = await startPostgres(startOptions)
  } catch (error) {
    await stopPostgres(dir, {mode: 'immediate', timeoutMs: 10_000})
    await rm(dir, {recursive: true, force: true})
    throw error
  }

  let pid = info.pid
  let stopped = false
  const processes = () => [pid, ...childrenOf(pid)]
  const signalAll = (signal: NodeJS.Signals) => {
    // A backend may end between the listing and the signal.
    for (const each of processes()) signalProcess(each, signal)
  }

  return {
    url: info.url,
    port,
    user: info.user,
    database: info.database,
    password: options.password,
    dir,
    get pid() {
      return pid
    },
    psql: (sql, database) => runPsql({dir, port, database: database ?? info.database}, sql),
    async halt(mode = 'fast') {
      await stopPostgres(dir, {mode})
    },
    async resume() {
      pid = (await startPostgres(startOptions)).pid
    },
    freeze: () => signalAll('SIGSTOP'),
    thaw: () => signalAll('SIGCONT'),
    async stop() {
      if (stopped) return
      stopped = true
      signalAll('SIGCONT')

      await stopPostgres(dir, {mode: 'immediate', timeoutMs: 10_000})
      if (!options.keepDir) await rm(dir, {recursive: true, force: true})
    },
  }
}

/** The pids whose parent is `pid` (PostgreSQL's backends and workers), from /proc. */
function childrenOf(pid: number): number[] {
  const children: number[] = []
  for (const name of readdirSync('/proc')) {
    if (!/^\d+$/.test(name)) continue
    try {
      const stat = readFileSync(`/proc/${name}/stat`, 'utf8')
      const parent = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1])
      if (parent === pid) children.push(Number(name))
    } catch {
      // gone meanwhile
    }
  }

  return children
}
