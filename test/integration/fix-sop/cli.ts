import {existsSync} from 'node:fs'
import path from 'node:path'

import {type CliResult, repoRoot, runCompiledCli} from '../../helpers/compiled-cli.js'

export {type CliResult, repoRoot} from '../../helpers/compiled-cli.js'

/** Fails early with a clear message when the compiled CLI is missing. */
export function requireBuild(command: string): void {
  if (!existsSync(path.join(repoRoot, `dist/commands/${command}.js`))) throw new Error(`dist/commands/${command}.js is missing: run "npm run build" first`)
}

/** Runs the compiled CLI to completion, without colour and without a DDR_CONFIG from the environment. */
export function runCli(args: string[], options: {cwd?: string; env?: NodeJS.ProcessEnv} = {}): Promise<CliResult> {
  return runCompiledCli(args, {...options, env: {DDR_CONFIG: '', ...options.env}})
}

/** stdout parsed as JSON, or an error showing what the CLI printed. */
export function parseJson<T>(result: CliResult): T {
  try {
    return JSON.parse(result.stdout) as T
  } catch {
    throw new Error(`stdout is not JSON (exit ${result.code}):\n${result.stdout}\n${result.stderr}`)
  }
}
