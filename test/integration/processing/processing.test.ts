import {execFile} from 'node:child_process'
import {chmod, mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {promisify} from 'node:util'

import type {ProcessingModuleConfig} from '../../../src/lib/config/schema.js'
import {readPart10Elements} from '../../../src/lib/dicom/dataset-reader.js'
import {Tag} from '../../../src/lib/dicom/tags.js'
import type {StudiesResult} from '../../../src/lib/ledger/query.js'
import type {ProcessResult} from '../../../src/lib/processing/manual.js'
import {runCompiledCli} from '../../helpers/compiled-cli.js'
import {writeSyntheticStudies} from '../../helpers/datasets.js'
import {dcmsend, storescu} from '../../helpers/dcmtk.js'
import {fixturePath, manifest} from '../../helpers/fixtures.js'
import {type TestOrthanc, startTestOrthanc} from '../../helpers/orthanc.js'
import {type TestRouter, startTestRouter} from '../../helpers/router.js'
import {waitFor} from '../../helpers/wait.js'
import type {SqliteLedgerStore} from '../../../src/lib/ledger/sqlite-store.js'

const run = promisify(execFile)
const COMPREHENSIVE_SR = '1.2.840.10008.5.1.4.1.1.88.33'
const crStudy = manifest.files.filter((f) => f.path.startsWith('studies/5/'))

/** dciodvfy's error lines for a file (it exits 0 and prints warnings and errors alike). */
async function dciodvfyErrors(file: string): Promise<string[]> {
  const result = await run('dciodvfy', [file]).catch((error: {stdout: string; stderr: string}) => error)
  return `${result.stdout}${result.stderr}`.split('\n').filter((line) => /^Error/.test(line))
}

/** Whether a process with this pid runs (a zombie does not). */
async function alive(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined)
  return stat !== undefined && !/^\d+ \(.*\) Z/.test(stat)
}

describe('processing modules behind a running router', () => {
  let orthancs: TestOrthanc[] = []
  let router: TestRouter
  let workDir: string
  let configFile: string

  const module = (name: string, overrides: Partial<ProcessingModuleConfig>): Partial<ProcessingModuleConfig> => ({name, timeoutSeconds: 30, retries: 0, retryDelaySeconds: 0, ...overrides})
  const runOf = (study: string, name: string) => (router.service.ledger!.store as SqliteLedgerStore).processing.get(study, name)
  const holderOf = (study: string) => orthancs.find((o) => o.name === (router.service.ledger!.store as SqliteLedgerStore).summary(study)?.backend)!

  /** Sends a synthetic CT study of three instances for patient `<prefix>-0`; its StudyInstanceUID. */
  async function sendSynthetic(prefix: string): Promise<string> {
    const files = await writeSyntheticStudies(path.join(workDir, prefix), {studies: 1, instancesPerStudy: 3, pixelBytes: 2048, prefix})
    const sent = await storescu(['-aec', router.aeTitle, '127.0.0.1', String(router.port), ...files.map((f) => f.path)])
    expect(sent.code).toBe(0)
    return files[0].studyInstanceUid
  }

  beforeAll(async () => {
    workDir = await mkdtemp(path.join(os.tmpdir(), 'ddr-processing-it-'))
    // docs/processing.md's shell module, exactly as printed there.
    const docs = await readFile(new URL('../../../docs/processing.md', import.meta.url), 'utf8')
    const shellModule = /```sh\n(#!\/bin\/sh\n[\s\S]*?)```/.exec(docs)![1]
    expect(shellModule.trim().split('\n').length).toBeLessThanOrEqual(21)
    const countScript = path.join(workDir, 'count-instances.sh')
    await writeFile(countScript, shellModule)
    await chmod(countScript, 0o755)

    orthancs = await Promise.all([startTestOrthanc({name: 'east', aeTitle: 'EAST'}), startTestOrthanc({name: 'west', aeTitle: 'WEST'})])
    router = await startTestRouter(orthancs, {
      studies: {stableSeconds: 1},
      processing: {
        concurrency: 2,
        workDir: path.join(workDir, 'runs'),
        modules: [
          module('count-instances', {match: {modality: 'CR'}, command: [countScript]}),
          module('broken', {match: {tags: {PatientID: {equals: 'FAIL-0'}}}, command: ['sh', '-c', 'echo "cannot load the model" >&2; exit 2'], retries: 1}),
          module('hang', {match: {tags: {PatientID: {equals: 'HANG-0'}}}, command: ['sh', '-c', `echo $$ > ${path.join(workDir, 'hang.pid')}; sleep 600`], timeoutSeconds: 2}),
          module('invalid', {match: {tags: {PatientID: {equals: 'BAD-0'}}}, command: ['sh', '-c', `echo '{"findings": [{"label": "x", "probability": 7}]}' > "$DDR_OUT/result.json"`]}),
        ] as ProcessingModuleConfig[],
      },
    })
    configFile = path.join(workDir, 'ddr.config.json')
    await writeFile(
      configFile,
      JSON.stringify({
        spool: {dir: router.config.spool.dir},
        status: {host: '127.0.0.1', port: router.service.statusPort},
        backends: orthancs.map((o) => ({name: o.name, port: o.dicomPort, aeTitle: o.aeTitle, url: o.url})),
        processing: {workDir: router.config.processing.workDir, modules: router.config.processing.modules},
      }),
    )
  })

  afterAll(async () => {
    await router?.stop()
    await Promise.all(orthancs.map((o) => o.stop()))
    if (workDir) await rm(workDir, {recursive: true, force: true})
  })

  it('runs a matching module once a CR study is stable and stores its SR on the Orthanc that holds the study, in the study, passing dciodvfy', async () => {
    const study = crStudy[0].studyInstanceUid
    const sent = await dcmsend(['-aec', router.aeTitle, '127.0.0.1', String(router.port), ...crStudy.map(fixturePath)])
    expect(sent.code).toBe(0)
    await waitFor('the module to run', () => runOf(study, 'count-instances')?.state === 'done', 20_000)
    const done = runOf(study, 'count-instances')!
    expect(done).toMatchObject({run: 1, attempts: 1, inputs: 3})
    const [srUid] = done.outputs
    // The other modules look at the study too (once it is stable again after the SR), and pass it by.
    await waitFor('the others to pass it by', () => ['broken', 'hang', 'invalid'].every((other) => runOf(study, other)?.state === 'skipped'), 10_000)

    // The SR goes through the router's intake and is delivered to the study's backend (affinity).
    await waitFor('the SR to be delivered', () => (router.service.ledger!.store as SqliteLedgerStore).study(study)?.instanceList.find((i) => i.sopInstanceUid === srUid)?.status === 'stored', 20_000)
    const holder = holderOf(study)
    const other = orthancs.find((o) => o !== holder)!
    const srId = await holder.client.lookupInstance(srUid)
    expect(srId).toBeDefined()
    expect(await other.client.lookupInstance(srUid)).toBeUndefined()
    expect((await holder.client.studyInstanceUids(study)).sort()).toEqual([...crStudy.map((f) => f.sopInstanceUid), srUid].sort())

    const file = path.join(workDir, 'sr.dcm')
    const stored = await holder.client.instanceFile(srId!)
    await writeFile(file, stored)
    expect(await dciodvfyErrors(file)).toEqual([])
    const {values} = readPart10Elements(stored, [Tag.SOPClassUID, Tag.StudyInstanceUID, Tag.PatientID, Tag.Modality, Tag.SeriesInstanceUID])
    expect(values.get(Tag.SOPClassUID)).toBe(COMPREHENSIVE_SR)
    expect(values.get(Tag.StudyInstanceUID)).toBe(study)
    expect(values.get(Tag.PatientID)).toBe(crStudy[0].patientId)
    expect(values.get(Tag.Modality)).toBe('SR')
    expect(crStudy.map((f) => f.seriesInstanceUid)).not.toContain(values.get(Tag.SeriesInstanceUID))
    // The findings of the shell module, and every instance it saw as evidence.
    const dump = (await run('dsrdump', ['+Pl', file])).stdout
    expect(dump).toMatch(/<contains NUM:\(,,"Instances looked at"\)="3" \(\{instances\},UCUM,"\{instances\}"\)>/)
    expect(dump).toMatch(/<has obs context TEXT:\(,,"Device Observer Name"\)="count-instances">/)
    expect(dump).toMatch(/<contains TEXT:\(,,"Summary"\)="3 instance\(s\); the largest has/)
    const evidence = (await run('dcmdump', ['+P', '0040,a375', '+P', '0008,1155', file])).stdout
    for (const f of crStudy) expect(evidence).toContain(f.sopInstanceUid)

    // In the ledger: the router's own instance, no amendment; `ddr studies` shows the module done.
    const srRecord = (router.service.ledger!.store as SqliteLedgerStore).study(study)!.instanceList.find((i) => i.sopInstanceUid === srUid)!
    expect(srRecord).toMatchObject({callingAeTitle: router.aeTitle, remoteAddress: 'processing/count-instances', amendment: false, backend: holder.name})
    const listed = await runCompiledCli(['studies', '--json', '--config', configFile])
    const summary = (JSON.parse(listed.stdout) as StudiesResult).studies.find((s) => s.studyInstanceUid === study)!
    expect(summary).toMatchObject({instances: 4, amendments: 0, modalities: ['CR', 'DX', 'MG', 'SR'], processing: [{module: 'count-instances', state: 'done', attempts: 1}]})
    // Stable again after its SR, nothing runs twice.
    await waitFor('stable again', () => (router.service.ledger!.store as SqliteLedgerStore).summary(study)?.state === 'stable', 10_000)
    await new Promise((resolve) => setTimeout(resolve, 700))
    expect(runOf(study, 'count-instances')).toMatchObject({run: 1, attempts: 1, outputs: [srUid]})
  })

  it('`ddr process` re-runs a module by hand through the router; --dry-run shows the SR it would write and stores nothing', async () => {
    const study = crStudy[0].studyInstanceUid
    const holder = holderOf(study)
    const before = (await holder.client.studyInstanceUids(study)).length
    const dry = await runCompiledCli(['process', study, '--module', 'count-instances', '--dry-run', '--json', '--config', configFile])
    expect({code: dry.code, stderr: dry.stderr}).toEqual({code: 0, stderr: ''})
    const dryResult = JSON.parse(dry.stdout) as ProcessResult
    expect(dryResult).toMatchObject({studyInstanceUid: study, by: 'dry-run', runs: [{module: 'count-instances', state: 'done', outputs: [], result: {findings: [{label: 'Instances looked at', value: 3}, {label: 'Largest instance'}]}}]})
    const dataset = dryResult.runs[0].sr!.dataset as Record<string, any>
    expect(dataset).toMatchObject({SOPClassUID: COMPREHENSIVE_SR, StudyInstanceUID: study, PatientID: crStudy[0].patientId, Modality: 'SR'})
    // Its own SR is no input: the module saw the three images only.
    const evidence = dataset.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence.flatMap((s: any) => s.ReferencedSOPSequence.map((r: any) => r.ReferencedSOPInstanceUID))
    expect(evidence.sort()).toEqual(crStudy.map((f) => f.sopInstanceUid).sort())
    const human = await runCompiledCli(['process', study, '--module', 'count-instances', '--dry-run', '--config', configFile])
    expect(human.stdout).toMatch(/^count-instances: done - 2 finding\(s\); nothing stored \(dry run\)$/m)
    expect(human.stdout).toMatch(/^ {6}CONTAINS NUM "Instances looked at" = 3 \{instances\}$/m)
    expect((await holder.client.studyInstanceUids(study)).length).toBe(before)

    // By hand through the router: a second run, a second SR, stored on the same Orthanc in the study.
    const byHand = await runCompiledCli(['process', study, '--module', 'count-instances', '--json', '--config', configFile])
    expect({code: byHand.code, stderr: byHand.stderr}).toEqual({code: 0, stderr: ''})
    const result = JSON.parse(byHand.stdout) as ProcessResult
    expect(result).toMatchObject({by: 'router', runs: [{module: 'count-instances', state: 'done', outputs: [expect.stringMatching(/^2\.25\./)]}]})
    const secondSr = result.runs[0].outputs[0]
    expect(runOf(study, 'count-instances')).toMatchObject({run: 2, state: 'done'})
    expect(dryResult.runs[0].sr!.sopInstanceUid).toBe(secondSr)
    await waitFor('the second SR on the holder', async () => (await holder.client.lookupInstance(secondSr)) !== undefined, 20_000)

    // Without a router nothing can be stored; an unknown module is a usage error.
    const offline = path.join(workDir, 'offline.json')
    await writeFile(offline, JSON.stringify({...JSON.parse(await readFile(configFile, 'utf8')), status: {host: '127.0.0.1', port: 1}}))
    const noRouter = await runCompiledCli(['process', study, '--module', 'count-instances', '--config', offline])
    expect(noRouter.code).toBe(3)
    expect(noRouter.stderr).toMatch(/error \[ROUTER_UNREACHABLE\]: no router answers at http:\/\/127\.0\.0\.1:1/)
    const unknown = await runCompiledCli(['process', study, '--module', 'nope', '--config', configFile])
    expect(unknown.code).toBe(2)
    expect(unknown.stderr).toMatch(/no processing module named nope/)
  })

  it('retries a failing module and marks the study processing-failed, routing untouched', async () => {
    const study = await sendSynthetic('FAIL')
    await waitFor('the failure', () => runOf(study, 'broken')?.state === 'failed', 20_000)
    expect(runOf(study, 'broken')).toMatchObject({attempts: 2, detail: 'exit: exited with code 2; stderr: cannot load the model'})
    expect(router.logs.filter((l) => l.includes('processing-attempt-failed') && l.includes(study))).toHaveLength(1)
    expect(router.logs.some((l) => l.includes('ERROR processing-failed') && l.includes(study) && l.includes('after 2 attempts'))).toBe(true)
    // Routing did its part: every instance on one backend, nothing added.
    expect((await holderOf(study).client.studyInstanceUids(study)).length).toBe(3)
    expect((router.service.ledger!.store as SqliteLedgerStore).summary(study)).toMatchObject({instances: 3, delivered: {stored: 3, queued: 0, deadLetter: 0}})

    const table = await runCompiledCli(['studies', '--config', configFile])
    expect(table.stdout).toMatch(/FAIL-0\s+CT\s+3\s+.*stable processing-failed/)
    const shown = await runCompiledCli(['study', study, '--config', configFile])
    expect(shown.stdout).toMatch(/processing broken: failed after 2 attempts \(exit: exited with code 2; stderr: cannot load the model\)/)
    const metrics = await (await fetch(`http://127.0.0.1:${router.service.statusPort}/metrics`)).text()
    expect(metrics).toMatch(/^ddr_processing_runs\{module="broken",state="failed"\} 1$/m)
    expect(metrics).toMatch(/^ddr_processing_runs\{module="count-instances",state="done"\} 1$/m)
  })

  it('kills a module that hangs at its timeout, while routing goes on', async () => {
    const study = await sendSynthetic('HANG')
    await waitFor('the module to start', () => runOf(study, 'hang')?.state === 'running', 20_000)
    // Meanwhile a new study is received and routed as usual.
    const other = await sendSynthetic('MEANWHILE')
    await router.drained()
    expect((await holderOf(other).client.studyInstanceUids(other)).length).toBe(3)
    expect(runOf(study, 'hang')?.state).toBe('running')

    await waitFor('the timeout', () => runOf(study, 'hang')?.state === 'failed', 20_000)
    expect(runOf(study, 'hang')!.detail).toBe('timeout: still running after timeoutSeconds (2 s): killed')
    const pid = Number((await readFile(path.join(workDir, 'hang.pid'), 'utf8')).trim())
    await waitFor('the module process to be gone', async () => !(await alive(pid)), 5000)
  })

  it('refuses an invalid result.json with a clear reason', async () => {
    const study = await sendSynthetic('BAD')
    await waitFor('the refusal', () => runOf(study, 'invalid')?.state === 'failed', 20_000)
    expect(runOf(study, 'invalid')!.detail).toBe('invalid-result: DDR_OUT/result.json does not follow the contract: /findings/0/probability expected number to be less or equal to 1')
    expect(router.logs.some((l) => l.includes('ERROR processing-failed') && l.includes('kind=invalid-result'))).toBe(true)
    // Nothing was stored into the study, and the run folders are gone.
    expect((router.service.ledger!.store as SqliteLedgerStore).summary(study)!.instances).toBe(3)
    await waitFor('the run folders to go', async () => (await run('ls', [path.join(workDir, 'runs')])).stdout.trim() === '', 5000)
  })

  it('fetches the instances back from the backend that holds the study when retention keeps none', async () => {
    const second = await startTestRouter(orthancs, {
      studies: {stableSeconds: 1, retentionHours: 0},
      processing: {workDir: path.join(workDir, 'runs'), modules: [module('count-instances', {match: {modality: 'MR'}, command: [path.join(workDir, 'count-instances.sh')]})] as ProcessingModuleConfig[]},
    })
    try {
      const mr = manifest.files.filter((f) => f.path.startsWith('studies/2/') && f.modality === 'MR')
      const study = mr[0].studyInstanceUid
      expect((await dcmsend(['-aec', second.aeTitle, '127.0.0.1', String(second.port), ...mr.map(fixturePath)])).code).toBe(0)
      const runs = (second.service.ledger!.store as SqliteLedgerStore).processing
      await waitFor('the module to run', () => runs.get(study, 'count-instances')?.state === 'done', 20_000)
      expect(runs.get(study, 'count-instances')).toMatchObject({inputs: mr.length, attempts: 1})
      const srUid = runs.get(study, 'count-instances')!.outputs[0]
      const holder = orthancs.find((o) => o.name === (second.service.ledger!.store as SqliteLedgerStore).summary(study)!.backend)!
      await waitFor('the SR on the holder', async () => (await holder.client.lookupInstance(srUid)) !== undefined, 20_000)
    } finally {
      await second.stop()
    }
  })
})
