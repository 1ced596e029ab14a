import {readFile, readdir} from 'node:fs/promises'
import path from 'node:path'

import {CONSOLE_TOKEN, type ConsoleFleet, FULL_PATIENT, startConsoleFleet} from '../../helpers/console-fleet.js'
import {makeTestDicom, storescu} from '../../helpers/dcmtk.js'
import {datasetOf} from '../../helpers/fixtures.js'
import {waitFor} from '../../helpers/wait.js'
import {writeZip} from '../../helpers/zip.js'
import type {SqliteLedgerStore} from '../../../src/lib/ledger/sqlite-store.js'

interface UploadAnswer {
  results: Array<{file: string; sopInstanceUid?: string; studyInstanceUid?: string; status: string; backend?: string; delivery?: string; reason?: string}>
}

/** The console's API against a real router and two real Orthancs (one of them full). */
describe('console API with a real router and Orthanc', () => {
  let fleet: ConsoleFleet
  const auth = {authorization: `Bearer ${CONSOLE_TOKEN}`}

  beforeAll(async () => {
    fleet = await startConsoleFleet({token: CONSOLE_TOKEN})
  })

  afterAll(async () => {
    await fleet?.close()
  })

  const upload = async (files: Array<{name: string; file: string}>, headers: Record<string, string> = auth) => {
    const body = new FormData()
    for (const f of files) body.append('file', new Blob([new Uint8Array(await readFile(f.file))]), f.name)
    return fetch(`${fleet.url}/api/upload?wait=20`, {method: 'POST', body, headers})
  }

  it('uploads a ZIP: 401 without the token; with it 207, the good instances byte for byte in Orthanc, the broken entry named', async () => {
    const study = '1.2.826.0.1.3680043.8.498.77.1'
    const a = await makeTestDicom(path.join(fleet.dir, 'a.dcm'), {patientId: 'ZIPPAT', studyInstanceUid: study, pixels: 64})
    const b = await makeTestDicom(path.join(fleet.dir, 'b.dcm'), {patientId: 'ZIPPAT', studyInstanceUid: study, pixels: 64})
    // The cut one is an instance of its own: a cut copy of B would be B's duplicate while B is
    // still queued, acknowledged as such (the queued copy is whole) without its bytes being read.
    const c = await makeTestDicom(path.join(fleet.dir, 'c.dcm'), {patientId: 'ZIPPAT', studyInstanceUid: study, pixels: 64})
    const cut = await readFile(c.file)
    const zip = await writeZip(path.join(fleet.dir, 'cd.zip'), [
      {name: 'DICOM/A', data: await readFile(a.file)},
      {name: 'DICOM/B', data: await readFile(b.file)},
      {name: 'DICOM/CUT', data: cut.subarray(0, cut.length - 40)},
    ])

    const refused = await upload([{name: 'cd.zip', file: zip}], {})
    expect(refused.status).toBe(401)
    expect(fleet.router.service.status().counters.received).toBe(0)

    const answer = await upload([{name: 'cd.zip', file: zip}])
    expect(answer.status).toBe(207)
    const {results} = (await answer.json()) as UploadAnswer
    expect(results.map((r) => [r.file, r.status])).toEqual([
      ['cd.zip!DICOM/A', 'stored'],
      ['cd.zip!DICOM/B', 'stored'],
      ['cd.zip!DICOM/CUT', 'refused'],
    ])
    expect(results[0]).toMatchObject({sopInstanceUid: a.sopInstanceUid, studyInstanceUid: study, backend: 'orthanc2', delivery: 'stored'})
    expect(results[2].reason).toMatch(/cut short|malformed/)

    for (const sent of [a, b]) {
      const id = await fleet.open.client.lookupInstance(sent.sopInstanceUid)
      expect(id).toBeDefined()
      expect(datasetOf(await fleet.open.client.instanceFile(id!)).equals(datasetOf(await readFile(sent.file)))).toBe(true)
    }

    // The ledger has it, from HTTP-UPLOAD, and the studies API finds it by patient and by study UID.
    const byPatient = (await (await fetch(`${fleet.url}/api/studies?patient=ZIPPAT`)).json()) as {studies: Array<{studyInstanceUid: string; instances: number}>}
    expect(byPatient.studies).toEqual([expect.objectContaining({studyInstanceUid: study, instances: 2})])
    const detail = (await (await fetch(`${fleet.url}/api/studies/${study}`)).json()) as {instanceList: Array<{callingAeTitle: string; backend: string; status: string}>}
    expect(detail.instanceList.every((i) => i.callingAeTitle === 'HTTP-UPLOAD' && i.backend === 'orthanc2' && i.status === 'stored')).toBe(true)
    expect(fleet.router.logs.some((l) => l.includes('upload') && l.includes('stored=2') && l.includes('refused=1') && l.includes('auth=token'))).toBe(true)
  })

  it('shows the fleet: both backends, the counters, and the rates', async () => {
    const fleetView = (await (await fetch(`${fleet.url}/api/fleet`)).json()) as {status: {backends: Array<{name: string; healthy: boolean}>; counters: {received: number}}; series: {time: number[]}}
    expect(fleetView.status.backends.map((b) => [b.name, b.healthy])).toEqual([
      ['orthanc1', true],
      ['orthanc2', true],
    ])
    expect(fleetView.status.counters.received).toBeGreaterThanOrEqual(2)
  })

  it('a dead letter from a full PACS: listed with its reason, retried once space is freed, delivered; another discarded; each logged with who did it', async () => {
    const late = await makeTestDicom(path.join(fleet.dir, 'late.dcm'), {patientId: FULL_PATIENT})
    const other = await makeTestDicom(path.join(fleet.dir, 'other.dcm'), {patientId: FULL_PATIENT})
    // Over DICOM this time: the dead letters come from the router's own forwarder.
    const sent = await storescu(['-aec', fleet.router.aeTitle, '127.0.0.1', String(fleet.router.port), late.file, other.file])
    expect(sent.code).toBe(0)
    await fleet.router.drained()

    const list = (await (await fetch(`${fleet.url}/api/dead-letters`)).json()) as {total: number; deadLetters: Array<{id: string; sopInstanceUid: string; status: string; reason: string; callingAeTitle: string}>}
    expect(list.total).toBe(2)
    const letter = list.deadLetters.find((d) => d.sopInstanceUid === late.sopInstanceUid)!
    expect(letter).toMatchObject({status: '0xA700', callingAeTitle: 'STORESCU'})
    expect(letter.reason).toContain('out of resources')

    expect((await fetch(`${fleet.url}/api/dead-letters/${letter.id}/retry`, {method: 'POST'})).status).toBe(401)
    await fleet.freeSpace()
    const retried = await fetch(`${fleet.url}/api/dead-letters/${letter.id}/retry`, {method: 'POST', headers: auth})
    expect(await retried.json()).toEqual({id: letter.id, outcome: 'queued'})
    await waitFor('the retried instance in orthanc1', async () => (await fleet.full.client.lookupInstance(late.sopInstanceUid)) !== undefined, 20_000, 200)
    expect(datasetOf(await fleet.full.client.instanceFile((await fleet.full.client.lookupInstance(late.sopInstanceUid))!)).equals(datasetOf(await readFile(late.file)))).toBe(true)
    await fleet.router.drained()
    expect(fleet.router.logs.some((l) => l.includes('dead-letter-retried') && l.includes(`id=${letter.id}`) && l.includes('by=127.0.0.1') && l.includes('auth=token'))).toBe(true)
    await waitFor('the ledger to say stored', () => (fleet.router.service.ledger!.store as SqliteLedgerStore).study(late.studyInstanceUid)?.instanceList[0].status === 'stored', 5000)

    const rest = (await (await fetch(`${fleet.url}/api/dead-letters`)).json()) as {total: number; deadLetters: Array<{id: string}>}
    expect(rest.total).toBe(1)
    const discarded = await fetch(`${fleet.url}/api/dead-letters/${rest.deadLetters[0].id}`, {method: 'DELETE', headers: auth})
    expect(discarded.status).toBe(200)
    const deadLetterDir = path.join(fleet.router.config.spool.dir, 'dead-letter')
    expect(await readdir(deadLetterDir)).toEqual([])
    expect(fleet.router.service.status().spool!.deadLetters).toBe(0)
    expect(fleet.router.logs.some((l) => l.includes('dead-letter-discarded') && l.includes('auth=token'))).toBe(true)
  })

  it('says what waits in the queue (empty once drained) and explains a file with the rules', async () => {
    const queue = (await (await fetch(`${fleet.url}/api/queue`)).json()) as {spool: boolean; total: number; backends: unknown[]}
    expect(queue).toMatchObject({spool: true, total: 0})
    const file = await makeTestDicom(path.join(fleet.dir, 'explain.dcm'), {patientId: FULL_PATIENT})
    const body = new FormData()
    body.append('file', new Blob([new Uint8Array(await readFile(file.file))]), 'explain.dcm')
    const explained = (await (await fetch(`${fleet.url}/api/explain`, {method: 'POST', body, headers: auth})).json()) as {rule: string; backend: string}
    expect(explained).toMatchObject({rule: 'full-pacs', backend: 'orthanc1'})
  })
})
