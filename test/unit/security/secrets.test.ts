import {chmodSync, mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'

import {validateConfig} from '../../../src/lib/config/validate.js'
import {configPermissionWarning, holdsSecret, redactConfig} from '../../../src/lib/security/secrets.js'
import {redactUrl} from '../../../src/lib/output/redact.js'

describe('secrets', () => {
  let dir: string
  beforeAll(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'ddr-secrets-'))
  })
  afterAll(() => rmSync(dir, {recursive: true, force: true}))

  it('redacts URL credentials and backend passwords', () => {
    expect(redactUrl('http://admin:s3cret@pacs:8042/')).toBe('http://***@pacs:8042')
    expect(redactUrl('http://pacs:8042')).toBe('http://pacs:8042')
    expect(redactUrl('http://pacs:8042/')).toBe('http://pacs:8042/')
    expect(redactUrl('not a url //u:pw@x')).toBe('not a url //***@x')
    const config = validateConfig({backends: [{name: 'a', port: 4242, aeTitle: 'A', url: 'http://u:s3cret@127.0.0.1:8042', username: 'u', password: 's3cret'}]}, 't')
    const printed = JSON.stringify(redactConfig(config))
    expect(printed).not.toContain('s3cret')
    expect(config.backends[0].password).toBe('s3cret')
  })

  it('drops URL credentials (and trailing slashes) for messages and comparisons', () => {
    const drop = (url: string) => redactUrl(url, {credentials: 'drop'})
    expect(drop('https://u:s3cret@pacs:8043/dicom-web/')).toBe('https://pacs:8043/dicom-web')
    expect(drop('http://PACS:8042/')).toBe('http://pacs:8042')
    expect(drop('http://u:s3cret@[not-a-host')).toBe('http://[not-a-host')
    expect(redactUrl('http://u:s3cret@pacs:8042', {credentials: 'drop'})).toBe('http://pacs:8042')
  })

  it('warns only for a world-readable file that holds a secret', () => {
    const withSecret = path.join(dir, 'secret.json')
    writeFileSync(withSecret, JSON.stringify({backends: [{name: 'a', port: 4242, aeTitle: 'A', password: 'pw'}]}))
    const without = path.join(dir, 'plain.json')
    writeFileSync(without, JSON.stringify({backends: [{name: 'a', port: 4242, aeTitle: 'A'}]}))
    chmodSync(withSecret, 0o644)
    chmodSync(without, 0o644)
    expect(configPermissionWarning(withSecret)).toContain('chmod 600')
    expect(configPermissionWarning(withSecret)).not.toContain('pw"')
    expect(configPermissionWarning(without)).toBeUndefined()
    chmodSync(withSecret, 0o600)
    expect(configPermissionWarning(withSecret)).toBeUndefined()
    expect(configPermissionWarning('defaults')).toBeUndefined()
    expect(holdsSecret({backends: [{url: 'http://a:b@h'}]})).toBe(true)
  })
})
