import {mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {validateConfig} from '../../../src/lib/config/validate.js'
import {type BackendStudiesResult, listBackendStudies, locateOnBackends, type LocateResult} from '../../../src/lib/inspect/backends.js'
import {type SyntheticInstance, writeSyntheticStudies} from '../../helpers/datasets.js'
import {startTestOrthanc, type TestOrthanc} from '../../helpers/orthanc.js'
import {freePort} from '../../helpers/ports.js'
import {fixturePath} from '../../unit/dicom/helpers.js'
import {parseJson, requireBuild, runCli} from '../fix-sop/cli.js'

/**
 * Two real Orthancs: "alpha" holds study A (3 instances) and the first 2 instances of study B;
 * "beta" holds the other 3 instances of B (a study split by a failover) and study C, of the same
 * patient as A. A third backend, "gone", points at a port nothing listens on.
 */
describe('ddr inspect across backends (two real Orthancs)', () => {
  let root: string
  let alpha: TestOrthanc | undefined
  let beta: TestOrthanc | undefined
  let configPath: string
  let studyA: SyntheticInstance[]
  let studyB: SyntheticInstance[]
  let studyC: SyntheticInstance[]
  let deadPort: number

  const upload = async (orthanc: TestOrthanc, instances: SyntheticInstance[]) => {
    for (const instance of instances) expect((await orthanc.client.uploadInstance(await readFile(instance.path))).status).toBe('Success')
  }
  const backend = (orthanc: TestOrthanc, name: string) => ({name, port: orthanc.dicomPort, aeTitle: orthanc.aeTitle, url: orthanc.url})
  const config = () => validateConfig(JSON.parse(JSON.stringify(configObject())), 'test')
  const configObject = () => ({
    backends: [
      backend(alpha as TestOrthanc, 'alpha'),
      backend(beta as TestOrthanc, 'beta'),
      {name: 'gone', port: deadPort, aeTitle: 'GONE', url: `http://127.0.0.1:${deadPort}`},
      {name: 'plain-scp', port: deadPort, aeTitle: 'PLAIN'},
    ],
  })
  const inspect = (args: string[]) => runCli(['inspect', ...args, '--config', configPath])

  beforeAll(async () => {
    requireBuild('inspect')
    root = await mkdtemp(path.join(os.tmpdir(), 'ddr-inspect-backends-'))
    ;[alpha, beta] = await Promise.all([startTestOrthanc({name: 'inspect-alpha'}), startTestOrthanc({name: 'inspect-beta'})])
    deadPort = await freePort()
    ;[studyA] = [await writeSyntheticStudies(path.join(root, 'a'), {studies: 1, instancesPerStudy: 3, pixelBytes: 2048, prefix: 'PAT'})]
    studyB = await writeSyntheticStudies(path.join(root, 'b'), {studies: 1, instancesPerStudy: 5, pixelBytes: 2048, prefix: 'SPLIT'})
    // Same patient as study A (PAT-0), another study.
    studyC = await writeSyntheticStudies(path.join(root, 'c'), {studies: 1, instancesPerStudy: 2, pixelBytes: 2048, prefix: 'PAT'})
    await upload(alpha, [...studyA, ...studyB.slice(0, 2)])
    await upload(beta, [...studyB.slice(2), ...studyC])
    configPath = path.join(root, 'ddr.config.json')
    await writeFile(configPath, JSON.stringify(configObject()))
  })

  afterAll(async () => {
    await Promise.allSettled([alpha?.stop(), beta?.stop()])
    if (root) await rm(root, {recursive: true, force: true})
  })

  it('locateOnBackends finds a study on the one backend that has it, with its counts', async () => {
    const result = await locateOnBackends(config().backends.slice(0, 2), {by: 'study', value: studyA[0].studyInstanceUid})
    expect(result).toMatchObject({kind: 'locate', found: true, foundOn: ['alpha'], split: false, answered: 2})
    expect(result.backends.map((b) => [b.backend, b.status, b.series, b.instances])).toEqual([
      ['alpha', 'found', 1, 3],
      ['beta', 'not-found', 0, 0],
    ])
    expect(result.backends[0].studies[0]).toMatchObject({studyInstanceUid: studyA[0].studyInstanceUid, patientId: 'PAT-0', patientName: 'SYNTHETIC^0', modalities: ['CT'], series: 1, instances: 3})
  })

  it('inspect --study names both backends of a split study with each part\'s counts; the unreachable ones are said so (exit 4)', async () => {
    const result = await inspect(['--study', studyB[0].studyInstanceUid, '--json'])
    expect(result.code).toBe(4)
    const json = parseJson<LocateResult>(result)
    expect(json).toMatchObject({found: true, foundOn: ['alpha', 'beta'], split: true, answered: 2})
    expect(json.backends.map((b) => [b.backend, b.status, b.series, b.instances])).toEqual([
      ['alpha', 'found', 1, 2],
      ['beta', 'found', 1, 3],
      ['gone', 'unreachable', 0, 0],
      ['plain-scp', 'no-rest-api', 0, 0],
    ])
    expect(json.backends[2].error).toMatchObject({code: 'BACKEND_UNREACHABLE', message: expect.stringContaining(`127.0.0.1:${deadPort}`)})

    const text = await inspect(['--study', studyB[0].studyInstanceUid, '--backend', 'alpha', '--backend', 'beta'])
    expect(text.code).toBe(0)
    expect(text.stdout).toContain(`Study ${studyB[0].studyInstanceUid} is on alpha, beta (split across 2 backends)`)
    expect(text.stdout).toMatch(/^alpha\s+found\s+\S+\s+SYNTHETIC\^0 \(SPLIT-0\)\s+CT\s+1\s+2$/m)
    expect(text.stdout).toMatch(/^beta\s+found\s+\S+\s+SYNTHETIC\^0 \(SPLIT-0\)\s+CT\s+1\s+3$/m)
  })

  it('inspect --sop names the backend and the study and series the instance is in', async () => {
    const instance = studyB[4]
    const json = parseJson<LocateResult>(await inspect(['--sop', instance.sopInstanceUid, '--backend', 'alpha', '--backend', 'beta', '--json']))
    expect(json.foundOn).toEqual(['beta'])
    expect(json.backends[1].instance).toMatchObject({sopInstanceUid: instance.sopInstanceUid, seriesInstanceUid: instance.seriesInstanceUid, studyInstanceUid: instance.studyInstanceUid, instanceNumber: '5'})
    expect(json.backends[1].studies[0].instances).toBe(3)
  })

  it('inspect --patient lists the patient\'s studies on each backend', async () => {
    const json = parseJson<LocateResult>(await inspect(['--patient', 'PAT-0', '--backend', 'alpha', '--backend', 'beta', '--json']))
    expect(json.backends.map((b) => [b.backend, b.studies.map((s) => [s.studyInstanceUid, s.instances])])).toEqual([
      ['alpha', [[studyA[0].studyInstanceUid, 3]]],
      ['beta', [[studyC[0].studyInstanceUid, 2]]],
    ])
    expect(json.split).toBe(false)
  })

  it('says "not found" with exit 0 when every backend answered and none has it', async () => {
    const result = await inspect(['--study', '1.2.3.4.5', '--backend', 'alpha', '--backend', 'beta'])
    expect(result.code).toBe(0)
    expect(result.stdout).toContain('Study 1.2.3.4.5 is on none of the 2 backends that answered')
  })

  it('exits 3 when no backend could be asked, naming it and its address', async () => {
    const result = await inspect(['--study', studyA[0].studyInstanceUid, '--backend', 'gone', '--backend', 'plain-scp'])
    expect(result.code).toBe(3)
    expect(result.stdout).toMatch(/^gone\s+unreachable$/m)
    expect(result.stdout).toContain(`gone: POST http://127.0.0.1:${deadPort}/tools/find failed: ECONNREFUSED`)
    expect(result.stdout).toContain('plain-scp: backend plain-scp (127.0.0.1:')
  })

  it('inspect --backend NAME lists its studies a page at a time', async () => {
    const all = parseJson<BackendStudiesResult>(await inspect(['--backend', 'beta', '--json']))
    expect(all).toMatchObject({kind: 'backend-studies', backend: 'beta', status: 'ok', total: 2, offset: 0, limit: 25})
    expect(all.studies.map((s) => s.studyInstanceUid).sort()).toEqual([studyB[0].studyInstanceUid, studyC[0].studyInstanceUid].sort())
    const second = parseJson<BackendStudiesResult>(await inspect(['--backend', 'beta', '--limit', '1', '--page', '2', '--json']))
    expect(second).toMatchObject({offset: 1, limit: 1, total: 2})
    expect(second.studies).toHaveLength(1)
    expect(second.studies[0].studyInstanceUid).toBe(all.studies[1].studyInstanceUid)

    const text = await inspect(['--backend', 'alpha', '--limit', '1'])
    expect(text.code).toBe(0)
    expect(text.stdout).toContain(`alpha (${alpha?.url}): studies 1-1 of 2`)
    expect(text.stdout).toMatch(/^STUDY\s+PATIENT\s+DATE\s+MODALITY\s+SERIES\s+INSTANCES\s+DESCRIPTION$/m)
    expect(text.stdout).toContain('next page: --offset 1 --limit 1')

    const page = await listBackendStudies(config().backends[0], {offset: 0, limit: 10})
    expect(page.studies.map((s) => s.instances).sort()).toEqual([2, 3])
  })

  it('inspect --backend NAME exits 3 for an unreachable backend, 2 for an unknown name', async () => {
    const gone = await inspect(['--backend', 'gone'])
    expect(gone.code).toBe(3)
    expect(gone.stdout).toContain('gone: unreachable: GET http://127.0.0.1:')
    const unknown = await inspect(['--backend', 'nope'])
    expect(unknown.code).toBe(2)
    expect(unknown.stderr).toContain('unknown backend "nope" (configured: alpha, beta, gone, plain-scp)')
  })

  it('finds a fixture uploaded as is, by its manifest study UID', async () => {
    const file = await readFile(fixturePath('studies/2/mr-private-latin1.dcm'))
    await (alpha as TestOrthanc).client.uploadInstance(file)
    const result = await locateOnBackends(config().backends.slice(0, 2), {by: 'sop', value: '2.25.277627049640700320336584037696106402924'})
    expect(result.foundOn).toEqual(['alpha'])
    expect(result.backends[0].studies[0]).toMatchObject({patientId: 'DDR-P002', modalities: ['MR'], instances: 1})
    await (alpha as TestOrthanc).client.deleteStudy(result.backends[0].studies[0].orthancId)
  })
})
