import {type ChildProcessWithoutNullStreams, spawn} from 'node:child_process'
import {readFileSync} from 'node:fs'
import {readFile} from 'node:fs/promises'
import path from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {repoRoot} from './compiled-cli.js'

/** Debian's strace (package strace). */
export const STRACE = '/usr/bin/strace'

/** One system call of a traced process, from entry to exit (a call interrupted by another thread's is joined up). */
export interface Syscall {
  pid: number
  name: string
  /** The first argument's file descriptor and what -yy says it is: a path, or TCP:[local->peer]. */
  fd?: number
  fdPath?: string
  /** For a call on a file descriptor: the arguments after it (a write's data first). */
  afterFd?: string
  /** The arguments as printed, every \xNN escape turned into its byte (latin1), paths and data alike. */
  args: string
  /** The return value as printed ("0", "4844", "-1 EIO (...)"), undefined for a call that never returned. */
  result?: string
  /** Line numbers in the trace of the entry and the exit: the order strace saw them in. */
  start: number
  end: number
}

/**
 * Reads a trace written by `strace -f -tt -yy -xx -o FILE`: one Syscall per call, in the order of
 * their entries. strace stops each traced thread at a call's entry and exit and handles one stop
 * at a time, so an exit printed before another call's entry happened before it; when that other
 * call only ran because of the first one's result (a C-STORE-RSP after an fdatasync), the order
 * of the lines is the order of the calls.
 */
export function parseStrace(text: string): Syscall[] {
  const calls: Syscall[] = []
  const pending = new Map<number, Syscall>()
  const decode = (s: string) => s.replace(/\\x([0-9a-f]{2})/g, (_, hex: string) => String.fromCharCode(Number.parseInt(hex, 16)))
  for (const [index, raw] of text.split('\n').entries()) {
    const line = /^(\d+)\s+\d\d:\d\d:\d\d\.\d+ (.*)$/.exec(raw)
    if (line === null) continue
    const pid = Number(line[1])
    const rest = line[2]
    const resumed = /^<\.\.\. (\w+) resumed>(.*?)\)\s+= (.*)$/.exec(rest)
    if (resumed !== null) {
      const call = pending.get(pid)
      if (call !== undefined && call.name === resumed[1]) {
        call.args += decode(resumed[2])
        call.result = resumed[3]
        call.end = index
        pending.delete(pid)
      }

      continue
    }

    const entry = /^(\w+)\((.*)$/.exec(rest)
    if (entry === null) continue
    const call: Syscall = {pid, name: entry[1], args: '', start: index, end: index}
    let args = entry[2]
    const unfinished = args.endsWith(' <unfinished ...>')
    if (unfinished) {
      args = args.slice(0, -' <unfinished ...>'.length)
      pending.set(pid, call)
    } else {
      const done = /^(.*)\)\s+= (.*)$/.exec(args)
      if (done === null) continue
      args = done[1]
      call.result = done[2]
    }

    call.args = decode(args)
    const fd = /^(\d+)<(.*?)>(?:, |$)/.exec(call.args)
    if (fd !== null) {
      call.fd = Number(fd[1])
      call.fdPath = fd[2]
      call.afterFd = call.args.slice(fd[0].length)
    }

    calls.push(call)
  }

  return calls
}

/** The system calls that write data, whatever variant libuv picks. */
export const WRITE_CALLS = new Set(['write', 'writev', 'pwrite64', 'pwritev', 'pwritev2', 'sendmsg', 'sendto'])
/** The calls that make written data durable. */
export const SYNC_CALLS = new Set(['fdatasync', 'fsync'])
/** The calls that rename. */
export const RENAME_CALLS = new Set(['rename', 'renameat', 'renameat2'])

export interface TracedRouter {
  /** The router's DICOM port (from its "listening" line). */
  port: number
  /** The pid of `node bin/run.js listen` under strace. */
  pid: number
  traceFile: string
  /** What the router and strace printed (last 50 000 characters). */
  log(): string
  /** The trace so far, parsed. */
  calls(): Promise<Syscall[]>
  /** SIGTERM to the router (strace then ends with it), SIGKILL to both after 10 s. */
  stop(): Promise<void>
}

/**
 * Starts the compiled `ddr listen --config FILE` under strace (-f, the given calls only, -yy: each
 * file descriptor with its path or TCP addresses, -xx: every byte of paths and data as \xNN, 400
 * bytes of each buffer) writing to `traceFile`, and waits for its "listening" line. The config's
 * listen.port may be 0: the port is read from that line. When strace cannot trace here (no ptrace
 * in a container), this throws with strace's own words.
 */
export async function startTracedRouter(configFile: string, traceFile: string, syscalls: Iterable<string>): Promise<TracedRouter> {
  const child: ChildProcessWithoutNullStreams = spawn(
    STRACE,
    ['-f', '--seccomp-bpf', '-tt', '-yy', '-xx', '-s', '400', '-e', `trace=${[...syscalls].join(',')}`, '-o', traceFile, process.execPath, path.join(repoRoot, 'bin/run.js'), 'listen', '--config', configFile],
    {cwd: repoRoot, env: {...process.env, NO_COLOR: '1'}, stdio: ['pipe', 'pipe', 'pipe']},
  )
  let log = ''
  const collect = (chunk: string) => (log = (log + chunk).slice(-50_000))
  child.stdout.setEncoding('utf8').on('data', collect)
  child.stderr.setEncoding('utf8').on('data', collect)
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  let exitedYet = false
  void exited.then(() => (exitedYet = true))
  /** The router: strace's child running bin/run.js (strace also forks short-lived children of its own to probe ptrace at start). */
  const tracee = (): number | undefined => {
    try {
      for (const candidate of readFileSync(`/proc/${child.pid}/task/${child.pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean)) {
        if (readFileSync(`/proc/${candidate}/cmdline`, 'utf8').includes('bin/run.js')) return Number(candidate)
      }
    } catch {
      // strace or the candidate just exited
    }

    return undefined
  }

  const signal = (target: number | undefined, name: NodeJS.Signals) => {
    try {
      if (target !== undefined) process.kill(target, name)
    } catch {
      // already gone
    }
  }

  let pid: number | undefined
  const stop = async () => {
    if (exitedYet) return
    pid ??= tracee()
    // Signalling strace does not stop the router: the router's SIGTERM ends both; SIGKILL is the fallback.
    signal(pid, 'SIGTERM')
    const timer = setTimeout(() => {
      signal(pid, 'SIGKILL')
      child.kill('SIGKILL')
    }, 10_000)
    await exited
    clearTimeout(timer)
  }

  const deadline = Date.now() + 60_000
  let port: number | undefined
  while (port === undefined) {
    if (exitedYet || Date.now() > deadline) {
      await stop()
      throw new Error(`the router under strace did not start (${exitedYet ? `exit ${child.exitCode ?? child.signalCode}` : 'no "listening" line within 60 s'}): ${log}`)
    }

    const listening = /listening .*\bport=(\d+)/.exec(log)
    if (listening !== null) port = Number(listening[1])
    else await sleep(50)
  }

  pid ??= tracee()
  if (pid === undefined) {
    await stop()
    throw new Error(`cannot find the router process under strace pid ${child.pid}`)
  }

  return {
    port,
    pid,
    traceFile,
    log: () => log,
    calls: async () => parseStrace(await readFile(traceFile, 'utf8')),
    stop,
  }
}
