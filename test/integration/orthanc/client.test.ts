import {mkdtemp, readFile, rm} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {OrthancClient} from '../../../src/lib/orthanc/client.js'
import {makeTestDicom} from '../../helpers/dcmtk.js'
import {startTestOrthanc, type TestOrthanc} from '../../helpers/orthanc.js'
import {expectDdrError} from '../../helpers/expect.js'
import {freePort} from '../../helpers/ports.js'

describe('OrthancClient against a real Orthanc', () => {
  let orthanc: TestOrthanc
  let work: string
  let first: {file: string; sopInstanceUid: string; studyInstanceUid: string}
  let firstBytes: Buffer
  let firstId: string
  let firstStudyId: string | undefined

  beforeAll(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), 'ddr-client-'))
    orthanc = await startTestOrthanc()
    first = await makeTestDicom(path.join(work, 'first.dcm'), {patientId: 'CLIENT-1', pixels: 64})
    firstBytes = await readFile(first.file)
  })

  afterAll(async () => {
    await orthanc?.stop()
    await rm(work, {recursive: true, force: true})
  })

  it('uploads a Part 10 file and gets the same bytes back by SOPInstanceUID', async () => {
    const upload = await orthanc.client.uploadInstance(firstBytes)
    expect(upload.status).toBe('Success')
    expect(upload.id).toMatch(/^[0-9a-f-]{44}$/)
    firstId = upload.id
    firstStudyId = upload.parentStudy
    expect(firstStudyId).toEqual(expect.any(String))

    expect(await orthanc.client.lookupInstance(first.sopInstanceUid)).toBe(upload.id)
    const stored = await orthanc.client.instanceFile(upload.id)
    expect(Buffer.compare(stored, firstBytes)).toBe(0)
  })

  it('keeps the first copy: uploading again answers AlreadyStored', async () => {
    const again = await orthanc.client.uploadInstance(firstBytes)
    expect(again).toMatchObject({id: firstId, status: 'AlreadyStored'})
    expect((await orthanc.client.statistics()).CountInstances).toBe(1)
  })

  it('answers undefined for an unknown SOPInstanceUID', async () => {
    expect(await orthanc.client.lookupInstance('1.2.3.4.5.6.7.8.9')).toBeUndefined()
  })

  it('lists, finds and deletes', async () => {
    const second = await makeTestDicom(path.join(work, 'second.dcm'), {patientId: 'CLIENT-2'})
    const secondUpload = await orthanc.client.uploadInstance(await readFile(second.file))

    const statistics = await orthanc.client.statistics()
    expect(statistics).toMatchObject({CountInstances: 2, CountStudies: 2, CountPatients: 2})
    expect((await orthanc.client.listInstances()).sort()).toEqual([firstId, secondUpload.id].sort())
    expect(await orthanc.client.listInstances({limit: 1})).toHaveLength(1)
    expect(await orthanc.client.studies()).toHaveLength(2)

    const found = await orthanc.client.findStudies({StudyInstanceUID: first.studyInstanceUid})
    expect(found).toEqual([firstStudyId])
    const study = await orthanc.client.study(found[0])
    expect(study.MainDicomTags.StudyInstanceUID).toBe(first.studyInstanceUid)
    expect(await orthanc.client.findStudies({PatientID: 'NOBODY'})).toEqual([])

    await orthanc.client.deleteStudy(found[0])
    expect(await orthanc.client.lookupInstance(first.sopInstanceUid)).toBeUndefined()
    const patients = await orthanc.client.patients()
    expect(patients).toHaveLength(1)
    await orthanc.client.deletePatient(patients[0])
    expect((await orthanc.client.statistics()).CountInstances).toBe(0)
  })

  it('turns an HTTP error into BACKEND_REFUSED naming the URL and request', async () => {
    const error = await expectDdrError(orthanc.client.instanceFile('does-not-exist'))
    expect(error.code).toBe('BACKEND_REFUSED')
    expect(error.exit).toBe(3)
    expect(error.message).toContain(`GET ${orthanc.url}/instances/does-not-exist/file failed: HTTP 404`)
  })

  it('rejects a body that is not DICOM with BACKEND_REFUSED', async () => {
    const error = await expectDdrError(orthanc.client.uploadInstance(Buffer.from('not a dicom file')))
    expect(error.code).toBe('BACKEND_REFUSED')
    expect(error.message).toContain(`POST ${orthanc.url}/instances failed: HTTP 400`)
  })

  it('turns a refused connection into BACKEND_UNREACHABLE, without leaking credentials', async () => {
    const port = await freePort()
    const client = new OrthancClient({url: `http://ddr:s3cret-pw@127.0.0.1:${port}/`, timeoutMs: 2000})
    try {
      const error = await expectDdrError(client.statistics())
      expect(error.code).toBe('BACKEND_UNREACHABLE')
      expect(error.message).toBe(`GET http://127.0.0.1:${port}/statistics failed: ECONNREFUSED`)
      expect(`${error.message} ${error.hint}`).not.toContain('s3cret')
      expect(client.url).toBe(`http://127.0.0.1:${port}`)
    } finally {
      client.close()
    }
  })

  it('sends basic-auth credentials (Orthanc without authentication ignores them)', async () => {
    const client = new OrthancClient({url: orthanc.url, username: 'someone', password: 'anything'})
    try {
      expect((await client.system()).DicomAet).toBe(orthanc.aeTitle)
    } finally {
      client.close()
    }
  })
})
