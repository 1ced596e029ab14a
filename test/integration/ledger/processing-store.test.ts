import {mkdtemp, rm} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {PostgresLedgerStore} from '../../../src/lib/ledger/postgres-store.js'
import type {ProcessingStore} from '../../../src/lib/ledger/processing-runs.js'
import {SqliteLedgerStore} from '../../../src/lib/ledger/sqlite-store.js'
import type {LedgerStore} from '../../../src/lib/ledger/store.js'
import type {InstanceReceipt} from '../../../src/lib/ledger/types.js'
import {type TestPostgres, startTestPostgres} from '../../helpers/postgres.js'

const CT = '1.2.840.10008.5.1.4.1.1.2'
const receipt = (study: string, n: number): InstanceReceipt => ({sopInstanceUid: `${study}.${n}`, sopClassUid: CT, studyInstanceUid: study, seriesInstanceUid: `${study}.100`, patientId: 'P1', modality: 'CT', callingAeTitle: 'CT1', bytes: 1000, receivedAt: 1000 + n})
const heartbeat = (name: string) => ({name, address: `127.0.0.1:${name.length}`, version: 'test', startedAt: 1, status: {healthy: true, reasons: [], received: 0, routed: 0, failed: 0, spoolDepth: 0}})

/** One history of schedule, due, take, finish, requeue and reschedule, with explicit times; what the store holds after each step. */
async function history(store: LedgerStore): Promise<unknown[]> {
  const runs: ProcessingStore = store.processing
  const seen: unknown[] = []
  const look = async (label: string) => seen.push(label, await runs.forStudy('1.2.9'), (await runs.due(5000, 10)).map((r) => r.module), await runs.counts(), (await store.summary('1.2.9'))?.processing)
  await store.received([receipt('1.2.9', 1)])
  await runs.schedule('1.2.9', ['a', 'b'], 1000)
  await runs.schedule('1.2.9', ['a', 'c'], 2000)
  await look('scheduled')
  seen.push(await runs.take('1.2.9', 'a', 'r1', 3000))
  seen.push(await runs.take('1.2.9', 'a', 'r2', 3001), 'taken twice')
  seen.push(await runs.finish('1.2.9', 'a', {state: 'pending', detail: 'exit: exited with code 1', nextAttemptAt: 9000}, 3100, 'r2'), 'not its run')
  seen.push(await runs.finish('1.2.9', 'a', {state: 'pending', detail: 'exit: exited with code 1', nextAttemptAt: 9000}, 3100, 'r1'))
  await look('backoff')
  seen.push(await runs.take('1.2.9', 'a', 'r1', 9100))
  seen.push(await runs.finish('1.2.9', 'a', {state: 'done', outputs: ['2.25.1'], inputs: 1, inputsDigest: 'd1', detail: '1 finding(s)'}, 9200, 'r1'))
  seen.push(await runs.take('1.2.9', 'b', 'r1', 9300))
  seen.push(await runs.requeueInterrupted({router: 'r1', own: true, silentSeconds: 60}), 'requeued')
  seen.push(await runs.take('1.2.9', 'b', 'r1', 9400))
  seen.push(await runs.finish('1.2.9', 'b', {state: 'skipped', detail: 'no instance of the study matches', inputsDigest: 'd1'}, 9500, 'r1'))
  seen.push(await runs.finish('1.2.9', 'c', {state: 'failed', detail: 'timeout: killed'}, 9600))
  await look('settled')
  await runs.reschedule('1.2.9', 'a', 10_000)
  await runs.reschedule('1.2.9', 'a', 10_001)
  await look('rescheduled once')
  seen.push(await runs.takeNewRun('1.2.9', 'a', 'r1', 11_000))
  seen.push(await runs.takeNewRun('1.2.9', 'a', 'r2', 11_001), 'running: no new run')
  seen.push(await runs.finish('1.2.9', 'a', {state: 'done', outputs: ['2.25.2', '2.25.1'], inputs: 2, inputsDigest: 'd2'}, 11_100, 'r1'))
  seen.push(await runs.takeNewRun('1.2.9', 'd', 'r1', 12_000))
  seen.push([...(await runs.outputsOf('1.2.9'))])
  await look('by hand')
  seen.push(await store.prune(5000), await runs.forStudy('1.2.9'))
  return seen
}

/** A store as one router of several sees it: the processing table and its own heartbeat. */
interface SharingRouter {
  processing: ProcessingStore
  heartbeat(beat: ReturnType<typeof heartbeat>): unknown
}

describe('the processing store on SQLite and PostgreSQL', () => {
  let pg: TestPostgres
  let dir: string
  const stores: Array<{close(): unknown}> = []
  const open = async (router: string) => {
    const store = await PostgresLedgerStore.open(pg.url, {router})
    stores.push(store)
    return store
  }

  beforeAll(async () => {
    pg = await startTestPostgres()
    dir = await mkdtemp(path.join(os.tmpdir(), 'ddr-processing-store-'))
  }, 60_000)

  afterEach(async () => {
    for (const store of stores.splice(0)) await store.close()
    await pg.psql('DROP TABLE IF EXISTS studies, instances, study_claims, routers, processing, ddr_schema')
  })

  afterAll(async () => {
    await pg?.stop()
    if (dir) await rm(dir, {recursive: true, force: true})
  })

  it('the same sequence of schedule, due, take, finish, requeue and reschedule leaves the same rows in both', async () => {
    const sqlite = new SqliteLedgerStore(path.join(dir, 'contract.db'))
    stores.push(sqlite)
    const fromSqlite = await history(sqlite)
    expect(await history(await open('r1'))).toEqual(fromSqlite)
    // Spot checks of what both agree on.
    expect(fromSqlite[fromSqlite.indexOf('taken twice') - 1]).toBeUndefined()
    expect(fromSqlite[fromSqlite.indexOf('not its run') - 1]).toBe(false)
    expect(fromSqlite[fromSqlite.indexOf('running: no new run') - 1]).toBeUndefined()
    expect(fromSqlite.at(-1)).toEqual([])
  })

  it('one router takes a pending run, however many ask at once', async () => {
    const routers = await Promise.all(['r1', 'r2', 'r3', 'r4'].map((name) => open(name)))
    const studies = Array.from({length: 25}, (_, n) => `1.3.${n}`)
    for (const study of studies) await routers[0].processing.schedule(study, ['a', 'b'])
    const taken = await Promise.all(routers.flatMap((store, index) => studies.flatMap((study) => ['a', 'b'].map(async (module) => ((await store.processing.take(study, module, `r${index + 1}`)) === undefined ? [] : [`${study}/${module}`])))))
    const winners = taken.flat()
    expect(winners.sort()).toEqual(studies.flatMap((study) => [`${study}/a`, `${study}/b`]).sort())
    // By hand too: a run that runs is not started again by another router.
    expect(await routers[1].processing.takeNewRun('1.3.0', 'a', 'r2')).toBeUndefined()
  })

  it('requeues its own runs when it starts and those of a silent router, never a live router\'s running run; a run taken over cannot be finished by its old runner', async () => {
    await requeueScenario(await open('r1'), await open('r2'))
  }, 30_000)

  it('does the same on an SQLite file the workers of one ddr listen --workers share', async () => {
    const file = path.join(dir, 'shared.db')
    const [one, two] = ['r1', 'r2'].map((router) => new SqliteLedgerStore(file, {shared: {router}}))
    stores.push(one, two)
    await requeueScenario(one, two)
  }, 30_000)

  /** Two routers (or workers) on one store; r1 takes a run, r2 restarts, then r1 goes silent. */
  async function requeueScenario(one: SharingRouter, two: SharingRouter): Promise<void> {
    await one.processing.schedule('1.4.1', ['a', 'b'])
    await one.heartbeat(heartbeat('r1'))
    await two.heartbeat(heartbeat('r2'))
    expect(await one.processing.take('1.4.1', 'a', 'r1')).toMatchObject({runner: 'r1', state: 'running'})
    expect(await two.processing.take('1.4.1', 'b', 'r2')).toMatchObject({runner: 'r2', state: 'running'})

    // r2 restarts: its own run goes back to pending, r1's (alive) stays running.
    expect(await two.processing.requeueInterrupted({router: 'r2', own: true, silentSeconds: 2})).toBe(1)
    expect(await two.processing.get('1.4.1', 'a')).toMatchObject({state: 'running', runner: 'r1', attempts: 1})
    expect(await two.processing.get('1.4.1', 'b')).toMatchObject({state: 'pending', runner: null, attempts: 0})
    // r2 looking for silent routers while r1 beats: nothing.
    expect(await two.processing.requeueInterrupted({router: 'r2', own: false, silentSeconds: 2})).toBe(0)

    // r1 goes silent (no heartbeat for 2 s): its run is requeued, taken by r2; r1's late outcome is not recorded.
    await new Promise((resolve) => setTimeout(resolve, 2500))
    await two.heartbeat(heartbeat('r2'))
    expect(await two.processing.requeueInterrupted({router: 'r2', own: false, silentSeconds: 2})).toBe(1)
    expect(await two.processing.take('1.4.1', 'a', 'r2')).toMatchObject({runner: 'r2', attempts: 1})
    expect(await one.processing.finish('1.4.1', 'a', {state: 'done', outputs: ['2.25.9']}, Date.now(), 'r1')).toBe(false)
    expect(await two.processing.finish('1.4.1', 'a', {state: 'done', outputs: ['2.25.9']}, Date.now(), 'r2')).toBe(true)
    // A router never requeues its own runs while it runs them (own: false), even when its own heartbeat is late.
    expect(await two.processing.take('1.4.1', 'b', 'r2')).toBeDefined()
    await new Promise((resolve) => setTimeout(resolve, 2500))
    expect(await two.processing.requeueInterrupted({router: 'r2', own: false, silentSeconds: 2})).toBe(0)
    expect(await one.processing.requeueInterrupted({router: 'r1', own: false, silentSeconds: 2})).toBe(1)
  }
})
