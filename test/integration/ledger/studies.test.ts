import {execFile} from 'node:child_process'
import {copyFile, mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {promisify} from 'node:util'

import type {StudiesResult} from '../../../src/lib/ledger/query.js'
import type {StudyDetail} from '../../../src/lib/ledger/types.js'
import {runCompiledCli} from '../../helpers/compiled-cli.js'
import {type SyntheticInstance, writeSyntheticStudies} from '../../helpers/datasets.js'
import {storescu} from '../../helpers/dcmtk.js'
import {datasetOf} from '../../helpers/fixtures.js'
import {type TestOrthanc, startTestOrthanc} from '../../helpers/orthanc.js'
import {type TestRouter, startTestRouter} from '../../helpers/router.js'
import {waitFor} from '../../helpers/wait.js'
import type {SqliteLedgerStore} from '../../../src/lib/ledger/sqlite-store.js'

const run = promisify(execFile)

describe('the study ledger behind a running router', () => {
  let orthancs: TestOrthanc[] = []
  let router: TestRouter
  let workDir: string
  let configFile: string
  let instances: SyntheticInstance[]
  let late: string
  let study: string

  beforeAll(async () => {
    orthancs = await Promise.all([startTestOrthanc({name: 'east', aeTitle: 'EAST'}), startTestOrthanc({name: 'west', aeTitle: 'WEST'})])
    router = await startTestRouter(orthancs, {studies: {stableSeconds: 1}})
    workDir = await mkdtemp(path.join(os.tmpdir(), 'ddr-studies-'))
    instances = await writeSyntheticStudies(path.join(workDir, 'in'), {studies: 1, instancesPerStudy: 10, pixelBytes: 4096, prefix: 'LEDGER'})
    study = instances[0].studyInstanceUid
    // A late series of the same study, made from one of its files.
    late = path.join(workDir, 'late.dcm')
    await copyFile(instances[0].path, late)
    await run('dcmodify', ['-nb', '-m', '(0008,0018)=1.2.826.0.1.3680043.10.1.88.1', '-m', '(0020,000e)=1.2.826.0.1.3680043.10.1.88.2', '-m', '(0008,0060)=SR', late])
    configFile = path.join(workDir, 'ddr.config.json')
    await writeFile(
      configFile,
      JSON.stringify({
        spool: {dir: router.config.spool.dir},
        status: {host: '127.0.0.1', port: router.service.statusPort},
        backends: orthancs.map((o) => ({name: o.name, port: o.dicomPort, aeTitle: o.aeTitle, url: o.url})),
      }),
    )
  })

  afterAll(async () => {
    await router?.stop()
    await Promise.all(orthancs.map((o) => o.stop()))
    if (workDir) await rm(workDir, {recursive: true, force: true})
  })

  it('records a study sent over two associations as one study on one backend; it becomes stable, and a late series is an amendment that follows it', async () => {
    const [first, second] = [instances.slice(0, 5), instances.slice(5)]
    const sends = await Promise.all([first, second].map((part) => storescu(['-aec', router.aeTitle, '127.0.0.1', String(router.port), ...part.map((i) => i.path)])))
    expect(sends.map((s) => s.code)).toEqual([0, 0])
    await router.drained()
    await waitFor('the study to become stable', () => router.logs.some((l) => l.includes('study-stable') && l.includes(study)), 10_000)

    const sendLate = await storescu(['-aec', router.aeTitle, '127.0.0.1', String(router.port), late])
    expect(sendLate.code).toBe(0)
    await router.drained()
    await waitFor('the amendment in the log', () => router.logs.some((l) => l.includes('study-amended') && l.includes(study)), 5000)

    // `ddr studies --json`: what the compiled CLI reads from the ledger file while the router runs.
    const listed = await runCompiledCli(['studies', '--json', '--config', configFile])
    expect(listed.code).toBe(0)
    const result = JSON.parse(listed.stdout) as StudiesResult
    expect(result.studies).toHaveLength(1)
    const holder = orthancs.find((o) => o.name === result.studies[0].backend)!
    expect(result.studies[0]).toMatchObject({
      studyInstanceUid: study,
      patientId: 'LEDGER-0',
      modalities: ['CT', 'SR'],
      instances: 11,
      backends: [holder.name],
      delivered: {queued: 0, stored: 11, deadLetter: 0},
      amendments: 1,
    })
    expect((await holder.client.statistics()).CountInstances).toBe(11)

    // `ddr study UID --json`: two series, every instance stored on that backend, the late one marked.
    const shown = await runCompiledCli(['study', study, '--json', '--config', configFile])
    expect(shown.code).toBe(0)
    const detail = JSON.parse(shown.stdout) as StudyDetail
    expect(detail.series.map((s) => [s.modality, s.instances]).sort()).toEqual([
      ['CT', 10],
      ['SR', 1],
    ])
    expect(new Set(detail.instanceList.map((i) => `${i.status}@${i.backend}`))).toEqual(new Set([`stored@${holder.name}`]))
    expect(detail.instanceList.filter((i) => i.amendment).map((i) => i.sopInstanceUid)).toEqual(['1.2.826.0.1.3680043.10.1.88.1'])
    expect(detail.instanceList.every((i) => i.callingAeTitle === 'STORESCU' && /^127\.0\.0\.1:\d+$/.test(i.remoteAddress ?? ''))).toBe(true)

    // `ddr studies gaps`: the pauses inside the study per sender and modality; the late SR is an amendment.
    const gaps = await runCompiledCli(['studies', 'gaps', '--json', '--config', configFile])
    expect(gaps.code).toBe(0)
    const senders = (JSON.parse(gaps.stdout) as {senders: Array<{callingAeTitle: string; modality: string; gaps: {count: number}; amendments: {count: number}}>}).senders
    expect(senders.find((g) => g.modality === 'CT')).toMatchObject({callingAeTitle: 'STORESCU', gaps: {count: 9}, amendments: {count: 0}})
    expect(senders.find((g) => g.modality === 'SR')).toMatchObject({callingAeTitle: 'STORESCU', gaps: {count: 0}, amendments: {count: 1}})

    // The human table names the study, and an unknown study is a usage error.
    const table = await runCompiledCli(['studies', '--config', configFile])
    expect(table.stdout).toMatch(/LEDGER-0\s+CT,SR\s+11/)
    const unknown = await runCompiledCli(['study', '1.2.3.4', '--config', configFile])
    expect(unknown.code).toBe(2)
    expect(unknown.stderr).toMatch(/study 1\.2\.3\.4 is not in the ledger/)

    // The same through the status server, and the counts in /status.
    const base = `http://127.0.0.1:${router.service.statusPort}`
    const overHttp = (await (await fetch(`${base}/studies?patient=LEDGER-0`)).json()) as {studies: Array<{studyInstanceUid: string}>}
    expect(overHttp.studies.map((s) => s.studyInstanceUid)).toEqual([study])
    expect(((await (await fetch(`${base}/studies/${study}`)).json()) as StudyDetail).instanceList).toHaveLength(11)
    expect((await fetch(`${base}/studies/1.2.3.4`)).status).toBe(404)
    await waitFor('stable again', () => router.service.status().studies?.stable === 1, 10_000)
  })

  it('checks the receipt of a stable study by itself, and `ddr study --verify` restores instances deleted from Orthanc behind its back, byte for byte', async () => {
    await waitFor('the automatic receipt', () => router.logs.some((l) => l.includes('receipt-verified') && l.includes(study)), 15_000)
    const holderName = (router.service.ledger!.store as SqliteLedgerStore).summary(study)!.backend!
    const holder = orthancs.find((o) => o.name === holderName)!
    const victims = [instances[2], instances[7]]
    for (const victim of victims) await holder.client.deleteInstance((await holder.client.lookupInstance(victim.sopInstanceUid))!)
    expect((await holder.client.statistics()).CountInstances).toBe(9)

    const verified = await runCompiledCli(['study', study, '--verify', '--json', '--config', configFile], {timeoutMs: 120_000})
    expect({code: verified.code, stderr: verified.stderr}).toEqual({code: 0, stderr: ''})
    const result = JSON.parse(verified.stdout) as {receipt: {state: string; repaired: number; expected: number; found: number}; by: string}
    expect(result).toMatchObject({by: 'router', receipt: {state: 'verified', expected: 11, found: 11}})
    expect(router.logs.some((l) => l.includes('receipt-repairing') && l.includes(study))).toBe(true)
    for (const victim of victims) {
      const id = await holder.client.lookupInstance(victim.sopInstanceUid)
      expect(id).toBeDefined()
      expect(datasetOf(await holder.client.instanceFile(id!)).equals(datasetOf(await readFile(victim.path)))).toBe(true)
    }

    // balance-status shows the router's studies by state and receipt.
    const balance = await runCompiledCli(['balance-status', '--json', '--config', configFile])
    expect(JSON.parse(balance.stdout).router.studies).toEqual({receiving: 0, stable: 1, receipts: {verified: 1, repairing: 0, incomplete: 0, unverifiable: 0, unchecked: 0}})

    // Without a router nothing can be repaired: the check alone says what is missing (exit 4).
    await holder.client.deleteInstance((await holder.client.lookupInstance(victims[0].sopInstanceUid))!)
    const offline = path.join(workDir, 'offline.json')
    await writeFile(offline, JSON.stringify({spool: {dir: router.config.spool.dir}, status: {host: '127.0.0.1', port: 1}, backends: orthancs.map((o) => ({name: o.name, port: o.dicomPort, aeTitle: o.aeTitle, url: o.url}))}))
    const checked = await runCompiledCli(['study', study, '--verify', '--json', '--config', offline])
    expect(checked.code).toBe(4)
    expect(JSON.parse(checked.stdout)).toMatchObject({by: 'ledger', receipt: {state: 'incomplete', missing: [victims[0].sopInstanceUid]}})
  })
})

describe('a study ledger that cannot be written', () => {
  let orthanc: TestOrthanc
  let router: TestRouter
  let workDir: string

  beforeAll(async () => {
    orthanc = await startTestOrthanc({name: 'ledgerless', aeTitle: 'LEDGERLESS'})
    router = await startTestRouter([orthanc])
    workDir = await mkdtemp(path.join(os.tmpdir(), 'ddr-ledger-broken-'))
  })

  afterAll(async () => {
    await router?.stop()
    await orthanc?.stop()
    if (workDir) await rm(workDir, {recursive: true, force: true})
  })

  it('logs which acknowledged instances it could not record, delivers them, and refuses further instances with A700', async () => {
    const [first, second] = await writeSyntheticStudies(workDir, {studies: 1, instancesPerStudy: 2, pixelBytes: 1024})
    // The database goes away under the router (as a disk that fails would make every write fail).
    ;(router.service.ledger!.store as SqliteLedgerStore).close()
    // The first instance is safe in the spool before the ledger write fails: Success, and it is delivered.
    const sentFirst = await storescu(['-aec', router.aeTitle, '127.0.0.1', String(router.port), first.path])
    expect(sentFirst.code).toBe(0)
    await router.drained()
    await waitFor('the ledger failure in the log', () => router.logs.some((l) => l.includes('ledger-failed') && l.includes(first.sopInstanceUid)), 5000)
    expect(await orthanc.client.lookupInstance(first.sopInstanceUid)).toBeDefined()
    // From then on the router refuses what it could not record.
    const sentSecond = await storescu(['-v', '-aec', router.aeTitle, '127.0.0.1', String(router.port), second.path])
    expect(`${sentSecond.stdout}${sentSecond.stderr}`).toMatch(/Received Store Response \(Refused: OutOfResources\)/)
    await router.drained()
    expect(router.service.status().spool?.depth).toBe(0)
    expect(await orthanc.client.lookupInstance(second.sopInstanceUid)).toBeUndefined()
  })
})
