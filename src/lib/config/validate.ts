import {DdrError} from '../errors.js'
import {type BackendConfig, type DdrConfig, defaultConfigObject} from './schema.js'

type Json = Record<string, unknown>

const AE_TITLE = /^[\x20-\x5b\x5d-\x7e]{1,16}$/ // printable ASCII without backslash, PS3.5 AE VR
const POLICIES = ['least-loaded', 'round-robin', 'weighted'] as const
const TRANSPORTS = ['dimse', 'rest'] as const

class Checker {
  readonly problems: string[] = []

  constructor(private readonly source: string) {}

  object(value: unknown, path: string): Json {
    if (value === undefined) return {}
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      this.problems.push(`${path}: must be an object (got ${describe(value)})`)
      return {}
    }

    return value as Json
  }

  unknownKeys(object: Json, path: string, known: string[]): void {
    for (const key of Object.keys(object)) {
      if (!known.includes(key)) this.problems.push(`${join(path, key)}: unknown field (known: ${known.join(', ')})`)
    }
  }

  string(object: Json, key: string, path: string, fallback: string, pattern?: RegExp, what?: string): string {
    const value = object[key]
    if (value === undefined) return fallback
    if (typeof value !== 'string' || value.length === 0 || (pattern && !pattern.test(value))) {
      this.problems.push(`${join(path, key)}: must be ${what ?? 'a non-empty string'} (got ${describe(value)})`)
      return fallback
    }

    return value
  }

  optionalString(object: Json, key: string, path: string): string | undefined {
    const value = object[key]
    if (value === undefined || value === null) return undefined
    if (typeof value !== 'string') {
      this.problems.push(`${join(path, key)}: must be a string (got ${describe(value)})`)
      return undefined
    }

    return value
  }

  integer(object: Json, key: string, path: string, fallback: number, min: number, max: number): number {
    const value = object[key]
    if (value === undefined) return fallback
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      this.problems.push(`${join(path, key)}: must be an integer from ${min} to ${max} (got ${describe(value)})`)
      return fallback
    }

    return value
  }

  number(object: Json, key: string, path: string, fallback: number, min: number): number {
    const value = object[key]
    if (value === undefined) return fallback
    if (typeof value !== 'number' || !Number.isFinite(value) || value < min) {
      this.problems.push(`${join(path, key)}: must be a number >= ${min} (got ${describe(value)})`)
      return fallback
    }

    return value
  }

  boolean(object: Json, key: string, path: string, fallback: boolean): boolean {
    const value = object[key]
    if (value === undefined) return fallback
    if (typeof value !== 'boolean') {
      this.problems.push(`${join(path, key)}: must be true or false (got ${describe(value)})`)
      return fallback
    }

    return value
  }

  oneOf<T extends string>(object: Json, key: string, path: string, fallback: T, allowed: readonly T[]): T {
    const value = object[key]
    if (value === undefined) return fallback
    if (typeof value !== 'string' || !allowed.includes(value as T)) {
      this.problems.push(`${join(path, key)}: must be one of ${allowed.join(', ')} (got ${describe(value)})`)
      return fallback
    }

    return value as T
  }

  url(object: Json, key: string, path: string, fallback: string): string {
    const value = this.string(object, key, path, fallback)
    try {
      const parsed = new URL(value)
      if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') throw new Error('protocol')
    } catch {
      this.problems.push(`${join(path, key)}: must be an http(s) URL (got ${describe(value)})`)
    }

    return value.replace(/\/+$/, '')
  }

  fail(): never {
    throw new DdrError('CONFIG_INVALID', `invalid configuration in ${this.source}:\n  - ${this.problems.join('\n  - ')}`, {
      hint: 'fix the fields named above; README.md ("Configuration") documents every field',
    })
  }
}

function join(path: string, key: string): string {
  return path === '' ? key : `${path}.${key}`
}

function describe(value: unknown): string {
  if (value === undefined) return 'nothing'
  const text = JSON.stringify(value)
  return text.length > 60 ? `${text.slice(0, 57)}...` : text
}

/**
 * Validates a parsed config object once, filling defaults, and returns the typed config.
 * Every problem is collected and reported together, each naming its field.
 */
export function validateConfig(raw: unknown, source: string): DdrConfig {
  const defaults = defaultConfigObject()
  const c = new Checker(source)
  const root = c.object(raw, '(root)')
  c.unknownKeys(root, '', ['$schema', 'listen', 'status', 'spool', 'routing', 'health', 'stack', 'backends'])

  const listenRaw = c.object(root.listen, 'listen')
  c.unknownKeys(listenRaw, 'listen', ['host', 'port', 'aeTitle', 'maxAssociations'])
  const statusRaw = c.object(root.status, 'status')
  c.unknownKeys(statusRaw, 'status', ['host', 'port'])
  const spoolRaw = c.object(root.spool, 'spool')
  c.unknownKeys(spoolRaw, 'spool', ['dir', 'enabled', 'maxBytes', 'minFreePercent', 'maxAttempts', 'retryBaseMs', 'retryMaxMs'])
  const routingRaw = c.object(root.routing, 'routing')
  c.unknownKeys(routingRaw, 'routing', ['policy', 'affinity'])
  const healthRaw = c.object(root.health, 'health')
  c.unknownKeys(healthRaw, 'health', ['intervalMs', 'timeoutMs', 'failThreshold', 'recoverThreshold'])
  const stackRaw = c.object(root.stack, 'stack')
  c.unknownKeys(stackRaw, 'stack', ['dir'])

  const config: DdrConfig = {
    source,
    listen: {
      host: c.string(listenRaw, 'host', 'listen', defaults.listen.host),
      port: c.integer(listenRaw, 'port', 'listen', defaults.listen.port, 0, 65535),
      aeTitle: c.string(listenRaw, 'aeTitle', 'listen', defaults.listen.aeTitle, AE_TITLE, 'an AE title of 1 to 16 printable characters'),
      maxAssociations: c.integer(listenRaw, 'maxAssociations', 'listen', defaults.listen.maxAssociations, 1, 10000),
    },
    status: {
      host: c.string(statusRaw, 'host', 'status', defaults.status.host),
      port: c.integer(statusRaw, 'port', 'status', defaults.status.port, 0, 65535),
    },
    spool: {
      dir: c.string(spoolRaw, 'dir', 'spool', defaults.spool.dir),
      enabled: c.boolean(spoolRaw, 'enabled', 'spool', defaults.spool.enabled),
      maxBytes: c.integer(spoolRaw, 'maxBytes', 'spool', defaults.spool.maxBytes, 1024 * 1024, Number.MAX_SAFE_INTEGER),
      minFreePercent: c.number(spoolRaw, 'minFreePercent', 'spool', defaults.spool.minFreePercent, 0),
      maxAttempts: c.integer(spoolRaw, 'maxAttempts', 'spool', defaults.spool.maxAttempts, 1, 1000),
      retryBaseMs: c.integer(spoolRaw, 'retryBaseMs', 'spool', defaults.spool.retryBaseMs, 10, 3_600_000),
      retryMaxMs: c.integer(spoolRaw, 'retryMaxMs', 'spool', defaults.spool.retryMaxMs, 10, 86_400_000),
    },
    routing: {
      policy: c.oneOf(routingRaw, 'policy', 'routing', defaults.routing.policy, POLICIES),
      affinity: c.boolean(routingRaw, 'affinity', 'routing', defaults.routing.affinity),
    },
    health: {
      intervalMs: c.integer(healthRaw, 'intervalMs', 'health', defaults.health.intervalMs, 100, 3_600_000),
      timeoutMs: c.integer(healthRaw, 'timeoutMs', 'health', defaults.health.timeoutMs, 100, 600_000),
      failThreshold: c.integer(healthRaw, 'failThreshold', 'health', defaults.health.failThreshold, 1, 100),
      recoverThreshold: c.integer(healthRaw, 'recoverThreshold', 'health', defaults.health.recoverThreshold, 1, 100),
    },
    stack: {dir: c.string(stackRaw, 'dir', 'stack', defaults.stack.dir)},
    backends: root.backends === undefined ? defaults.backends : validateBackends(c, root.backends),
  }

  if (c.problems.length > 0) c.fail()
  return config
}

function validateBackends(c: Checker, value: unknown): BackendConfig[] {
  if (!Array.isArray(value) || value.length === 0) {
    c.problems.push(`backends: must be a non-empty array of backends (got ${describe(value)})`)
    return []
  }

  const seen = new Set<string>()
  return value.map((item, index) => {
    const path = `backends[${index}]`
    const raw = c.object(item, path)
    c.unknownKeys(raw, path, ['name', 'host', 'port', 'aeTitle', 'url', 'username', 'password', 'weight', 'transport', 'maxAssociations'])
    const name = c.string(raw, 'name', path, '', /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, 'a name of letters, digits, "_", "." or "-"')
    if (raw.name === undefined) c.problems.push(`${path}.name: is required`)
    if (name !== '' && seen.has(name.toLowerCase())) c.problems.push(`${path}.name: duplicate backend name "${name}"`)
    seen.add(name.toLowerCase())
    if (raw.port === undefined) c.problems.push(`${path}.port: is required`)
    if (raw.aeTitle === undefined) c.problems.push(`${path}.aeTitle: is required`)
    if (raw.url === undefined && raw.transport === 'rest') c.problems.push(`${path}.url: is required with transport "rest"`)
    return {
      name,
      host: c.string(raw, 'host', path, '127.0.0.1'),
      port: c.integer(raw, 'port', path, 0, 1, 65535),
      aeTitle: c.string(raw, 'aeTitle', path, '', AE_TITLE, 'an AE title of 1 to 16 printable characters'),
      url: raw.url === undefined ? undefined : c.url(raw, 'url', path, 'http://127.0.0.1'),
      username: c.optionalString(raw, 'username', path),
      password: c.optionalString(raw, 'password', path),
      weight: c.number(raw, 'weight', path, 1, 0),
      transport: c.oneOf(raw, 'transport', path, 'dimse', TRANSPORTS),
      maxAssociations: c.integer(raw, 'maxAssociations', path, 4, 1, 64),
    }
  })
}
