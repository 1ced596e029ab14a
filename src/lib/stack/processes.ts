import {spawn, spawnSync} from 'node:child_process'
import {accessSync, existsSync, constants as fsConstants, readFileSync} from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {DdrError} from '../errors.js'

/*
 * What every process of the local stack (Orthanc, PostgreSQL, HAProxy, routers) needs: is a pid
 * alive and really ours, signal it, wait for it, is a port free, what did its log say last, and
 * the one way to apt-get install what is missing.
 */

/** Alive and not a zombie: an exited child that was not reaped yet still answers kill(0). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0)
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM'
  }

  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3)
    return state !== 'Z' && state !== 'X'
  } catch {
    return existsSync('/proc/self') ? false : true
  }
}

/** The command line of a process, arguments joined by spaces; undefined when it is gone. */
export function processCommandLine(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').join(' ')
  } catch {
    if (existsSync('/proc/self')) return undefined
  }

  // No procfs (macOS, BSD): ask ps.
  const ps = spawnSync('ps', ['-o', 'command=', '-p', String(pid)], {encoding: 'utf8'})
  return ps.status === 0 ? ps.stdout.trim() : undefined
}

/** Sends a signal; a process that is already gone is not an error. */
export function signalProcess(pid: number, name: NodeJS.Signals): void {
  try {
    process.kill(pid, name)
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ESRCH') throw error
  }
}

/** True once the process is gone, false when it still lives after `timeoutMs`. */
export async function waitForExit(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs
  while (isAlive(pid)) {
    if (Date.now() > deadline) return false
    await sleep(50)
  }

  return true
}

/**
 * Stops a process: `signal` (default SIGTERM), then SIGKILL after `timeoutMs`.
 * Returns whether SIGKILL was needed; throws STACK_FAILED when even that did not end it.
 */
export async function terminate(pid: number, what: string, options: {signal?: NodeJS.Signals; timeoutMs: number}): Promise<{killed: boolean}> {
  signalProcess(pid, options.signal ?? 'SIGTERM')
  if (await waitForExit(pid, options.timeoutMs)) return {killed: false}
  signalProcess(pid, 'SIGKILL')
  if (!(await waitForExit(pid, 5000))) {
    throw new DdrError('STACK_FAILED', `${what} (pid ${pid}) survived SIGKILL`, {hint: `check it with: ps -p ${pid} -o pid,stat,cmd`})
  }

  return {killed: true}
}

/** Whether a TCP port can be bound on `host` right now (default: every interface). */
export function portIsFree(port: number, host = '0.0.0.0'): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer()
    server.once('error', () => resolve(false))
    server.listen({port, host, exclusive: true}, () => server.close(() => resolve(true)))
  })
}

/** A port the kernel says is free now (bind 0, read, close); bind it soon, another process may take it. */
export function freeTcpPort(host = '0.0.0.0'): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen({port: 0, host, exclusive: true}, () => {
      const address = server.address()
      const port = typeof address === 'object' && address !== null ? address.port : 0
      server.close(() => resolve(port))
    })
  })
}

/** Whether something accepts a TCP connection at host:port within `timeoutMs`. */
export function tcpAccepts(host: string, port: number, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({host, port})
    const done = (ok: boolean) => {
      socket.destroy()
      resolve(ok)
    }

    socket.setTimeout(timeoutMs, () => done(false))
    socket.once('connect', () => done(true))
    socket.once('error', () => done(false))
  })
}

/** The last `lines` lines of a log file, indented for an error message; '' when it is missing or empty. */
export function logTail(file: string, lines = 12): string {
  try {
    return readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n    ')
  } catch {
    return ''
  }
}

/** A STACK_FAILED error quoting the end of the process's log. */
export function startFailure(message: string, logPath: string, hint: string): DdrError {
  const tail = logTail(logPath)
  return new DdrError('STACK_FAILED', `${message}${tail ? `; last lines of ${logPath}:\n    ${tail}` : ` (log ${logPath} is empty)`}`, {exit: 3, hint})
}

export function isExecutable(file: string): boolean {
  try {
    accessSync(file, fsConstants.X_OK)
    return true
  } catch {
    return false
  }
}

/** The first executable among `candidates` (absolute paths), else `name` on PATH; undefined when none. */
export function findExecutable(name: string, candidates: string[] = []): string | undefined {
  for (const candidate of candidates) if (isExecutable(candidate)) return candidate
  for (const folder of (process.env.PATH ?? '').split(path.delimiter)) {
    if (folder === '') continue
    const candidate = path.join(folder, name)
    if (isExecutable(candidate)) return candidate
  }

  return undefined
}

/** The pid in the first line of a pid file; undefined when the file is missing or holds no pid. */
export function readPid(file: string): number | undefined {
  let text: string
  try {
    text = readFileSync(file, 'utf8')
  } catch {
    return undefined
  }

  const pid = Number(text.split('\n')[0].trim())
  return Number.isInteger(pid) && pid > 1 ? pid : undefined
}

/** The pid in `file` when that process is alive and its command line contains every one of `marks` (a recycled pid is never ours). */
export function livePidFrom(file: string, marks: string[]): number | undefined {
  const pid = readPid(file)
  if (pid === undefined || !isAlive(pid)) return undefined
  const commandLine = processCommandLine(pid)
  if (commandLine === undefined || !marks.every((mark) => commandLine.includes(mark))) return undefined
  return pid
}

/** Whether this process runs as root (Debian packages can be installed, daemons must drop to their own user). */
export const runningAsRoot = (): boolean => process.getuid?.() === 0

/**
 * Installs Debian packages (apt-get update, apt-get install -y), apt's progress on stderr.
 * Throws DEPENDENCY_MISSING naming `installCommand` when apt-get fails.
 */
export async function aptInstall(packages: readonly string[], installCommand: string): Promise<void> {
  const env = {...process.env, DEBIAN_FRONTEND: 'noninteractive'}
  await run('apt-get', ['update'], env, installCommand)
  await run('apt-get', ['install', '-y', ...packages], env, installCommand)
}

function run(command: string, args: string[], env: NodeJS.ProcessEnv, installCommand: string): Promise<void> {
  return new Promise((resolve, reject) => {
    // stdout carries results: apt's progress goes to stderr.
    const child = spawn(command, args, {env, stdio: ['ignore', 2, 2]})
    child.on('error', (error) =>
      reject(new DdrError('DEPENDENCY_MISSING', `could not run ${command}: ${error.message}`, {hint: `install by hand: ${installCommand}`, cause: error})),
    )
    child.on('exit', (code) =>
      code === 0
        ? resolve()
        : reject(new DdrError('DEPENDENCY_MISSING', `"${command} ${args.join(' ')}" failed with exit code ${code}`, {hint: `install by hand: ${installCommand}`})),
    )
  })
}

export interface CommandResult {
  code: number | null
  stdout: string
  stderr: string
}

/** Runs a command to its end (killed after `timeoutMs`), `input` on its stdin; never rejects on a non-zero exit. */
export function runCommand(command: string, args: string[], options: {input?: string; timeoutMs?: number; cwd?: string; env?: NodeJS.ProcessEnv} = {}): Promise<CommandResult> {
  return new Promise((resolve) => {
    const child = spawn(command, args, {cwd: options.cwd ?? '/', env: options.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe']})
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk))
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
    child.stdin.on('error', () => {}) // a command that exits without reading its input
    child.stdin.end(options.input ?? '')
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000)
    child.on('error', (error) => {
      clearTimeout(timer)
      resolve({code: null, stdout, stderr: `${stderr}${error.message}`})
    })
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({code, stdout, stderr})
    })
  })
}
