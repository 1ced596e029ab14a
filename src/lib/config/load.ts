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

/** Upper-case name with every non-alphanumeric character as "_": orthanc-2 → ORTHANC_2. */
export function envName(name: string): string {
  return name.toUpperCase().replace(/[^A-Z0-9]/g, '_')
}

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
 * Environment: DDR_LISTEN_PORT, DDR_LISTEN_AE_TITLE, DDR_STATUS_PORT, DDR_SPOOL_DIR, DDR_STACK_DIR,
 * DDR_BACKEND_<NAME>_USERNAME and DDR_BACKEND_<NAME>_PASSWORD (secrets stay out of the file),
 * DDR_BACKEND_<NAME>_HTTPS_CA, _HTTPS_CERT and _HTTPS_KEY (PEM files for the backend's https:// URL).
 */
export function loadConfig(options: LoadConfigOptions = {}): DdrConfig {
  const env = options.env ?? process.env
  const file = findConfigFile(options)
  let raw: Record<string, any> = {}
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

  applyEnvOverrides(raw, env)
  const origins = applyBackendHttpsOverrides(raw, env)
  const config = validateConfig(raw, file ?? 'defaults', {origins})
  for (const backend of config.backends) {
    const prefix = `DDR_BACKEND_${envName(backend.name)}_`
    if (env[`${prefix}USERNAME`] !== undefined) backend.username = env[`${prefix}USERNAME`]
    if (env[`${prefix}PASSWORD`] !== undefined) backend.password = env[`${prefix}PASSWORD`]
  }

  return config
}

function applyEnvOverrides(raw: Record<string, any>, env: NodeJS.ProcessEnv): void {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) return
  const set = (section: string, key: string, value: unknown) => {
    if (raw[section] === undefined) raw[section] = {}
    if (typeof raw[section] === 'object' && raw[section] !== null) raw[section][key] = value
  }

  const integer = (name: string) => {
    const value = env[name]
    if (value === undefined || value === '') return undefined
    return /^\d+$/.test(value) ? Number(value) : value
  }

  if (integer('DDR_LISTEN_PORT') !== undefined) set('listen', 'port', integer('DDR_LISTEN_PORT'))
  if (env.DDR_LISTEN_AE_TITLE) set('listen', 'aeTitle', env.DDR_LISTEN_AE_TITLE)
  if (integer('DDR_STATUS_PORT') !== undefined) set('status', 'port', integer('DDR_STATUS_PORT'))
  if (env.DDR_SPOOL_DIR) set('spool', 'dir', env.DDR_SPOOL_DIR)
  if (env.DDR_STACK_DIR) set('stack', 'dir', env.DDR_STACK_DIR)
}

const HTTPS_FILES = ['ca', 'cert', 'key'] as const

/**
 * DDR_BACKEND_<NAME>_HTTPS_CA / _CERT / _KEY set backends[i].https.ca / cert / key of the backend
 * with that name in the file, before validation, so the files are checked like the file's own.
 * Returns which fields came from which variable, for the messages.
 */
function applyBackendHttpsOverrides(raw: Record<string, any>, env: NodeJS.ProcessEnv): Record<string, string> {
  const origins: Record<string, string> = {}
  if (raw === null || typeof raw !== 'object' || !Array.isArray(raw.backends)) return origins
  for (const [index, backend] of (raw.backends as unknown[]).entries()) {
    if (backend === null || typeof backend !== 'object' || typeof (backend as {name?: unknown}).name !== 'string') continue
    const item = backend as Record<string, any>
    for (const key of HTTPS_FILES) {
      const variable = `DDR_BACKEND_${envName(item.name)}_HTTPS_${key.toUpperCase()}`
      const value = env[variable]
      if (value === undefined || value === '') continue
      if (item.https === undefined) item.https = {}
      if (item.https === null || typeof item.https !== 'object') continue
      item.https[key] = value
      origins[`backends[${index}].https.${key}`] = variable
    }
  }

  return origins
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
