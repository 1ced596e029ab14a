import {readFileSync} from 'node:fs'

import {configJsonSchema, configJsonSchemaText, JSON_SCHEMA_FILE_NAME} from '../../../src/lib/config/json-schema.js'

type Node = Record<string, any>

const published = () => configJsonSchema() as Node
const backendTypes = (): Record<string, Node> => Object.fromEntries((published().properties.backends.items.anyOf as Node[]).map((member) => [member.title.split(' ')[0], member]))

describe('ddr.schema.json', () => {
  it('is what the schema generates (run `npm run schema` after changing src/lib/config/schema.ts)', () => {
    const committed = readFileSync(new URL(`../../../${JSON_SCHEMA_FILE_NAME}`, import.meta.url), 'utf8')
    expect(committed).toBe(configJsonSchemaText())
  })

  it('requires only what has no default, so a file may leave defaults out', () => {
    const schema = published()
    expect(schema.$schema).toBe('http://json-schema.org/draft-07/schema#')
    expect(schema.required).toBeUndefined()
    expect(schema.properties.listen.required).toBeUndefined()
    expect(schema.properties.listen.properties.port).toMatchObject({type: 'integer', minimum: 0, maximum: 65535, default: 11113})
    expect(schema.properties.listen.properties.tls.required).toEqual(['cert', 'key'])
    const types = backendTypes()
    expect(types.orthanc.required).toEqual(['name', 'port', 'aeTitle'])
    expect(types.dimse.required).toEqual(['name', 'type', 'port', 'aeTitle'])
    expect(types.folder.required).toEqual(['name', 'type', 'path'])
    expect(types.dicomweb.required).toEqual(['name', 'type', 'url'])
  })

  it('has one member per backend type, each with only its own fields', () => {
    const types = backendTypes()
    expect(Object.keys(types)).toEqual(['orthanc', 'dimse', 'folder', 'dicomweb'])
    expect(types.orthanc.properties.type).toMatchObject({const: 'orthanc'})
    expect(types.folder.properties.type).toMatchObject({const: 'folder'})
    for (const member of Object.values(types)) expect(member.additionalProperties).toBe(false)
    expect(types.folder.properties.host).toBeUndefined()
    expect(types.dicomweb.properties.port).toBeUndefined()
  })

  it('declares storeTimeoutMs and transferSyntaxes on the types that have them', () => {
    const types = backendTypes()
    for (const type of ['orthanc', 'dimse', 'dicomweb']) expect(types[type].properties.storeTimeoutMs).toMatchObject({type: 'integer', minimum: 1000, default: 120_000})
    expect(types.folder.properties.storeTimeoutMs).toBeUndefined()
    for (const type of ['orthanc', 'dimse']) {
      expect(types[type].properties.transferSyntaxes).toMatchObject({type: 'array', minItems: 1, items: {type: 'string', maxLength: 64}})
      expect(types[type].required).not.toContain('transferSyntaxes')
    }

    expect(types.folder.properties.transferSyntaxes).toBeUndefined()
    expect(types.dicomweb.properties.transferSyntaxes).toBeUndefined()
  })

  it('names the environment variables, and keeps ddr-only annotations out', () => {
    const schema = published()
    expect(schema.properties.listen.properties.port.description).toContain('Environment: DDR_LISTEN_PORT.')
    expect(backendTypes().orthanc.properties.https.properties.ca.description).toContain('Environment: DDR_BACKEND_<NAME>_HTTPS_CA.')
    expect(backendTypes().dicomweb.properties.password.description).toContain('Environment: DDR_BACKEND_<NAME>_PASSWORD.')
    const text = configJsonSchemaText()
    for (const annotation of ['"problem"', '"env"', '"requiredHint"', '"keyProblem"', '"nullIsAbsent"']) expect(text).not.toContain(annotation)
    expect(backendTypes().orthanc.properties.aeTitle.errorMessage).toBe('Must be an AE title of 1 to 16 printable characters.')
  })

  it('keeps the UID pattern in step with isValidUid', async () => {
    const {isValidUid} = await import('../../../src/lib/dicom/uids.js')
    const pattern = new RegExp(backendTypes().dimse.properties.transferSyntaxes.items.pattern)
    for (const uid of ['1.2.840.10008.1.2.1', '0', '1.0.3', '1.2.840.10008.1.2.01', '1..2', '.1', '1.', 'a.1', '']) expect(pattern.test(uid)).toBe(isValidUid(uid))
  })
})
