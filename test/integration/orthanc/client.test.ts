import {mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {OrthancRestBackend} from '../../../src/lib/backends/rest-backend.js'
import type {OrthancBackendConfig} from '../../../src/lib/config/schema.js'
import {readPart10Instance} from '../../../src/lib/dicom/received-instance.js'
import type {BalanceStatusResult} from '../../../src/lib/status/balance.js'
import type {LocateResult} from '../../../src/lib/inspect/backends.js'
import type {PurgeResult} from '../../../src/lib/orthanc/purge.js'
import {OrthancClient} from '../../../src/lib/orthanc/client.js'
import {runCompiledCli} from '../../helpers/compiled-cli.js'
import {makeTestDicom, storescu} from '../../helpers/dcmtk.js'
import {datasetOf} from '../../helpers/fixtures.js'
import {startTestOrthanc, type TestOrthanc} from '../../helpers/orthanc.js'
import {expectDdrError} from '../../helpers/expect.js'
import {freePort} from '../../helpers/ports.js'
import {startTestRouter} from '../../helpers/router.js'
import {waitFor} from '../../helpers/wait.js'

// One Orthanc for the whole file, with authentication on (RegisteredUsers): every request of the
// client tests carries the right credentials, and the second part checks what each ddr command
// does with wrong ones. Runs the compiled CLI: `npm run build` first.
const credentials = {username: 'ddr', password: 'right-pw'}
let orthanc: TestOrthanc

beforeAll(async () => {
  orthanc = await startTestOrthanc({name: 'secure', aeTitle: 'SECURE', credentials})
})

afterAll(async () => {
  await orthanc?.stop()
})

describe('OrthancClient against a real Orthanc', () => {
  let work: string
  let first: {file: string; sopInstanceUid: string; studyInstanceUid: string}
  let firstBytes: Buffer
  let firstId: string
  let firstStudyId: string | undefined

  beforeAll(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), 'ddr-client-'))
    first = await makeTestDicom(path.join(work, 'first.dcm'), {patientId: 'CLIENT-1', pixels: 64})
    firstBytes = await readFile(first.file)
  })

  afterAll(async () => {
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

  it('sends basic-auth credentials: the right ones are let in, wrong or missing ones get BACKEND_REFUSED (HTTP 401)', async () => {
    const right = new OrthancClient({url: orthanc.url, ...credentials})
    const inUrl = new OrthancClient({url: orthanc.url.replace('://', `://${credentials.username}:${credentials.password}@`)})
    const wrong = new OrthancClient({url: orthanc.url, username: credentials.username, password: 'wrong-pw'})
    const none = new OrthancClient({url: orthanc.url})
    try {
      expect((await right.system()).DicomAet).toBe(orthanc.aeTitle)
      expect((await inUrl.system()).DicomAet).toBe(orthanc.aeTitle)
      for (const client of [wrong, none]) {
        const error = await expectDdrError(client.system())
        expect(error.code).toBe('BACKEND_REFUSED')
        expect(error.exit).toBe(3)
        expect(error.message).toBe(`GET ${orthanc.url}/system failed: HTTP 401 (not authorized)`)
        expect(error.hint).toMatch(/username and password/)
      }
    } finally {
      for (const client of [right, inUrl, wrong, none]) client.close()
    }
  })
})

describe('ddr against an Orthanc that requires authentication: right credentials work, wrong ones fail with their code', () => {
  let work: string
  let config: string
  let viaSend: {file: string; sopInstanceUid: string; studyInstanceUid: string}
  let viaRouter: {file: string; sopInstanceUid: string; studyInstanceUid: string}
  const right = {DDR_BACKEND_SECURE_PASSWORD: credentials.password}
  const wrong = {DDR_BACKEND_SECURE_PASSWORD: 'wrong-pw'}
  const unauthorized = 'HTTP 401 (not authorized)'
  const ddr = (args: string[], env: NodeJS.ProcessEnv) => runCompiledCli([...args, '--config', config], {env})
  const stored = async (sopInstanceUid: string) => {
    const id = await orthanc.client.lookupInstance(sopInstanceUid)
    return id === undefined ? undefined : orthanc.client.instanceFile(id)
  }

  beforeAll(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), 'ddr-auth-'))
    viaSend = await makeTestDicom(path.join(work, 'via-send.dcm'), {patientId: 'AUTH-SEND', pixels: 256})
    viaRouter = await makeTestDicom(path.join(work, 'via-router.dcm'), {patientId: 'AUTH-ROUTER', pixels: 256})
    // The password comes from the environment only (DDR_BACKEND_SECURE_PASSWORD), as docs advise.
    // Transport "rest": balance-status then asks its REST API only (no C-ECHO that would answer anyway).
    config = path.join(work, 'ddr.config.json')
    await writeFile(
      config,
      JSON.stringify({
        status: {host: '127.0.0.1', port: await freePort()},
        health: {timeoutMs: 3000},
        backends: [{name: 'secure', host: '127.0.0.1', port: orthanc.dicomPort, aeTitle: orthanc.aeTitle, url: orthanc.url, username: credentials.username, transport: 'rest'}],
      }),
    )
  })

  afterAll(async () => {
    if (work) await rm(work, {recursive: true, force: true})
  })

  it('ddr send --rest: wrong credentials stop the upload with BACKEND_REFUSED (exit 3) naming the backend variables; right ones store the bytes', async () => {
    const refused = await ddr(['send', viaSend.file, '--rest', 'secure', '--json'], wrong)
    expect(refused.code).toBe(3)
    expect(JSON.parse(refused.stdout)).toEqual({
      error: {
        code: 'BACKEND_REFUSED',
        message: `POST ${orthanc.url}/instances: ${unauthorized}; nothing was sent (1 DICOM file ready)`,
        hint: 'check the username and password of backend secure (DDR_BACKEND_SECURE_USERNAME / DDR_BACKEND_SECURE_PASSWORD)',
        exit: 3,
      },
    })
    expect(refused.stdout).not.toContain('wrong-pw')
    expect(await stored(viaSend.sopInstanceUid)).toBeUndefined()

    const sent = await ddr(['send', viaSend.file, '--rest', 'secure', '--json'], right)
    expect(sent.code).toBe(0)
    expect(JSON.parse(sent.stdout)).toMatchObject({sent: 1, failed: 0})
    expect((await stored(viaSend.sopInstanceUid))?.equals(await readFile(viaSend.file))).toBe(true)
  })

  it('REST backend: wrong credentials are the backend\'s failure (BACKEND_UNREACHABLE, not the instance\'s), so the router keeps the instance and delivers it once they are right', async () => {
    const backendConfig = (password: string): OrthancBackendConfig => ({name: 'secure', transport: 'rest', url: orthanc.url, username: credentials.username, password, host: '127.0.0.1', port: orthanc.dicomPort, aeTitle: orthanc.aeTitle, weight: 1, maxAssociations: 1, storeTimeoutMs: 10_000})
    // The backend itself: a store (the router's health check marks the backend down before any
    // delivery, so only a direct call reaches POST /instances with wrong credentials) and an echo.
    const direct = new OrthancRestBackend(backendConfig('wrong-pw'))
    try {
      const instance = await readPart10Instance(viaRouter.file, 'auth-direct')
      for (const [call, where] of [
        [() => direct.store(instance), `POST ${orthanc.url}/instances`],
        [() => direct.echo(5000), `GET ${orthanc.url}/system`],
      ] as const) {
        const error = await expectDdrError(call())
        expect(error).toMatchObject({code: 'BACKEND_UNREACHABLE', message: `${where} failed: ${unauthorized}`, duringRequest: false})
        expect(error.hint).toBe('check the username and password of backend secure (DDR_BACKEND_SECURE_USERNAME / DDR_BACKEND_SECURE_PASSWORD)')
      }
    } finally {
      await direct.close()
    }

    // Store-and-forward: the sender gets Success once the instance is spooled; with wrong
    // credentials it must wait there (not dead-lettered: the instance is fine), the backend down.
    const spoolDir = await mkdtemp(path.join(os.tmpdir(), 'ddr-auth-spool-'))
    const backend = (password: string) => [{name: 'secure', aeTitle: orthanc.aeTitle, dicomPort: orthanc.dicomPort, url: orthanc.url, config: {username: credentials.username, password}}]
    try {
      const locked = await startTestRouter(backend('wrong-pw'), {transport: 'rest', spoolDir})
      try {
        expect((await storescu(['-aec', locked.aeTitle, '127.0.0.1', String(locked.port), viaRouter.file])).code).toBe(0)
        await waitFor('the backend marked down for its credentials', () => locked.service.status().backends[0].healthReason?.includes(unauthorized) === true, 10_000)
        // Several retry rounds (retryBaseMs 100) go by: still waiting, nothing dead-lettered.
        await new Promise((resolve) => setTimeout(resolve, 1500))
        const status = locked.service.status()
        expect(status.backends[0]).toMatchObject({name: 'secure', healthy: false, routed: 0})
        expect(status.spool).toMatchObject({depth: 1, deadLetters: 0})
        expect(locked.logs.some((line) => line.includes('backend=secure') && line.includes(unauthorized))).toBe(true)
        expect(await stored(viaRouter.sopInstanceUid)).toBeUndefined()
      } finally {
        await locked.stop()
      }

      const fixed = await startTestRouter(backend(credentials.password), {transport: 'rest', spoolDir})
      try {
        await waitFor('the waiting instance delivered', async () => (await stored(viaRouter.sopInstanceUid)) !== undefined, 20_000)
        await fixed.drained()
        expect(fixed.service.status().spool).toMatchObject({depth: 0, deadLetters: 0})
      } finally {
        await fixed.stop()
      }

      expect(datasetOf((await stored(viaRouter.sopInstanceUid))!).equals(datasetOf(await readFile(viaRouter.file)))).toBe(true)
    } finally {
      await rm(spoolDir, {recursive: true, force: true})
    }
  })

  it('ddr inspect --study: wrong credentials make the backend "refused" with BACKEND_REFUSED (exit 3); right ones find the study', async () => {
    // Read-only commands: run side by side (each CLI start costs a second or two here).
    const [refused, human, found] = await Promise.all([
      ddr(['inspect', '--study', viaSend.studyInstanceUid, '--json'], wrong),
      ddr(['inspect', '--study', viaSend.studyInstanceUid], wrong),
      ddr(['inspect', '--study', viaSend.studyInstanceUid, '--json'], right),
    ])
    expect(refused.code).toBe(3)
    const locate = JSON.parse(refused.stdout) as LocateResult
    expect(locate).toMatchObject({found: false, answered: 0})
    expect(locate.backends).toEqual([expect.objectContaining({backend: 'secure', status: 'refused', error: {code: 'BACKEND_REFUSED', message: `POST ${orthanc.url}/tools/find failed: ${unauthorized}`}})])
    expect(human.code).toBe(3)
    expect(human.stdout + human.stderr).toContain(`secure: POST ${orthanc.url}/tools/find failed: ${unauthorized}`)

    expect(found.code).toBe(0)
    expect(JSON.parse(found.stdout)).toMatchObject({found: true, foundOn: ['secure'], answered: 1})
  })

  it('ddr balance-status: wrong credentials make the backend degraded (it answered; exit 0 as documented) with the reason; right ones give its counts', async () => {
    const [degraded, healthy] = await Promise.all([ddr(['balance-status', '--json'], wrong), ddr(['balance-status', '--json'], right)])
    expect(degraded.code).toBe(0)
    const [row] = (JSON.parse(degraded.stdout) as BalanceStatusResult).backends
    expect(row).toMatchObject({name: 'secure', healthy: false, reachable: true, instances: null, healthReason: `REST: GET ${orthanc.url}/system failed: ${unauthorized}`})

    expect(healthy.code).toBe(0)
    expect((JSON.parse(healthy.stdout) as BalanceStatusResult).backends[0]).toMatchObject({name: 'secure', healthy: true, healthReason: null, instances: (await orthanc.client.statistics()).CountInstances})
  })

  it('ddr purge: wrong credentials leave the backend "refused" and untouched (exit 3, the hint in its errors); right ones delete everything', async () => {
    const before = (await orthanc.client.statistics()).CountInstances
    expect(before).toBeGreaterThanOrEqual(2)
    const refused = await ddr(['purge', '--yes', '--json'], wrong)
    expect(refused.code).toBe(3)
    const result = JSON.parse(refused.stdout) as PurgeResult
    expect(result).toMatchObject({deleted: 0, backends: [{name: 'secure', state: 'refused', before: null, remaining: null}]})
    expect(result.backends[0].errors[0]).toContain(`GET ${orthanc.url}/statistics failed: ${unauthorized}`)
    expect(result.backends[0].errors[0]).toContain('username and password')
    expect((await orthanc.client.statistics()).CountInstances).toBe(before)

    const purged = await ddr(['purge', '--yes', '--json'], right)
    expect(purged.code).toBe(0)
    expect(JSON.parse(purged.stdout)).toMatchObject({deleted: before, backends: [{name: 'secure', state: 'purged', remaining: 0}]})
    expect((await orthanc.client.statistics()).CountInstances).toBe(0)
  })
})
