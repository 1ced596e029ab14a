import {type ChildProcessWithoutNullStreams, spawn} from 'node:child_process'
import {writeFile} from 'node:fs/promises'
import path from 'node:path'

import type {TestOrthanc} from './orthanc.js'

export const repoRoot = path.resolve(import.meta.dirname ?? path.dirname(new URL(import.meta.url).pathname), '../..')

export interface CliResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
}

/**
 * Starts the compiled CLI (`node bin/run.js ...`; run `npm run build` first) with NO_COLOR and stdin
 * a pipe (not a terminal). The caller ends it (or lets it finish) and must not leave it running.
 */
export function spawnCompiledCli(args: string[], options: {env?: NodeJS.ProcessEnv; cwd?: string} = {}): ChildProcessWithoutNullStreams {
  return spawn(process.execPath, [path.join(repoRoot, 'bin/run.js'), ...args], {
    cwd: options.cwd ?? repoRoot,
    env: {...process.env, NO_COLOR: '1', ...options.env},
    stdio: ['pipe', 'pipe', 'pipe'],
  })
}

/** Runs the compiled CLI to completion (killed after timeoutMs, default 60 s); `input` is written to its stdin. */
export function runCompiledCli(args: string[], options: {env?: NodeJS.ProcessEnv; cwd?: string; input?: string; timeoutMs?: number} = {}): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawnCompiledCli(args, options)
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk))
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
    child.stdin.end(options.input ?? '')
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000)
    child.on('error', (error) => {
      clearTimeout(timer)
      reject(error)
    })
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      resolve({code, signal, stdout, stderr})
    })
  })
}

/** A ddr config for test Orthancs (and optional extra backends), its status port pointing where the test says. */
export async function writeTestConfig(
  file: string,
  options: {orthancs: TestOrthanc[]; statusPort: number; extraBackends?: Array<Record<string, unknown>>},
): Promise<string> {
  const config = {
    status: {host: '127.0.0.1', port: options.statusPort},
    listen: {host: '127.0.0.1', aeTitle: 'DDR_TEST'},
    health: {timeoutMs: 3000},
    backends: [
      ...options.orthancs.map((o) => ({name: o.name, host: '127.0.0.1', port: o.dicomPort, aeTitle: o.aeTitle, url: o.url})),
      ...(options.extraBackends ?? []),
    ],
  }
  await writeFile(file, JSON.stringify(config, null, 2))
  return file
}
