import {spawn} from 'node:child_process'
import {openSync, closeSync} from 'node:fs'
import {mkdir, readFile, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {DdrError, ExitCode} from '../errors.js'
import {OrthancClient} from '../orthanc/client.js'
import {aptInstall, findExecutable, livePidFrom, portIsFree, runningAsRoot, signalProcess, startFailure, terminate, waitForExit} from './processes.js'

export {portIsFree} from './processes.js'

/** Where Debian's orthanc package puts the server. */
export const ORTHANC_BINARY = '/usr/sbin/Orthanc'
/** Debian's DICOMweb plugin (package orthanc-dicomweb). */
export const DICOMWEB_PLUGIN = '/usr/share/orthanc/plugins/libOrthancDicomWeb.so'
export const APT_PACKAGES = ['orthanc', 'orthanc-dicomweb', 'dcmtk'] as const
/** The one command that installs everything the local stack and the tests need (Debian/Ubuntu). */
export const INSTALL_COMMAND = `apt-get update && apt-get install -y ${APT_PACKAGES.join(' ')}`

export const CONFIG_FILE = 'orthanc.json'
export const PID_FILE = 'orthanc.pid'
export const LOG_FILE = 'orthanc.log'
const startHint = (logPath: string) => `read ${logPath}; a port in use or a bad plugin path are the usual causes`

export interface OrthancProcessOptions {
  /** Shown in /system and in messages. */
  name: string
  aeTitle: string
  dicomPort: number
  httpPort: number
  /** Folder for orthanc.json, orthanc.pid, orthanc.log and the storage; created when missing. */
  dir: string
  /** Host in the returned URL (Orthanc 1.10 listens on every interface; remote HTTP access is refused). Default 127.0.0.1. */
  host?: string
  /** Shared libraries to load as plugins. */
  plugins?: string[]
  /** Orthanc configuration keys merged over ours, last. */
  extra?: Record<string, unknown>
  /** How long to wait for GET /system to answer (default 20 s). */
  startTimeoutMs?: number
  /** Orthanc executable (default: findOrthancBinary()). */
  binary?: string
  /**
   * Serve the REST API over HTTPS only (Orthanc's SslEnabled): `certificate` is one PEM file with
   * the server certificate and its private key (SslCertificate); `ca` verifies it while waiting for
   * the start. Debian 12's Orthanc 1.10.1 (civetweb 1.15 loading OpenSSL 3 at run time) crashes on
   * the first HTTPS request unless libssl.so offers SSL_get_peer_certificate: see `env`.
   */
  https?: {certificate: string; ca: string}
  /** More environment variables for the Orthanc process (e.g. LD_LIBRARY_PATH). */
  env?: Record<string, string>
  /**
   * Require HTTP basic authentication (AuthenticationEnabled) with this one registered user;
   * waiting for the start then asks GET /system with these credentials.
   */
  credentials?: {username: string; password: string}
}

export interface OrthancProcessInfo {
  name: string
  pid: number
  dicomPort: number
  httpPort: number
  aeTitle: string
  /** Base URL of the REST API, e.g. http://127.0.0.1:8042. */
  url: string
  dir: string
  configPath: string
  logPath: string
  /** Orthanc's version from GET /system. */
  version: string
}

export interface OrthancStatus {
  dir: string
  /** The process from the pid file is alive and GET /system answers. */
  running: boolean
  /** The pid file names a live process that is this Orthanc. */
  processAlive: boolean
  /** GET /system answered. */
  answers: boolean
  pid?: number
  name?: string
  aeTitle?: string
  dicomPort?: number
  httpPort?: number
  url?: string
  version?: string
}

export interface StopResult {
  dir: string
  /** True when a running Orthanc was stopped. */
  stopped: boolean
  pid?: number
  /** Needed SIGKILL after SIGTERM timed out. */
  killed?: boolean
}

/** The Orthanc configuration ddr writes: localhost-only HTTP without credentials, promiscuous C-STORE SCP. */
export function orthancConfig(options: OrthancProcessOptions): Record<string, unknown> {
  const dir = path.resolve(options.dir)
  return {
    Name: options.name,
    StorageDirectory: path.join(dir, 'storage'),
    IndexDirectory: path.join(dir, 'index'),
    DicomAet: options.aeTitle,
    DicomPort: options.dicomPort,
    HttpPort: options.httpPort,
    // Orthanc 1.10 cannot bind HTTP to one address; refusing remote access keeps it localhost-only,
    // which is what makes running without authentication (and without any stored credential) acceptable.
    RemoteAccessAllowed: false,
    AuthenticationEnabled: false,
    DicomCheckCalledAet: false,
    DicomAlwaysAllowStore: true,
    DicomAlwaysAllowEcho: true,
    // ddr answers queries for the fleet by asking each Orthanc (C-FIND), as any AE may here, and
    // fetches instances from an Orthanc by C-GET.
    DicomAlwaysAllowFind: true,
    DicomAlwaysAllowGet: true,
    UnknownSopClassAccepted: true,
    StorageCompression: false,
    // Orthanc keeps the first copy of a SOPInstanceUID: re-sends after a retry are harmless.
    OverwriteInstances: false,
    AcceptedTransferSyntaxes: ['1.2.840.10008.1.*'],
    DeflatedTransferSyntaxAccepted: true,
    JpegTransferSyntaxAccepted: true,
    Jpeg2000TransferSyntaxAccepted: true,
    JpegLosslessTransferSyntaxAccepted: true,
    JpipTransferSyntaxAccepted: true,
    Mpeg2TransferSyntaxAccepted: true,
    RleTransferSyntaxAccepted: true,
    Mpeg4TransferSyntaxAccepted: true,
    H265TransferSyntaxAccepted: true,
    DicomScpTimeout: 30,
    // Default 4: the router opens several associations per backend at once.
    DicomThreadsCount: 16,
    ConcurrentJobs: Math.max(2, Math.min(4, os.availableParallelism())),
    HttpCompressionEnabled: false,
    SaveJobs: false,
    Plugins: options.plugins ?? [],
    ...(options.https === undefined ? {} : {SslEnabled: true, SslCertificate: path.resolve(options.https.certificate)}),
    ...(options.credentials === undefined ? {} : {AuthenticationEnabled: true, RegisteredUsers: {[options.credentials.username]: options.credentials.password}}),
    ...options.extra,
  }
}

/** The Orthanc executable: /usr/sbin/Orthanc, else "Orthanc" on PATH; undefined when neither exists. */
export function findOrthancBinary(): string | undefined {
  return findExecutable('Orthanc', [ORTHANC_BINARY])
}

/**
 * Returns the Orthanc executable, installing the Debian packages first when it is missing and we run as root.
 * Without root it throws DEPENDENCY_MISSING naming the install command.
 */
export async function ensureOrthancInstalled(options: {install?: boolean} = {}): Promise<string> {
  const found = findOrthancBinary()
  if (found !== undefined) return found
  if (!runningAsRoot() || options.install === false) {
    throw new DdrError('DEPENDENCY_MISSING', `Orthanc is not installed (looked for ${ORTHANC_BINARY} and "Orthanc" on PATH)`, {
      hint: `install it as root: ${INSTALL_COMMAND}`,
    })
  }

  await aptInstall(APT_PACKAGES, INSTALL_COMMAND)
  const installed = findOrthancBinary()
  if (installed === undefined) {
    throw new DdrError('DEPENDENCY_MISSING', `"apt-get install -y ${APT_PACKAGES.join(' ')}" finished but ${ORTHANC_BINARY} is still missing`, {
      hint: 'install Orthanc by hand and make sure "Orthanc" is on PATH',
    })
  }

  return installed
}

/**
 * Starts one Orthanc in `dir` (config, pid file, log, storage all inside) and waits until GET /system answers.
 * The process is detached: it outlives the caller until stopOrthanc(dir).
 */
export async function startOrthanc(options: OrthancProcessOptions): Promise<OrthancProcessInfo> {
  const dir = path.resolve(options.dir)
  const configPath = path.join(dir, CONFIG_FILE)
  const logPath = path.join(dir, LOG_FILE)
  const pidPath = path.join(dir, PID_FILE)
  const host = options.host ?? '127.0.0.1'
  const url = `${options.https === undefined ? 'http' : 'https'}://${host.includes(':') ? `[${host}]` : host}:${options.httpPort}`
  const what = `Orthanc "${options.name}" (DICOM port ${options.dicomPort}, HTTP port ${options.httpPort}, ${dir})`
  const binary = options.binary ?? findOrthancBinary()
  if (binary === undefined) {
    throw new DdrError('DEPENDENCY_MISSING', `cannot start ${what}: Orthanc is not installed`, {hint: `install it as root: ${INSTALL_COMMAND}`})
  }

  const running = await livePid(dir)
  if (running !== undefined) {
    throw new DdrError('STACK_FAILED', `${what} is already running (pid ${running})`, {exit: ExitCode.peer, hint: `stop it first (ddr stack down)`})
  }

  for (const [port, kind] of [
    [options.dicomPort, 'DICOM'],
    [options.httpPort, 'HTTP'],
  ] as const) {
    if (!(await portIsFree(port))) {
      throw new DdrError('STACK_FAILED', `cannot start ${what}: ${kind} port ${port} is already in use by another process`, {
        exit: ExitCode.peer,
        hint: 'stop whatever listens there (e.g. a system Orthanc service), or give this backend other ports in the config',
      })
    }
  }

  await mkdir(dir, {recursive: true})
  await writeFile(configPath, `${JSON.stringify(orthancConfig(options), null, 2)}\n`)
  await writeFile(logPath, '')

  const logFd = openSync(logPath, 'a')
  let exited: {code: number | null; signal: string | null} | undefined
  let spawnError: Error | undefined
  let child
  try {
    child = spawn(binary, [configPath], {
      cwd: dir,
      detached: true,
      stdio: ['ignore', logFd, logFd],
      // Debian's Orthanc (DCMTK) leaves Nagle on unless told: ~88 ms stall per instance without it.
      env: {...process.env, TCP_NODELAY: '1', ...options.env},
    })
  } finally {
    closeSync(logFd)
  }

  child.on('error', (error) => (spawnError = error))
  child.on('exit', (code, signal) => (exited = {code, signal}))
  child.unref()
  await sleep(0) // let a spawn error (ENOENT, EACCES) arrive
  if (child.pid === undefined || spawnError !== undefined) {
    throw new DdrError('STACK_FAILED', `cannot start ${what}: ${binary} did not run (${spawnError?.message ?? 'no pid'})`, {exit: ExitCode.peer, cause: spawnError})
  }

  const pid = child.pid
  await writeFile(pidPath, `${pid}\n`)

  const client = new OrthancClient({url, timeoutMs: 1000, ...options.credentials, ...(options.https === undefined ? {} : {https: {ca: options.https.ca}})})
  const deadline = Date.now() + (options.startTimeoutMs ?? 20_000)
  let version: string
  try {
    for (;;) {
      if (exited !== undefined) {
        await rm(pidPath, {force: true})
        const how = exited.signal === null ? `exit code ${exited.code}` : `signal ${exited.signal}`
        throw startFailure(`${what} exited during startup (${how})`, logPath, startHint(logPath))
      }

      try {
        version = (await client.system()).Version
        break
      } catch {
        // not listening yet
      }

      if (Date.now() > deadline) {
        signalProcess(pid, 'SIGKILL')
        await waitForExit(pid, 5000)
        await rm(pidPath, {force: true})
        throw startFailure(`${what} did not answer GET ${url}/system within ${Math.round((options.startTimeoutMs ?? 20_000) / 1000)} s`, logPath, startHint(logPath))
      }

      await sleep(100)
    }
  } finally {
    client.close()
  }

  return {name: options.name, pid, dicomPort: options.dicomPort, httpPort: options.httpPort, aeTitle: options.aeTitle, url, dir, configPath, logPath, version}
}

/**
 * Stops the Orthanc whose pid file is in `dir`: SIGTERM, then SIGKILL after `timeoutMs` (default 10 s).
 * Only a process whose command line names this dir's orthanc.json is signalled; a stale pid file is removed.
 */
export async function stopOrthanc(dir: string, options: {timeoutMs?: number} = {}): Promise<StopResult> {
  dir = path.resolve(dir)
  const pidPath = path.join(dir, PID_FILE)
  const pid = await livePid(dir)
  if (pid === undefined) {
    await rm(pidPath, {force: true})
    return {dir, stopped: false}
  }

  const {killed} = await terminate(pid, `Orthanc of ${dir}`, {timeoutMs: options.timeoutMs ?? 10_000})

  await rm(pidPath, {force: true})
  return {dir, stopped: true, pid, killed}
}

/** Whether the Orthanc of `dir` runs (pid alive and really that Orthanc) and answers GET /system. */
export async function orthancStatus(dir: string, options: {host?: string; timeoutMs?: number} = {}): Promise<OrthancStatus> {
  dir = path.resolve(dir)
  const status: OrthancStatus = {dir, running: false, processAlive: false, answers: false}
  const config = await readJson(path.join(dir, CONFIG_FILE))
  if (config !== undefined) {
    status.name = typeof config.Name === 'string' ? config.Name : undefined
    status.aeTitle = typeof config.DicomAet === 'string' ? config.DicomAet : undefined
    status.dicomPort = typeof config.DicomPort === 'number' ? config.DicomPort : undefined
    status.httpPort = typeof config.HttpPort === 'number' ? config.HttpPort : undefined
  }

  const pid = await livePid(dir)
  if (pid === undefined) return status
  status.pid = pid
  status.processAlive = true
  if (status.httpPort === undefined) return status
  const host = options.host ?? '127.0.0.1'
  status.url = `http://${host.includes(':') ? `[${host}]` : host}:${status.httpPort}`
  const client = new OrthancClient({url: status.url, timeoutMs: options.timeoutMs ?? 2000})
  try {
    status.version = (await client.system()).Version
    status.answers = true
    status.running = true
  } catch {
    // alive but not answering (starting, or hung)
  } finally {
    client.close()
  }

  return status
}

/** The pid from dir's pid file when that process is alive and is the Orthanc started with dir's config. */
async function livePid(dir: string): Promise<number | undefined> {
  // A recycled pid belongs to some other program: never signal it.
  return livePidFrom(path.join(dir, PID_FILE), [path.join(dir, CONFIG_FILE)])
}

async function readJson(file: string): Promise<Record<string, unknown> | undefined> {
  try {
    const value = JSON.parse(await readFile(file, 'utf8'))
    return value !== null && typeof value === 'object' ? value : undefined
  } catch {
    return undefined
  }
}
