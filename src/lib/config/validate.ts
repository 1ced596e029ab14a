import {Kind, type TSchema} from '@sinclair/typebox'
import {type ValueError, ValueErrorType, Value} from '@sinclair/typebox/value'

import {pemFileProblem} from '../dimse/tls.js'
import {DdrError} from '../errors.js'
import {addressEntryProblem} from './addresses.js'
import {redactUrl} from '../output/redact.js'
import {applyEnvOverrides} from './env.js'
import {type AnnotatedSchema, BACKEND_SCHEMAS, BackendSchema, backendSchemaFor, ConfigSchema, type DdrConfig} from './schema.js'

type Json = Record<string, unknown>

// Backends import the default from here.
export {STORE_TIMEOUT_DEFAULT_MS} from './schema.js'

/** Options of validateConfig. */
export interface ValidateOptions {
  /**
   * Environment to take overrides from (DDR_LISTEN_PORT, DDR_BACKEND_<NAME>_PASSWORD ...: the
   * schema's `env` annotations); absent: none. Problems name the variable a value came from.
   */
  env?: NodeJS.ProcessEnv
}

const isObject = (value: unknown): value is Json => typeof value === 'object' && value !== null && !Array.isArray(value)

/**
 * Validates a parsed config object once, filling defaults, and returns the typed config.
 * Every problem is collected and reported together, each naming its field (`backends[1].port`).
 * Throws DdrError CONFIG_INVALID (exit 2) when there is any.
 */
export function validateConfig(raw: unknown, source: string, options: ValidateOptions = {}): DdrConfig {
  const problems = new Problems(source)
  if (!isObject(raw)) {
    problems.add('(root)', `must be an object (got ${describe(raw)})`)
    problems.throwIfAny()
  }

  const config = Value.Clone(raw) as Json
  dropNulls(ConfigSchema, config)
  withDefaults(config)
  if (options.env !== undefined) {
    problems.origins = applyEnvOverrides(config, options.env)
    // A variable may have made an object (https: {ca}) whose other fields need their defaults.
    withDefaults(config)
  }

  for (const problem of schemaProblems(ConfigSchema, config, '', config)) problems.add(problem.path, problem.text)
  checkListen(problems, config.listen)
  if (isObject(config.status)) checkServerTls(problems, 'status.tls', config.status.tls)
  checkBackends(problems, config.backends)
  checkRules(problems, config.rules, config.backends)
  checkProcessing(problems, config.processing)
  problems.throwIfAny()

  for (const backend of config.backends as Json[]) {
    if (typeof backend.url === 'string') backend.url = backend.url.replace(/\/+$/, '')
  }

  const {$schema: _schema, ...typed} = config
  return {source, ...typed} as unknown as DdrConfig
}

/** The configuration ddr uses when there is no config file: the classic two-Orthanc setup. */
export function defaultConfigObject(): Omit<DdrConfig, 'source'> {
  const {source: _source, ...config} = validateConfig({}, 'defaults')
  return config
}

/** Fills every default of the schema, each backend by the schema of its type. */
function withDefaults(config: Json): void {
  Value.Default(ConfigSchema, config)
  // Value.Default fills a union member only when the whole member then checks: a backend with one
  // bad field would get none of its defaults, and every one would be reported missing.
  if (Array.isArray(config.backends)) {
    for (const backend of config.backends) {
      const schema = backendSchemaFor(backend)
      if (schema !== undefined) Value.Default(schema, backend)
    }
  }
}

/** Deletes `null` where the schema reads it as "not given" (nullIsAbsent). */
function dropNulls(schema: AnnotatedSchema, value: unknown): void {
  if (schema === BackendSchema) {
    const variant = backendSchemaFor(value)
    if (variant !== undefined) dropNulls(variant, value)
    return
  }

  if (schema[Kind] === 'Array' && Array.isArray(value)) {
    for (const item of value) dropNulls(schema.items, item)
    return
  }

  if (!isObject(value)) return
  if (schema[Kind] === 'Record') {
    const [inner] = Object.values(schema.patternProperties as Record<string, AnnotatedSchema>)
    for (const item of Object.values(value)) dropNulls(inner, item)
    return
  }

  if (schema[Kind] !== 'Object') return
  for (const [key, field] of Object.entries(schema.properties as Record<string, AnnotatedSchema>)) {
    if (value[key] === null && field.nullIsAbsent) delete value[key]
    else if (value[key] !== undefined) dropNulls(field, value[key])
  }
}

// ---------------------------------------------------------------- messages

interface Problem {
  path: string
  text: string
}

class Problems {
  private readonly list: Problem[] = []
  /** Fields set from environment variables, by path ("backends[0].https.ca" → "DDR_BACKEND_PACS_HTTPS_CA"). */
  origins: Record<string, string> = {}

  constructor(private readonly source: string) {}

  /** One problem per field from the schema (an integer out of range fails two keywords, say it once). */
  add(path: string, text: string): void {
    if (!this.list.some((problem) => problem.path === path && problem.text === text)) this.list.push({path, text})
  }

  /**
   * Grouped by what they are about (listen, backends[1], rules[0] ...) in the order of the file's
   * sections, so the schema's problems and the cross-field ones about one backend stand together.
   */
  private sorted(): Problem[] {
    const sections = Object.keys(ConfigSchema.properties)
    const key = (path: string): [number, number] => {
      const [, section, index] = /^([^.[]*)(?:\[(\d+)\])?/.exec(path)!
      return [sections.indexOf(section), index === undefined ? Number.POSITIVE_INFINITY : Number(index)]
    }

    return this.list
      .map((problem, order) => ({problem, order, key: key(problem.path)}))
      .sort((a, b) => a.key[0] - b.key[0] || a.key[1] - b.key[1] || a.order - b.order)
      .map(({problem}) => problem)
  }

  has(path: string): boolean {
    return this.list.some((problem) => problem.path === path)
  }

  get count(): number {
    return this.list.length
  }

  throwIfAny(): void {
    if (this.list.length === 0) return
    const lines = this.sorted().map(({path, text}) => `${this.label(path)}: ${text}`)
    throw new DdrError('CONFIG_INVALID', `invalid configuration in ${this.source}:\n  - ${lines.join('\n  - ')}`, {
      hint: 'fix the fields named above; README.md ("Configuration") documents every field, and ddr.schema.json lets an editor check them as you type',
    })
  }

  /** The field's path, and the environment variable it came from when it did not come from the file. */
  private label(path: string): string {
    const variable = this.origins[path]
    return variable === undefined ? path : `${path} (from ${variable})`
  }
}

function describe(value: unknown): string {
  if (value === undefined) return 'nothing'
  const text = JSON.stringify(value)
  return text.length > 60 ? `${text.slice(0, 57)}...` : text
}

/** `/backends/1/port` → `backends[1].port` (indexes where the value is an array). */
function displayPath(pointer: string, root: unknown): string {
  let path = ''
  let value = root
  for (const raw of pointer.split('/').slice(1)) {
    const key = raw.replaceAll('~1', '/').replaceAll('~0', '~')
    path = Array.isArray(value) ? `${path}[${key}]` : path === '' ? key : `${path}.${key}`
    value = isObject(value) || Array.isArray(value) ? (value as Record<string, unknown>)[key] : undefined
  }

  return path
}

/** What a valid value of this schema is, as "must be ...". */
function expected(schema: AnnotatedSchema): string {
  if (schema.problem !== undefined) return `must be ${schema.problem}`
  switch (schema[Kind]) {
    case 'Integer': {
      return schema.maximum === undefined ? `must be an integer >= ${schema.minimum}` : `must be an integer from ${schema.minimum} to ${schema.maximum}`
    }

    case 'Number': {
      return `must be a number >= ${schema.minimum}`
    }

    case 'Boolean': {
      return 'must be true or false'
    }

    case 'String': {
      return schema.minLength ? 'must be a non-empty string' : 'must be a string'
    }

    case 'Literal': {
      return `must be ${JSON.stringify(schema.const)}`
    }

    case 'Union': {
      return `must be one of ${(schema.anyOf as TSchema[]).map((member) => member.const).join(', ')}`
    }

    case 'Array': {
      return 'must be an array'
    }

    default: {
      return 'must be an object'
    }
  }
}

function message(error: ValueError): string {
  const schema = error.schema as AnnotatedSchema
  switch (error.type) {
    case ValueErrorType.ObjectRequiredProperty: {
      return schema.requiredHint === undefined ? 'is required' : `is required ${schema.requiredHint}`
    }

    case ValueErrorType.ObjectAdditionalProperties: {
      // `schema` is the object (or record) that has no such field.
      if (schema[Kind] === 'Record') return `must be ${schema.keyProblem}`
      return `unknown field (known: ${Object.keys(schema.properties).join(', ')})`
    }

    case ValueErrorType.ObjectMinProperties:
    case ValueErrorType.ObjectMaxProperties: {
      return `give exactly one of ${Object.keys(schema.properties).join(', ')}`
    }

    default: {
      return `${expected(schema)} (got ${describe(error.value)})`
    }
  }
}

/**
 * The schema's problems with `value`, each with its field's path and message: unknown fields
 * first, as a reader fixes them first (a misspelt field is also a missing one).
 */
function* schemaProblems(schema: TSchema, value: unknown, prefix: string, root: unknown): Generator<Problem> {
  const errors = [...Value.Errors(schema, value)]
    // A missing field fails both `required` and its own type: say "is required" only.
    .filter((error) => error.value !== undefined || error.type === ValueErrorType.ObjectRequiredProperty)
    .sort((a, b) => Number(b.type === ValueErrorType.ObjectAdditionalProperties) - Number(a.type === ValueErrorType.ObjectAdditionalProperties))
  for (const error of errors) {
    const pointer = prefix + error.path
    if (error.schema === BackendSchema) {
      // Checked against the schema of its `type` alone: the union's message would only say that
      // it fits no type, and the other types' problems are not this backend's.
      const variant = backendSchemaFor(error.value)
      if (variant !== undefined) yield* schemaProblems(variant, error.value, pointer, root)
      else if (isObject(error.value)) yield {path: displayPath(`${pointer}/type`, root), text: `must be one of ${Object.keys(BACKEND_SCHEMAS).join(', ')} (got ${describe(error.value.type)})`}
      else yield {path: displayPath(pointer, root), text: `must be an object (got ${describe(error.value)})`}
      continue
    }

    yield {path: displayPath(pointer, root), text: message(error)}
  }
}

// ---------------------------------------------------------------- what one field's schema cannot say

function checkListen(problems: Problems, listen: unknown): void {
  if (!isObject(listen)) return
  if (Array.isArray(listen.allowedAddresses)) {
    for (const [index, entry] of listen.allowedAddresses.entries()) {
      const problem = typeof entry === 'string' ? addressEntryProblem(entry) : undefined
      if (problem !== undefined) problems.add(`listen.allowedAddresses[${index}]`, `must be ${problem} (got ${describe(entry)})`)
    }
  }

  checkServerTls(problems, 'listen.tls', listen.tls)
}

/** listen.tls and status.tls: what the schema cannot say (the files are read where they are used). */
function checkServerTls(problems: Problems, path: string, tls: unknown): void {
  if (isObject(tls) && tls.requireClientCert === true && tls.ca === undefined) {
    problems.add(`${path}.ca`, 'is required with requireClientCert (the CA that signs client certificates)')
  }
}

const PEM_ROLES = ['ca', 'cert', 'key'] as const

function checkBackends(problems: Problems, backends: unknown): void {
  if (!Array.isArray(backends)) return
  const seen = new Set<string>()
  for (const [index, backend] of backends.entries()) {
    const path = `backends[${index}]`
    if (backendSchemaFor(backend) === undefined) continue
    // Only the fields its type has (and that are well-formed) take part: the others are reported already.
    const item = Object.fromEntries(Object.entries(backend as Json).filter(([key]) => !problems.has(`${path}.${key}`)))
    if (typeof item.name === 'string' && !problems.has(`${path}.name`)) {
      if (seen.has(item.name.toLowerCase())) problems.add(`${path}.name`, `duplicate backend name "${item.name}"`)
      seen.add(item.name.toLowerCase())
    }

    // A username from the environment does not count: the file chose the token, and a
    // DDR_BACKEND_<NAME>_USERNAME meant for all backends must not break it.
    if (item.token !== undefined && item.username !== undefined && problems.origins[`${path}.username`] === undefined) {
      problems.add(`${path}.token`, 'give either token or username/password, not both')
    }

    if (item.transport === 'rest' && item.url === undefined) problems.add(`${path}.url`, 'is required with transport "rest"')
    if (item.retrieveTransport === 'rest' && item.url === undefined) problems.add(`${path}.url`, 'is required with retrieveTransport "rest"')
    for (const key of ['tls', 'https'] as const) {
      const files = item[key]
      if (isObject(files) && (files.cert === undefined) !== (files.key === undefined)) problems.add(`${path}.${key}`, 'cert and key go together (a client certificate needs its key)')
    }

    const https = item.https
    if (!isObject(https)) continue
    if (item.url === undefined) problems.add(`${path}.https`, "needs url (https is the trust for the backend's https:// URL)")
    else if (typeof item.url === 'string' && !/^https:/i.test(item.url)) {
      problems.add(`${path}.https`, `url ${redactUrl(item.url, {credentials: 'drop'})} is not https://, so these settings would never be used (DICOM TLS on the DIMSE port is "tls")`)
    }

    for (const role of PEM_ROLES) {
      const file = https[role]
      // Checked now, so a wrong path is reported with the config rather than at the first HTTPS request.
      const problem = typeof file === 'string' && file !== '' ? pemFileProblem(file, role) : undefined
      if (problem !== undefined) problems.add(`${path}.https.${role}`, problem)
    }
  }

  if (backends.length > 0 && backends.every((backend) => isObject(backend) && backend.mirror === true)) {
    problems.add('backends', 'at least one backend must not be a mirror (mirrors only get copies)')
  }
}

/** rules[]: what refers to backends, and regular expressions; tag keywords are resolved (and unknown ones reported) by the rule engine. */
function checkRules(problems: Problems, rules: unknown, backends: unknown): void {
  if (!Array.isArray(rules)) return
  const configured = Array.isArray(backends) ? backends.filter(isObject) : []
  const names = new Set(configured.map((backend) => backend.name).filter((name) => typeof name === 'string'))
  const primaries = new Set(configured.filter((backend) => backend.mirror !== true).map((backend) => backend.name))
  for (const [index, rule] of rules.entries()) {
    const path = `rules[${index}]`
    if (!isObject(rule)) continue
    checkTagRegexes(problems, path, rule.match)

    const action = rule.action
    if (!isObject(action)) continue
    for (const key of ['backends', 'mirrors'] as const) {
      const list = action[key]
      if (!Array.isArray(list)) continue
      for (const name of list) {
        if (typeof name === 'string' && !names.has(name)) problems.add(`${path}.action.${key}`, `no backend named "${name}" (backends: ${[...names].join(', ')})`)
      }
    }

    if (action.drop !== undefined && action.backends !== undefined) problems.add(`${path}.action`, 'drop and backends cannot go together')
    if (action.drop === undefined && action.backends === undefined && action.mirrors === undefined && problems.count === 0) {
      problems.add(`${path}.action`, 'give backends, drop or mirrors')
    }

    for (const name of Array.isArray(action.backends) ? action.backends : []) {
      if (names.has(name) && !primaries.has(name)) problems.add(`${path}.action.backends`, `"${name}" is a mirror (mirrors get copies, not placements): use action.mirrors`)
    }
  }
}

/** A match's `tags` conditions (rules and processing modules share them): each regex must compile. */
function checkTagRegexes(problems: Problems, path: string, match: unknown): void {
  const tags = isObject(match) ? match.tags : undefined
  if (!isObject(tags)) return
  for (const [key, condition] of Object.entries(tags)) {
    if (!isObject(condition) || typeof condition.regex !== 'string') continue
    try {
      new RegExp(condition.regex)
    } catch (error) {
      problems.add(`${path}.match.tags.${key}.regex`, (error as Error).message)
    }
  }
}

/** processing.modules[]: unique names, a command or a url (not both), what an HTTP module can give back, regular expressions. */
function checkProcessing(problems: Problems, processing: unknown): void {
  if (!isObject(processing) || !Array.isArray(processing.modules)) return
  const seen = new Set<string>()
  for (const [index, module] of processing.modules.entries()) {
    const path = `processing.modules[${index}]`
    if (!isObject(module)) continue
    if (typeof module.name === 'string') {
      if (seen.has(module.name)) problems.add(`${path}.name`, `duplicate module name "${module.name}"`)
      seen.add(module.name)
    }

    if ((module.command === undefined) === (module.url === undefined)) problems.add(path, 'give either command (a program) or url (an HTTP module), not both')
    if (module.url !== undefined && module.output === 'dicom') problems.add(`${path}.output`, 'an HTTP module answers result.json only: use output "sr" or "none"')
    checkTagRegexes(problems, path, module.match)
  }
}
