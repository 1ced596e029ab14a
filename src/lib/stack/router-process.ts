import {spawn} from 'node:child_process'
import {closeSync, openSync} from 'node:fs'
import {mkdir, readFile, rm, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'
import {fileURLToPath} from 'node:url'

import {DdrError, ExitCode} from '../errors.js'
import {fetchRouterStatus, routerStatusUrl} from '../status/client.js'
import {livePidFrom, signalProcess, startFailure, terminate, waitForExit} from './processes.js'

/*
 * One router of the local cluster: `ddr listen` as a detached process of its own, with its own
 * folder (spool, log, pid file), DICOM port and status port, behind HAProxy (docs/cluster.md).
 */

/** This package's CLI: the routers run the same ddr as the stack command. */
export const DDR_BIN = fileURLToPath(new URL('../../../bin/run.js', import.meta.url))
/** What the stack knows of a router (ports, spool, ledger): written at its start. */
export const ROUTER_FILE = 'router.json'
export const PID_FILE = 'router.pid'
export const LOG_FILE = 'router.log'
export const SPOOL_DIR = 'spool'

export interface RouterProcessOptions {
  /** Its name in the shared ledger and in HAProxy (DDR_ROUTER_NAME), e.g. router-1. */
  name: string
  /** Its folder: router.json, router.pid, router.log and spool/ (DDR_SPOOL_DIR). */
  dir: string
  /** Its DICOM port on 127.0.0.1 (only HAProxy needs to reach it). */
  dicomPort: number
  /** Its status port, where HAProxy asks GET /healthz. */
  statusPort: number
  /** Address of the status server, as status.host says (default 127.0.0.1). */
  statusHost?: string
  /** The config file it reads (the stack's own); undefined: the built-in defaults. */
  configPath?: string
  /** Its working directory: relative paths of the config resolve there (default: ours). */
  cwd?: string
  /** DDR_LEDGER_URL: the shared PostgreSQL ledger (or an SQLite file); undefined leaves the config's. */
  ledgerUrl?: string
  /** How long it drains (finishes open associations and its queue) before it exits anyway (default 60 s). */
  drainTimeoutSeconds?: number
  /** How long to wait for GET /healthz to answer 200 (default 30 s). */
  startTimeoutMs?: number
  /** More environment variables. */
  env?: Record<string, string>
}

/** router.json: what the stack needs to find, check and stop a router it started. */
export interface RouterRecord {
  name: string
  dicomPort: number
  statusPort: number
  statusHost: string
  spoolDir: string
  /** The ledger URL it was given (DDR_LEDGER_URL); absent: the config's. */
  ledgerUrl?: string
  drainTimeoutSeconds: number
}

export interface RouterProcessInfo extends RouterRecord {
  dir: string
  pid: number
  logPath: string
}

export interface RouterProcessStatus {
  dir: string
  record?: RouterRecord
  /** The pid file names a live `ddr listen` with this router's ports. */
  processAlive: boolean
  /** Alive and GET /healthz answers 200: it takes associations. */
  running: boolean
  pid?: number
  /** What GET /healthz said: "ok", "unavailable: draining", or why it did not answer. */
  health?: string
  /** Instances it received since it started (GET /status). */
  received?: number
}

/** Reads a router's router.json; undefined when there is none (or it is not one). */
export async function readRouterRecord(dir: string): Promise<RouterRecord | undefined> {
  try {
    const record = JSON.parse(await readFile(path.join(dir, ROUTER_FILE), 'utf8')) as RouterRecord
    return typeof record.name === 'string' && Number.isInteger(record.dicomPort) && Number.isInteger(record.statusPort) ? record : undefined
  } catch {
    return undefined
  }
}

/** The arguments of the router's `ddr listen` (after node and bin/run.js). */
export function routerArguments(options: Pick<RouterProcessOptions, 'configPath' | 'dicomPort' | 'statusPort' | 'drainTimeoutSeconds'>): string[] {
  return [
    'listen',
    ...(options.configPath === undefined ? [] : ['--config', options.configPath]),
    '--host',
    '127.0.0.1',
    '--port',
    String(options.dicomPort),
    '--status-port',
    String(options.statusPort),
    '--drain-timeout',
    String(options.drainTimeoutSeconds ?? 60),
    // HAProxy opens each connection with a PROXY header naming the sender (send-proxy-v2).
    '--proxy-protocol',
  ]
}

/**
 * Starts `ddr listen` detached in its own folder and waits until its GET /healthz answers 200.
 * Throws STACK_FAILED quoting its log when it exits or stays unhealthy.
 */
export async function startRouterProcess(options: RouterProcessOptions): Promise<RouterProcessInfo> {
  const dir = path.resolve(options.dir)
  const record: RouterRecord = {
    name: options.name,
    dicomPort: options.dicomPort,
    statusPort: options.statusPort,
    statusHost: options.statusHost ?? '127.0.0.1',
    spoolDir: path.join(dir, SPOOL_DIR),
    ...(options.ledgerUrl === undefined ? {} : {ledgerUrl: options.ledgerUrl}),
    drainTimeoutSeconds: options.drainTimeoutSeconds ?? 60,
  }
  const logPath = path.join(dir, LOG_FILE)
  const pidPath = path.join(dir, PID_FILE)
  const what = `router "${options.name}" (DICOM port ${options.dicomPort}, status port ${options.statusPort}, ${dir})`
  const running = livePid(dir, record)
  if (running !== undefined) throw new DdrError('STACK_FAILED', `${what} is already running (pid ${running})`, {exit: ExitCode.peer, hint: 'stop it first (ddr stack down)'})

  await mkdir(record.spoolDir, {recursive: true})
  await writeFile(path.join(dir, ROUTER_FILE), `${JSON.stringify(record, null, 2)}\n`)
  const logFd = openSync(logPath, 'a')
  let exited: {code: number | null; signal: string | null} | undefined
  let spawnError: Error | undefined
  let child
  try {
    child = spawn(process.execPath, [DDR_BIN, ...routerArguments({...options, drainTimeoutSeconds: record.drainTimeoutSeconds})], {
      cwd: options.cwd ?? process.cwd(),
      detached: true,
      stdio: ['ignore', logFd, logFd],
      env: {
        ...process.env,
        NO_COLOR: '1',
        DDR_SPOOL_DIR: record.spoolDir,
        DDR_ROUTER_NAME: options.name,
        ...(options.ledgerUrl === undefined ? {} : {DDR_LEDGER_URL: options.ledgerUrl}),
        ...options.env,
      },
    })
  } finally {
    closeSync(logFd)
  }

  child.on('error', (error) => (spawnError = error))
  child.on('exit', (code, signal) => (exited = {code, signal}))
  child.unref()
  await sleep(0)
  if (child.pid === undefined || spawnError !== undefined) {
    throw new DdrError('STACK_FAILED', `cannot start ${what}: ${process.execPath} did not run (${spawnError?.message ?? 'no pid'})`, {exit: ExitCode.peer, cause: spawnError})
  }

  const pid = child.pid
  await writeFile(pidPath, `${pid}\n`)
  const healthz = `${routerStatusUrl({host: record.statusHost, port: record.statusPort})}/healthz`
  const timeoutMs = options.startTimeoutMs ?? 30_000
  const deadline = Date.now() + timeoutMs
  let last = 'no answer'
  for (;;) {
    if (exited !== undefined) {
      await rm(pidPath, {force: true})
      throw startFailure(`${what} exited during startup (${exited.signal ?? `exit code ${exited.code}`})`, logPath, `read ${logPath}`)
    }

    last = await health(healthz)
    if (last === 'ok') break
    if (Date.now() > deadline) {
      await terminate(pid, what, {timeoutMs: 5000})
      await rm(pidPath, {force: true})
      throw startFailure(`${what}: GET ${healthz} did not answer 200 within ${Math.round(timeoutMs / 1000)} s (last: ${last})`, logPath, `read ${logPath}`)
    }

    await sleep(100)
  }

  return {...record, dir, pid, logPath}
}

/**
 * Stops a router the stack started. drain (default): SIGUSR2, as `ddr listen --drain` asks: it
 * takes no new associations (GET /healthz says draining, so HAProxy stops sending), finishes the
 * open ones and its queue, and exits; after its drain timeout (+10 s) SIGTERM, then SIGKILL.
 * What is still queued stays in its spool for its next start.
 */
export async function stopRouterProcess(dir: string, options: {drain?: boolean; timeoutMs?: number} = {}): Promise<{dir: string; stopped: boolean; pid?: number; killed?: boolean}> {
  dir = path.resolve(dir)
  const record = await readRouterRecord(dir)
  const pid = record === undefined ? undefined : livePid(dir, record)
  if (pid === undefined) {
    await rm(path.join(dir, PID_FILE), {force: true})
    return {dir, stopped: false}
  }

  const what = `router "${record!.name}" (${dir})`
  let killed = false
  if (options.drain ?? true) {
    signalProcess(pid, 'SIGUSR2')
    if (!(await waitForExit(pid, options.timeoutMs ?? (record!.drainTimeoutSeconds + 10) * 1000))) killed = (await terminate(pid, what, {timeoutMs: 10_000})).killed
  } else {
    killed = (await terminate(pid, what, {timeoutMs: options.timeoutMs ?? 30_000})).killed
  }

  await rm(path.join(dir, PID_FILE), {force: true})
  return {dir, stopped: true, pid, killed}
}

/** Whether the router of `dir` lives, what its /healthz says, and how many instances it received. */
export async function routerProcessStatus(dir: string): Promise<RouterProcessStatus> {
  dir = path.resolve(dir)
  const record = await readRouterRecord(dir)
  const status: RouterProcessStatus = {dir, record, processAlive: false, running: false}
  if (record === undefined) return status
  const pid = livePid(dir, record)
  if (pid === undefined) return status
  status.pid = pid
  status.processAlive = true
  const base = routerStatusUrl({host: record.statusHost, port: record.statusPort})
  status.health = await health(`${base}/healthz`)
  status.running = status.health === 'ok'
  const probe = await fetchRouterStatus(base, {timeoutMs: 2000})
  if (probe.running) status.received = probe.status.counters.received
  return status
}

/** "ok" for 200, else what the router or the connection said. */
async function health(url: string): Promise<string> {
  try {
    const response = await fetch(url, {signal: AbortSignal.timeout(2000)})
    const text = (await response.text()).trim()
    return response.status === 200 ? 'ok' : text || `HTTP ${response.status}`
  } catch (error) {
    const cause = (error as {cause?: {code?: string}}).cause
    return cause?.code === 'ECONNREFUSED' ? 'not listening' : `no answer (${cause?.code ?? (error as Error).message})`
  }
}

/** The pid in the router's pid file when that process is a `ddr listen` on this router's ports (a recycled pid is never ours). */
function livePid(dir: string, record: RouterRecord): number | undefined {
  // Each mark ends with a space: the command line's arguments are joined by spaces, and --port comes before more arguments.
  return livePidFrom(path.join(dir, PID_FILE), [' listen ', `--port ${record.dicomPort} `, `--status-port ${record.statusPort} `])
}
