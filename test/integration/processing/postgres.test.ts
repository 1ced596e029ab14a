import {mkdir, mkdtemp, readFile, readdir, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import type {ProcessingModuleConfig} from '../../../src/lib/config/schema.js'
import type {StudiesResult} from '../../../src/lib/ledger/query.js'
import type {ProcessResult} from '../../../src/lib/processing/manual.js'
import {runCompiledCli} from '../../helpers/compiled-cli.js'
import {dcmsend} from '../../helpers/dcmtk.js'
import {fixturePath, manifest} from '../../helpers/fixtures.js'
import {type TestOrthanc, startTestOrthanc} from '../../helpers/orthanc.js'
import {type TestPostgres, startTestPostgres} from '../../helpers/postgres.js'
import {type TestRouter, startTestRouter} from '../../helpers/router.js'
import {waitFor} from '../../helpers/wait.js'

const crStudy = manifest.files.filter((f) => f.path.startsWith('studies/5/'))

/** Leaves a marker per attempt in $MARKS (a copy of task.json), then counts the instances it was given. */
const COUNTER = `set -eu
cp "$DDR_TASK" "$(mktemp "$MARKS/$DDR_MODULE.XXXXXX")"
count=$(ls "$DDR_IN" | grep -c '\\.dcm$')
printf '{"findings":[{"label":"Instances looked at","value":%s,"unit":"{instances}"}]}' "$count" > "$DDR_OUT/result.json"`

describe('processing modules behind two routers sharing a PostgreSQL ledger', () => {
  let pg: TestPostgres
  let orthanc: TestOrthanc
  const routers: TestRouter[] = []
  let dir: string
  let marks: string
  const configFor = (router: TestRouter) => path.join(dir, `${router.config.ledger.routerName}.json`)

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'ddr-processing-pg-'))
    marks = path.join(dir, 'marks')
    await mkdir(marks)
    process.env.MARKS = marks
    ;[pg, orthanc] = await Promise.all([startTestPostgres(), startTestOrthanc({name: 'orthanc1', aeTitle: 'ORTHANC1'})])
    const modules = [{name: 'count', match: {modality: 'CR'}, command: ['sh', '-c', COUNTER], timeoutSeconds: 30, retries: 0}] as ProcessingModuleConfig[]
    for (const name of ['router-1', 'router-2']) {
      const router = await startTestRouter([orthanc], {
        ledger: {url: pg.url, routerName: name},
        studies: {stableSeconds: 1},
        processing: {concurrency: 2, workDir: path.join(dir, 'runs'), modules},
      })
      routers.push(router)
      await writeFile(
        configFor(router),
        JSON.stringify({
          ledger: {url: pg.url, routerName: name},
          spool: {dir: router.config.spool.dir},
          status: {host: '127.0.0.1', port: router.service.statusPort},
          backends: [{name: orthanc.name, port: orthanc.dicomPort, aeTitle: orthanc.aeTitle, url: orthanc.url}],
          processing: {workDir: path.join(dir, 'runs'), modules},
        }),
      )
    }
  }, 60_000)

  afterAll(async () => {
    for (const router of routers) await router.stop()
    await orthanc?.stop()
    await pg?.stop()
    delete process.env.MARKS
    if (dir) await rm(dir, {recursive: true, force: true})
  })

  const runOf = (study: string) => routers[0].service.ledger!.store.processing.get(study, 'count')
  const attempts = async () => (await readdir(marks)).length

  it('runs the module once on a study one router received, stores its SR once, shows it in ddr studies and ddr study; ddr process through the other router fetches the inputs from the backend', async () => {
    const [one, two] = routers
    const study = crStudy[0].studyInstanceUid
    expect(one.logs.concat(two.logs).some((line) => line.includes('processing-off'))).toBe(false)
    expect((await dcmsend(['-aec', one.aeTitle, '127.0.0.1', String(one.port), ...crStudy.map(fixturePath)])).code).toBe(0)
    await waitFor('the module to run', async () => (await runOf(study))?.state === 'done', 20_000)
    const done = (await runOf(study))!
    expect(done).toMatchObject({run: 1, attempts: 1, inputs: 3})
    expect(['router-1', 'router-2']).toContain(done.runner)
    const [srUid] = done.outputs
    await waitFor('the SR on the Orthanc', async () => (await orthanc.client.lookupInstance(srUid)) !== undefined, 20_000)
    expect((await orthanc.client.studyInstanceUids(study)).sort()).toEqual([...crStudy.map((f) => f.sopInstanceUid), srUid].sort())
    // Stable again after its SR (both routers follow the ledger): nothing runs again.
    await waitFor('stable again', async () => (await one.service.ledger!.store.summary(study))?.state === 'stable', 10_000)
    await new Promise((resolve) => setTimeout(resolve, 1500))
    expect(await attempts()).toBe(1)
    expect(await runOf(study)).toMatchObject({run: 1, attempts: 1, outputs: [srUid]})

    // ddr studies / ddr study read the processing state from PostgreSQL.
    const listed = await runCompiledCli(['studies', '--json', '--config', configFor(one)])
    expect(listed.code).toBe(0)
    const summary = (JSON.parse(listed.stdout) as StudiesResult).studies.find((s) => s.studyInstanceUid === study)!
    expect(summary).toMatchObject({instances: 4, amendments: 0, processing: [{module: 'count', state: 'done', attempts: 1}]})
    const shown = await runCompiledCli(['study', study, '--config', configFor(two)])
    expect(shown.stdout).toMatch(/processing count: done \(1 finding\(s\); stored SR /)

    // The console's study page (its API) on the router that did not receive the study.
    const page = (await (await fetch(`http://127.0.0.1:${two.service.statusPort}/api/studies/${study}`)).json()) as {processing: unknown}
    expect(page.processing).toEqual([{module: 'count', state: 'done', attempts: 1, detail: expect.stringMatching(/^1 finding\(s\); stored SR /)}])

    // --dry-run reads the shared ledger too.
    const dry = await runCompiledCli(['process', study, '--dry-run', '--json', '--config', configFor(two)])
    expect({code: dry.code, stderr: dry.stderr}).toEqual({code: 0, stderr: ''})
    expect(JSON.parse(dry.stdout) as ProcessResult).toMatchObject({by: 'dry-run', runs: [{module: 'count', state: 'done', result: {findings: [{value: 3}]}}]})

    // By hand through router-2, which received nothing of the study: its instances come from the Orthanc.
    const byHand = await runCompiledCli(['process', study, '--module', 'count', '--json', '--config', configFor(two)])
    expect({code: byHand.code, stderr: byHand.stderr}).toEqual({code: 0, stderr: ''})
    const result = JSON.parse(byHand.stdout) as ProcessResult
    expect(result).toMatchObject({by: 'router', runs: [{module: 'count', state: 'done', outputs: [expect.stringMatching(/^2\.25\./)], result: {findings: [{value: 3}]}}]})
    expect(await runOf(study)).toMatchObject({run: 2, attempts: 1, runner: 'router-2', inputs: 3, state: 'done'})
    await waitFor('the second SR on the Orthanc', async () => (await orthanc.client.lookupInstance(result.runs[0].outputs[0])) !== undefined, 20_000)
    const tasks = await Promise.all((await readdir(marks)).map(async (file) => JSON.parse(await readFile(path.join(marks, file), 'utf8')) as {run: number}))
    // Run 1 by a router, run 2 once by hand (and once in the dry run, here in the command's process).
    expect(tasks.map((t) => t.run).sort()).toEqual([1, 2, 2])
    // /metrics from the shared table (read in the background: the next scrape has it).
    const metric = /^ddr_processing_runs\{module="count",state="done"\} 1$/m
    await waitFor('the runs in /metrics', async () => metric.test(await (await fetch(`http://127.0.0.1:${one.service.statusPort}/metrics`)).text()), 5000)
  }, 60_000)
})
