import {copyFile, mkdir, mkdtemp, readFile, readdir, rm} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import type {ProcessingModuleConfig} from '../../../src/lib/config/schema.js'
import {readPart10Instance} from '../../../src/lib/dicom/received-instance.js'
import {StudyLedger} from '../../../src/lib/ledger/ledger.js'
import {RetentionStore} from '../../../src/lib/ledger/retention.js'
import {SqliteLedgerStore} from '../../../src/lib/ledger/sqlite-store.js'
import {newInstanceId} from '../../../src/lib/listen/intake.js'
import {Logger} from '../../../src/lib/output/logger.js'
import type {Task} from '../../../src/lib/processing/contract.js'
import {ProcessingService} from '../../../src/lib/processing/service.js'
import {fixturePath, manifest} from '../../helpers/fixtures.js'
import {waitFor} from '../../helpers/wait.js'

const study5 = manifest.files.filter((f) => f.path.startsWith('studies/5/'))
const study2 = manifest.files.filter((f) => f.path.startsWith('studies/2/') && f.modality === 'MR')

/** A module given as a shell script (sh -c), with the contract's defaults. */
function shellModule(name: string, script: string, overrides: Partial<ProcessingModuleConfig> = {}): ProcessingModuleConfig {
  return {name, match: {}, command: ['sh', '-c', script], timeoutSeconds: 20, retries: 0, retryDelaySeconds: 0, output: 'sr', settings: {}, rerunOnAmendment: false, ...overrides}
}

/** Writes a result.json with one finding on the first instance; keeps a copy of what it was given in $LOG. */
const FINDER = `set -eu
seen="$LOG/$(date +%s%N)"; mkdir -p "$seen"; cp "$DDR_IN"/* "$seen/"
first=$(ls "$DDR_IN" | grep '\\.dcm$' | head -n 1)
printf '{"findings":[{"label":"Looked at","sopInstanceUid":"%s","probability":0.5}],"summary":"ok"}' "\${first%.dcm}" > "$DDR_OUT/result.json"`

describe('the processing service', () => {
  let dir: string
  let ledger: StudyLedger
  let store: SqliteLedgerStore
  let service: ProcessingService | undefined
  let logs: string[]
  let stored: string[]

  /** The study's files arrive and are delivered to "orthanc1" (kept in retention), as the router would record them. */
  async function arrive(files: string[], options: {derived?: boolean} = {}): Promise<void> {
    for (const source of files) {
      const id = newInstanceId()
      const copy = path.join(dir, 'queue', `${id}.dcm`)
      await copyFile(source, copy)
      const instance = await readPart10Instance(copy, id)
      ledger.received({
        sopInstanceUid: instance.sopInstanceUid,
        sopClassUid: instance.sopClassUid,
        studyInstanceUid: instance.studyInstanceUid!,
        seriesInstanceUid: instance.seriesInstanceUid,
        patientId: instance.patientId,
        modality: instance.modality,
        callingAeTitle: 'MODALITY',
        bytes: instance.datasetLength,
        receivedAt: Date.now(),
        ...(options.derived ? {derived: true} : {}),
      })
      await ledger.delivered(instance, 'orthanc1')
    }
  }

  function start(modules: ProcessingModuleConfig[], concurrency = 1): ProcessingService {
    service = new ProcessingService({
      config: {processing: {concurrency, modules, workDir: path.join(dir, 'work')}, backends: [], listen: {aeTitle: 'DDR'}},
      ledger,
      runs: store,
      logger: new Logger({write: (line) => logs.push(line)}),
      tickMs: 50,
      // The router's intake, as far as the ledger sees it: the output arrives (derived) and is delivered.
      store: async (file) => {
        const copy = path.join(dir, `out-${stored.length}.dcm`)
        await copyFile(file, copy)
        stored.push(copy)
        await arrive([copy], {derived: true})
        return {stored: true}
      },
    })
    service.start()
    return service
  }

  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'ddr-processing-'))
    await mkdir(path.join(dir, 'queue'))
    await mkdir(path.join(dir, 'log'))
    process.env.LOG = path.join(dir, 'log')
    const retention = new RetentionStore(path.join(dir, 'retention'), {maxAgeMs: 3_600_000, maxBytes: 1e9})
    await retention.open()
    store = new SqliteLedgerStore(path.join(dir, 'ledger.db'))
    ledger = new StudyLedger(store, {stableSeconds: 0.3, keepDays: 30, logger: new Logger({write: (line) => logs.push(line)}), tickMs: 50, retention})
    logs = []
    stored = []
  })

  afterEach(async () => {
    await service?.stop()
    service = undefined
    ledger.close()
    delete process.env.LOG
    await rm(dir, {recursive: true, force: true})
  })

  const runOf = (study: string, module: string) => store.processing.get(study, module)

  it('runs a matching module once the study is stable, with its instances and task.json in DDR_IN, and stores its SR; the SR re-opening the study runs nothing again and is no amendment', async () => {
    const study = study5[0].studyInstanceUid
    start([shellModule('finder', FINDER, {match: {modality: 'CR'}, settings: {threshold: 0.3}})])
    await arrive(study5.map(fixturePath))
    expect(runOf(study, 'finder')).toBeUndefined()
    await waitFor('the run', () => runOf(study, 'finder')?.state === 'done', 10_000)

    const given = await readdir(path.join(dir, 'log', (await readdir(path.join(dir, 'log')))[0]))
    expect(given.sort()).toEqual([...study5.map((f) => `${f.sopInstanceUid}.dcm`), 'task.json'].sort())
    const runDir = path.join(dir, 'log', (await readdir(path.join(dir, 'log')))[0])
    const task = JSON.parse(await readFile(path.join(runDir, 'task.json'), 'utf8')) as Task
    expect(task).toMatchObject({version: 1, module: 'finder', settings: {threshold: 0.3}, run: 1, attempt: 1, output: 'sr', backend: 'orthanc1', study: {studyInstanceUid: study, patientId: study5[0].patientId}})
    expect(task.series.flatMap((s) => s.instances.map((i) => i.sopInstanceUid)).sort()).toEqual(study5.map((f) => f.sopInstanceUid).sort())
    // The instances as received: the files in DDR_IN are the retention copies, byte for byte.
    for (const f of study5) expect((await readFile(path.join(runDir, `${f.sopInstanceUid}.dcm`))).subarray(-1000).equals((await readFile(fixturePath(f))).subarray(-1000))).toBe(true)

    expect(stored).toHaveLength(1)
    const run = runOf(study, 'finder')!
    expect(run).toMatchObject({state: 'done', run: 1, attempts: 1, inputs: 3, outputs: [expect.stringMatching(/^2\.25\./)]})
    // The SR re-opens the study; stable again, nothing runs again, and it is no amendment.
    await waitFor('stable again', () => store.summary(study)?.state === 'stable' && store.summary(study)?.instances === 4, 10_000)
    await new Promise((resolve) => setTimeout(resolve, 400))
    expect(runOf(study, 'finder')).toMatchObject({state: 'done', run: 1, attempts: 1})
    expect(stored).toHaveLength(1)
    expect(store.summary(study)).toMatchObject({amendments: 0, processing: [{module: 'finder', state: 'done', attempts: 1}]})
    // The work folders are gone.
    expect(await readdir(path.join(dir, 'work'))).toEqual([])
  })

  it('skips a study no instance of which matches, and decides again when an amendment brings one', async () => {
    const study = study2[0].studyInstanceUid
    start([shellModule('ct-only', FINDER, {match: {tags: {'0008,0060': {equals: 'CT'}}}})])
    await arrive(study2.slice(0, 2).map(fixturePath))
    await waitFor('the decision', () => runOf(study, 'ct-only')?.state === 'skipped', 10_000)
    expect(runOf(study, 'ct-only')!.detail).toBe('no instance of the study matches')
    expect(store.summary(study)!.processing).toEqual([])
    // Decided from the ledger's header values: nothing was copied for it.
    expect(await readdir(path.join(dir, 'work')).catch(() => [])).toEqual([])

    // An MR amendment: decided again (and skipped again: still no CT).
    await arrive([fixturePath(study2[2])])
    await waitFor('the new decision', () => logs.some((l) => l.includes('processing-rescheduled')) && runOf(study, 'ct-only')?.state === 'skipped', 10_000)
    expect(runOf(study, 'ct-only')!.run).toBe(2)
    expect(runOf(study, 'ct-only')!.inputs).toBeNull()
  })

  it('runs again after an amendment only when the module says rerunOnAmendment', async () => {
    const study = study2[0].studyInstanceUid
    start([shellModule('once', FINDER), shellModule('again', FINDER, {rerunOnAmendment: true})])
    await arrive(study2.slice(0, 2).map(fixturePath))
    await waitFor('both runs', () => runOf(study, 'once')?.state === 'done' && runOf(study, 'again')?.state === 'done', 15_000)
    await waitFor('stable after the SRs', () => store.summary(study)?.state === 'stable' && store.summary(study)?.instances === 4, 10_000)
    await arrive([fixturePath(study2[2])])
    await waitFor('the re-run', () => runOf(study, 'again')?.run === 2 && runOf(study, 'again')?.state === 'done', 15_000)
    expect(runOf(study, 'again')).toMatchObject({inputs: 3, attempts: 1})
    expect(runOf(study, 'once')).toMatchObject({run: 1, inputs: 2})
    expect(store.summary(study)!.amendments).toBe(1)
    // Three SRs, each with its own UID (a new run is a new SR).
    expect(runOf(study, 'again')!.outputs).toHaveLength(2)
    expect(new Set([...runOf(study, 'once')!.outputs, ...runOf(study, 'again')!.outputs]).size).toBe(3)
  })

  it('retries a failing module, then marks the study processing-failed with the reason and the end of stderr', async () => {
    const study = study2[0].studyInstanceUid
    start([shellModule('broken', 'echo "model file missing" >&2; exit 3', {retries: 2})])
    await arrive(study2.map(fixturePath))
    await waitFor('the failure', () => runOf(study, 'broken')?.state === 'failed', 15_000)
    expect(runOf(study, 'broken')).toMatchObject({attempts: 3, detail: 'exit: exited with code 3; stderr: model file missing'})
    expect(logs.filter((l) => l.includes('processing-attempt-failed'))).toHaveLength(2)
    expect(logs.filter((l) => l.includes('ERROR processing-failed'))).toHaveLength(1)
    expect(store.summary(study)!.processing).toEqual([{module: 'broken', state: 'failed', attempts: 3, detail: 'exit: exited with code 3; stderr: model file missing'}])
    expect(service!.status().runs).toEqual([{module: 'broken', state: 'failed', runs: 1}])
    expect(stored).toEqual([])
  })

  it('runs at most processing.concurrency modules at once', async () => {
    const slow = (name: string) => shellModule(name, `echo "start $(date +%s%N)" >> "$LOG/$DDR_MODULE"; sleep 0.4; echo "end $(date +%s%N)" >> "$LOG/$DDR_MODULE"; echo '{"findings":[]}' > "$DDR_OUT/result.json"`, {output: 'none'})
    start([slow('a'), slow('b'), slow('c')], 2)
    await arrive(study2.slice(0, 1).map(fixturePath))
    const study = study2[0].studyInstanceUid
    await waitFor('all three', () => ['a', 'b', 'c'].every((m) => runOf(study, m)?.state === 'done'), 15_000)
    const events: Array<[bigint, number]> = []
    for (const m of ['a', 'b', 'c']) {
      for (const line of (await readFile(path.join(dir, 'log', m), 'utf8')).trim().split('\n')) {
        const [what, at] = line.split(' ')
        events.push([BigInt(at), what === 'start' ? 1 : -1])
      }
    }

    events.sort((x, y) => (x[0] < y[0] ? -1 : x[0] > y[0] ? 1 : 0))
    let now = 0
    let most = 0
    for (const [, step] of events) most = Math.max(most, (now += step))
    expect(most).toBe(2)
    expect(stored).toEqual([])
  })
})
