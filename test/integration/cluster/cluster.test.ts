import type {ChildProcess} from 'node:child_process'
import {existsSync} from 'node:fs'
import {mkdtemp, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {chromium} from 'playwright-core'

import {type SyntheticInstance, writeSyntheticStudies} from '../../helpers/datasets.js'
import {runCompiledCli, spawnCompiledCli} from '../../helpers/compiled-cli.js'
import {storescu} from '../../helpers/dcmtk.js'
import {type TestHaproxy, startTestHaproxy} from '../../helpers/haproxy.js'
import {type TestOrthanc, startTestOrthanc} from '../../helpers/orthanc.js'
import {freePort} from '../../helpers/ports.js'
import {type TestPostgres, startTestPostgres} from '../../helpers/postgres.js'
import {waitFor} from '../../helpers/wait.js'

/** One `ddr listen` process of the cluster: its own spool, DICOM port and status port, the shared ledger. */
interface ClusterRouter {
  name: string
  port: number
  statusPort: number
  config: string
  process?: ChildProcess
  log: string[]
}

const AE = 'DDR_CLUSTER'
const SENDERS_PER_STUDY = 3

/**
 * Three routers behind HAProxy sharing one PostgreSQL ledger, two Orthancs (docs/cluster.md). Each
 * study is sent by three storescu processes at once, a third of it each, so its associations land
 * on different routers: the study's claim must still send every instance to one Orthanc.
 */
describe('several routers behind HAProxy, one study ledger in PostgreSQL', () => {
  let pg: TestPostgres
  let orthancs: TestOrthanc[]
  let routers: ClusterRouter[]
  let haproxy: TestHaproxy
  let dir: string
  let batch = 0

  const healthz = async (router: ClusterRouter) => (await fetch(`http://127.0.0.1:${router.statusPort}/healthz`).catch(() => undefined))?.status ?? 0

  async function startRouter(router: ClusterRouter): Promise<void> {
    router.process = spawnCompiledCli(['listen', '--config', router.config])
    router.process.stdout!.resume()
    router.process.stderr!.setEncoding('utf8').on('data', (chunk: string) => router.log.push(chunk))
    await waitFor(`${router.name} to take traffic`, async () => (await healthz(router)) === 200, 30_000).catch((error: Error) => {
      throw new Error(`${error.message} (exit code ${router.process?.exitCode ?? 'none'}); its log ends: ${router.log.join('').slice(-1500)}`)
    })
  }

  /** Studies of `count` × 9 small instances, each sent by three storescu processes at once through HAProxy; all at the same time. */
  async function sendStudies(count: number): Promise<{studies: Map<string, SyntheticInstance[]>; codes: number[]}> {
    batch++
    const instances = await writeSyntheticStudies(path.join(dir, `batch-${batch}`), {studies: count, instancesPerStudy: 3 * SENDERS_PER_STUDY, pixelBytes: 2048, prefix: `B${batch}`})
    const studies = new Map<string, SyntheticInstance[]>()
    for (const instance of instances) studies.set(instance.studyInstanceUid, [...(studies.get(instance.studyInstanceUid) ?? []), instance])
    const sends: Array<Promise<{code: number | null}>> = []
    for (const study of studies.values()) {
      for (let sender = 0; sender < SENDERS_PER_STUDY; sender++) {
        const share = study.filter((_, i) => i % SENDERS_PER_STUDY === sender)
        sends.push(storescu(['-aec', AE, '127.0.0.1', String(haproxy.port), ...share.map((i) => i.path)], {timeoutMs: 60_000}))
      }
    }

    return {studies, codes: (await Promise.all(sends)).map((r) => r.code ?? -1)}
  }

  /** Where each instance of each study is: the Orthanc(s) holding it. */
  async function holdings(studies: Map<string, SyntheticInstance[]>): Promise<Map<string, Map<string, number>>> {
    const result = new Map<string, Map<string, number>>()
    for (const study of studies.keys()) {
      const perOrthanc = new Map<string, number>()
      for (const orthanc of orthancs) {
        const held = (await orthanc.client.studyInstanceUids(study)).length
        if (held > 0) perOrthanc.set(orthanc.name, held)
      }

      result.set(study, perOrthanc)
    }

    return result
  }

  /** Waits until every instance is on an Orthanc, then says each study is on exactly one, whole. */
  async function expectEachStudyOnOneOrthanc(studies: Map<string, SyntheticInstance[]>, timeoutMs = 60_000): Promise<void> {
    const total = [...studies.values()].reduce((sum, s) => sum + s.length, 0)
    let seen = new Map<string, Map<string, number>>()
    await waitFor(`${total} instances on the Orthancs`, async () => {
      seen = await holdings(studies)
      return [...seen.values()].reduce((sum, m) => sum + [...m.values()].reduce((a, b) => a + b, 0), 0) >= total
    }, timeoutMs, 250).catch((error: Error) => {
      throw new Error(`${error.message}: ${JSON.stringify([...seen].map(([s, m]) => [s, Object.fromEntries(m)]))}`)
    })
    for (const [study, instances] of studies) expect([study, Object.fromEntries(seen.get(study)!)]).toEqual([study, {[[...seen.get(study)!.keys()][0]]: instances.length}])
  }

  /** Which routers received instances of each study, from the shared ledger. */
  async function routersPerStudy(studies: Iterable<string>): Promise<number[]> {
    const list = [...studies].map((s) => `'${s}'`).join(',')
    const rows = await pg.psql(`SELECT COUNT(DISTINCT router) FROM instances WHERE study_instance_uid IN (${list}) GROUP BY study_instance_uid`)
    return rows.trim().split('\n').map(Number)
  }

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'ddr-cluster-'))
    ;[pg, orthancs] = await Promise.all([startTestPostgres(), Promise.all([startTestOrthanc({name: 'alpha', aeTitle: 'ALPHA'}), startTestOrthanc({name: 'beta', aeTitle: 'BETA'})])])
    routers = []
    for (let n = 1; n <= 3; n++) {
      const router: ClusterRouter = {name: `router-${n}`, port: await freePort(), statusPort: await freePort(), config: path.join(dir, `router-${n}.json`), log: []}
      await writeFile(
        router.config,
        JSON.stringify({
          listen: {host: '127.0.0.1', port: router.port, aeTitle: AE},
          status: {host: '127.0.0.1', port: router.statusPort},
          spool: {dir: path.join(dir, router.name, 'spool'), retryBaseMs: 200, retryMaxMs: 1000},
          ledger: {url: pg.url, routerName: router.name, claimTimeoutMs: 1000},
          studies: {stableSeconds: 600, receipts: false},
          // A check that is merely slow under this test's load must not mark a backend down on one router only.
          health: {intervalMs: 500, failThreshold: 3, recoverThreshold: 1},
          backends: orthancs.map((o) => ({name: o.name, host: '127.0.0.1', port: o.dicomPort, aeTitle: o.aeTitle, url: o.url})),
        }),
      )
      routers.push(router)
    }

    await Promise.all(routers.map((r) => startRouter(r)))
    haproxy = await startTestHaproxy(routers.map((r) => ({name: r.name, port: r.port, checkPort: r.statusPort})))
    for (const r of routers) await haproxy.waitForServer(r.name, 'UP')
  }, 120_000)

  afterAll(async () => {
    for (const r of routers ?? []) if (r.process?.exitCode === null && r.process.signalCode === null) r.process.kill('SIGKILL')
    await haproxy?.stop()
    await Promise.all((orthancs ?? []).map((o) => o.stop()))
    await pg?.stop()
    if (dir) await rm(dir, {recursive: true, force: true})
  })

  it('sends every instance of a study to one Orthanc, whichever router each association reached', async () => {
    const {studies, codes} = await sendStudies(6)
    expect(codes).toEqual(Array(6 * SENDERS_PER_STUDY).fill(0))
    await expectEachStudyOnOneOrthanc(studies)
    // The point of the claims: a study's associations did land on different routers.
    expect(Math.max(...(await routersPerStudy(studies.keys())))).toBeGreaterThan(1)
    // Every instance recorded once, stored, in the shared ledger (the records follow the deliveries by a few milliseconds).
    const list = [...studies.keys()].map((s) => `'${s}'`).join(',')
    const recorded = () => pg.psql(`SELECT status, COUNT(*) FROM instances WHERE study_instance_uid IN (${list}) GROUP BY status`)
    await waitFor('the ledger to record every instance', async () => (await recorded()).trim() === `stored|${6 * 9}`, 10_000).catch(async (error: Error) => {
      throw new Error(`${error.message}: ${await recorded()}`)
    })
    expect((await pg.psql(`SELECT COUNT(*) FROM study_claims WHERE study_instance_uid IN (${list})`)).trim()).toBe('6')
  }, 120_000)

  it("shows every router of the ledger on each router's console and in balance-status", async () => {
    const chromiumPath = process.env.DDR_TEST_CHROMIUM ?? '/usr/bin/chromium'
    if (!existsSync(chromiumPath)) throw new Error(`${chromiumPath} is missing: apt-get install chromium (.ci/run does), or set DDR_TEST_CHROMIUM`)
    // Heartbeats every 5 s: each router has written its counters since the studies above.
    let seen: unknown
    await waitFor('heartbeats with the counters', async () => {
      const status = (await (await fetch(`http://127.0.0.1:${routers[0].statusPort}/status`)).json()) as {cluster: {routers: Array<{status: {received: number}}>}}
      seen = status.cluster
      return status.cluster.routers.length === 3 && status.cluster.routers.reduce((sum, r) => sum + r.status.received, 0) === 6 * 9
    }, 15_000).catch((error: Error) => {
      throw new Error(`${error.message}: ${JSON.stringify(seen)}`)
    })
    const browser = await chromium.launch({executablePath: chromiumPath, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage']})
    try {
      const page = await browser.newPage()
      await page.goto(`http://127.0.0.1:${routers[2].statusPort}/console/`)
      await page.waitForSelector('[data-test=router-row]')
      const rows = await page.locator('[data-test=router-row]').evaluateAll((trs) => trs.map((tr) => ({name: tr.getAttribute('data-router'), text: tr.textContent, state: tr.querySelector('.pill')?.textContent})))
      expect(rows.map((r) => [r.name, r.state])).toEqual([
        ['router-1', 'up'],
        ['router-2', 'up'],
        ['router-3', 'up'],
      ])
      expect(rows[2].text).toContain('(this one)')
    } finally {
      await browser.close()
    }

    const balance = await runCompiledCli(['balance-status', '--config', routers[0].config])
    expect(balance.stdout).toMatch(/cluster: this router is router-1/)
    expect(balance.stdout).toMatch(/^router-3\s+127\.0\.0\.1:\d+\s+up\b/m)
  }, 60_000)

  it('delivers what a router killed with SIGKILL had acknowledged once it restarts, while the others take the later associations', async () => {
    // The Orthancs are down: what the routers acknowledge stays in their spools.
    await Promise.all(orthancs.map((o) => o.halt()))
    const before = await sendStudies(3)
    expect(before.codes).toEqual(Array(3 * SENDERS_PER_STUDY).fill(0))
    const victim = routers[1]
    const held = Number((await pg.psql(`SELECT COUNT(*) FROM instances WHERE router = '${victim.name}' AND status = 'queued'`)).trim())
    victim.process!.kill('SIGKILL')
    await haproxy.waitForServer(victim.name, 'DOWN')
    const after = await sendStudies(3)
    expect(after.codes).toEqual(Array(3 * SENDERS_PER_STUDY).fill(0))
    const afterList = [...after.studies.keys()].map((s) => `'${s}'`).join(',')
    expect((await pg.psql(`SELECT COUNT(*) FROM instances WHERE study_instance_uid IN (${afterList}) AND router = '${victim.name}'`)).trim()).toBe('0')
    await Promise.all(orthancs.map((o) => o.resume()))
    // The killed router held some of the first batch: they wait for it.
    expect(held).toBeGreaterThan(0)
    await startRouter(victim)
    await expectEachStudyOnOneOrthanc(new Map([...before.studies, ...after.studies]))
    expect(victim.log.join('')).toMatch(/spool-recovered/)
  }, 180_000)

  it('routes on while PostgreSQL is stopped for 10 s, loses nothing, and reconciles the claims after', async () => {
    await pg.halt('fast')
    const stoppedAt = Date.now()
    const {studies, codes} = await sendStudies(3)
    expect(codes).toEqual(Array(3 * SENDERS_PER_STUDY).fill(0))
    // Routed while the ledger was down: every router chose by rendezvous hashing over the same healthy backends.
    await expectEachStudyOnOneOrthanc(studies)
    await new Promise((resolve) => setTimeout(resolve, Math.max(0, 10_000 - (Date.now() - stoppedAt))))
    await pg.resume()
    const list = [...studies.keys()].map((s) => `'${s}'`).join(',')
    await waitFor('the ledger to hold every instance, stored', async () => (await pg.psql(`SELECT COUNT(*) FROM instances WHERE study_instance_uid IN (${list}) AND status = 'stored'`)).trim() === String(3 * 9), 30_000)
    await waitFor('the claims to be reconciled', async () => (await pg.psql(`SELECT COUNT(*) FROM study_claims WHERE study_instance_uid IN (${list})`)).trim() === '3', 30_000)
    const logs = routers.map((r) => r.log.join('')).join('')
    // Two routers writing the same studies at once wait for each other: never a deadlock (PostgreSQL would abort one write).
    expect(logs).not.toMatch(/deadlock detected/)
    expect(logs).toMatch(/study-claim-unconfirmed/)
    expect(logs).toMatch(/study-claim-reconciled/)
    expect(logs).not.toMatch(/study-claim-conflict/)
    // No router fell over meanwhile.
    for (const r of routers) expect([r.name, r.process!.exitCode, r.process!.signalCode, await healthz(r), r.process!.exitCode === null ? '' : r.log.join('').slice(-3000)]).toEqual([r.name, null, null, 200, ''])
  }, 120_000)
})
