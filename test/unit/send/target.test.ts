import {mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'

import {validateConfig} from '../../../src/lib/config/validate.js'
import {formatSendSummary} from '../../../src/lib/send/format.js'
import {describeSendProgress} from '../../../src/lib/send/progress.js'
import {dcmtkStyleArgv, resolveSendTarget} from '../../../src/lib/send/target.js'
import type {SendResult} from '../../../src/lib/send/types.js'

const config = () =>
  validateConfig(
    {
      backends: [
        {name: 'orthanc1', host: '10.0.0.1', port: 4242, aeTitle: 'ORTHANC1', url: 'http://10.0.0.1:8042', username: 'ddr', password: 'from-config'},
        {name: 'web', host: '10.0.0.2', port: 4243, aeTitle: 'WEB', url: 'http://10.0.0.2:8042/', transport: 'rest'},
        {name: 'plain', host: '10.0.0.3', port: 104, aeTitle: 'PLAIN'},
        {name: 'cloud', type: 'dicomweb', url: 'https://pacs.example/dicom-web', token: 't'},
        {name: 'disk', type: 'folder', path: '/srv/dicom'},
      ],
    },
    'test',
  )

describe('resolveSendTarget', () => {
  it('defaults to the local router: localhost:11113, DYNAMIC_DICOM_MW, calling as DDR', () => {
    const noConfig = () => {
      throw new Error('the config must not be read')
    }
    expect(resolveSendTarget({}, noConfig)).toEqual({protocol: 'dimse', host: 'localhost', port: 11113, calledAeTitle: 'DYNAMIC_DICOM_MW', callingAeTitle: 'DDR'})
    expect(resolveSendTarget({host: 'pacs', port: 104, calledAeTitle: 'PACS', callingAeTitle: 'CT1'}, noConfig)).toEqual({protocol: 'dimse', host: 'pacs', port: 104, calledAeTitle: 'PACS', callingAeTitle: 'CT1'})
  })

  it('sends to a configured backend on its DICOM port, or over REST when that is its transport', () => {
    expect(resolveSendTarget({backend: 'ORTHANC1'}, config)).toEqual({protocol: 'dimse', host: '10.0.0.1', port: 4242, calledAeTitle: 'ORTHANC1', callingAeTitle: 'DDR', backend: 'orthanc1'})
    expect(resolveSendTarget({backend: 'web'}, config)).toMatchObject({protocol: 'rest', url: 'http://10.0.0.2:8042', backend: 'web'})
  })

  it('sends to a dicomweb backend with STOW-RS and to a folder backend as files, with their config', () => {
    expect(resolveSendTarget({backend: 'cloud'}, config)).toMatchObject({protocol: 'stow', url: 'https://pacs.example/dicom-web', backend: 'cloud', config: {type: 'dicomweb', token: 't'}})
    expect(resolveSendTarget({backend: 'disk'}, config)).toMatchObject({protocol: 'folder', path: '/srv/dicom', backend: 'disk', config: {type: 'folder', minFreeMb: 100}})
    expect(() => resolveSendTarget({backend: 'disk', port: 104, calledAeTitle: 'X'}, config)).toThrow('--port, --called-ae do not apply to backend disk: it is a folder backend, not a DICOM receiver')
    expect(() => resolveSendTarget({backend: 'cloud', tls: {}}, config)).toThrow('--tls does not apply to backend cloud: it is a dicomweb backend, not a DICOM receiver')
    expect(() => resolveSendTarget({rest: 'cloud'}, config)).toThrow('backend cloud is a dicomweb backend, not an Orthanc REST API')
    expect(() => resolveSendTarget({rest: 'disk'}, config)).toThrow('backend disk is a folder backend, not an Orthanc REST API')
  })

  it('takes REST credentials from the configured backend, by name or by the same URL, never a default', () => {
    expect(resolveSendTarget({rest: 'orthanc1'}, config)).toEqual({protocol: 'rest', url: 'http://10.0.0.1:8042', username: 'ddr', password: 'from-config', backend: 'orthanc1'})
    expect(resolveSendTarget({rest: 'http://10.0.0.1:8042/'}, config)).toEqual({protocol: 'rest', url: 'http://10.0.0.1:8042/', username: 'ddr', password: 'from-config'})
    expect(resolveSendTarget({rest: 'http://elsewhere:8042'}, config)).toEqual({protocol: 'rest', url: 'http://elsewhere:8042', username: undefined, password: undefined})
  })

  it('refuses what cannot work, naming it', () => {
    expect(() => resolveSendTarget({rest: 'plain'}, config)).toThrow('backend plain has no url, so it cannot take REST uploads')
    expect(() => resolveSendTarget({rest: 'nobody'}, config)).toThrow('unknown backend "nobody" (configured: orthanc1, web, plain, cloud, disk)')
    expect(() => resolveSendTarget({rest: 'orthanc1', backend: 'web'}, config)).toThrow('--rest and --backend both name a target')
    expect(() => resolveSendTarget({calledAeTitle: 'THIS_IS_FAR_TOO_LONG'}, config)).toThrow('--called-ae "THIS_IS_FAR_TOO_LONG" is not an AE title')
  })
})

describe('resolveSendTarget --ca (HTTPS uploads)', () => {
  let dir: string
  let ca: string
  let backendCa: string
  const secureConfig = () =>
    validateConfig(
      {
        backends: [
          {name: 'secure', port: 4242, aeTitle: 'SECURE', url: 'https://pacs.example:8043', username: 'ddr', https: {ca: backendCa}},
          {name: 'plain', port: 4243, aeTitle: 'PLAIN', url: 'http://pacs.example:8042'},
        ],
      },
      'test',
    )

  beforeAll(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'ddr-send-ca-'))
    ca = path.join(dir, 'ca.pem')
    backendCa = path.join(dir, 'backend-ca.pem')
    for (const file of [ca, backendCa]) writeFileSync(file, '-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n')
  })
  afterAll(() => rmSync(dir, {recursive: true, force: true}))

  it('trusts --ca for an https:// URL; a configured backend lends its https trust, and --ca replaces its CA', () => {
    expect(resolveSendTarget({rest: 'https://elsewhere:8043', ca}, secureConfig)).toMatchObject({protocol: 'rest', url: 'https://elsewhere:8043', https: {ca, rejectUnauthorized: true}})
    expect(resolveSendTarget({rest: 'secure'}, secureConfig)).toMatchObject({url: 'https://pacs.example:8043', backend: 'secure', https: {ca: backendCa, rejectUnauthorized: true}})
    expect(resolveSendTarget({rest: 'https://pacs.example:8043/'}, secureConfig)).toMatchObject({username: 'ddr', https: {ca: backendCa}})
    expect(resolveSendTarget({rest: 'secure', ca}, secureConfig)).toMatchObject({https: {ca}})
    expect(resolveSendTarget({rest: 'https://elsewhere:8043'}, secureConfig)).not.toHaveProperty('https')
  })

  it('refuses --ca where it would do nothing, and a --ca file that is not a readable PEM certificate', () => {
    expect(() => resolveSendTarget({rest: 'plain', ca}, secureConfig)).toThrow('--ca is for an https:// URL, and http://pacs.example:8042 is plain http')
    expect(() => resolveSendTarget({rest: 'http://u:s3cret@elsewhere:8042', ca}, secureConfig)).toThrow('--ca is for an https:// URL, and http://elsewhere:8042 is plain http')
    expect(() => resolveSendTarget({ca}, secureConfig)).toThrow('--ca is the CA for HTTPS uploads')
    expect(() => resolveSendTarget({backend: 'plain', ca}, secureConfig)).toThrow('--ca is the CA for HTTPS uploads')
    const missing = path.join(dir, 'missing.pem')
    expect(() => resolveSendTarget({rest: 'https://elsewhere:8043', ca: missing}, secureConfig)).toThrow(`--ca: cannot read ${missing} (no such file)`)
  })
})

describe('dcmtkStyleArgv', () => {
  it('rewrites -aet and -aec (dcmtk spelling) to the long flags, and nothing else', () => {
    expect(dcmtkStyleArgv(['study', '-aet', 'CT1', '-aec=PACS', '-p', '104', '--', '-aet'])).toEqual(['study', '--calling-ae', 'CT1', '--called-ae=PACS', '-p', '104', '--', '-aet'])
  })
})

describe('send output', () => {
  const result: SendResult = {
    target: {protocol: 'dimse', host: 'localhost', port: 11113, calledAeTitle: 'DYNAMIC_DICOM_MW', callingAeTitle: 'DDR'},
    files: 4,
    sent: 2,
    failed: 1,
    skipped: 1,
    bytes: 2_500_000,
    durationMs: 1250,
    concurrency: 1,
    failures: [{file: 'bad.dcm', reason: 'missing SOPClassUID (0008,0016)', code: 'INVALID_DICOM', hint: 'repair it with "ddr fix-sop bad.dcm", then send it again'}],
    skips: [{file: 'notes.txt', reason: 'not DICOM (no "DICM" at byte 128)'}],
    warnings: [],
  }

  it('summarises counts, size, rate and names every failed and skipped file with its reason and hint', () => {
    const text = formatSendSummary(result)
    expect(text).toContain('sent 2 of 3 DICOM files (2.5 MB) to DYNAMIC_DICOM_MW@localhost:11113 in 1.3 s (2 files/s, 2.0 MB/s)')
    expect(text).toContain('1 failed, 1 skipped')
    expect(text).toMatch(/bad\.dcm\s+missing SOPClassUID \(0008,0016\)/)
    expect(text).toContain('hint: repair it with "ddr fix-sop bad.dcm", then send it again')
    expect(text).toMatch(/notes\.txt\s+not DICOM/)
  })

  it('describes progress with files, MB, rate and ETA', () => {
    expect(describeSendProgress({phase: 'send', done: 100, failed: 0, total: 400, bytesDone: 4_000_000, bytesTotal: 16_000_000}, 2000)).toBe('100/400 files, 4.0 MB/16.0 MB, 50 files/s, ETA 6.0 s')
  })
})
