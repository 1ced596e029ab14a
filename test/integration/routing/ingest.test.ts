import {mkdir, mkdtemp, readFile, readdir, rm} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {type Storescp, startStorescp} from '../../helpers/dcmtk.js'
import {brokenFixture, datasetOf, goodFixtures, readFixture} from '../../helpers/fixtures.js'
import {type TestRouter, startTestRouter} from '../../helpers/router.js'
import {waitFor} from '../../helpers/wait.js'

/** Instances that do not come over DICOM (HTTP upload, processing results) take the same intake as a C-STORE. */
describe('RouterService.ingest', () => {
  let backend: Storescp
  let router: TestRouter
  let dir: string

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'ddr-ingest-'))
    await mkdir(path.join(dir, 'backend'))
    // storescp +B writes what it received bit for bit: the bytes the router delivered.
    backend = await startStorescp({dir: path.join(dir, 'backend'), aeTitle: 'BACKEND', extraArgs: ['+B', '--fork']})
    router = await startTestRouter([{name: 'backend', aeTitle: backend.aeTitle, dicomPort: backend.port, config: {type: 'dimse'}}], {studies: {stableSeconds: 60}})
  })

  afterAll(async () => {
    await router?.stop()
    await backend?.stop()
    if (dir) await rm(dir, {recursive: true, force: true})
  })

  it('stores a Part 10 file durably and delivers its dataset byte for byte, recorded in the ledger with its source', async () => {
    const entry = goodFixtures.find((e) => e.transferSyntaxUid === '1.2.840.10008.1.2.1')!
    const result = await router.service.ingest(readFixture(entry), {callingAeTitle: 'HTTP-UPLOAD', remoteAddress: '10.1.2.3', source: 'ct.dcm'})
    expect(result).toMatchObject({outcome: 'stored', status: 0, sopInstanceUid: entry.sopInstanceUid})
    await router.drained()
    const received = (await readdir(backend.dir)).find((f) => f.endsWith(entry.sopInstanceUid))
    expect(received).toBeDefined()
    expect(datasetOf(await readFile(path.join(backend.dir, received!))).equals(datasetOf(readFixture(entry)))).toBe(true)
    await waitFor('the ledger record', () => router.service.ledger!.store.study(entry.studyInstanceUid) !== undefined, 5000)
    expect(JSON.stringify(router.service.ledger!.store.study(entry.studyInstanceUid))).toContain('HTTP-UPLOAD')
  })

  it('says why it refuses: not DICOM (invalid), a dataset cut short (refused C000), with the file named', async () => {
    const notDicom = await router.service.ingest(readFixture(brokenFixture('not-dicom.dcm')), {callingAeTitle: 'HTTP-UPLOAD', source: 'notes.dcm'})
    expect(notDicom).toMatchObject({outcome: 'invalid'})
    expect(notDicom.reason).toContain('notes.dcm')

    const entry = goodFixtures.find((e) => e.transferSyntaxUid === '1.2.840.10008.1.2.1' && e.size > 4096)!
    const whole = readFixture(entry)
    const refused = await router.service.ingest(whole.subarray(0, whole.length - 1001), {callingAeTitle: 'HTTP-UPLOAD', source: 'cut.dcm'})
    expect(refused).toMatchObject({outcome: 'refused', status: 0xc000})
    expect(router.logs.some((l) => l.includes('instance-refused') && l.includes('HTTP-UPLOAD'))).toBe(true)
  })
})
