import {spawnSync} from 'node:child_process'
import {existsSync, readdirSync, readFileSync, statSync} from 'node:fs'
import {chmod, chown, mkdir, readdir, readFile, writeFile} from 'node:fs/promises'
import path from 'node:path'

import {DdrError, ExitCode} from '../errors.js'
import {aptInstall, findExecutable, isAlive, isExecutable, portIsFree, processCommandLine, readPid, runCommand, runningAsRoot, startFailure, tcpAccepts, terminate} from './processes.js'

/*
 * A PostgreSQL cluster of the local stack: the shared study ledger of several routers (docs/cluster.md).
 * Debian's binaries (/usr/lib/postgresql/<version>/bin), one cluster per folder, run as the
 * `postgres` user when we are root (initdb and postgres refuse to run as root).
 */

/** Where Debian's postgresql packages put each major version's programs. */
export const POSTGRES_LIB = '/usr/lib/postgresql'
export const POSTGRES_APT_PACKAGES = ['postgresql'] as const
export const POSTGRES_INSTALL_COMMAND = `apt-get update && apt-get install -y ${POSTGRES_APT_PACKAGES.join(' ')}`
/** The operating-system user that owns the cluster when ddr runs as root (Debian's package creates it). */
export const POSTGRES_OS_USER = 'postgres'
/** The database superuser initdb creates; ddr administers the cluster as it, over the unix socket only. */
export const POSTGRES_SUPERUSER = 'postgres'

/** Our settings, included from postgresql.conf and rewritten at every start. */
export const SETTINGS_FILE = 'ddr.conf'
/** Who the routers connect as, for `postgresStatus` (rewritten at every start). */
export const CLUSTER_FILE = 'ddr-cluster.json'
export const LOG_FILE = 'postgres.log'
/** Written by PostgreSQL itself: pid, data folder, start time, port, socket folder, address, shared memory key, state. */
export const POSTMASTER_PID = 'postmaster.pid'
/** A unix socket path must fit in sockaddr_un.sun_path (108 bytes with its NUL) on Linux. */
const MAX_SOCKET_PATH = 107

export interface PostgresBinaries {
  /** The folder with initdb, pg_ctl and postgres. */
  bin: string
  initdb: string
  pgCtl: string
  postgres: string
  psql: string
}

export interface PostgresOptions {
  /** The cluster's folder (PGDATA): created, owned by the postgres user when we are root, mode 0700. */
  dir: string
  /** TCP port on `host`. */
  port: number
  /** Address to listen on (default 127.0.0.1). Beyond loopback, a password is required. */
  host?: string
  /** The role the routers connect as (created, LOGIN, owns `database`); default "ddr". */
  user?: string
  /** Created when missing; default "ddr". */
  database?: string
  /**
   * With a password, TCP connections authenticate with scram-sha-256 and `user` gets this password;
   * without one they are trusted (a developer's machine: loopback only). The unix socket in the
   * data folder is always trusted: only root and the postgres user can reach it.
   */
  password?: string
  /** fsync and full_page_writes (default true: what was acknowledged survives a machine crash). Tests turn it off for speed; a crash of PostgreSQL alone still loses nothing. */
  fsync?: boolean
  /** More postgresql.conf settings, written into ddr.conf. */
  settings?: Record<string, string | number | boolean>
  /** How long pg_ctl waits for the server to accept connections (default 30 s). */
  startTimeoutMs?: number
  binaries?: PostgresBinaries
}

export interface PostgresInfo {
  dir: string
  pid: number
  host: string
  port: number
  user: string
  database: string
  /** postgres://USER@HOST:PORT/DATABASE, never with the password (that goes in DDR_LEDGER_PASSWORD). */
  url: string
  /** The folder of the unix socket (the data folder). */
  socketDir: string
  logPath: string
  /** e.g. "15.14". */
  version: string
  /** Whether this start created the cluster (initdb). */
  initialized: boolean
}

export interface PostgresStatus {
  dir: string
  /** The folder holds a cluster (PG_VERSION). */
  initialized: boolean
  /** postmaster.pid names a live postgres of this folder. */
  processAlive: boolean
  /** Alive, says "ready", and accepts TCP connections. */
  running: boolean
  pid?: number
  host?: string
  port?: number
  user?: string
  database?: string
  url?: string
  /** The running server's version (e.g. "15.14"), else the cluster's major version from PG_VERSION. */
  version?: string
}

export interface PostgresStopResult {
  dir: string
  stopped: boolean
  pid?: number
  killed?: boolean
}

const IDENTIFIER = /^[a-z_][a-z0-9_]{0,62}$/
const LOOPBACK = new Set(['127.0.0.1', 'localhost', '::1'])

/** The version folders among the names under /usr/lib/postgresql, newest first ("15", "9.6"; others ignored). */
export function versionsNewestFirst(names: string[]): string[] {
  return names.filter((name) => /^\d+(\.\d+)?$/.test(name)).sort((a, b) => Number(b) - Number(a))
}

/** Debian's newest /usr/lib/postgresql/<version>/bin, else initdb on PATH (with pg_ctl, postgres and psql beside it); undefined when none. */
export function findPostgresBinaries(): PostgresBinaries | undefined {
  const complete = (bin: string): PostgresBinaries | undefined => {
    const binaries = {bin, initdb: path.join(bin, 'initdb'), pgCtl: path.join(bin, 'pg_ctl'), postgres: path.join(bin, 'postgres'), psql: path.join(bin, 'psql')}
    return [binaries.initdb, binaries.pgCtl, binaries.postgres].every(isExecutable) ? {...binaries, psql: isExecutable(binaries.psql) ? binaries.psql : (findExecutable('psql') ?? binaries.psql)} : undefined
  }

  let versions: string[] = []
  try {
    versions = readdirSync(POSTGRES_LIB)
  } catch {
    // not Debian's layout
  }

  for (const version of versionsNewestFirst(versions)) {
    const found = complete(path.join(POSTGRES_LIB, version, 'bin'))
    if (found !== undefined) return found
  }

  const initdb = findExecutable('initdb')
  return initdb === undefined ? undefined : complete(path.dirname(initdb))
}

/**
 * PostgreSQL's programs, installing Debian's package first when they are missing and we are root
 * (its own cluster, which the package may start on 5432, is then stopped: ddr runs its own).
 */
export async function ensurePostgresInstalled(options: {install?: boolean} = {}): Promise<PostgresBinaries> {
  const found = findPostgresBinaries()
  if (found !== undefined) return found
  if (!runningAsRoot() || options.install === false) {
    throw new DdrError('DEPENDENCY_MISSING', `PostgreSQL is not installed (looked in ${POSTGRES_LIB}/<version>/bin and for initdb on PATH)`, {
      hint: `install it as root: ${POSTGRES_INSTALL_COMMAND}`,
    })
  }

  await aptInstall(POSTGRES_APT_PACKAGES, POSTGRES_INSTALL_COMMAND)
  // Debian creates and starts a "main" cluster on 5432; it was installed just now for ddr, which runs its own.
  if (findExecutable('systemctl') !== undefined) await runCommand('systemctl', ['disable', '--now', 'postgresql'])
  const clusters = await runCommand('pg_lsclusters', ['--no-header'])
  for (const line of clusters.stdout.split('\n')) {
    const [version, name, , status] = line.trim().split(/\s+/)
    if (status === 'online') await runCommand('pg_ctlcluster', [version, name, 'stop'])
  }

  const installed = findPostgresBinaries()
  if (installed === undefined) {
    throw new DdrError('DEPENDENCY_MISSING', `"apt-get install -y ${POSTGRES_APT_PACKAGES.join(' ')}" finished but initdb is still missing`, {hint: `look under ${POSTGRES_LIB}`})
  }

  return installed
}

/** postgres://USER@HOST:PORT/DATABASE (an IPv6 host in brackets); the password never goes into it. */
export function postgresUrl(options: {user: string; host: string; port: number; database: string}): string {
  const host = options.host.includes(':') ? `[${options.host}]` : options.host
  return `postgres://${encodeURIComponent(options.user)}@${host}:${options.port}/${encodeURIComponent(options.database)}`
}

/** The settings ddr writes into ddr.conf (included from postgresql.conf). */
export function postgresSettings(options: Pick<PostgresOptions, 'dir' | 'port' | 'host' | 'fsync' | 'settings'>): string {
  const quote = (value: string | number | boolean) => (typeof value === 'string' ? `'${value.replaceAll("'", "''")}'` : typeof value === 'boolean' ? (value ? 'on' : 'off') : String(value))
  const fsync = options.fsync ?? true
  const settings: Record<string, string | number | boolean> = {
    listen_addresses: options.host ?? '127.0.0.1',
    port: options.port,
    // In the data folder, not /var/run/postgresql: the cluster is self-contained and needs no root-made folder.
    unix_socket_directories: path.resolve(options.dir),
    // Off only where a machine crash does not matter (tests): a commit still reaches the kernel before
    // it is acknowledged (synchronous_commit stays on), so a crash of PostgreSQL alone loses nothing.
    fsync,
    full_page_writes: fsync,
    ...options.settings,
  }
  return [
    '# Written by ddr at every start (src/lib/stack/postgres-process.ts): edit `ddr stack up`\'s options, not this file.',
    ...Object.entries(settings).map(([key, value]) => `${key} = ${quote(value)}`),
    '',
  ].join('\n')
}

/** Who may connect how: the unix socket trusted (administration), TCP by password or (loopback only) trusted. */
export function postgresHba(options: Pick<PostgresOptions, 'host' | 'password'>): string {
  const method = options.password === undefined ? 'trust' : 'scram-sha-256'
  const lines = [
    '# Written by ddr at every start (src/lib/stack/postgres-process.ts).',
    '# The unix socket lives in the data folder, which only root and the postgres user can enter.',
    'local  all  all                 trust',
    `host   all  all  127.0.0.1/32   ${method}`,
    `host   all  all  ::1/128        ${method}`,
  ]
  if (!LOOPBACK.has(options.host ?? '127.0.0.1')) lines.push(`host   all  all  0.0.0.0/0      ${method}`, `host   all  all  ::/0           ${method}`)
  return `${lines.join('\n')}\n`
}

/**
 * Starts the cluster in `options.dir` (initdb first when the folder holds none), waits until it
 * accepts connections, and makes sure `user` and `database` exist. The server is detached: it
 * runs until stopPostgres(dir).
 */
export async function startPostgres(options: PostgresOptions): Promise<PostgresInfo> {
  const dir = path.resolve(options.dir)
  const host = options.host ?? '127.0.0.1'
  const user = options.user ?? 'ddr'
  const database = options.database ?? 'ddr'
  const what = `PostgreSQL (port ${options.port}, ${dir})`
  const logPath = path.join(dir, LOG_FILE)
  for (const [name, value] of [
    ['user', user],
    ['database', database],
  ]) {
    if (!IDENTIFIER.test(value)) throw new DdrError('USAGE', `PostgreSQL ${name} "${value}" is not a plain lower-case identifier (letters, digits, _)`, {hint: `choose a ${name} like "ddr"`})
  }

  if (!LOOPBACK.has(host) && options.password === undefined) {
    throw new DdrError('USAGE', `${what} would listen on ${host} without a password`, {hint: 'give a password (ledger.password / DDR_LEDGER_PASSWORD), or listen on 127.0.0.1'})
  }

  const socket = path.join(dir, `.s.PGSQL.${options.port}`)
  if (socket.length > MAX_SOCKET_PATH) {
    throw new DdrError('USAGE', `${what}: its unix socket path ${socket} is longer than ${MAX_SOCKET_PATH} characters`, {hint: 'choose a shorter stack.dir'})
  }

  const binaries = options.binaries ?? findPostgresBinaries()
  if (binaries === undefined) throw new DdrError('DEPENDENCY_MISSING', `cannot start ${what}: PostgreSQL is not installed`, {hint: `install it as root: ${POSTGRES_INSTALL_COMMAND}`})
  const running = livePostmaster(dir)
  if (running !== undefined) throw new DdrError('STACK_FAILED', `${what} is already running (pid ${running})`, {exit: ExitCode.peer, hint: 'stop it first (ddr stack down)'})
  if (!(await portIsFree(options.port, host === 'localhost' ? '127.0.0.1' : host))) {
    throw new DdrError('STACK_FAILED', `cannot start ${what}: port ${options.port} is already in use by another process`, {
      exit: ExitCode.peer,
      hint: 'stop whatever listens there (e.g. a system PostgreSQL), or choose another port (ddr stack up --postgres-port)',
    })
  }

  const initialized = await initCluster(dir, binaries, options.fsync ?? true)
  await writeFile(path.join(dir, SETTINGS_FILE), postgresSettings({...options, dir, host}), {mode: 0o644})
  await writeFile(path.join(dir, 'pg_hba.conf'), postgresHba({host, password: options.password}))
  await writeFile(path.join(dir, CLUSTER_FILE), `${JSON.stringify({host, port: options.port, user, database, passwordAuthentication: options.password !== undefined}, null, 2)}\n`, {mode: 0o644})

  const timeoutSeconds = Math.max(1, Math.round((options.startTimeoutMs ?? 30_000) / 1000))
  // pg_ctl -w returns once postmaster.pid says "ready": the server accepts connections.
  const started = await runCommand(...asPostgresUser(binaries.pgCtl, ['start', '-D', dir, '-l', logPath, '-w', '-t', String(timeoutSeconds), '-s']), {timeoutMs: (timeoutSeconds + 10) * 1000})
  const pid = livePostmaster(dir)
  if (started.code !== 0 || pid === undefined) {
    throw startFailure(`${what} did not start (pg_ctl: ${(started.stderr || started.stdout).trim() || `exit code ${started.code}`})`, logPath, `read ${logPath}; a port in use or a folder the postgres user cannot enter are the usual causes`)
  }

  try {
    await ensureRoleAndDatabase(binaries, {dir, port: options.port, user, database, password: options.password})
  } catch (error) {
    // A start that failed leaves nothing running.
    await stopPostgres(dir, {timeoutMs: 10_000})
    throw error
  }

  return {dir, pid, host, port: options.port, user, database, url: postgresUrl({user, host: host === 'localhost' ? '127.0.0.1' : host, port: options.port, database}), socketDir: dir, logPath, version: programVersion(binaries.postgres), initialized}
}

/**
 * Stops the cluster of `dir`: fast (SIGINT: open sessions end, a checkpoint, a clean stop), smart
 * (SIGTERM: waits for sessions) or immediate (SIGQUIT: like a crash; recovery at the next start).
 * SIGKILL after `timeoutMs` (default 30 s). Only a postgres whose command line names `dir` is signalled.
 */
export async function stopPostgres(dir: string, options: {mode?: 'fast' | 'immediate' | 'smart'; timeoutMs?: number} = {}): Promise<PostgresStopResult> {
  dir = path.resolve(dir)
  const pid = livePostmaster(dir)
  if (pid === undefined) return {dir, stopped: false}
  const signal = ({fast: 'SIGINT', smart: 'SIGTERM', immediate: 'SIGQUIT'} as const)[options.mode ?? 'fast']
  const {killed} = await terminate(pid, `PostgreSQL of ${dir}`, {signal, timeoutMs: options.timeoutMs ?? 30_000})
  return {dir, stopped: true, pid, killed}
}

/** Whether the cluster of `dir` runs and accepts TCP connections; its address and version from its files. */
export async function postgresStatus(dir: string, options: {timeoutMs?: number} = {}): Promise<PostgresStatus> {
  dir = path.resolve(dir)
  const status: PostgresStatus = {dir, initialized: existsSync(path.join(dir, 'PG_VERSION')), processAlive: false, running: false}
  if (!status.initialized) return status
  status.version = readFileSync(path.join(dir, 'PG_VERSION'), 'utf8').trim()
  try {
    const cluster = JSON.parse(await readFile(path.join(dir, CLUSTER_FILE), 'utf8')) as {host: string; port: number; user: string; database: string}
    Object.assign(status, {host: cluster.host, port: cluster.port, user: cluster.user, database: cluster.database})
    status.url = postgresUrl({...cluster, host: cluster.host === 'localhost' ? '127.0.0.1' : cluster.host})
  } catch {
    // a cluster ddr did not set up
  }

  const pid = livePostmaster(dir)
  if (pid === undefined) return status
  status.pid = pid
  status.processAlive = true
  // The running server's own version (e.g. 15.14), from the program it runs.
  const program = processCommandLine(pid)?.split(' ')[0]
  if (program !== undefined && isExecutable(program)) status.version = programVersion(program)
  const lines = readFileSync(path.join(dir, POSTMASTER_PID), 'utf8').split('\n')
  const port = Number(lines[3])
  if (Number.isInteger(port) && port > 0) status.port = port
  const ready = lines[7]?.trim() === 'ready'
  const probeHost = status.host === undefined || status.host === '0.0.0.0' || status.host === 'localhost' ? '127.0.0.1' : status.host
  status.running = ready && status.port !== undefined && (await tcpAccepts(probeHost, status.port, options.timeoutMs ?? 2000))
  return status
}

/**
 * Runs SQL with psql over the cluster's unix socket as the superuser (administration, tests);
 * returns psql's unaligned output. Throws STACK_FAILED with psql's message on an error.
 */
export async function runPsql(options: {dir: string; port: number; database?: string; binaries?: PostgresBinaries}, sql: string): Promise<string> {
  const binaries = options.binaries ?? findPostgresBinaries()
  if (binaries === undefined) throw new DdrError('DEPENDENCY_MISSING', 'psql is not installed', {hint: `install it as root: ${POSTGRES_INSTALL_COMMAND}`})
  // SQL on stdin, not in the arguments: a password in it never shows in the process list.
  const result = await runCommand(binaries.psql, ['-X', '-q', '-A', '-t', '-v', 'ON_ERROR_STOP=1', '-h', path.resolve(options.dir), '-p', String(options.port), '-U', POSTGRES_SUPERUSER, '-d', options.database ?? 'postgres'], {
    input: sql,
    timeoutMs: 30_000,
    env: {...process.env, PGCONNECT_TIMEOUT: '10'},
  })
  if (result.code !== 0) {
    throw new DdrError('STACK_FAILED', `psql on ${options.dir} (port ${options.port}) failed: ${result.stderr.trim() || `exit code ${result.code}`}`, {hint: `read ${path.join(options.dir, LOG_FILE)}`})
  }

  return result.stdout
}

/** The pid in postmaster.pid when that process lives and is the postgres of `dir`. */
function livePostmaster(dir: string): number | undefined {
  const pid = readPid(path.join(dir, POSTMASTER_PID))
  if (pid === undefined || !isAlive(pid)) return undefined
  const commandLine = processCommandLine(pid)
  return commandLine !== undefined && commandLine.includes('postgres') && commandLine.includes(dir) ? pid : undefined
}

/** The command and arguments that run `program` as the postgres user when we are root (initdb and postgres refuse root). */
function asPostgresUser(program: string, args: string[]): [string, string[]] {
  return runningAsRoot() ? ['runuser', ['-u', POSTGRES_OS_USER, '--', program, ...args]] : [program, args]
}

/** initdb into `dir` unless it already holds a cluster; true when it created one. */
async function initCluster(dir: string, binaries: PostgresBinaries, fsync: boolean): Promise<boolean> {
  if (existsSync(path.join(dir, 'PG_VERSION'))) {
    await ownByPostgres(dir)
    return false
  }

  await mkdir(dir, {recursive: true})
  if ((await readdir(dir)).length > 0) {
    throw new DdrError('STACK_FAILED', `${dir} is not empty and holds no PostgreSQL cluster (no PG_VERSION)`, {hint: 'empty it or choose another stack.dir'})
  }

  await ownByPostgres(dir)
  const args = ['-D', dir, '-U', POSTGRES_SUPERUSER, '--auth=trust', '--encoding=UTF8', '--locale=C', ...(fsync ? [] : ['--no-sync'])]
  const result = await runCommand(...asPostgresUser(binaries.initdb, args), {timeoutMs: 120_000})
  if (result.code !== 0) {
    throw new DdrError('STACK_FAILED', `initdb of ${dir} failed (exit code ${result.code}): ${(result.stderr || result.stdout).trim().split('\n').slice(-6).join('; ')}`, {
      exit: ExitCode.peer,
      hint: runningAsRoot() ? `the ${POSTGRES_OS_USER} user must be able to enter every folder above ${dir}` : 'the folder must be writable by you',
    })
  }

  const conf = path.join(dir, 'postgresql.conf')
  await writeFile(conf, `${await readFile(conf, 'utf8')}\n# ddr's settings (listen address, port, socket folder, fsync): rewritten at every start\ninclude_if_exists = '${SETTINGS_FILE}'\n`)
  return true
}

/** As root: the folder belongs to the postgres user, mode 0700 (PostgreSQL refuses anything looser), and every folder above it lets that user through. */
async function ownByPostgres(dir: string): Promise<void> {
  if (!runningAsRoot()) return
  const id = (flag: string) => {
    const result = spawnSync('id', [flag, POSTGRES_OS_USER], {encoding: 'utf8'})
    const value = Number(result.stdout.trim())
    if (result.status !== 0 || !Number.isInteger(value)) {
      throw new DdrError('DEPENDENCY_MISSING', `there is no "${POSTGRES_OS_USER}" user to run PostgreSQL as (ddr runs as root)`, {hint: `install Debian's package, which creates it: ${POSTGRES_INSTALL_COMMAND}`})
    }

    return value
  }

  const uid = id('-u')
  const gid = id('-g')
  for (let folder = path.dirname(dir); ; folder = path.dirname(folder)) {
    const stat = statSync(folder)
    const through = stat.uid === uid ? stat.mode & 0o100 : stat.gid === gid ? stat.mode & 0o010 : stat.mode & 0o001
    if (!through) {
      throw new DdrError('STACK_FAILED', `the ${POSTGRES_OS_USER} user cannot enter ${folder} (mode ${(stat.mode & 0o777).toString(8)}), so PostgreSQL cannot use ${dir}`, {
        hint: `chmod o+x ${folder}, or choose a stack.dir elsewhere`,
      })
    }

    if (folder === path.dirname(folder)) break
  }

  await chown(dir, uid, gid)
  await chmod(dir, 0o700)
}

async function ensureRoleAndDatabase(binaries: PostgresBinaries, options: {dir: string; port: number; user: string; database: string; password?: string}): Promise<void> {
  const literal = (value: string) => `'${value.replaceAll("'", "''")}'`
  const sql = [
    `SELECT 'CREATE ROLE "${options.user}" LOGIN' WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = ${literal(options.user)})\\gexec`,
    `ALTER ROLE "${options.user}" PASSWORD ${options.password === undefined ? 'NULL' : literal(options.password)};`,
    `SELECT 'CREATE DATABASE "${options.database}" OWNER "${options.user}"' WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = ${literal(options.database)})\\gexec`,
    '',
  ].join('\n')
  await runPsql({dir: options.dir, port: options.port, database: 'postgres', binaries}, sql)
}

function programVersion(program: string): string {
  const result = spawnSync(program, ['--version'], {encoding: 'utf8'})
  return /(\d+(?:\.\d+)+)/.exec(result.stdout)?.[1] ?? 'unknown'
}
