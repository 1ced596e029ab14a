/**
 * One attempt of a module: a program run with DDR_IN and DDR_OUT (killed with its process group at
 * its timeout), or an HTTP module given the same as a multipart POST. Both end with result.json's
 * text (or none) and throw ModuleFailure when the attempt failed.
 */
import {spawn} from 'node:child_process'
import {createReadStream} from 'node:fs'
import {readFile, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {Readable} from 'node:stream'

import type {ProcessingModuleConfig} from '../config/schema.js'
import {ModuleFailure, type Task} from './contract.js'
import type {InputInstance, RunFolders} from './inputs.js'

/** How much of a module's stderr (and stdout) is kept: the end, where the reason usually is. */
const KEEP_BYTES = 4096
/** After SIGTERM at the timeout, the process group gets this long before SIGKILL. */
const KILL_GRACE_MS = 3000

/** The end of a stream's output, at most KEEP_BYTES. */
class Tail {
  private chunks: Buffer[] = []
  private size = 0

  push(chunk: Buffer): void {
    this.chunks.push(chunk)
    this.size += chunk.length
    while (this.size - this.chunks[0].length >= KEEP_BYTES) this.size -= this.chunks.shift()!.length
  }

  text(): string {
    const all = Buffer.concat(this.chunks)
    return all.subarray(Math.max(0, all.length - KEEP_BYTES)).toString('utf8')
  }
}

/** What an attempt gave back: result.json's text when there was one, and the end of its output. */
export interface AttemptOutput {
  resultText?: string
  stderr: string
  stdout: string
}

/** Signals a process group, ignoring one that is already gone. */
function signalGroup(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pid, signal)
  } catch {
    // already gone
  }
}

/**
 * Runs a command module: `command` (no shell) in the run's folder, with DDR_IN, DDR_OUT, DDR_TASK
 * (task.json's path) and DDR_MODULE in its environment, in a process group of its own. At
 * `timeoutSeconds` the group gets SIGTERM, then SIGKILL; after the program ends, whatever it left
 * running in its group is killed too. Exit code 0 is success; then DDR_OUT/result.json is read.
 */
export async function runCommand(module: ProcessingModuleConfig, folders: RunFolders, task: Task, signal?: AbortSignal): Promise<AttemptOutput> {
  const taskFile = path.join(folders.inDir, 'task.json')
  await writeFile(taskFile, `${JSON.stringify(task, null, 2)}\n`)
  // Stopped while the inputs were gathered: an abort that came before the listener below would never reach the module.
  if (signal?.aborted) throw new ModuleFailure('exit', 'stopped: the router is shutting down')
  const [program, ...args] = module.command!
  const stderr = new Tail()
  const stdout = new Tail()
  const ended = await new Promise<{code: number | null; signal: NodeJS.Signals | null; timedOut: boolean; aborted: boolean; error?: Error}>((resolve) => {
    const child = spawn(program, args, {
      cwd: folders.dir,
      env: {...process.env, DDR_IN: folders.inDir, DDR_OUT: folders.outDir, DDR_TASK: taskFile, DDR_MODULE: module.name},
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    })
    let timedOut = false
    let aborted = false
    const kill = () => {
      if (child.pid === undefined) return
      signalGroup(child.pid, 'SIGTERM')
      setTimeout(() => signalGroup(child.pid!, 'SIGKILL'), KILL_GRACE_MS).unref()
    }

    const timer = setTimeout(() => {
      timedOut = true
      kill()
    }, module.timeoutSeconds * 1000)
    const onAbort = () => {
      aborted = true
      kill()
    }

    signal?.addEventListener('abort', onAbort, {once: true})
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk))
    child.stderr.on('data', (chunk: Buffer) => stderr.push(chunk))
    child.on('error', (error) => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
      resolve({code: null, signal: null, timedOut, aborted, error})
    })
    child.on('close', (code, exitSignal) => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', onAbort)
      // Whatever the module started and left behind goes with it.
      if (child.pid !== undefined) signalGroup(child.pid, 'SIGKILL')
      resolve({code, signal: exitSignal, timedOut, aborted})
    })
  })

  const err = stderr.text()
  if (ended.error !== undefined) throw new ModuleFailure('exit', `cannot start ${program}: ${ended.error.message}`, err)
  if (ended.aborted) throw new ModuleFailure('exit', 'stopped: the router is shutting down', err)
  if (ended.timedOut) throw new ModuleFailure('timeout', `still running after timeoutSeconds (${module.timeoutSeconds} s): killed`, err)
  if (ended.code !== 0) throw new ModuleFailure('exit', ended.signal === null ? `exited with code ${ended.code}` : `killed by ${ended.signal}`, err)
  const resultText = await readFile(path.join(folders.outDir, 'result.json'), 'utf8').catch((error: NodeJS.ErrnoException) => {
    if (error.code === 'ENOENT') return undefined
    throw new ModuleFailure('invalid-result', `cannot read DDR_OUT/result.json: ${error.message}`, err)
  })
  return {resultText, stderr: err, stdout: stdout.text()}
}

/** The multipart/form-data body of an HTTP module: part `task` (task.json), then one part `instance` per file, streamed. */
function multipartBody(boundary: string, task: Task, inputs: readonly InputInstance[]): Readable {
  async function* parts(): AsyncGenerator<Buffer> {
    yield Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="task"; filename="task.json"\r\nContent-Type: application/json\r\n\r\n${JSON.stringify(task)}\r\n`)
    for (const input of inputs) {
      yield Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="instance"; filename="${input.file}"\r\nContent-Type: application/dicom\r\n\r\n`)
      for await (const chunk of createReadStream(input.path)) yield chunk as Buffer
      yield Buffer.from('\r\n')
    }

    yield Buffer.from(`--${boundary}--\r\n`)
  }

  return Readable.from(parts())
}

/**
 * Runs an HTTP module: a multipart/form-data POST of task.json and the study's files to `url`,
 * answered (2xx) by result.json's JSON. Another status, no answer within timeoutSeconds, or a
 * refused connection fails the attempt.
 */
export async function runHttp(module: ProcessingModuleConfig, task: Task, inputs: readonly InputInstance[], signal?: AbortSignal): Promise<AttemptOutput> {
  const boundary = `ddr-${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`
  const timeout = AbortSignal.timeout(module.timeoutSeconds * 1000)
  let response: Response
  try {
    response = await fetch(module.url!, {
      method: 'POST',
      headers: {'content-type': `multipart/form-data; boundary=${boundary}`, accept: 'application/json'},
      body: Readable.toWeb(multipartBody(boundary, task, inputs)) as ReadableStream,
      duplex: 'half',
      signal: signal === undefined ? timeout : AbortSignal.any([timeout, signal]),
    } as RequestInit)
  } catch (error) {
    if (timeout.aborted) throw new ModuleFailure('timeout', `${module.url} did not answer within timeoutSeconds (${module.timeoutSeconds} s)`)
    const cause = (error as Error & {cause?: Error}).cause?.message
    throw new ModuleFailure('http', `POST ${module.url}: ${cause ?? (error as Error).message}`)
  }

  let text: string
  try {
    text = await response.text()
  } catch (error) {
    if (timeout.aborted) throw new ModuleFailure('timeout', `${module.url} did not finish its answer within timeoutSeconds (${module.timeoutSeconds} s)`)
    throw new ModuleFailure('http', `POST ${module.url}: the answer broke off: ${(error as Error).message}`)
  }

  if (!response.ok) throw new ModuleFailure('http', `POST ${module.url} answered HTTP ${response.status}`, text.slice(0, KEEP_BYTES))
  return {resultText: text, stderr: '', stdout: ''}
}
