import {readFileSync, statSync} from 'node:fs'

import type {DdrConfig} from '../config/schema.js'
import {REDACTED, redactUrl} from '../output/redact.js'

/** A copy of the config safe to print: backend passwords and tokens replaced, URL credentials removed. */
export function redactConfig(config: DdrConfig): DdrConfig {
  return {
    ...config,
    backends: config.backends.map(
      (backend) =>
        ({
          ...backend,
          ...(backend.password === undefined ? {} : {password: REDACTED}),
          ...(backend.token === undefined ? {} : {token: REDACTED}),
          ...(backend.url === undefined ? {} : {url: redactUrl(backend.url)}),
        }) as typeof backend,
    ),
  }
}

/** Whether the JSON text of a config file holds a secret (a backend password or token, or credentials in a URL). */
export function holdsSecret(raw: unknown): boolean {
  const backends = (raw as {backends?: unknown} | null)?.backends
  if (!Array.isArray(backends)) return false
  return backends.some((backend: Record<string, unknown> | null) => {
    if (backend === null || typeof backend !== 'object') return false
    if (typeof backend.password === 'string' && backend.password !== '') return true
    if (typeof backend.token === 'string' && backend.token !== '') return true
    return typeof backend.url === 'string' && redactUrl(backend.url) !== backend.url
  })
}

/**
 * A warning when the config file others can read holds a secret (secrets from DDR_BACKEND_* variables
 * do not count: they are not in the file), else undefined. Never throws.
 */
export function configPermissionWarning(file: string): string | undefined {
  if (file === 'defaults' || process.platform === 'win32') return undefined
  try {
    const mode = statSync(file).mode
    if ((mode & 0o004) === 0) return undefined
    if (!holdsSecret(JSON.parse(readFileSync(file, 'utf8')))) return undefined
    return `${file} is readable by every user (mode ${(mode & 0o777).toString(8)}) and holds a backend password: chmod 600 it, or move the password to DDR_BACKEND_<NAME>_PASSWORD`
  } catch {
    return undefined
  }
}
