import {mkdir, mkdtemp, readdir, readFile, rm} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {validateConfig} from '../../../src/lib/config/validate.js'
import {Identifier} from '../../../src/lib/dicom/identifier.js'
import {readMetaHeader} from '../../../src/lib/dicom/part10.js'
import {Tag} from '../../../src/lib/dicom/tags.js'
import {type RouterService, startRouterService} from '../../../src/lib/listen/service.js'
import {Logger} from '../../../src/lib/output/logger.js'
import {DICOMWEB_PLUGIN} from '../../../src/lib/stack/orthanc-process.js'
import {type SyntheticInstance, writeSyntheticStudies} from '../../helpers/datasets.js'
import {runDcmtk, storescu} from '../../helpers/dcmtk.js'
import {type TestOrthanc, startTestOrthanc} from '../../helpers/orthanc.js'
import {waitFor} from '../../helpers/wait.js'
import type {SqliteLedgerStore} from '../../../src/lib/ledger/sqlite-store.js'

const datasetOf = (file: Buffer) => file.subarray(readMetaHeader(file).datasetOffset)

/** The identifiers findscu received (its --extract files). */
async function findResults(dir: string): Promise<Identifier[]> {
  const files = (await readdir(dir)).filter((f) => f.startsWith('rsp')).sort()
  return Promise.all(
    files.map(async (f) => {
      const bytes = await readFile(path.join(dir, f))
      const meta = readMetaHeader(bytes)
      return Identifier.decode(bytes.subarray(meta.datasetOffset), meta.transferSyntaxUid)
    }),
  )
}

describe('query/retrieve of a DICOMweb backend (QIDO-RS, WADO-RS) and a folder backend (the ledger, its files)', () => {
  let orthanc: TestOrthanc
  let service: RouterService
  let workDir: string
  let toWeb: SyntheticInstance[]
  let toFolder: SyntheticInstance[]
  const logs: string[] = []

  beforeAll(async () => {
    workDir = await mkdtemp(path.join(os.tmpdir(), 'ddr-qr-web-folder-'))
    orthanc = await startTestOrthanc({name: 'web', aeTitle: 'WEB', plugins: [DICOMWEB_PLUGIN], extra: {DicomWeb: {Enable: true, Root: '/dicom-web/'}}})
    toWeb = await writeSyntheticStudies(path.join(workDir, 'web'), {studies: 1, instancesPerStudy: 3, pixelBytes: 1024, prefix: 'QRWEB'})
    toFolder = await writeSyntheticStudies(path.join(workDir, 'folder'), {studies: 1, instancesPerStudy: 3, pixelBytes: 1024, prefix: 'QRFOLDER'})
    const config = validateConfig(
      {
        listen: {host: '127.0.0.1', port: 0, aeTitle: 'DDR_QR'},
        status: {host: '127.0.0.1', port: 0},
        spool: {dir: path.join(workDir, 'spool'), retryBaseMs: 100, retryMaxMs: 1000},
        health: {intervalMs: 60_000},
        retrieve: {queryTimeoutMs: 5000},
        backends: [
          {name: 'web', type: 'dicomweb', url: `${orthanc.url}/dicom-web`},
          {name: 'archive', type: 'folder', path: path.join(workDir, 'archive'), minFreeMb: 1},
        ],
        rules: [{name: 'to-archive', match: {tags: {PatientID: {prefix: 'QRFOLDER'}}}, action: {backends: ['archive']}}, {name: 'to-web', match: {}, action: {backends: ['web']}}],
      },
      'test',
    )
    service = await startRouterService(config, {logger: new Logger({write: (line) => logs.push(line)})})
    expect((await storescu(['-aec', 'DDR_QR', '127.0.0.1', String(service.port), ...[...toWeb, ...toFolder].map((i) => i.path)])).code).toBe(0)
    await service.forwarder!.idle()
    // The ledger records outcomes in batches: wait until it says the folder's three are stored.
    await waitFor('the ledger to record the archive', () => (service.ledger!.store as SqliteLedgerStore).storedOn('archive', {}).length === toFolder.length, 10_000)
  })

  afterAll(async () => {
    await service?.stop(5000)
    await orthanc?.stop()
    if (workDir) await rm(workDir, {recursive: true, force: true})
  })

  it('C-FIND through ddr finds the study on the DICOMweb backend (QIDO-RS) and the one on the folder backend (the ledger), with their counts', async () => {
    const out = path.join(workDir, 'find')
    await mkdir(out, {recursive: true})
    const find = await runDcmtk('findscu', ['-S', '-X', '-od', out, '-aec', 'DDR_QR', '-k', 'QueryRetrieveLevel=STUDY', '-k', 'PatientID=QR*', '-k', 'PatientName', '-k', 'StudyInstanceUID', '-k', 'NumberOfStudyRelatedInstances', '127.0.0.1', String(service.port)], {timeoutMs: 30_000})
    expect(find.code).toBe(0)
    const matches = await findResults(out)
    expect(matches.map((m) => [m.get(Tag.PatientID), m.get(Tag.StudyInstanceUID), m.get(Tag.NumberOfStudyRelatedInstances), m.get(Tag.PatientName)]).sort()).toEqual([
      ['QRFOLDER-0', toFolder[0].studyInstanceUid, '3', 'SYNTHETIC^0'],
      ['QRWEB-0', toWeb[0].studyInstanceUid, '3', 'SYNTHETIC^0'],
    ])
    expect(logs.some((l) => / INFO +query .*backends=2/.test(l))).toBe(true)
  })

  it('C-GET through ddr returns both studies, byte for byte: WADO-RS from the DICOMweb backend, the folder backend\'s files', async () => {
    for (const [name, study] of [
      ['web', toWeb],
      ['folder', toFolder],
    ] as const) {
      const out = path.join(workDir, `get-${name}`)
      await mkdir(out, {recursive: true})
      const get = await runDcmtk('getscu', ['-S', '-aec', 'DDR_QR', '-od', out, '-k', 'QueryRetrieveLevel=STUDY', '-k', `StudyInstanceUID=${study[0].studyInstanceUid}`, '127.0.0.1', String(service.port)], {timeoutMs: 60_000})
      expect(get.code).toBe(0)
      const received = await readdir(out)
      expect(received).toHaveLength(study.length)
      for (const instance of study) {
        const file = received.find((f) => f.endsWith(instance.sopInstanceUid))!
        expect({name, same: datasetOf(await readFile(path.join(out, file))).equals(datasetOf(await readFile(instance.path)))}).toEqual({name, same: true})
      }
    }
  })
})
