import {spawn, spawnSync} from 'node:child_process'
import {closeSync, existsSync, openSync} from 'node:fs'
import {mkdir, readFile, rm, writeFile} from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {DdrError, ExitCode} from '../errors.js'
import {aptInstall, findExecutable, livePidFrom, portIsFree, runCommand, runningAsRoot, signalProcess, startFailure, terminate, waitForExit} from './processes.js'

/*
 * HAProxy in front of several ddr routers (docs/cluster.md): one TCP frontend on the cluster's DICOM
 * port, `balance leastconn` over the routers, each checked on its status port's GET /healthz (a
 * draining or refusing router answers 503 and gets no new associations). Debian's haproxy 2.6,
 * run in the foreground (its warnings, such as a router going DOWN, in haproxy.log) and detached.
 */

export const HAPROXY_BINARY = '/usr/sbin/haproxy'
export const HAPROXY_APT_PACKAGES = ['haproxy'] as const
export const HAPROXY_INSTALL_COMMAND = `apt-get update && apt-get install -y ${HAPROXY_APT_PACKAGES.join(' ')}`
export const CONFIG_FILE = 'haproxy.cfg'
export const PID_FILE = 'haproxy.pid'
export const LOG_FILE = 'haproxy.log'
/** The admin socket: `show stat` says which routers HAProxy sends to. */
export const SOCKET_FILE = 'haproxy.sock'
/** The backend section's name: its servers are the routers. */
export const BACKEND_NAME = 'routers'

export interface HaproxyServer {
  /** HAProxy's name for it (letters, digits, . _ -), e.g. router-1. */
  name: string
  host: string
  /** Its DICOM port. */
  port: number
  /** Its status port, where GET /healthz answers 200 when it takes associations. */
  checkPort: number
}

export interface HaproxyCheck {
  /** Time between health checks (default 1000 ms). */
  interMs: number
  /** Failed checks in a row before a router is marked DOWN (default 2). */
  fall: number
  /** Good checks in a row before it is UP again (default 2). */
  rise: number
}

export interface HaproxyOptions {
  /** Folder for haproxy.cfg, its pid file, log and admin socket; created when missing. */
  dir: string
  /** Address of the DICOM frontend (default 0.0.0.0). */
  host?: string
  /** Port of the DICOM frontend: what senders are told. */
  port: number
  servers: HaproxyServer[]
  check?: Partial<HaproxyCheck>
  /**
   * Open each connection to a router with a PROXY protocol v2 header naming the sender (the routers
   * then need listen.proxyProtocol), so their address allow-lists and logs see the sender, not HAProxy.
   */
  sendProxy?: boolean
  /** How long to wait until the admin socket answers (default 10 s). */
  startTimeoutMs?: number
  /** haproxy executable (default: findHaproxyBinary()). */
  binary?: string
}

export interface HaproxyInfo {
  dir: string
  pid: number
  host: string
  port: number
  configPath: string
  logPath: string
  socketPath: string
  version: string
  /** A running HAProxy of this folder handed over to this one (`-sf`): open connections stay with the old one until they end. */
  replaced?: number
}

/** One router as HAProxy sees it (its `show stat` row). */
export interface HaproxyServerState {
  name: string
  /** UP, DOWN, MAINT, NOLB, or a transition such as "UP 1/2" (going down) or "DOWN 1/2" (coming up). */
  status: string
  /** Connections open to it now. */
  sessions: number
  /** Connections it was given since HAProxy started. */
  totalSessions: number
  /** What the last health check said, e.g. "Layer7 check passed" or "Layer7 wrong status". */
  check: string
}

export interface HaproxyStatus {
  dir: string
  /** A haproxy.cfg is there. */
  configured: boolean
  running: boolean
  pid?: number
  host?: string
  port?: number
  /** Absent when the admin socket did not answer. */
  servers?: HaproxyServerState[]
}

/** A unix socket path must fit in sockaddr_un.sun_path on Linux. */
const MAX_SOCKET_PATH = 107
const SERVER_NAME = /^[A-Za-z0-9._-]+$/

/**
 * The haproxy.cfg of the stack: also the template for production (docs/cluster.md explains each
 * line). DICOM associations last long, so the client and server timeouts are an hour and TCP
 * keep-alives keep idle ones open through firewalls.
 */
export function haproxyConfig(options: Pick<HaproxyOptions, 'dir' | 'host' | 'port' | 'servers' | 'check' | 'sendProxy'>): string {
  const check: HaproxyCheck = {interMs: 1000, fall: 2, rise: 2, ...options.check}
  const host = options.host ?? '0.0.0.0'
  const socketPath = path.join(path.resolve(options.dir), SOCKET_FILE)
  for (const server of options.servers) {
    if (!SERVER_NAME.test(server.name)) throw new DdrError('USAGE', `"${server.name}" cannot be an HAProxy server name (letters, digits, ".", "_", "-")`)
  }

  return [
    '# Written by ddr stack up (src/lib/stack/haproxy.ts); docs/cluster.md explains every line.',
    'global',
    `    stats socket ${socketPath} mode 600 level admin`,
    '    maxconn 4096',
    '',
    'defaults',
    '    mode tcp',
    '    option tcpka',
    '    timeout connect 5s',
    '    timeout client 1h',
    '    timeout server 1h',
    '    timeout check 2s',
    '    retries 3',
    '    option redispatch 1',
    '',
    'frontend dicom',
    `    bind ${host}:${options.port}`,
    `    default_backend ${BACKEND_NAME}`,
    '',
    `backend ${BACKEND_NAME}`,
    '    balance leastconn',
    '    option httpchk',
    '    http-check send meth GET uri /healthz',
    '    http-check expect status 200',
    `    default-server inter ${check.interMs}ms fall ${check.fall} rise ${check.rise}${options.sendProxy === true ? ' send-proxy-v2' : ''}`,
    ...options.servers.map((server) => `    server ${server.name} ${server.host}:${server.port} check port ${server.checkPort}`),
    '',
  ].join('\n')
}

/** /usr/sbin/haproxy, else haproxy on PATH; undefined when neither exists. */
export function findHaproxyBinary(): string | undefined {
  return findExecutable('haproxy', [HAPROXY_BINARY])
}

/**
 * The haproxy executable, installing Debian's package first when it is missing and we are root
 * (the distribution's own haproxy service, should it start, is stopped: ddr runs its own).
 */
export async function ensureHaproxyInstalled(options: {install?: boolean} = {}): Promise<string> {
  const found = findHaproxyBinary()
  if (found !== undefined) return found
  if (!runningAsRoot() || options.install === false) {
    throw new DdrError('DEPENDENCY_MISSING', `HAProxy is not installed (looked for ${HAPROXY_BINARY} and "haproxy" on PATH)`, {hint: `install it as root: ${HAPROXY_INSTALL_COMMAND}`})
  }

  await aptInstall(HAPROXY_APT_PACKAGES, HAPROXY_INSTALL_COMMAND)
  if (findExecutable('systemctl') !== undefined) await runCommand('systemctl', ['disable', '--now', 'haproxy'])
  // Without systemd the package's init script may have started it with the distribution's config.
  const system = livePidFrom('/run/haproxy.pid', ['/etc/haproxy/haproxy.cfg'])
  if (system !== undefined) await terminate(system, 'the haproxy service the package started', {timeoutMs: 5000})
  const installed = findHaproxyBinary()
  if (installed === undefined) throw new DdrError('DEPENDENCY_MISSING', `"apt-get install -y haproxy" finished but ${HAPROXY_BINARY} is still missing`)
  return installed
}

/**
 * Writes haproxy.cfg into `dir`, checks it (haproxy -c), and starts HAProxy detached; resolves once
 * its admin socket answers. A HAProxy already running from `dir` hands over to the new one (-sf):
 * the new one takes new connections, the old one ends when its open ones do.
 */
export async function startHaproxy(options: HaproxyOptions): Promise<HaproxyInfo> {
  const dir = path.resolve(options.dir)
  const host = options.host ?? '0.0.0.0'
  const configPath = path.join(dir, CONFIG_FILE)
  const logPath = path.join(dir, LOG_FILE)
  const pidPath = path.join(dir, PID_FILE)
  const socketPath = path.join(dir, SOCKET_FILE)
  const what = `HAProxy (DICOM frontend ${host}:${options.port}, ${dir})`
  if (socketPath.length > MAX_SOCKET_PATH) throw new DdrError('USAGE', `${what}: its admin socket path ${socketPath} is longer than ${MAX_SOCKET_PATH} characters`, {hint: 'choose a shorter stack.dir'})
  const binary = options.binary ?? findHaproxyBinary()
  if (binary === undefined) throw new DdrError('DEPENDENCY_MISSING', `cannot start ${what}: HAProxy is not installed`, {hint: `install it as root: ${HAPROXY_INSTALL_COMMAND}`})

  const previous = livePid(dir)
  if (previous === undefined && !(await portIsFree(options.port, host))) {
    throw new DdrError('STACK_FAILED', `cannot start ${what}: port ${options.port} is already in use by another process`, {
      exit: ExitCode.peer,
      hint: 'stop whatever listens there (a ddr listen with this config?), or give listen.port another port',
    })
  }

  await mkdir(dir, {recursive: true})
  await writeFile(configPath, haproxyConfig({...options, dir, host}))
  const checked = await runCommand(binary, ['-c', '-q', '-f', configPath], {timeoutMs: 10_000})
  if (checked.code !== 0) {
    throw new DdrError('STACK_FAILED', `${configPath} does not pass haproxy -c: ${(checked.stderr || checked.stdout).trim()}`, {hint: 'this is a bug in ddr: please report it with the file'})
  }

  const logFd = openSync(logPath, 'a')
  let exited: {code: number | null; signal: string | null} | undefined
  let spawnError: Error | undefined
  let child
  try {
    child = spawn(binary, ['-f', configPath, ...(previous === undefined ? [] : ['-sf', String(previous)])], {cwd: dir, detached: true, stdio: ['ignore', logFd, logFd]})
  } finally {
    closeSync(logFd)
  }

  child.on('error', (error) => (spawnError = error))
  child.on('exit', (code, signal) => (exited = {code, signal}))
  child.unref()
  await sleep(0)
  if (child.pid === undefined || spawnError !== undefined) {
    throw new DdrError('STACK_FAILED', `cannot start ${what}: ${binary} did not run (${spawnError?.message ?? 'no pid'})`, {exit: ExitCode.peer, cause: spawnError})
  }

  const pid = child.pid
  await writeFile(pidPath, `${pid}\n`)
  const hint = `read ${logPath}`
  const deadline = Date.now() + (options.startTimeoutMs ?? 10_000)
  for (;;) {
    if (exited !== undefined) {
      await rm(pidPath, {force: true})
      throw startFailure(`${what} exited during startup (${exited.signal ?? `exit code ${exited.code}`})`, logPath, hint)
    }

    // The old one lets go of the socket when it soft-stops: ask until the new one answers.
    if ((await adminCommand(socketPath, 'show info', 1000).catch(() => '')).includes(`Pid: ${pid}`)) break
    if (Date.now() > deadline) {
      signalProcess(pid, 'SIGKILL')
      await waitForExit(pid, 5000)
      await rm(pidPath, {force: true})
      throw startFailure(`${what} did not answer on ${socketPath} within ${Math.round((options.startTimeoutMs ?? 10_000) / 1000)} s`, logPath, hint)
    }

    await sleep(50)
  }

  return {dir, pid, host, port: options.port, configPath, logPath, socketPath, version: haproxyVersion(binary), replaced: previous}
}

/**
 * Stops the HAProxy of `dir`. Soft (default): SIGUSR1, it stops listening and exits once its open
 * connections end; after `timeoutMs` (default 10 s) SIGTERM, then SIGKILL. Hard: SIGTERM at once.
 */
export async function stopHaproxy(dir: string, options: {timeoutMs?: number; soft?: boolean} = {}): Promise<{dir: string; stopped: boolean; pid?: number; killed?: boolean}> {
  dir = path.resolve(dir)
  const pid = livePid(dir)
  if (pid === undefined) {
    await rm(path.join(dir, PID_FILE), {force: true})
    return {dir, stopped: false}
  }

  const timeoutMs = options.timeoutMs ?? 10_000
  if (options.soft ?? true) {
    signalProcess(pid, 'SIGUSR1')
    if (await waitForExit(pid, timeoutMs)) {
      await rm(path.join(dir, PID_FILE), {force: true})
      return {dir, stopped: true, pid, killed: false}
    }
  }

  const {killed} = await terminate(pid, `HAProxy of ${dir}`, {timeoutMs: 5000})
  await rm(path.join(dir, PID_FILE), {force: true})
  return {dir, stopped: true, pid, killed}
}

/** Whether the HAProxy of `dir` runs, its frontend from haproxy.cfg, and what it says of each router. */
export async function haproxyStatus(dir: string): Promise<HaproxyStatus> {
  dir = path.resolve(dir)
  const status: HaproxyStatus = {dir, configured: existsSync(path.join(dir, CONFIG_FILE)), running: false}
  if (!status.configured) return status
  const bind = /^\s*bind\s+(\S+):(\d+)\s*$/m.exec(await readFile(path.join(dir, CONFIG_FILE), 'utf8'))
  if (bind !== null) {
    status.host = bind[1]
    status.port = Number(bind[2])
  }

  const pid = livePid(dir)
  if (pid === undefined) return status
  status.pid = pid
  status.running = true
  try {
    status.servers = await haproxyServerStates(path.join(dir, SOCKET_FILE))
  } catch {
    // the socket does not answer (starting, or hung)
  }

  return status
}

/** The routers' rows of `show stat` on the admin socket. */
export async function haproxyServerStates(socketPath: string, timeoutMs = 2000): Promise<HaproxyServerState[]> {
  return parseHaproxyStat(await adminCommand(socketPath, 'show stat', timeoutMs))
}

/** The servers (not FRONTEND/BACKEND rows) of the routers backend in `show stat` CSV. */
export function parseHaproxyStat(csv: string): HaproxyServerState[] {
  const lines = csv.split('\n').filter((line) => line.trim() !== '')
  const header = lines[0]?.replace(/^#\s*/, '').split(',') ?? []
  const column = (name: string) => header.indexOf(name)
  const [proxy, server, status, sessions, total, check] = ['pxname', 'svname', 'status', 'scur', 'stot', 'check_desc'].map(column)
  if ([proxy, server, status].includes(-1)) return []
  return lines
    .slice(1)
    .map((line) => line.split(','))
    .filter((fields) => fields[proxy] === BACKEND_NAME && fields[server] !== 'BACKEND' && fields[server] !== 'FRONTEND')
    .map((fields) => ({name: fields[server], status: fields[status], sessions: Number(fields[sessions]) || 0, totalSessions: Number(fields[total]) || 0, check: fields[check] ?? ''}))
}

/** Sends one command to HAProxy's admin socket and returns its whole answer. */
export function adminCommand(socketPath: string, command: string, timeoutMs = 2000): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(socketPath)
    let answer = ''
    socket.setEncoding('utf8')
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error(`${socketPath} did not answer "${command}" within ${timeoutMs} ms`)))
    socket.on('data', (chunk: string) => (answer += chunk))
    socket.once('error', reject)
    socket.once('end', () => resolve(answer))
    socket.write(`${command}\n`)
  })
}

/** The pid in dir's pid file when that process is alive and is the HAProxy started with dir's haproxy.cfg. */
function livePid(dir: string): number | undefined {
  return livePidFrom(path.join(dir, PID_FILE), [path.join(dir, CONFIG_FILE)])
}

function haproxyVersion(binary: string): string {
  const result = spawnSync(binary, ['-v'], {encoding: 'utf8'})
  return /version (\S+)/.exec(result.stdout)?.[1] ?? 'unknown'
}
