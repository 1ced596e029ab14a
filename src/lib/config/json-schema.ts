import {ConfigSchema} from './schema.js'

type Node = Record<string, unknown>

/** Where ddr.schema.json lives, relative to the repository root; `npm run schema` writes it. */
export const JSON_SCHEMA_FILE_NAME = 'ddr.schema.json'

/** Keywords in the order a reader of the file wants them; the rest follow as they come. */
const KEY_ORDER = [
  '$schema',
  'title',
  'description',
  'type',
  'const',
  'enum',
  'format',
  'pattern',
  'minimum',
  'maximum',
  'minLength',
  'maxLength',
  'minItems',
  'minProperties',
  'maxProperties',
  'default',
  'errorMessage',
  'properties',
  'patternProperties',
  'additionalProperties',
  'required',
  'items',
  'anyOf',
]

/**
 * The configuration's JSON Schema as ddr.schema.json publishes it, for editors: the schema ddr
 * validates with, as a file sees it. Fields with a default are not required (ddr fills them), ddr's
 * own annotations become what editors read (`errorMessage`, environment variables in
 * `description`, `null` where ddr reads it as "not given"), and TypeBox's markers are left out.
 */
export function configJsonSchema(): Node {
  const plain = JSON.parse(JSON.stringify(ConfigSchema)) as Node
  return {$schema: 'http://json-schema.org/draft-07/schema#', ...publish(plain, '')}
}

/** ddr.schema.json's text: configJsonSchema() as indented JSON with a final newline. */
export function configJsonSchemaText(): string {
  return `${JSON.stringify(configJsonSchema(), null, 2)}\n`
}

/** `envPrefix`: what an `env` annotation is appended to (DDR_BACKEND_<NAME>_ inside a backend). */
function publish(node: Node, envPrefix: string): Node {
  const out: Node = {}
  for (const [key, value] of Object.entries(node)) {
    if (key === 'properties') {
      const properties = value as Record<string, Node>
      out.properties = Object.fromEntries(Object.entries(properties).map(([name, field]) => [name, publish(field, name === 'backends' && envPrefix === '' ? 'DDR_BACKEND_<NAME>_' : envPrefix)]))
    } else if (key === 'required') {
      const properties = node.properties as Record<string, Node>
      const required = (value as string[]).filter((name) => !('default' in properties[name]))
      if (required.length > 0) out.required = required
    } else if (key === 'problem') {
      // VS Code (and editors built on its JSON service) show errorMessage instead of their own words.
      out.errorMessage = `Must be ${value}.`
    } else if (key === 'env' || key === 'nullIsAbsent') {
      continue // said below, in description and type
    } else if (key === 'requiredHint' || key === 'keyProblem') {
      continue // only ddr's messages use them
    } else if (Array.isArray(value)) {
      out[key] = value.map((item) => (isNode(item) && key !== 'default' ? publish(item, envPrefix) : item))
    } else if (isNode(value) && key !== 'default') {
      out[key] = publish(value, envPrefix)
    } else {
      out[key] = value
    }
  }

  if (typeof node.env === 'string') out.description = `${node.description ?? ''} Environment: ${envPrefix}${node.env}.`.trim()
  if (node.nullIsAbsent === true) out.type = [node.type, 'null']
  return ordered(out)
}

function isNode(value: unknown): value is Node {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function ordered(node: Node): Node {
  const rank = (key: string) => (KEY_ORDER.includes(key) ? KEY_ORDER.indexOf(key) : KEY_ORDER.length)
  return Object.fromEntries(Object.entries(node).sort(([a], [b]) => rank(a) - rank(b)))
}
