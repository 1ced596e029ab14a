import {existsSync} from 'node:fs'
import {readdir, readFile} from 'node:fs/promises'
import path from 'node:path'

import type {DdrConfig} from '../config/schema.js'
import {DdrError, isDdrError} from '../errors.js'
import {formatTable, painter} from '../output/table.js'
import {ensureHaproxyInstalled, haproxyConfig, haproxyStatus, type HaproxyCheck, type HaproxyServerState, startHaproxy, stopHaproxy, CONFIG_FILE as HAPROXY_CONFIG} from './haproxy.js'
import {LOCAL_HOSTS, type StackBackendState} from './parts.js'
import {ensurePostgresInstalled, postgresStatus, startPostgres, stopPostgres} from './postgres-process.js'
import {freeTcpPort, portIsFree} from './processes.js'
import {readRouterRecord, routerProcessStatus, SPOOL_DIR, startRouterProcess, stopRouterProcess} from './router-process.js'

/*
 * The local cluster of `ddr stack up --routers N` (docs/cluster.md): PostgreSQL (the shared study
 * ledger), N routers (`ddr listen`, each with its own spool, DICOM port and status port) and
 * HAProxy on the configured listen port in front of them. Folders under stack.dir: postgres/,
 * routers/<name>/, haproxy/.
 */

export const POSTGRES_DIR = 'postgres'
export const ROUTERS_DIR = 'routers'
export const HAPROXY_DIR = 'haproxy'
/** PostgreSQL's usual port: the stack's cluster takes it when it is free (and nothing else was asked for). */
export const POSTGRES_DEFAULT_PORT = 5432

/** One part of the cluster in a `ddr stack` result (a row of its table). */
export interface StackPartResult {
  kind: 'haproxy' | 'postgres' | 'router'
  /** "postgresql", "router-1"..., "haproxy". */
  name: string
  state: StackBackendState
  dir: string
  /** Where it listens: PostgreSQL's TCP address, a router's DICOM port, HAProxy's frontend. */
  host?: string
  port?: number
  /** A router's status port (GET /healthz, /status, the console). */
  statusPort?: number
  /** PostgreSQL: the URL routers connect to (never with a password). */
  url?: string
  /** A router: the ledger it was given (DDR_LEDGER_URL); absent: the config's. */
  ledgerUrl?: string
  pid?: number
  version?: string
  /** A router: what its GET /healthz says ("ok", "unavailable: draining", ...). */
  health?: string
  /** A router: what HAProxy says of it (UP, DOWN, ...). HAProxy: each router's state. */
  balancer?: string
  /** A router: instances received since it started. */
  received?: number
  /** Why it failed, was skipped or stopped, or what to know. */
  message?: string
}

export interface ClusterUpOptions {
  /** How many routers (router-1 ... router-N); routers beyond N from an earlier run are drained and stopped. */
  routers: number
  /**
   * The routers' ledger: the stack's PostgreSQL (default; the configured ledger.url when it names a
   * PostgreSQL elsewhere), or each router's own SQLite file in its spool (no shared ledger: for
   * tests of the balancing until the PostgreSQL ledger store is there).
   */
  routerLedger?: 'postgres' | 'sqlite'
  /** PostgreSQL's port (default: the configured ledger.url's, else the cluster's earlier port, else 5432 when free, else any free one). */
  postgresPort?: number
  /** fsync for PostgreSQL (default true). */
  postgresFsync?: boolean
  /** HAProxy's health-check timing (default every 1 s, 2 to fall, 2 to rise). */
  check?: Partial<HaproxyCheck>
  /** How long each router drains before it exits anyway (default 60 s). */
  drainTimeoutSeconds?: number
  install?: boolean
  startTimeoutMs?: number
  /** The routers' working directory (relative paths of the config): default ours. */
  cwd?: string
  onPart?: (part: StackPartResult) => void
}

/** The configured ledger.url when it is a PostgreSQL URL: where it is, who connects, to what. */
function configuredPostgres(config: DdrConfig): undefined | {local: boolean; host: string; port?: number; user?: string; database?: string; password?: string} {
  const url = config.ledger.url
  if (url === undefined || !/^postgres(ql)?:\/\//.test(url)) return undefined
  const parsed = new URL(url)
  const host = parsed.hostname.replace(/^\[|\]$/g, '')
  return {
    local: host === '' || LOCAL_HOSTS.has(host),
    host,
    port: parsed.port === '' ? undefined : Number(parsed.port),
    user: parsed.username === '' ? undefined : decodeURIComponent(parsed.username),
    database: parsed.pathname.length > 1 ? decodeURIComponent(parsed.pathname.slice(1)) : undefined,
    password: parsed.password === '' ? undefined : decodeURIComponent(parsed.password),
  }
}

const routerName = (index: number) => `router-${index}`
const clusterDir = (config: DdrConfig, part: string) => path.join(path.resolve(config.stack.dir), part)

/** The folders of routers the stack has started at some time, in name order (router-2 before router-10). */
async function routerDirs(config: DdrConfig): Promise<string[]> {
  const root = clusterDir(config, ROUTERS_DIR)
  let names: string[]
  try {
    names = await readdir(root)
  } catch {
    return []
  }

  const dirs = names.filter((name) => existsSync(path.join(root, name, 'router.json'))).map((name) => path.join(root, name))
  return dirs.sort((a, b) => a.localeCompare(b, 'en', {numeric: true}))
}

/** Whether anything of a cluster is on disk under stack.dir (status and down then report it). */
export async function clusterExists(config: DdrConfig): Promise<boolean> {
  return existsSync(path.join(clusterDir(config, POSTGRES_DIR), 'PG_VERSION')) || existsSync(path.join(clusterDir(config, HAPROXY_DIR), HAPROXY_CONFIG)) || (await routerDirs(config)).length > 0
}

/**
 * Starts (or keeps) PostgreSQL, N routers and HAProxy; one part's failure is in its row and the
 * parts that need it are skipped. Idempotent: running parts with the same settings are left alone.
 */
export async function clusterUp(config: DdrConfig, options: ClusterUpOptions): Promise<StackPartResult[]> {
  const clash = config.backends.find((backend) => [POSTGRES_DIR, ROUTERS_DIR, HAPROXY_DIR].includes(backend.name.toLowerCase()))
  if (clash !== undefined) {
    throw new DdrError('USAGE', `backend "${clash.name}" has the name of a folder of the cluster under ${config.stack.dir}`, {hint: 'rename the backend'})
  }

  if (!Number.isInteger(options.routers) || options.routers < 2) throw new DdrError('USAGE', `--routers ${options.routers}: a cluster has at least 2 routers`, {hint: 'for one router, run ddr listen'})
  const report = (part: StackPartResult) => {
    options.onPart?.(part)
    return part
  }

  const postgres = report(await postgresUp(config, options))
  const ledgerReady = options.routerLedger === 'sqlite' || postgres.state !== 'failed'
  const routers: StackPartResult[] = []
  for (const part of await routersUp(config, options, ledgerReady ? postgres.url : undefined, ledgerReady)) routers.push(report(part))
  const haproxy = await haproxyUp(config, options, routers)
  // Routers of an earlier, larger cluster go once HAProxy no longer sends to them.
  const extras = await stopExtraRouters(config, options.routers)
  for (const part of extras) report(part)
  report(haproxy)
  return [postgres, ...routers, ...extras, haproxy]
}

async function postgresUp(config: DdrConfig, options: ClusterUpOptions): Promise<StackPartResult> {
  const dir = clusterDir(config, POSTGRES_DIR)
  const configured = configuredPostgres(config)
  const part: StackPartResult = {kind: 'postgres', name: 'postgresql', state: 'started', dir}
  if (configured !== undefined && !configured.local) {
    return {...part, state: 'skipped', host: configured.host, port: configured.port, message: `ledger.url names a PostgreSQL on ${configured.host}: the routers use it`}
  }

  try {
    const binaries = await ensurePostgresInstalled({install: options.install})
    const existing = await postgresStatus(dir)
    const port = options.postgresPort ?? configured?.port ?? existing.port ?? ((await portIsFree(POSTGRES_DEFAULT_PORT, '127.0.0.1')) ? POSTGRES_DEFAULT_PORT : await freeTcpPort('127.0.0.1'))
    const user = configured?.user ?? 'ddr'
    const database = configured?.database ?? 'ddr'
    if (existing.running && existing.port === port && existing.user === user && existing.database === database) {
      return {...part, state: 'already-running', host: existing.host, port, url: existing.url, pid: existing.pid, version: existing.version}
    }

    if (existing.processAlive) {
      await stopPostgres(dir)
      part.state = 'restarted'
    }

    const info = await startPostgres({dir, port, user, database, password: config.ledger.password ?? configured?.password, fsync: options.postgresFsync, startTimeoutMs: options.startTimeoutMs, binaries})
    return {...part, host: info.host, port: info.port, url: info.url, pid: info.pid, version: info.version}
  } catch (error) {
    if (!isDdrError(error)) throw error
    return {...part, state: 'failed', message: error.message}
  }
}

async function routersUp(config: DdrConfig, options: ClusterUpOptions, postgresUrl: string | undefined, ledgerReady: boolean): Promise<StackPartResult[]> {
  const root = clusterDir(config, ROUTERS_DIR)
  const configPath = config.source === 'defaults' ? undefined : path.resolve(config.source)
  const statusHost = config.status.host === '0.0.0.0' || config.status.host === '' ? '127.0.0.1' : config.status.host
  const drainTimeoutSeconds = options.drainTimeoutSeconds ?? 60
  // The password may have come in the configured URL: DDR_LEDGER_URL carries none, the environment does.
  const urlPassword = config.ledger.password === undefined ? configuredPostgres(config)?.password : undefined
  const env: Record<string, string> = urlPassword === undefined ? {} : {DDR_LEDGER_PASSWORD: urlPassword}

  // Ports first, one after another (distinct), then the routers start side by side.
  const taken = new Set<number>()
  const port = async (wanted?: number) => {
    if (wanted !== undefined && !taken.has(wanted) && (await portIsFree(wanted, '127.0.0.1'))) {
      taken.add(wanted)
      return wanted
    }

    for (;;) {
      const free = await freeTcpPort('127.0.0.1')
      if (!taken.has(free)) {
        taken.add(free)
        return free
      }
    }
  }

  const plans = []
  for (let index = 1; index <= options.routers; index++) {
    const name = routerName(index)
    const dir = path.join(root, name)
    const ledgerUrl = options.routerLedger === 'sqlite' ? `sqlite:${path.join(dir, SPOOL_DIR, 'ledger.db')}` : postgresUrl
    const status = await routerProcessStatus(dir)
    const record = status.record
    const same = record !== undefined && record.ledgerUrl === ledgerUrl && record.statusHost === statusHost
    if (status.processAlive && same) {
      taken.add(record.dicomPort).add(record.statusPort)
      plans.push({name, dir, keep: true as const, status})
    } else {
      if (status.processAlive) await stopRouterProcess(dir)
      plans.push({name, dir, keep: false as const, restarted: status.processAlive, ledgerUrl, dicomPort: await port(record?.dicomPort), statusPort: await port(record?.statusPort)})
    }
  }

  const results = await Promise.all(
    plans.map(async (plan): Promise<StackPartResult> => {
      const part: StackPartResult = {kind: 'router', name: plan.name, state: 'started', dir: plan.dir, host: '127.0.0.1'}
      if (plan.keep) {
        const record = plan.status.record!
        return {...part, state: 'already-running', port: record.dicomPort, statusPort: record.statusPort, ledgerUrl: record.ledgerUrl, pid: plan.status.pid, health: plan.status.health, received: plan.status.received}
      }

      Object.assign(part, {port: plan.dicomPort, statusPort: plan.statusPort, ...(plan.ledgerUrl === undefined ? {} : {ledgerUrl: plan.ledgerUrl})})
      if (!ledgerReady) return {...part, state: 'skipped', message: 'PostgreSQL (the shared ledger) did not start'}
      try {
        const info = await startRouterProcess({
          name: plan.name,
          dir: plan.dir,
          dicomPort: plan.dicomPort,
          statusPort: plan.statusPort,
          statusHost,
          configPath,
          cwd: options.cwd,
          ledgerUrl: plan.ledgerUrl,
          drainTimeoutSeconds,
          startTimeoutMs: options.startTimeoutMs,
          env,
        })
        return {...part, state: plan.restarted ? 'restarted' : 'started', pid: info.pid, health: 'ok'}
      } catch (error) {
        if (!isDdrError(error)) throw error
        return {...part, state: 'failed', message: error.message}
      }
    }),
  )

  return results
}

/** Routers beyond router-N that still run (from an earlier, larger cluster): drained and stopped, their spools kept. */
async function stopExtraRouters(config: DdrConfig, count: number): Promise<StackPartResult[]> {
  const wanted = new Set(Array.from({length: count}, (_, index) => path.join(clusterDir(config, ROUTERS_DIR), routerName(index + 1))))
  const results: StackPartResult[] = []
  for (const dir of await routerDirs(config)) {
    const record = await readRouterRecord(dir)
    if (record === undefined || wanted.has(dir)) continue
    const stopped = await stopRouterProcess(dir)
    if (stopped.stopped) results.push({kind: 'router', name: record.name, state: 'stopped', dir, host: '127.0.0.1', port: record.dicomPort, statusPort: record.statusPort, pid: stopped.pid, message: `not among the ${count} routers asked for: drained and stopped (its spool stays)`})
  }

  return results
}

async function haproxyUp(config: DdrConfig, options: ClusterUpOptions, routers: StackPartResult[]): Promise<StackPartResult> {
  const dir = clusterDir(config, HAPROXY_DIR)
  const host = config.listen.host
  const port = config.listen.port
  const part: StackPartResult = {kind: 'haproxy', name: 'haproxy', state: 'started', dir, host, port}
  const servers = routers
    .filter((router) => ['already-running', 'restarted', 'started'].includes(router.state))
    .map((router) => ({name: router.name, host: '127.0.0.1', port: router.port!, checkPort: router.statusPort!}))
  if (servers.length === 0) return {...part, state: 'skipped', message: 'no router is running'}
  try {
    const binary = await ensureHaproxyInstalled({install: options.install})
    const existing = await haproxyStatus(dir)
    const wanted = haproxyConfig({dir, host, port, servers, check: options.check, sendProxy: true})
    if (existing.running && (await readFile(path.join(dir, HAPROXY_CONFIG), 'utf8').catch(() => '')) === wanted) {
      return {...part, state: 'already-running', pid: existing.pid, balancer: describeServers(await serversUp(dir, servers.length))}
    }

    const info = await startHaproxy({dir, host, port, servers, check: options.check, sendProxy: true, binary, startTimeoutMs: options.startTimeoutMs})
    const balancer = describeServers(await serversUp(dir, servers.length))
    return {...part, state: info.replaced === undefined ? 'started' : 'restarted', pid: info.pid, version: info.version, balancer, ...(info.replaced === undefined ? {} : {message: `took over from pid ${info.replaced}, which ends with its open associations`})}
  } catch (error) {
    if (!isDdrError(error)) throw error
    return {...part, state: 'failed', message: error.message}
  }
}

/**
 * What HAProxy says of the routers once it has seen all `count` of them UP (a router just
 * restarted is DOWN until `rise` checks passed), or after 15 s: `stack up` returns when
 * associations sent to listen.port reach a router.
 */
async function serversUp(dir: string, count: number): Promise<HaproxyServerState[] | undefined> {
  const deadline = Date.now() + 15_000
  for (;;) {
    const servers = (await haproxyStatus(dir)).servers
    if ((servers !== undefined && servers.filter((server) => server.status.startsWith('UP')).length >= count) || Date.now() > deadline) return servers
    await new Promise((resolve) => setTimeout(resolve, 200))
  }
}

/**
 * Stops the cluster: every router drains (no new associations, open ones and its queue finished,
 * then it exits) while HAProxy soft-stops (no new connections, open ones go on); then PostgreSQL,
 * which the draining routers still needed. Data, spools and logs stay.
 */
export async function clusterDown(config: DdrConfig, options: {onPart?: (part: StackPartResult) => void} = {}): Promise<StackPartResult[]> {
  const report = (part: StackPartResult) => {
    options.onPart?.(part)
    return part
  }

  const stopping = async <T extends {stopped: boolean; pid?: number; killed?: boolean}>(part: StackPartResult, stop: () => Promise<T>, how: string): Promise<StackPartResult> => {
    try {
      const result = await stop()
      if (!result.stopped) return report({...part, state: 'not-running'})
      return report({...part, state: 'stopped', pid: result.pid, ...(result.killed ? {message: `did not stop after ${how}: killed`} : {})})
    } catch (error) {
      if (!isDdrError(error)) throw error
      return report({...part, state: 'failed', message: error.message})
    }
  }

  const routerParts = Promise.all(
    (await routerDirs(config)).map(async (dir) => {
      const record = await readRouterRecord(dir)
      const part: StackPartResult = {kind: 'router', name: record?.name ?? path.basename(dir), state: 'not-running', dir, host: '127.0.0.1', port: record?.dicomPort, statusPort: record?.statusPort}
      return stopping(part, () => stopRouterProcess(dir), 'draining')
    }),
  )
  const haproxyDir = clusterDir(config, HAPROXY_DIR)
  const haproxyPart = existsSync(path.join(haproxyDir, HAPROXY_CONFIG))
    ? stopping({kind: 'haproxy', name: 'haproxy', state: 'not-running', dir: haproxyDir, host: config.listen.host, port: config.listen.port}, () => stopHaproxy(haproxyDir, {timeoutMs: 30_000}), 'its open connections had 30 s')
    : Promise.resolve(undefined)
  const [routers, haproxy] = await Promise.all([routerParts, haproxyPart])

  const postgresDir = clusterDir(config, POSTGRES_DIR)
  const database = await postgresStatus(postgresDir)
  const postgres = database.initialized
    ? await stopping({kind: 'postgres', name: 'postgresql', state: 'not-running', dir: postgresDir, host: database.host, port: database.port, url: database.url}, () => stopPostgres(postgresDir), 'a fast shutdown')
    : undefined
  return [...(postgres === undefined ? [] : [postgres]), ...routers, ...(haproxy === undefined ? [] : [haproxy])]
}

/** What runs of the cluster: PostgreSQL, each router (its /healthz, what HAProxy says of it), HAProxy. */
export async function clusterStatus(config: DdrConfig): Promise<StackPartResult[]> {
  const parts: StackPartResult[] = []
  const postgresDir = clusterDir(config, POSTGRES_DIR)
  const database = await postgresStatus(postgresDir)
  if (database.initialized) {
    const state: StackBackendState = database.running ? 'running' : database.processAlive ? 'unhealthy' : 'not-running'
    parts.push({kind: 'postgres', name: 'postgresql', state, dir: postgresDir, host: database.host, port: database.port, url: database.url, pid: database.pid, version: database.version, ...(state === 'unhealthy' ? {message: `pid ${database.pid} is alive but does not accept connections`} : {})})
  }

  const haproxyDir = clusterDir(config, HAPROXY_DIR)
  const balancer = await haproxyStatus(haproxyDir)
  const seen = new Map((balancer.servers ?? []).map((server) => [server.name, server]))
  for (const dir of await routerDirs(config)) {
    const router = await routerProcessStatus(dir)
    const record = router.record!
    const state: StackBackendState = router.running ? 'running' : router.processAlive ? 'unhealthy' : 'not-running'
    const server = seen.get(record.name)
    parts.push({
      kind: 'router',
      name: record.name,
      state,
      dir,
      host: '127.0.0.1',
      port: record.dicomPort,
      statusPort: record.statusPort,
      ledgerUrl: record.ledgerUrl,
      pid: router.pid,
      health: router.health,
      balancer: server === undefined ? undefined : server.status,
      received: router.received,
      ...(state === 'unhealthy' ? {message: `GET /healthz: ${router.health}`} : {}),
    })
  }

  if (balancer.configured) {
    const state: StackBackendState = !balancer.running ? 'not-running' : balancer.servers === undefined ? 'unhealthy' : 'running'
    parts.push({kind: 'haproxy', name: 'haproxy', state, dir: haproxyDir, host: balancer.host, port: balancer.port, pid: balancer.pid, balancer: describeServers(balancer.servers), ...(state === 'unhealthy' ? {message: 'its admin socket does not answer'} : {})})
  }

  return parts
}

/** "router-1 UP, router-2 DOWN (Layer7 wrong status)". */
function describeServers(servers: HaproxyServerState[] | undefined): string | undefined {
  return servers?.map((server) => (server.status.startsWith('UP') ? `${server.name} ${server.status}` : `${server.name} ${server.status} (${server.check})`)).join(', ')
}

/** The cluster's rows as a table (PART, STATE, ADDRESS, PID, DETAILS), coloured when `color` is true. */
export function formatClusterTable(parts: StackPartResult[], options: {color?: boolean} = {}): string {
  const paint = painter(options.color ?? false)
  const good = new Set<StackBackendState>(['already-running', 'restarted', 'running', 'started'])
  const bad = new Set<StackBackendState>(['failed', 'unhealthy'])
  const colour = (state: StackBackendState) => (good.has(state) ? paint.green : bad.has(state) ? paint.red : state === 'skipped' || state === 'external' ? paint.yellow : paint.dim)
  const address = (part: StackPartResult) => (part.port === undefined ? '-' : `${part.host ?? '127.0.0.1'}:${part.port}`)
  const details = (part: StackPartResult) => {
    const bits: string[] = []
    if (part.kind === 'postgres' && part.url !== undefined) bits.push(part.url)
    if (part.kind === 'router') {
      if (part.statusPort !== undefined) bits.push(`status :${part.statusPort}`)
      if (part.health !== undefined && part.health !== 'ok') bits.push(part.health)
      if (part.balancer !== undefined) bits.push(`haproxy ${part.balancer}`)
      if (part.received !== undefined) bits.push(`received ${part.received}`)
      if (part.ledgerUrl?.startsWith('sqlite:')) bits.push('own SQLite ledger')
    }

    if (part.kind === 'haproxy' && part.balancer !== undefined) bits.push(part.balancer)
    if (part.version !== undefined) bits.push(part.version)
    return bits.join(', ') || '-'
  }

  const lines = [
    formatTable(
      parts,
      [
        {header: 'PART', value: (part) => part.name},
        {header: 'STATE', value: (part) => part.state, paint: (part, text) => colour(part.state)(text)},
        {header: 'ADDRESS', value: address},
        {header: 'PID', value: (part) => (part.pid === undefined ? '-' : String(part.pid))},
        {header: 'DETAILS', value: details},
      ],
      options,
    ),
  ]
  for (const part of parts) if (part.message !== undefined) lines.push(`${colour(part.state)(`${part.name}:`)} ${part.message}`)
  return lines.join('\n')
}
