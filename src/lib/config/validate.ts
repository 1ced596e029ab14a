import {pemFileProblem} from '../dimse/tls.js'
import {DdrError} from '../errors.js'
import {addressEntryProblem} from '../security/access.js'
import {displayUrl} from '../security/secrets.js'
import type {BackendHttpsConfig, BackendTlsConfig, ListenTlsConfig} from './schema.js'
import {type BackendConfig, type BackendType, type DdrConfig, DICOMWEB_BATCH_DEFAULTS, type RoutingRule, type RuleTagMatch, defaultConfigObject} from './schema.js'

type Json = Record<string, unknown>

const AE_TITLE = /^[\x20-\x5b\x5d-\x7e]{1,16}$/ // printable ASCII without backslash, PS3.5 AE VR
const POLICIES = ['least-loaded', 'round-robin', 'weighted'] as const
const TRANSPORTS = ['dimse', 'rest'] as const
const BACKEND_TYPES = ['orthanc', 'dimse', 'folder', 'dicomweb'] as const

/** Options of validateConfig. */
export interface ValidateOptions {
  /** Fields set from environment variables, by path ("backends[0].https.ca" → "DDR_BACKEND_PACS_HTTPS_CA"), named in problems. */
  origins?: Record<string, string>
}

class Checker {
  readonly problems: string[] = []

  constructor(private readonly source: string, private readonly origins: Record<string, string> = {}) {}

  /** The field's path, and the environment variable it came from when it did not come from the file. */
  label(path: string): string {
    const variable = this.origins[path]
    return variable === undefined ? path : `${path} (from ${variable})`
  }

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
export function validateConfig(raw: unknown, source: string, options: ValidateOptions = {}): DdrConfig {
  const defaults = defaultConfigObject()
  const c = new Checker(source, options.origins)
  const root = c.object(raw, '(root)')
  c.unknownKeys(root, '', ['$schema', 'listen', 'status', 'spool', 'routing', 'health', 'stack', 'backends', 'rules'])

  const listenRaw = c.object(root.listen, 'listen')
  c.unknownKeys(listenRaw, 'listen', ['host', 'port', 'aeTitle', 'maxAssociations', ...LISTEN_SECURITY_KEYS])
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
      ...validateListenSecurity(c, listenRaw, defaults.listen),
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
  const rules: RoutingRule[] | undefined = root.rules === undefined ? undefined : validateRules(c, root.rules, config.backends)
  if (rules !== undefined) config.rules = rules

  if (c.problems.length > 0) c.fail()
  return config
}

function validateBackends(c: Checker, value: unknown): BackendConfig[] {
  if (!Array.isArray(value) || value.length === 0) {
    c.problems.push(`backends: must be a non-empty array of backends (got ${describe(value)})`)
    return []
  }

  const seen = new Set<string>()
  const backends = value.map((item, index) => {
    const path = `backends[${index}]`
    const raw = c.object(item, path)
    const type = c.oneOf<BackendType>(raw, 'type', path, 'orthanc', BACKEND_TYPES)
    const dimse = type === 'orthanc' || type === 'dimse'
    const common = ['name', 'type', 'weight', 'maxAssociations', 'mirror']
    const known: Record<BackendType, string[]> = {
      orthanc: [...common, 'host', 'port', 'aeTitle', 'url', 'username', 'password', 'transport', 'tls', 'https', 'storeTimeoutMs', 'transferSyntaxes'],
      dimse: [...common, 'host', 'port', 'aeTitle', 'tls', 'storeTimeoutMs', 'transferSyntaxes'],
      folder: [...common, 'path', 'minFreeMb'],
      dicomweb: [...common, 'url', 'username', 'password', 'token', 'https', 'batchMaxInstances', 'batchMaxBytes', 'batchWindowMs', 'storeTimeoutMs'],
    }
    c.unknownKeys(raw, path, known[type])
    const name = c.string(raw, 'name', path, '', /^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$/, 'a name of letters, digits, "_", "." or "-"')
    if (raw.name === undefined) c.problems.push(`${path}.name: is required`)
    if (name !== '' && seen.has(name.toLowerCase())) c.problems.push(`${path}.name: duplicate backend name "${name}"`)
    seen.add(name.toLowerCase())
    if (dimse && raw.port === undefined) c.problems.push(`${path}.port: is required for a ${type} backend`)
    if (dimse && raw.aeTitle === undefined) c.problems.push(`${path}.aeTitle: is required for a ${type} backend`)
    if (raw.url === undefined && raw.transport === 'rest') c.problems.push(`${path}.url: is required with transport "rest"`)
    if (raw.url === undefined && type === 'dicomweb') c.problems.push(`${path}.url: is required for a dicomweb backend (the STOW-RS base, e.g. http://pacs:8042/dicom-web)`)
    if (raw.path === undefined && type === 'folder') c.problems.push(`${path}.path: is required for a folder backend`)
    if (raw.token !== undefined && raw.username !== undefined) c.problems.push(`${path}.token: give either token or username/password, not both`)
    const backend: BackendConfig = {
      name,
      host: dimse ? c.string(raw, 'host', path, '127.0.0.1') : '',
      port: dimse ? c.integer(raw, 'port', path, 0, 1, 65535) : 0,
      aeTitle: dimse ? c.string(raw, 'aeTitle', path, '', AE_TITLE, 'an AE title of 1 to 16 printable characters') : '',
      url: raw.url === undefined || !known[type].includes('url') ? undefined : c.url(raw, 'url', path, 'http://127.0.0.1'),
      username: c.optionalString(raw, 'username', path),
      password: c.optionalString(raw, 'password', path),
      weight: c.number(raw, 'weight', path, 1, 0),
      transport: type === 'orthanc' ? c.oneOf(raw, 'transport', path, 'dimse', TRANSPORTS) : type === 'dimse' ? 'dimse' : 'rest',
      maxAssociations: c.integer(raw, 'maxAssociations', path, 4, 1, 64),
    }
    // Left out when not given, so a plain Orthanc backend keeps its original shape (type "orthanc", no mirror).
    if (raw.type !== undefined) backend.type = type
    if (raw.mirror !== undefined) backend.mirror = c.boolean(raw, 'mirror', path, false)
    if (raw.tls !== undefined && dimse) backend.tls = validateBackendTls(c, raw.tls, `${path}.tls`)
    if (raw.https !== undefined && known[type].includes('https')) backend.https = validateBackendHttps(c, raw.https, `${path}.https`, backend.url)
    if (type !== 'folder') backend.storeTimeoutMs = c.integer(raw, 'storeTimeoutMs', path, STORE_TIMEOUT_DEFAULT_MS, 1000, 86_400_000)
    if (raw.transferSyntaxes !== undefined && dimse) {
      const list = raw.transferSyntaxes
      if (!Array.isArray(list) || list.length === 0 || list.some((uid) => typeof uid !== 'string' || !/^[0-9]+(\.[0-9]+)*$/.test(uid) || uid.length > 64)) {
        c.problems.push(`${path}.transferSyntaxes: must be a non-empty array of transfer syntax UIDs (got ${describe(list)})`)
      } else {
        backend.transferSyntaxes = list as string[]
      }
    }

    if (type === 'folder') {
      backend.path = c.string(raw, 'path', path, '')
      backend.minFreeMb = c.number(raw, 'minFreeMb', path, 100, 0)
    }

    if (type === 'dicomweb') {
      backend.token = c.optionalString(raw, 'token', path)
      backend.batchMaxInstances = c.integer(raw, 'batchMaxInstances', path, DICOMWEB_BATCH_DEFAULTS.maxInstances, 1, 1000)
      backend.batchMaxBytes = c.integer(raw, 'batchMaxBytes', path, DICOMWEB_BATCH_DEFAULTS.maxBytes, 1, 2 ** 31)
      backend.batchWindowMs = c.integer(raw, 'batchWindowMs', path, DICOMWEB_BATCH_DEFAULTS.windowMs, 0, 10_000)
    }

    return backend
  })
  if (backends.length > 0 && backends.every((b) => b.mirror)) c.problems.push('backends: at least one backend must not be a mirror (mirrors only get copies)')
  return backends
}

/** How long one instance's delivery may take by default (a 2 GB instance over a slow link fits). */
export const STORE_TIMEOUT_DEFAULT_MS = 120_000

const RULE_MATCH_FIELDS = ['callingAeTitle', 'calledAeTitle', 'modality', 'sopClassUid', 'tags'] as const
const TAG_KEY = /^(\(?[0-9a-fA-F]{4},?[0-9a-fA-F]{4}\)?|[A-Za-z][A-Za-z0-9]*)$/

/** rules[]: shapes only here; tag keywords are resolved (and unknown ones reported) by the rule engine. */
function validateRules(c: Checker, value: unknown, backends: BackendConfig[]): RoutingRule[] {
  if (!Array.isArray(value)) {
    c.problems.push(`rules: must be an array of rules (got ${describe(value)})`)
    return []
  }

  const names = new Set(backends.map((b) => b.name))
  return value.map((item, index) => {
    const path = `rules[${index}]`
    const raw = c.object(item, path)
    c.unknownKeys(raw, path, ['name', 'match', 'action'])
    if (raw.match === undefined) c.problems.push(`${path}.match: is required (use {} to match every instance)`)
    if (raw.action === undefined) c.problems.push(`${path}.action: is required`)
    const matchRaw = c.object(raw.match, `${path}.match`)
    c.unknownKeys(matchRaw, `${path}.match`, [...RULE_MATCH_FIELDS])
    const match: RoutingRule['match'] = {}
    for (const key of ['callingAeTitle', 'calledAeTitle', 'modality', 'sopClassUid'] as const) {
      const text = c.optionalString(matchRaw, key, `${path}.match`)
      if (text !== undefined) match[key] = text
    }

    if (matchRaw.tags !== undefined) {
      const tagsRaw = c.object(matchRaw.tags, `${path}.match.tags`)
      match.tags = {}
      for (const [key, condition] of Object.entries(tagsRaw)) {
        const tagPath = `${path}.match.tags.${key}`
        if (!TAG_KEY.test(key)) c.problems.push(`${tagPath}: must be a tag like "0008,0060" or a keyword like "Modality"`)
        const conditionRaw = c.object(condition, tagPath)
        c.unknownKeys(conditionRaw, tagPath, ['equals', 'prefix', 'regex'])
        const parsed: RuleTagMatch = {}
        for (const kind of ['equals', 'prefix', 'regex'] as const) {
          const text = c.optionalString(conditionRaw, kind, tagPath)
          if (text !== undefined) parsed[kind] = text
        }

        if (Object.keys(parsed).length !== 1) c.problems.push(`${tagPath}: give exactly one of equals, prefix, regex`)
        if (parsed.regex !== undefined) {
          try {
            new RegExp(parsed.regex)
          } catch (error) {
            c.problems.push(`${tagPath}.regex: ${(error as Error).message}`)
          }
        }

        match.tags[key] = parsed
      }
    }

    const actionRaw = c.object(raw.action, `${path}.action`)
    c.unknownKeys(actionRaw, `${path}.action`, ['backends', 'drop', 'mirrors'])
    const action: RoutingRule['action'] = {}
    for (const key of ['backends', 'mirrors'] as const) {
      const list = actionRaw[key]
      if (list === undefined) continue
      if (!Array.isArray(list) || list.length === 0 || list.some((n) => typeof n !== 'string')) {
        c.problems.push(`${path}.action.${key}: must be a non-empty array of backend names (got ${describe(list)})`)
        continue
      }

      for (const name of list as string[]) if (!names.has(name)) c.problems.push(`${path}.action.${key}: no backend named "${name}" (backends: ${[...names].join(', ')})`)
      action[key] = list as string[]
    }

    if (actionRaw.drop !== undefined) action.drop = c.string(actionRaw, 'drop', `${path}.action`, 'dropped by rule')
    if (action.drop !== undefined && action.backends !== undefined) c.problems.push(`${path}.action: drop and backends cannot go together`)
    if (raw.action !== undefined && Object.keys(action).length === 0 && c.problems.length === 0) c.problems.push(`${path}.action: give backends, drop or mirrors`)
    const primaries = new Set(backends.filter((b) => !b.mirror).map((b) => b.name))
    for (const name of action.backends ?? []) if (names.has(name) && !primaries.has(name)) c.problems.push(`${path}.action.backends: "${name}" is a mirror (mirrors get copies, not placements): use action.mirrors`)
    const rule: RoutingRule = {match, action}
    const name = c.optionalString(raw, 'name', path)
    if (name !== undefined) rule.name = name
    return rule
  })
}

// ---------------------------------------------------------------- listener security and TLS (issue #10)

const LISTEN_SECURITY_KEYS = ['allowedCallingAeTitles', 'allowedAddresses', 'requireCalledAeTitle', 'maxPduLength', 'idleTimeoutMs', 'artimTimeoutMs', 'maxInstanceBytes', 'tls']

function stringList(c: Checker, object: Json, key: string, path: string, check: (item: string) => string | undefined): string[] {
  const value = object[key]
  if (value === undefined) return []
  if (!Array.isArray(value)) {
    c.problems.push(`${join(path, key)}: must be an array (got ${describe(value)})`)
    return []
  }

  return value.filter((item, index) => {
    const problem = typeof item === 'string' ? check(item) : 'a string'
    if (problem !== undefined) c.problems.push(`${join(path, key)}[${index}]: must be ${problem} (got ${describe(item)})`)
    return problem === undefined
  }) as string[]
}

function validateListenSecurity(c: Checker, raw: Json, defaults: DdrConfig['listen']): Omit<DdrConfig['listen'], 'host' | 'port' | 'aeTitle' | 'maxAssociations'> {
  return {
    allowedCallingAeTitles: stringList(c, raw, 'allowedCallingAeTitles', 'listen', (ae) => (AE_TITLE.test(ae) && ae.trim() !== '' ? undefined : 'an AE title of 1 to 16 printable characters')),
    allowedAddresses: stringList(c, raw, 'allowedAddresses', 'listen', addressEntryProblem),
    requireCalledAeTitle: c.boolean(raw, 'requireCalledAeTitle', 'listen', defaults.requireCalledAeTitle),
    maxPduLength: c.integer(raw, 'maxPduLength', 'listen', defaults.maxPduLength, 4096, 16 * 1024 * 1024),
    idleTimeoutMs: c.integer(raw, 'idleTimeoutMs', 'listen', defaults.idleTimeoutMs, 1000, 86_400_000),
    artimTimeoutMs: c.integer(raw, 'artimTimeoutMs', 'listen', defaults.artimTimeoutMs, 100, 600_000),
    maxInstanceBytes: c.integer(raw, 'maxInstanceBytes', 'listen', defaults.maxInstanceBytes, 1024, Number.MAX_SAFE_INTEGER),
    ...(raw.tls === undefined ? {} : {tls: validateListenTls(c, raw.tls)}),
  }
}

function validateListenTls(c: Checker, value: unknown): ListenTlsConfig {
  const raw = c.object(value, 'listen.tls')
  c.unknownKeys(raw, 'listen.tls', ['cert', 'key', 'ca', 'requireClientCert'])
  if (raw.cert === undefined) c.problems.push('listen.tls.cert: is required (PEM certificate file)')
  if (raw.key === undefined) c.problems.push('listen.tls.key: is required (PEM private key file)')
  const requireClientCert = c.boolean(raw, 'requireClientCert', 'listen.tls', false)
  if (requireClientCert && raw.ca === undefined) c.problems.push('listen.tls.ca: is required with requireClientCert (the CA that signs client certificates)')
  const ca = raw.ca === undefined ? undefined : c.string(raw, 'ca', 'listen.tls', '')
  return {cert: c.string(raw, 'cert', 'listen.tls', ''), key: c.string(raw, 'key', 'listen.tls', ''), ...(ca === undefined ? {} : {ca}), requireClientCert}
}

function validateBackendTls(c: Checker, value: unknown, path: string): BackendTlsConfig {
  const raw = c.object(value, path)
  c.unknownKeys(raw, path, ['ca', 'cert', 'key', 'rejectUnauthorized'])
  if ((raw.cert === undefined) !== (raw.key === undefined)) c.problems.push(`${path}: cert and key go together (a client certificate needs its key)`)
  const tls: BackendTlsConfig = {rejectUnauthorized: c.boolean(raw, 'rejectUnauthorized', path, true)}
  for (const key of ['ca', 'cert', 'key'] as const) {
    if (raw[key] !== undefined) tls[key] = c.string(raw, key, path, '')
  }

  return tls
}

function validateBackendHttps(c: Checker, value: unknown, path: string, url: string | undefined): BackendHttpsConfig {
  const raw = c.object(value, path)
  c.unknownKeys(raw, path, ['ca', 'cert', 'key', 'rejectUnauthorized'])
  if ((raw.cert === undefined) !== (raw.key === undefined)) c.problems.push(`${path}: cert and key go together (a client certificate needs its key)`)
  if (url === undefined) c.problems.push(`${path}: needs url (https is the trust for the backend's https:// URL)`)
  else if (!/^https:/i.test(url)) c.problems.push(`${path}: url ${displayUrl(url)} is not https://, so these settings would never be used (DICOM TLS on the DIMSE port is "tls")`)
  const https: BackendHttpsConfig = {rejectUnauthorized: c.boolean(raw, 'rejectUnauthorized', path, true)}
  for (const key of ['ca', 'cert', 'key'] as const) {
    if (raw[key] === undefined) continue
    const file = c.string(raw, key, path, '')
    // Checked now, so a wrong path is reported with the config rather than at the first HTTPS request.
    const problem = file === '' ? undefined : pemFileProblem(file, key)
    if (problem !== undefined) c.problems.push(`${c.label(`${path}.${key}`)}: ${problem}`)
    https[key] = file
  }

  return https
}
