import {mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'

import {loadConfig} from '../../../src/lib/config/load.js'
import type {BackendConfig} from '../../../src/lib/config/schema.js'
import {defaultConfigObject, validateConfig} from '../../../src/lib/config/validate.js'
import {DdrError, ExitCode} from '../../../src/lib/errors.js'

/** The message of the CONFIG_INVALID error that validating `raw` throws. */
function problems(raw: unknown, env?: NodeJS.ProcessEnv): string {
  try {
    validateConfig(raw, 'test', {env})
  } catch (error) {
    expect(error).toBeInstanceOf(DdrError)
    expect((error as DdrError).code).toBe('CONFIG_INVALID')
    expect((error as DdrError).exit).toBe(ExitCode.usage)
    return (error as DdrError).message
  }

  throw new Error('expected CONFIG_INVALID')
}

const orthanc = {name: 'pacs', port: 4242, aeTitle: 'PACS'}

describe('config validation of backends and rules', () => {
  const base = {listen: {port: 0}}

  it('accepts folder and dicomweb backends without host/port/aeTitle', () => {
    const config = validateConfig(
      {
        ...base,
        backends: [
          {name: 'pacs', port: 4242, aeTitle: 'PACS'},
          {name: 'disk', type: 'folder', path: '/tmp/x', mirror: true},
          {name: 'web', type: 'dicomweb', url: 'http://web/dicom-web/', token: 't'},
        ],
        rules: [{match: {modality: 'CT', tags: {'0008,0080': {prefix: 'A'}}}, action: {backends: ['web']}}],
      },
      'test',
    )
    expect(config.backends[1]).toMatchObject({type: 'folder', path: '/tmp/x', mirror: true, minFreeMb: 100})
    expect(config.backends[2]).toMatchObject({type: 'dicomweb', url: 'http://web/dicom-web', token: 't'})
    expect(config.rules).toHaveLength(1)
  })

  it('names each bad field', () => {
    expect(() =>
      validateConfig(
        {
          ...base,
          backends: [
            {name: 'disk', type: 'folder', host: 'x'},
            {name: 'web', type: 'dicomweb'},
            {name: 'scp', type: 'dimse'},
            {name: 'copy', type: 'folder', path: '/tmp', mirror: true},
          ],
          rules: [{match: {tags: {'0008,0060': {equals: 'CT', regex: '('}}}, action: {backends: ['nope', 'copy']}}, {match: {}}],
        },
        'test',
      ),
    ).toThrow(
      expect.objectContaining({
        message: expect.stringMatching(
          /backends\[0\]\.host: unknown field[\s\S]*backends\[0\]\.path: is required for a folder backend[\s\S]*backends\[1\]\.url: is required for a dicomweb backend[\s\S]*backends\[2\]\.port: is required[\s\S]*rules\[0\]\.match\.tags\.0008,0060: give exactly one[\s\S]*rules\[0\]\.action\.backends: no backend named "nope"[\s\S]*"copy" is a mirror[\s\S]*rules\[1\]\.action: is required/,
        ),
      }),
    )
  })
})

describe('processing', () => {
  it('has no modules by default, and fills each module\'s defaults', () => {
    expect(validateConfig({}, 'test').processing).toEqual({concurrency: 1, modules: []})
    const config = validateConfig({processing: {concurrency: 2, uidRoot: '1.2.826.0.1.3680043.10.1999', modules: [{name: 'quality', match: {modality: 'CR', tags: {PatientID: {prefix: 'X'}}}, command: ['/opt/q', '--fast']}, {name: 'web', match: {}, url: 'http://ai:8000/analyze', output: 'none'}]}}, 'test')
    expect(config.processing.modules[0]).toEqual({name: 'quality', match: {modality: 'CR', tags: {PatientID: {prefix: 'X'}}}, command: ['/opt/q', '--fast'], timeoutSeconds: 600, retries: 2, retryDelaySeconds: 30, output: 'sr', settings: {}, rerunOnAmendment: false})
    expect(config.processing.modules[1]).toMatchObject({url: 'http://ai:8000/analyze', output: 'none'})
  })

  it('names each bad module field', () => {
    const message = problems({
      processing: {
        uidRoot: '1.2.03',
        modules: [
          {name: 'a b', match: {}, command: ['x']},
          {name: 'dup', match: {calledAeTitle: 'X'}, command: ['x'], url: 'http://x'},
          {name: 'dup', match: {tags: {Modality: {regex: '('}}}},
          {name: 'web', match: {}, url: 'http://x', output: 'dicom', timeoutSeconds: 0},
        ],
      },
    })
    expect(message).toMatch(/processing\.uidRoot: must be a UID root of at most 40 characters/)
    expect(message).toMatch(/processing\.modules\[0\]\.name: must be a module name/)
    expect(message).toMatch(/processing\.modules\[1\]\.match\.calledAeTitle: unknown field/)
    expect(message).toMatch(/processing\.modules\[1\]: give either command \(a program\) or url \(an HTTP module\), not both/)
    expect(message).toMatch(/processing\.modules\[2\]\.name: duplicate module name "dup"/)
    expect(message).toMatch(/processing\.modules\[2\]: give either command/)
    expect(message).toMatch(/processing\.modules\[2\]\.match\.tags\.Modality\.regex: Invalid regular expression/)
    expect(message).toMatch(/processing\.modules\[3\]\.output: an HTTP module answers result\.json only/)
    expect(message).toMatch(/processing\.modules\[3\]\.timeoutSeconds: /)
  })
})

describe('backends: a union by type', () => {
  it('gives each type its own fields and defaults, and nothing of the others', () => {
    const config = validateConfig(
      {
        backends: [
          orthanc,
          {name: 'explicit', type: 'orthanc', port: 4243, aeTitle: 'EXPLICIT', url: 'http://127.0.0.1:8043', transport: 'rest'},
          {name: 'scp', type: 'dimse', port: 104, aeTitle: 'SCP'},
          {name: 'disk', type: 'folder', path: '/tmp/x'},
          {name: 'web', type: 'dicomweb', url: 'http://web/dicom-web'},
        ],
      },
      'test',
    )
    expect(config.backends[0]).toEqual({name: 'pacs', host: '127.0.0.1', port: 4242, aeTitle: 'PACS', weight: 1, transport: 'dimse', maxAssociations: 4, storeTimeoutMs: 120_000})
    expect(config.backends[1]).toMatchObject({type: 'orthanc', transport: 'rest', url: 'http://127.0.0.1:8043'})
    expect(config.backends[2]).toEqual({name: 'scp', type: 'dimse', host: '127.0.0.1', port: 104, aeTitle: 'SCP', weight: 1, transport: 'dimse', maxAssociations: 4, storeTimeoutMs: 120_000})
    expect(config.backends[3]).toEqual({name: 'disk', type: 'folder', path: '/tmp/x', minFreeMb: 100, weight: 1, maxAssociations: 4})
    expect(config.backends[4]).toEqual({
      name: 'web',
      type: 'dicomweb',
      url: 'http://web/dicom-web',
      weight: 1,
      maxAssociations: 4,
      batchMaxInstances: 16,
      batchMaxBytes: 16 * 1024 * 1024,
      batchWindowMs: 0,
      storeTimeoutMs: 120_000,
    })
  })

  it('narrows by type in TypeScript', () => {
    const [disk, scp] = validateConfig({backends: [{name: 'disk', type: 'folder', path: '/srv'}, {name: 'scp', type: 'dimse', port: 104, aeTitle: 'SCP'}]}, 'test').backends
    const where = (backend: BackendConfig): string => {
      if (backend.type === 'folder') return backend.path
      if (backend.type === 'dicomweb') return backend.url
      return `${backend.aeTitle}@${backend.host}:${backend.port}`
    }

    expect([where(disk), where(scp)]).toEqual(['/srv', 'SCP@127.0.0.1:104'])
    // Another type's field reads as undefined, without narrowing.
    expect(disk.url).toBeUndefined()
    expect(scp.path).toBeUndefined()
  })

  it('refuses the fields another type has, naming the type\'s own', () => {
    expect(problems({backends: [{name: 'disk', type: 'folder', path: '/x', port: 104}]})).toContain('backends[0].port: unknown field (known: name, weight, maxAssociations, mirror, type, path, minFreeMb)')
    expect(problems({backends: [{name: 'web', type: 'dicomweb', url: 'http://w', aeTitle: 'W'}]})).toContain('backends[0].aeTitle: unknown field')
    expect(problems({backends: [{name: 'scp', type: 'dimse', port: 104, aeTitle: 'SCP', url: 'http://x'}]})).toContain('backends[0].url: unknown field')
    expect(problems({backends: [{name: 'scp', type: 'dimse', port: 104, aeTitle: 'SCP', transport: 'rest'}]})).toContain('backends[0].transport: must be "dimse" (got "rest")')
    expect(problems({backends: [{...orthanc, batchMaxInstances: 2}]})).toContain('backends[0].batchMaxInstances: unknown field')
  })

  it('reports an unknown type, and a backend that is not an object, once', () => {
    const message = problems({backends: [{name: 'x', type: 'nfs', path: '/x'}, 7, orthanc]})
    expect(message).toContain('backends[0].type: must be one of orthanc, dimse, folder, dicomweb (got "nfs")')
    expect(message).toContain('backends[1]: must be an object (got 7)')
    expect(message.split('\n')).toHaveLength(3)
  })

  it('says "is required" once for a missing field, with what it is for', () => {
    const message = problems({backends: [{name: 'scp', type: 'dimse'}]})
    expect(message).toContain('backends[0].port: is required for a dimse backend')
    expect(message).toContain('backends[0].aeTitle: is required for a dimse backend')
    expect(message).not.toContain('got nothing')
    expect(problems({backends: [{port: 1, aeTitle: 'A'}]})).toMatch(/backends\[0\]\.name: is required$/m)
  })

  it('lists a backend\'s unknown fields before its missing ones, and keeps each backend\'s problems together', () => {
    const message = problems({backends: [{name: 'disk', type: 'folder', host: 'x'}, {name: 'disk', type: 'folder', path: '/y', weight: -1}]})
    expect(message.split('\n').slice(1)).toEqual([
      '  - backends[0].host: unknown field (known: name, weight, maxAssociations, mirror, type, path, minFreeMb)',
      '  - backends[0].path: is required for a folder backend',
      '  - backends[1].weight: must be a number >= 0 (got -1)',
      '  - backends[1].name: duplicate backend name "disk"',
    ])
  })

  it('loads the shapes the hand-written checker took: null as "not given", https only where it applies', () => {
    const config = validateConfig(
      {
        backends: [{...orthanc, username: null, password: null}, {name: 'web', type: 'dicomweb', url: 'http://w', token: null}],
        rules: [{name: null, match: {modality: null, tags: {Modality: {equals: null, prefix: 'C'}}}, action: {backends: ['pacs']}}],
      },
      'test',
    )
    expect(config.backends[0].username).toBeUndefined()
    expect(config.backends[1].token).toBeUndefined()
    expect(config.rules).toEqual([{match: {tags: {Modality: {prefix: 'C'}}}, action: {backends: ['pacs']}}])
  })
})

describe('storeTimeoutMs and transferSyntaxes', () => {
  it('defaults storeTimeoutMs to 120000 on orthanc, dimse and dicomweb backends, and takes 1000 and up', () => {
    const config = validateConfig(
      {
        backends: [
          {...orthanc, storeTimeoutMs: 1000},
          {name: 'scp', type: 'dimse', port: 104, aeTitle: 'SCP'},
          {name: 'web', type: 'dicomweb', url: 'http://w', storeTimeoutMs: 600_000},
        ],
      },
      'test',
    )
    expect(config.backends.map((b) => b.storeTimeoutMs)).toEqual([1000, 120_000, 600_000])
    expect(problems({backends: [{...orthanc, storeTimeoutMs: 999}]})).toContain('backends[0].storeTimeoutMs: must be an integer from 1000 to 86400000 (got 999)')
    expect(problems({backends: [{...orthanc, storeTimeoutMs: 1500.5}]})).toContain('backends[0].storeTimeoutMs: must be an integer from 1000')
    expect(problems({backends: [{...orthanc, storeTimeoutMs: '2m'}]})).toContain('backends[0].storeTimeoutMs: must be an integer from 1000')
    expect(problems({backends: [{name: 'disk', type: 'folder', path: '/x', storeTimeoutMs: 5000}]})).toContain('backends[0].storeTimeoutMs: unknown field')
  })

  it('takes transferSyntaxes on orthanc and dimse backends as valid UIDs, absent when not given', () => {
    const syntaxes = ['1.2.840.10008.1.2.1', '1.2.840.10008.1.2.4.50']
    const config = validateConfig({backends: [{...orthanc, transferSyntaxes: syntaxes}, {name: 'scp', type: 'dimse', port: 104, aeTitle: 'SCP', transferSyntaxes: ['1.2.840.10008.1.2']}, {...orthanc, name: 'plain'}]}, 'test')
    expect(config.backends[0].transferSyntaxes).toEqual(syntaxes)
    expect(config.backends[1].transferSyntaxes).toEqual(['1.2.840.10008.1.2'])
    expect(config.backends[2]).not.toHaveProperty('transferSyntaxes')
  })

  it('names each bad transfer syntax UID, and refuses the field where it does not apply', () => {
    const message = problems({backends: [{...orthanc, transferSyntaxes: ['1.2.840.10008.1.2.1', '1.2.840.10008.1.02', 'JPEG', 5, `1.${'2'.repeat(63)}`]}]})
    expect(message).toContain('backends[0].transferSyntaxes[1]: must be a UID: digits and dots, at most 64 characters (e.g. "1.2.840.10008.1.2.1") (got "1.2.840.10008.1.02")')
    expect(message).toContain('backends[0].transferSyntaxes[2]: must be a UID')
    expect(message).toContain('backends[0].transferSyntaxes[3]: must be a UID')
    expect(message).toContain('backends[0].transferSyntaxes[4]: must be a UID')
    expect(message).not.toContain('transferSyntaxes[0]')
    expect(problems({backends: [{...orthanc, transferSyntaxes: []}]})).toContain('backends[0].transferSyntaxes: must be a non-empty array of transfer syntax UIDs (got [])')
    expect(problems({backends: [{...orthanc, transferSyntaxes: '1.2.840.10008.1.2.1'}]})).toContain('backends[0].transferSyntaxes: must be a non-empty array of transfer syntax UIDs')
    expect(problems({backends: [{name: 'web', type: 'dicomweb', url: 'http://w', transferSyntaxes: ['1.2.840.10008.1.2.1']}]})).toContain('backends[0].transferSyntaxes: unknown field')
    expect(problems({backends: [{name: 'disk', type: 'folder', path: '/x', transferSyntaxes: ['1.2.840.10008.1.2.1']}]})).toContain('backends[0].transferSyntaxes: unknown field')
  })
})

describe('$schema', () => {
  let root: string
  beforeEach(() => {
    root = mkdtempSync(path.join(os.tmpdir(), 'ddr-schema-'))
  })
  afterEach(() => rmSync(root, {recursive: true, force: true}))

  it('loads a file that names its JSON Schema, and leaves the key out of the config', () => {
    const file = path.join(root, 'ddr.config.json')
    writeFileSync(file, JSON.stringify({$schema: './ddr.schema.json', backends: [orthanc]}))
    const config = loadConfig({configPath: file, env: {}})
    expect(config.backends.map((b) => b.name)).toEqual(['pacs'])
    expect(config).not.toHaveProperty('$schema')
    expect(problems({$schema: 5})).toContain('$schema: must be a string (got 5)')
  })
})

describe('environment overrides', () => {
  it('names the variable a bad value came from, whatever the field', () => {
    expect(problems({}, {DDR_LISTEN_PORT: '70000'})).toContain('listen.port (from DDR_LISTEN_PORT): must be an integer from 0 to 65535 (got 70000)')
    expect(problems({}, {DDR_LISTEN_AE_TITLE: 'A\\B'})).toContain('listen.aeTitle (from DDR_LISTEN_AE_TITLE): must be an AE title')
  })

  it('ignores an empty variable unless the field takes an empty string (a password)', () => {
    const config = validateConfig({backends: [orthanc]}, 'test', {env: {DDR_LISTEN_AE_TITLE: '', DDR_SPOOL_DIR: '', DDR_BACKEND_PACS_PASSWORD: ''}})
    expect(config.listen.aeTitle).toBe('DYNAMIC_DICOM_MW')
    expect(config.spool.dir).toBe('.ddr/spool')
    expect(config.backends[0].password).toBe('')
  })

  it('sets credentials only on types that have them, and applies to the built-in backends too', () => {
    const config = validateConfig({backends: [{name: 'scp', type: 'dimse', port: 104, aeTitle: 'SCP'}, {name: 'web', type: 'dicomweb', url: 'http://w', token: 't'}]}, 'test', {
      env: {DDR_BACKEND_SCP_PASSWORD: 'x', DDR_BACKEND_WEB_USERNAME: 'u'},
    })
    expect(config.backends[0]).not.toHaveProperty('password')
    // A username from the environment does not clash with the file's token.
    expect(config.backends[1]).toMatchObject({token: 't', username: 'u'})
    expect(validateConfig({}, 'defaults', {env: {DDR_BACKEND_ORTHANC2_PASSWORD: 'secret'}}).backends[1].password).toBe('secret')
  })
})

describe('documented configs', () => {
  const root = new URL('../../../', import.meta.url)
  const jsonBlocks = (file: string): string[] => [...readFileSync(new URL(file, root), 'utf8').matchAll(/```json\n([\s\S]*?)```/g)].map((match) => match[1])

  it("README's example is the built-in default, and names ddr.schema.json", () => {
    const [example] = jsonBlocks('README.md')
    const parsed = JSON.parse(example)
    expect(parsed.$schema).toBe('./ddr.schema.json')
    const {source: _source, ...fromExample} = validateConfig(parsed, 'README.md')
    expect(fromExample).toEqual(defaultConfigObject())
  })

  it("docs/processing.md's and the shipped modules' examples load", () => {
    const blocks = ['docs/processing.md', 'modules/image-quality/README.md', 'modules/onnx-classifier/README.md'].flatMap(jsonBlocks).map((block) => JSON.parse(block))
    const configs = blocks.filter((item) => item.processing !== undefined)
    expect(configs.length).toBeGreaterThanOrEqual(3)
    for (const config of configs) expect(() => validateConfig(config, 'docs/processing.md')).not.toThrow()
  })

  it("docs/backends.md's backend examples load", () => {
    const backends = jsonBlocks('docs/backends.md')
      .map((block) => JSON.parse(block))
      .filter((item) => typeof item.name === 'string')
      // An https example names PEM files that exist on the author's machine only.
      .map(({https: _https, ...backend}) => backend)
    expect(backends.length).toBeGreaterThanOrEqual(4)
    for (const backend of backends) expect(() => validateConfig({backends: [{...backend, mirror: false}]}, 'docs/backends.md')).not.toThrow()
  })
})

describe('listen.workers', () => {
  it('is 1 (one process) by default, and takes DDR_LISTEN_WORKERS', () => {
    expect(validateConfig({}, 'test').listen.workers).toBe(1)
    expect(validateConfig({listen: {workers: 4}}, 'test').listen.workers).toBe(4)
    expect(validateConfig({}, 'test', {env: {DDR_LISTEN_WORKERS: '3'}}).listen.workers).toBe(3)
  })

  it('names the field when it is not an integer from 1 to 64', () => {
    expect(problems({listen: {workers: 0}})).toContain('listen.workers: must be an integer from 1 to 64 (got 0)')
    expect(problems({listen: {workers: 65}})).toContain('listen.workers: must be an integer from 1 to 64 (got 65)')
    expect(problems({listen: {workers: 2.5}})).toContain('listen.workers: must be an integer from 1 to 64 (got 2.5)')
    expect(problems({}, {DDR_LISTEN_WORKERS: 'many'})).toContain('listen.workers (from DDR_LISTEN_WORKERS)')
  })
})
