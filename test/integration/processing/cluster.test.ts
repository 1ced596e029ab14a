import {copyFile, mkdir, mkdtemp, readFile, readdir, rm} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import type {ProcessingModuleConfig} from '../../../src/lib/config/schema.js'
import {validateConfig} from '../../../src/lib/config/validate.js'
import {readPart10Instance} from '../../../src/lib/dicom/received-instance.js'
import {RouterPresence} from '../../../src/lib/ledger/cluster.js'
import {StudyLedger} from '../../../src/lib/ledger/ledger.js'
import {PostgresLedgerStore} from '../../../src/lib/ledger/postgres-store.js'
import {RetentionStore} from '../../../src/lib/ledger/retention.js'
import type {StudySummary} from '../../../src/lib/ledger/types.js'
import {newInstanceId} from '../../../src/lib/listen/intake.js'
import {Logger} from '../../../src/lib/output/logger.js'
import type {Task} from '../../../src/lib/processing/contract.js'
import {ProcessingService} from '../../../src/lib/processing/service.js'
import {writeSyntheticStudies} from '../../helpers/datasets.js'
import {type TestOrthanc, startTestOrthanc} from '../../helpers/orthanc.js'
import {type TestPostgres, startTestPostgres} from '../../helpers/postgres.js'
import {waitFor} from '../../helpers/wait.js'

/** A module that leaves a marker per attempt (a copy of its task.json) in $MARKS, then answers one finding. */
const MARKER = `set -eu
cp "$DDR_TASK" "$(mktemp "$MARKS/$DDR_MODULE.XXXXXX")"
[ -z "\${HANG_FIRST:-}" ] || [ "$(ls "$MARKS" | wc -l)" -gt 1 ] || sleep 60
first=$(ls "$DDR_IN" | grep '\\.dcm$' | head -n 1)
printf '{"findings":[{"label":"Looked at","value":%s,"unit":"{instances}","sopInstanceUid":"%s"}]}' "$(ls "$DDR_IN" | grep -c '\\.dcm$')" "\${first%.dcm}" > "$DDR_OUT/result.json"`

const module = (name: string): ProcessingModuleConfig => ({name, match: {}, command: ['sh', '-c', MARKER], timeoutSeconds: 90, retries: 0, retryDelaySeconds: 0, output: 'sr', settings: {}, rerunOnAmendment: false})

/** One router of the cluster, as far as processing sees it: its own connection to the shared ledger, its retention, its processing. */
interface Router {
  name: string
  store: PostgresLedgerStore
  ledger: StudyLedger
  presence: RouterPresence
  service?: ProcessingService
  logs: string[]
}

describe('processing modules on a shared PostgreSQL ledger, two routers', () => {
  let pg: TestPostgres
  let orthanc: TestOrthanc
  let dir: string
  let marks: string
  let routers: Router[] = []
  /** Each SR stored, by the router that stored it: `<router> <study> <module>`. */
  let stored: string[] = []
  let backends: ReturnType<typeof validateConfig>['backends']

  async function startRouter(name: string): Promise<Router> {
    const logs: string[] = []
    const logger = new Logger({write: (line) => logs.push(line)})
    await mkdir(path.join(dir, name), {recursive: true})
    const store = await PostgresLedgerStore.open(pg.url, {router: name})
    const retention = new RetentionStore(path.join(dir, name, 'retention'), {maxAgeMs: 3_600_000, maxBytes: 1e9})
    await retention.open()
    const ledger = new StudyLedger(store, {stableSeconds: 0.5, keepDays: 30, logger, tickMs: 50, retention})
    const presence = new RouterPresence(store, () => ({name, address: `127.0.0.1:${routers.length}`, version: 'test', startedAt: 1, status: {healthy: true, reasons: [], received: 0, routed: 0, failed: 0, spoolDepth: 0}}), {logger, intervalMs: 300})
    await presence.beat()
    const router: Router = {name, store, ledger, presence, logs}
    routers.push(router)
    return router
  }

  function startProcessing(router: Router, modules: ProcessingModuleConfig[], concurrency = 2): ProcessingService {
    const logger = new Logger({write: (line) => router.logs.push(line)})
    router.service = new ProcessingService({
      config: {processing: {concurrency, modules, workDir: path.join(dir, router.name, 'work')}, backends, listen: {aeTitle: 'DDR'}},
      ledger: router.ledger,
      runs: router.store,
      router: router.name,
      shared: {silentSeconds: 2, reclaimMs: 200},
      logger,
      tickMs: 50,
      // The router's intake, as far as the ledger sees it: the SR arrives (derived) at this router and is delivered.
      store: async (file, moduleName) => {
        const instance = await readPart10Instance(file, newInstanceId())
        stored.push(`${router.name} ${instance.studyInstanceUid} ${moduleName}`)
        await arrive(router, [file], {derived: true})
        return {stored: true}
      },
    })
    router.service.start()
    return router.service
  }

  /** Files arrive at a router and are delivered to the Orthanc (uploaded there, kept in that router's retention), as that router would record them. */
  async function arrive(router: Router, files: string[], options: {derived?: boolean} = {}): Promise<void> {
    for (const source of files) {
      const id = newInstanceId()
      const copy = path.join(dir, router.name, `${id}.dcm`)
      await copyFile(source, copy)
      const instance = await readPart10Instance(copy, id)
      router.ledger.received({
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
      if (!options.derived) await orthanc.client.uploadInstance(await readFile(copy))
      await router.ledger.delivered(instance, orthanc.name)
    }
  }

  /** Every attempt's task.json the modules left, as `<study> <module>`. */
  async function markers(): Promise<string[]> {
    const found: string[] = []
    for (const file of await readdir(marks)) {
      const task = JSON.parse(await readFile(path.join(marks, file), 'utf8')) as Task
      found.push(`${task.study.studyInstanceUid} ${task.module}`)
    }

    return found.sort()
  }

  beforeAll(async () => {
    ;[pg, orthanc] = await Promise.all([startTestPostgres(), startTestOrthanc({name: 'orthanc1', aeTitle: 'ORTHANC1'})])
    backends = validateConfig({backends: [{name: orthanc.name, host: '127.0.0.1', port: orthanc.dicomPort, aeTitle: orthanc.aeTitle, url: orthanc.url}]}, 'test').backends
  }, 90_000)

  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'ddr-processing-cluster-'))
    marks = path.join(dir, 'marks')
    await mkdir(marks)
    process.env.MARKS = marks
    stored = []
    routers = []
  })

  afterEach(async () => {
    for (const router of routers) {
      await router.service?.stop()
      router.presence.close()
      await router.ledger.close()
    }

    delete process.env.MARKS
    delete process.env.HANG_FIRST
    await pg.psql('DROP TABLE IF EXISTS studies, instances, study_claims, routers, processing, ddr_schema')
    await rm(dir, {recursive: true, force: true})
  })

  afterAll(async () => {
    await orthanc?.stop()
    await pg?.stop()
  })

  it('runs each module once per complete study, whichever router sees it, with the instances another router received fetched from the backend; each SR stored once', async () => {
    const [one, two] = [await startRouter('router-1'), await startRouter('router-2')]
    const modules = [module('first'), module('second')]
    startProcessing(one, modules)
    startProcessing(two, modules)
    // Both routers hear that a study is stable (only the one that marked it would): each module is scheduled once.
    let forwarding = false
    const forward = (to: Router) => (study: StudySummary) => {
      if (forwarding) return
      forwarding = true
      try {
        to.ledger.emit('stable', study)
      } finally {
        forwarding = false
      }
    }

    one.ledger.on('stable', forward(two))
    two.ledger.on('stable', forward(one))

    const files = await writeSyntheticStudies(path.join(dir, 'studies'), {studies: 4, instancesPerStudy: 3, pixelBytes: 1024, prefix: 'CLU'})
    const studies = [...new Set(files.map((f) => f.studyInstanceUid))]
    // Each study's instances arrive at both routers (HAProxy spreads associations): each keeps only its own in retention.
    await Promise.all([arrive(one, files.filter((_, index) => index % 3 !== 2).map((f) => f.path)), arrive(two, files.filter((_, index) => index % 3 === 2).map((f) => f.path))])

    const all = async () => (await Promise.all(studies.flatMap((study) => modules.map((m) => one.store.processing.get(study, m.name))))).filter((run) => run?.state === 'done')
    await waitFor('every module done on every study', async () => (await all()).length === studies.length * modules.length, 40_000)
    // Quiet a moment: no router starts anything again.
    await new Promise((resolve) => setTimeout(resolve, 1000))
    const expected = studies.flatMap((study) => modules.map((m) => `${study} ${m.name}`)).sort()
    expect(await markers()).toEqual(expected)
    expect(stored.map((line) => line.split(' ').slice(1).join(' ')).sort()).toEqual(expected)
    for (const run of await all()) {
      // Every instance given, whichever router held it in retention: the others came from the Orthanc.
      expect(run).toMatchObject({run: 1, attempts: 1, inputs: 3, outputs: [expect.stringMatching(/^2\.25\./)]})
      expect(['router-1', 'router-2']).toContain(run!.runner)
    }

    // What ddr studies shows, from PostgreSQL.
    expect((await two.store.summary(studies[0]))!.processing).toEqual([
      {module: 'first', state: 'done', attempts: 1, detail: expect.stringMatching(/^1 finding\(s\); stored SR /)},
      {module: 'second', state: 'done', attempts: 1, detail: expect.stringMatching(/^1 finding\(s\); stored SR /)},
    ])
  }, 90_000)

  it('takes over the run of a router that went silent, never the running run of a live one', async () => {
    process.env.HANG_FIRST = '1'
    const [one, two] = [await startRouter('router-1'), await startRouter('router-2')]
    const modules = [module('slow')]
    startProcessing(one, modules)
    const files = await writeSyntheticStudies(path.join(dir, 'studies'), {studies: 1, instancesPerStudy: 2, pixelBytes: 1024, prefix: 'DIE'})
    const study = files[0].studyInstanceUid
    await arrive(one, files.map((f) => f.path))
    await waitFor('router-1 to run it', async () => (await one.store.processing.get(study, 'slow'))?.state === 'running', 20_000)
    expect(await one.store.processing.get(study, 'slow')).toMatchObject({runner: 'router-1', attempts: 1})
    // Its module started (the run is taken before the inputs are fetched): the attempt that hangs is
    // router-1's. Its marker file is counted, not read: it may still be being written.
    await waitFor("router-1's module to start", async () => (await readdir(marks)).length === 1, 20_000)

    // router-2 starts (requeueing what it left itself) and looks for silent routers, while router-1 beats and runs the module.
    startProcessing(two, modules)
    await new Promise((resolve) => setTimeout(resolve, 3500))
    expect(await two.store.processing.get(study, 'slow')).toMatchObject({state: 'running', runner: 'router-1', attempts: 1})
    expect(await markers()).toEqual([`${study} slow`])

    // router-1 dies: no more heartbeats (its module still hangs). After the silence time router-2 takes the run over.
    one.presence.close()
    await waitFor('router-2 to run it', async () => (await two.store.processing.get(study, 'slow'))?.state === 'done', 20_000)
    expect(await two.store.processing.get(study, 'slow')).toMatchObject({runner: 'router-2', run: 1, attempts: 1, inputs: 2})
    expect(two.logs.some((line) => line.includes('processing-taken-over'))).toBe(true)
    expect(await markers()).toEqual([`${study} slow`, `${study} slow`])
    expect(stored).toEqual([`router-2 ${study} slow`])
    // The dead router's attempt, ended late, records nothing and stores nothing.
    await one.service!.stop()
    expect(await two.store.processing.get(study, 'slow')).toMatchObject({state: 'done', runner: 'router-2'})
    expect(stored).toHaveLength(1)
  }, 90_000)

  it('a router that stops hands its running runs back at once, for another to take', async () => {
    process.env.HANG_FIRST = '1'
    const [one, two] = [await startRouter('router-1'), await startRouter('router-2')]
    const modules = [module('slow')]
    startProcessing(one, modules)
    const files = await writeSyntheticStudies(path.join(dir, 'studies'), {studies: 1, instancesPerStudy: 2, pixelBytes: 1024, prefix: 'STOP'})
    const study = files[0].studyInstanceUid
    await arrive(one, files.map((f) => f.path))
    await waitFor('router-1 to run it', async () => (await one.store.processing.get(study, 'slow'))?.state === 'running', 20_000)
    // The run is taken before its inputs are fetched: wait until the module itself runs (its marker),
    // else router-1 stops before it started, and router-2's attempt is the first, the one that hangs.
    await waitFor("router-1's module to start", async () => (await readdir(marks)).length === 1, 20_000)
    startProcessing(two, modules)
    // router-1 stops (it still beats: not silent); its module is killed and the run is router-2's to take.
    await one.service!.stop()
    expect(one.logs.some((line) => line.includes('processing-handed-back'))).toBe(true)
    await waitFor('router-2 to run it', async () => (await two.store.processing.get(study, 'slow'))?.state === 'done', 30_000)
    expect(await two.store.processing.get(study, 'slow')).toMatchObject({runner: 'router-2', attempts: 1})
    expect(two.logs.some((line) => line.includes('processing-taken-over'))).toBe(false)
    expect(stored).toEqual([`router-2 ${study} slow`])
  }, 60_000)
})
