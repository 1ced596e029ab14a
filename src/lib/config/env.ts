import {Kind} from '@sinclair/typebox'
import {Value} from '@sinclair/typebox/value'

import {type AnnotatedSchema, backendSchemaFor, ConfigSchema} from './schema.js'

type Json = Record<string, unknown>

const isObject = (value: unknown): value is Json => typeof value === 'object' && value !== null && !Array.isArray(value)

/** Upper-case name with every non-alphanumeric character as "_": orthanc-2 → ORTHANC_2. */
export function envName(name: string): string {
  return name.toUpperCase().replace(/[^A-Z0-9]/g, '_')
}

/** The variables that hold a backend's credentials, for hints: DDR_BACKEND_ORTHANC_2_USERNAME / DDR_BACKEND_ORTHANC_2_PASSWORD. */
export function credentialVariables(backendName: string): string {
  const prefix = `DDR_BACKEND_${envName(backendName)}_`
  return `${prefix}USERNAME / ${prefix}PASSWORD`
}

/**
 * Sets the fields the environment overrides, as the schema's `env` annotations name them:
 * DDR_LISTEN_PORT, DDR_SPOOL_DIR ... and, for each backend by name, DDR_BACKEND_<NAME>_PASSWORD,
 * DDR_BACKEND_<NAME>_HTTPS_CA ... (only the fields its type has). Runs on the config with
 * defaults filled, before validation, so values from the environment are checked like the file's.
 * Returns which field came from which variable, for the messages.
 */
export function applyEnvOverrides(config: Json, env: NodeJS.ProcessEnv): Record<string, string> {
  const origins: Record<string, string> = {}
  applyObject(ConfigSchema, config, '', '', env, origins)
  if (Array.isArray(config.backends)) {
    for (const [index, backend] of config.backends.entries()) {
      if (!isObject(backend) || typeof backend.name !== 'string') continue
      const schema = backendSchemaFor(backend)
      if (schema !== undefined) applyObject(schema, backend, `backends[${index}]`, `DDR_BACKEND_${envName(backend.name)}_`, env, origins)
    }
  }

  return origins
}

function applyObject(schema: AnnotatedSchema, target: Json, path: string, prefix: string, env: NodeJS.ProcessEnv, origins: Record<string, string>): void {
  for (const [key, field] of Object.entries(schema.properties as Record<string, AnnotatedSchema>)) {
    const fieldPath = path === '' ? key : `${path}.${key}`
    if (field.env !== undefined) {
      const variable = prefix + field.env
      const value = fromEnv(field, env[variable])
      if (value === undefined) continue
      target[key] = value
      origins[fieldPath] = variable
    } else if (field[Kind] === 'Object' && target[key] === undefined) {
      // An object the file left out (a backend's https) is made when a variable sets a field of it.
      const made: Json = {}
      applyObject(field, made, fieldPath, prefix, env, origins)
      if (Object.keys(made).length > 0) target[key] = made
    } else if (field[Kind] === 'Object' && isObject(target[key])) {
      applyObject(field, target[key], fieldPath, prefix, env, origins)
    }
  }
}

/**
 * A variable's text as the field's value. Numbers are parsed when they are digits only, and kept
 * as text otherwise so validation names the bad value. An empty variable is "not set", unless the
 * field takes an empty string (a password).
 */
function fromEnv(field: AnnotatedSchema, text: string | undefined): unknown {
  if (text === undefined) return undefined
  if (text === '' && !Value.Check(field, '')) return undefined
  if ((field[Kind] === 'Integer' || field[Kind] === 'Number') && /^\d+$/.test(text)) return Number(text)
  return text
}
