import {existsSync, readFileSync, statSync} from 'node:fs'
import path from 'node:path'

import {DdrError} from '../errors.js'
import type {DdrConfig} from './schema.js'
import {validateConfig} from './validate.js'

export const CONFIG_FILE_NAME = 'ddr.config.json'

export interface LoadConfigOptions {
  /** Path given with --config; wins over everything. */
  configPath?: string
  /** Environment to read DDR_* variables from (defaults to process.env). */
  env?: NodeJS.ProcessEnv
  /** Folder searched for ddr.config.json (defaults to the working directory). */
  cwd?: string
}

// Kept here too: security/https.ts and callers name the variables with it.
export {envName} from './env.js'

/** Which file to load: --config, then DDR_CONFIG, then ./ddr.config.json; undefined means defaults. */
export function findConfigFile(options: LoadConfigOptions = {}): string | undefined {
  const env = options.env ?? process.env
  const cwd = options.cwd ?? process.cwd()
  const explicit = options.configPath ?? (env.DDR_CONFIG || undefined)
  if (explicit !== undefined) {
    const resolved = path.resolve(cwd, explicit)
    if (!existsSync(resolved)) {
      const via = options.configPath === undefined ? 'DDR_CONFIG' : '--config'
      throw new DdrError('CONFIG_NOT_FOUND', `config file ${resolved} (from ${via}) does not exist`, {
        hint: `create it, or drop ${via} to use ./${CONFIG_FILE_NAME} or the built-in two-Orthanc defaults`,
      })
    }

    return resolved
  }

  const local = path.join(cwd, CONFIG_FILE_NAME)
  return existsSync(local) ? local : undefined
}

/**
 * Loads, overrides from the environment and validates the configuration, once.
 * Environment (the schema's `env` annotations, listed in ddr.schema.json): DDR_LISTEN_PORT,
 * DDR_LISTEN_AE_TITLE, DDR_STATUS_PORT, DDR_SPOOL_DIR, DDR_STACK_DIR, DDR_BACKEND_<NAME>_USERNAME
 * and DDR_BACKEND_<NAME>_PASSWORD (secrets stay out of the file), DDR_BACKEND_<NAME>_HTTPS_CA,
 * _HTTPS_CERT and _HTTPS_KEY (PEM files for the backend's https:// URL).
 */
export function loadConfig(options: LoadConfigOptions = {}): DdrConfig {
  const env = options.env ?? process.env
  const file = findConfigFile(options)
  let raw: unknown = {}
  if (file !== undefined) {
    if (statSync(file).isDirectory()) throw new DdrError('CONFIG_INVALID', `config path ${file} is a folder, not a JSON file`)
    const text = readFileSync(file, 'utf8')
    try {
      raw = JSON.parse(text)
    } catch (error) {
      throw new DdrError('CONFIG_INVALID', `config file ${file} is not valid JSON: ${(error as Error).message}`, {
        hint: 'check for trailing commas and unquoted keys',
      })
    }
  }

  return validateConfig(raw, file ?? 'defaults', {env})
}

/** A backend by name (case-insensitive), or a usage error listing the known names. */
export function selectBackends(config: DdrConfig, names?: string[]): DdrConfig['backends'] {
  if (names === undefined || names.length === 0) return config.backends
  return names.map((name) => {
    const backend = config.backends.find((b) => b.name.toLowerCase() === name.toLowerCase())
    if (backend === undefined) {
      throw new DdrError('USAGE', `unknown backend "${name}" (configured: ${config.backends.map((b) => b.name).join(', ')})`, {
        hint: `backends come from ${config.source}`,
      })
    }

    return backend
  })
}
