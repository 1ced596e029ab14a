import {mkdirSync, mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'

import {CONFIG_FILE_NAME, envName, findConfigFile, loadConfig, selectBackends} from '../../../src/lib/config/load.js'
import {DdrError, ExitCode} from '../../../src/lib/errors.js'

let root: string
let cwd: string

const backend = (name: string, port: number, extra: Record<string, unknown> = {}) => ({name, port, aeTitle: name.toUpperCase().slice(0, 16), url: `http://127.0.0.1:${port + 1000}`, ...extra})

function writeConfig(file: string, value: unknown): string {
  mkdirSync(path.dirname(file), {recursive: true})
  writeFileSync(file, typeof value === 'string' ? value : JSON.stringify(value))
  return file
}

function configError(run: () => unknown): DdrError {
  try {
    run()
  } catch (error) {
    expect(error).toBeInstanceOf(DdrError)
    return error as DdrError
  }

  throw new Error('expected a DdrError')
}

beforeEach(() => {
  root = mkdtempSync(path.join(os.tmpdir(), 'ddr-config-'))
  cwd = path.join(root, 'cwd')
  mkdirSync(cwd)
})

afterEach(() => rmSync(root, {recursive: true, force: true}))

describe('config discovery order', () => {
  it('uses the built-in two-Orthanc defaults when nothing is given', () => {
    const config = loadConfig({cwd, env: {}})
    expect(config.source).toBe('defaults')
    expect(config.backends.map((b) => b.name)).toEqual(['orthanc1', 'orthanc2'])
    expect(config.listen).toMatchObject({port: 11113, aeTitle: 'DYNAMIC_DICOM_MW'})
    expect(findConfigFile({cwd, env: {}})).toBeUndefined()
  })

  it('finds ./ddr.config.json in the working directory', () => {
    const local = writeConfig(path.join(cwd, CONFIG_FILE_NAME), {backends: [backend('local', 5000)]})
    const config = loadConfig({cwd, env: {}})
    expect(config.source).toBe(local)
    expect(config.backends.map((b) => b.name)).toEqual(['local'])
  })

  it('prefers DDR_CONFIG over ./ddr.config.json', () => {
    writeConfig(path.join(cwd, CONFIG_FILE_NAME), {backends: [backend('local', 5000)]})
    const fromEnv = writeConfig(path.join(root, 'env', 'env.json'), {backends: [backend('from-env', 5100)]})
    const config = loadConfig({cwd, env: {DDR_CONFIG: fromEnv}})
    expect(config.source).toBe(fromEnv)
    expect(config.backends[0].name).toBe('from-env')
  })

  it('prefers --config over DDR_CONFIG, and resolves it against the working directory', () => {
    writeConfig(path.join(cwd, CONFIG_FILE_NAME), {backends: [backend('local', 5000)]})
    const fromEnv = writeConfig(path.join(root, 'env.json'), {backends: [backend('from-env', 5100)]})
    const explicit = writeConfig(path.join(cwd, 'conf', 'explicit.json'), {backends: [backend('explicit', 5200)]})
    const config = loadConfig({cwd, env: {DDR_CONFIG: fromEnv}, configPath: 'conf/explicit.json'})
    expect(config.source).toBe(explicit)
    expect(config.backends[0].name).toBe('explicit')
  })

  it('ignores an empty DDR_CONFIG', () => {
    const local = writeConfig(path.join(cwd, CONFIG_FILE_NAME), {})
    expect(loadConfig({cwd, env: {DDR_CONFIG: ''}}).source).toBe(local)
  })

  it('reports a missing --config or DDR_CONFIG file by name and origin (exit 2)', () => {
    const missingFlag = configError(() => loadConfig({cwd, env: {}, configPath: 'nope.json'}))
    expect(missingFlag.code).toBe('CONFIG_NOT_FOUND')
    expect(missingFlag.exit).toBe(ExitCode.usage)
    expect(missingFlag.message).toContain(path.join(cwd, 'nope.json'))
    expect(missingFlag.message).toContain('--config')

    const missingEnv = configError(() => loadConfig({cwd, env: {DDR_CONFIG: path.join(root, 'gone.json')}}))
    expect(missingEnv.code).toBe('CONFIG_NOT_FOUND')
    expect(missingEnv.message).toContain('DDR_CONFIG')
  })

  it('does not fall back to ./ddr.config.json when --config names a missing file', () => {
    writeConfig(path.join(cwd, CONFIG_FILE_NAME), {})
    expect(configError(() => loadConfig({cwd, env: {}, configPath: 'other.json'})).code).toBe('CONFIG_NOT_FOUND')
  })
})

describe('environment overrides', () => {
  it('overrides listen, status, spool and stack settings from DDR_* variables', () => {
    writeConfig(path.join(cwd, CONFIG_FILE_NAME), {listen: {port: 104}, stack: {dir: '/from/file'}})
    const config = loadConfig({
      cwd,
      env: {DDR_LISTEN_PORT: '11999', DDR_LISTEN_AE_TITLE: 'ENV_AE', DDR_STATUS_PORT: '11998', DDR_SPOOL_DIR: '/tmp/spool-env', DDR_STACK_DIR: '/tmp/stack-env'},
    })
    expect(config.listen.port).toBe(11999)
    expect(config.listen.aeTitle).toBe('ENV_AE')
    expect(config.status.port).toBe(11998)
    expect(config.spool.dir).toBe('/tmp/spool-env')
    expect(config.stack.dir).toBe('/tmp/stack-env')
  })

  it('applies overrides to the defaults too', () => {
    expect(loadConfig({cwd, env: {DDR_LISTEN_PORT: '4000'}}).listen.port).toBe(4000)
  })

  it('reads backend credentials from DDR_BACKEND_<NAME>_USERNAME / _PASSWORD, name upper-cased with "_" for other characters', () => {
    writeConfig(path.join(cwd, CONFIG_FILE_NAME), {backends: [backend('orthanc-2', 5000, {username: 'file-user', password: 'file-secret'}), backend('other.one', 5100)]})
    const config = loadConfig({cwd, env: {DDR_BACKEND_ORTHANC_2_PASSWORD: 'env-secret', DDR_BACKEND_OTHER_ONE_USERNAME: 'alice', DDR_BACKEND_OTHER_ONE_PASSWORD: 'pw'}})
    expect(config.backends[0]).toMatchObject({username: 'file-user', password: 'env-secret'})
    expect(config.backends[1]).toMatchObject({username: 'alice', password: 'pw'})
    expect(envName('orthanc-2')).toBe('ORTHANC_2')
    expect(envName('a.b c')).toBe('A_B_C')
  })

  it('leaves credentials alone when no variable is set', () => {
    writeConfig(path.join(cwd, CONFIG_FILE_NAME), {backends: [backend('b1', 5000)]})
    const config = loadConfig({cwd, env: {}})
    expect(config.backends[0].username).toBeUndefined()
    expect(config.backends[0].password).toBeUndefined()
  })

  it('names the field when an override is not a valid value', () => {
    const error = configError(() => loadConfig({cwd, env: {DDR_LISTEN_PORT: 'eleven'}}))
    expect(error.code).toBe('CONFIG_INVALID')
    expect(error.message).toContain('listen.port')
    expect(error.message).toContain('"eleven"')
  })
})

describe('validation messages', () => {
  const invalid = (value: unknown) => {
    const file = writeConfig(path.join(cwd, CONFIG_FILE_NAME), value)
    const error = configError(() => loadConfig({cwd, env: {}}))
    expect(error.code).toBe('CONFIG_INVALID')
    expect(error.exit).toBe(ExitCode.usage)
    expect(error.message).toContain(file)
    return error.message
  }

  it('names backends[1].port when the second backend has a bad port', () => {
    const message = invalid({backends: [backend('a', 5000), backend('b', 70000)]})
    expect(message).toMatch(/backends\[1\]\.port: must be an integer from 1 to 65535 \(got 70000\)/)
    expect(message).not.toContain('backends[0]')
  })

  it('lists every problem at once, each with its field', () => {
    const message = invalid({
      listen: {port: -1, aeTitle: 'THIS_AE_TITLE_IS_TOO_LONG'},
      routing: {policy: 'random'},
      backends: [{name: 'a', port: 5000, url: 'ftp://x'}, backend('a', 5001), {...backend('c', 5002), colour: 'blue'}],
    })
    expect(message).toContain('listen.port')
    expect(message).toContain('listen.aeTitle')
    expect(message).toContain('routing.policy: must be one of least-loaded, round-robin, weighted')
    expect(message).toContain('backends[0].aeTitle: is required')
    expect(message).toContain('backends[0].url: must be an http(s) URL')
    expect(message).toContain('backends[1].name: duplicate backend name "a"')
    expect(message).toContain('backends[2].colour: unknown field')
  })

  it('rejects an empty backends list and unknown top-level fields', () => {
    const message = invalid({backends: [], listne: {}})
    expect(message).toContain('backends: must be a non-empty array')
    expect(message).toContain('listne: unknown field')
  })

  it('reports JSON syntax errors with the file name', () => {
    const message = invalid('{"listen": {"port": 1,}}')
    expect(message).toContain('is not valid JSON')
  })

  it('rejects a folder given as the config file', () => {
    const error = configError(() => loadConfig({cwd, env: {}, configPath: root}))
    expect(error.code).toBe('CONFIG_INVALID')
    expect(error.message).toContain('is a folder')
  })

  it('fills defaults for optional backend fields and strips a trailing slash from the URL', () => {
    writeConfig(path.join(cwd, CONFIG_FILE_NAME), {backends: [{name: 'x', port: 4242, aeTitle: 'X', url: 'http://127.0.0.1:8042/'}]})
    expect(loadConfig({cwd, env: {}}).backends[0]).toEqual({
      name: 'x',
      host: '127.0.0.1',
      port: 4242,
      aeTitle: 'X',
      url: 'http://127.0.0.1:8042',
      username: undefined,
      password: undefined,
      weight: 1,
      transport: 'dimse',
      maxAssociations: 4,
      storeTimeoutMs: 120_000,
    })
  })

  it('reads storeTimeoutMs and transferSyntaxes, and names the field of a bad one', () => {
    writeConfig(path.join(cwd, CONFIG_FILE_NAME), {backends: [{name: 'x', type: 'dimse', port: 4242, aeTitle: 'X', storeTimeoutMs: 5000, transferSyntaxes: ['1.2.840.10008.1.2', '1.2.840.10008.1.2.1']}]})
    expect(loadConfig({cwd, env: {}}).backends[0]).toMatchObject({storeTimeoutMs: 5000, transferSyntaxes: ['1.2.840.10008.1.2', '1.2.840.10008.1.2.1']})
    writeConfig(path.join(cwd, CONFIG_FILE_NAME), {backends: [{name: 'x', type: 'dimse', port: 4242, aeTitle: 'X', storeTimeoutMs: 10, transferSyntaxes: ['explicit']}]})
    expect(() => loadConfig({cwd, env: {}})).toThrow(/backends\[0\]\.storeTimeoutMs[\s\S]*backends\[0\]\.transferSyntaxes\[0\]: must be a UID/)
  })
})

describe('selectBackends', () => {
  it('selects by name case-insensitively and names the known backends on a miss', () => {
    const config = loadConfig({cwd, env: {}})
    expect(selectBackends(config, ['ORTHANC2']).map((b) => b.name)).toEqual(['orthanc2'])
    expect(selectBackends(config).length).toBe(2)
    const error = configError(() => selectBackends(config, ['orthanc9']))
    expect(error.code).toBe('USAGE')
    expect(error.message).toContain('orthanc1, orthanc2')
  })
})

describe('backends[].https (trust for https:// URLs)', () => {
  const certificate = '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n'
  const privateKey = '-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n'
  let ca: string
  let cert: string
  let key: string

  beforeEach(() => {
    ca = writeConfig(path.join(root, 'pki', 'ca.pem'), certificate)
    cert = writeConfig(path.join(root, 'pki', 'client.pem'), certificate)
    key = writeConfig(path.join(root, 'pki', 'client.key'), privateKey)
  })

  const load = (backends: unknown[], env: NodeJS.ProcessEnv = {}) => loadConfig({cwd, env, configPath: writeConfig(path.join(root, 'https.json'), {backends})})
  const https = (extra: Record<string, unknown> = {}) => backend('pacs', 4242, {url: 'https://pacs.example:8043', ...extra})

  it('reads ca, cert, key and rejectUnauthorized (default true) for Orthanc and DICOMweb backends, separate from DICOM tls', () => {
    const config = load([https({https: {ca, cert, key}, tls: {ca}}), {name: 'web', type: 'dicomweb', url: 'https://web.example/dicom-web', https: {ca, rejectUnauthorized: false}}])
    expect(config.backends[0].https).toEqual({ca, cert, key, rejectUnauthorized: true})
    expect(config.backends[0].tls).toEqual({ca, rejectUnauthorized: true})
    expect(config.backends[1].https).toEqual({ca, rejectUnauthorized: false})
    expect(load([https()]).backends[0].https).toBeUndefined()
  })

  it('names the field and the file of a PEM that is missing, not PEM, or an encrypted key', () => {
    const notPem = writeConfig(path.join(root, 'pki', 'notes.txt'), 'hello')
    const encrypted = writeConfig(path.join(root, 'pki', 'locked.key'), '-----BEGIN ENCRYPTED PRIVATE KEY-----\nx\n-----END ENCRYPTED PRIVATE KEY-----\n')
    const missing = path.join(root, 'pki', 'missing.pem')
    const error = configError(() => load([https({https: {ca: missing, cert: notPem, key: encrypted}})]))
    expect(error.code).toBe('CONFIG_INVALID')
    expect(error.message).toContain(`backends[0].https.ca: cannot read ${missing} (no such file)`)
    expect(error.message).toContain(`backends[0].https.cert: ${notPem} is not a PEM file with a certificate`)
    expect(error.message).toContain(`backends[0].https.key: ${encrypted} holds an encrypted private key`)
    expect(configError(() => load([https({https: {ca: key}})])).message).toContain(`backends[0].https.ca: ${key} is not a PEM file with a certificate`)
    expect(configError(() => load([https({https: {ca: path.join(root, 'pki')}})])).message).toContain('(a folder, not a file)')
  })

  it('refuses https settings that would never be used, and shapes that cannot work', () => {
    const plain = configError(() => load([backend('pacs', 4242, {url: 'http://u:secret@pacs:8042', https: {ca}})])).message
    expect(plain).toContain('backends[0].https: url http://pacs:8042 is not https://')
    expect(plain).not.toContain('secret')
    expect(configError(() => load([{name: 'pacs', port: 4242, aeTitle: 'PACS', https: {ca}}])).message).toContain('backends[0].https: needs url')
    expect(configError(() => load([{name: 'scp', type: 'dimse', port: 104, aeTitle: 'SCP', https: {ca}}])).message).toContain('backends[0].https: unknown field')
    expect(configError(() => load([https({https: {cert}})])).message).toContain('backends[0].https: cert and key go together')
    expect(configError(() => load([https({https: {ca, pin: 'x'}})])).message).toContain('backends[0].https.pin: unknown field')
    expect(configError(() => load([https({https: {ca, rejectUnauthorized: 'no'}})])).message).toContain('backends[0].https.rejectUnauthorized: must be true or false')
  })

  it('takes DDR_BACKEND_<NAME>_HTTPS_CA / _CERT / _KEY over the file, checked the same way and named in problems', () => {
    const other = writeConfig(path.join(root, 'pki', 'other-ca.pem'), certificate)
    const config = load([https({https: {ca}}), backend('orthanc-2', 4343, {url: 'https://b.example'})], {
      DDR_BACKEND_PACS_HTTPS_CA: other,
      DDR_BACKEND_ORTHANC_2_HTTPS_CERT: cert,
      DDR_BACKEND_ORTHANC_2_HTTPS_KEY: key,
    })
    expect(config.backends[0].https).toEqual({ca: other, rejectUnauthorized: true})
    expect(config.backends[1].https).toEqual({cert, key, rejectUnauthorized: true})
    const missing = path.join(root, 'nope.pem')
    expect(configError(() => load([https()], {DDR_BACKEND_PACS_HTTPS_CA: missing})).message).toContain(`backends[0].https.ca (from DDR_BACKEND_PACS_HTTPS_CA): cannot read ${missing} (no such file)`)
    expect(load([https()], {DDR_BACKEND_PACS_HTTPS_CA: ''}).backends[0].https).toBeUndefined()
  })
})
