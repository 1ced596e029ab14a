import {mkdtemp, rm} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import pg_ from 'pg'

import {RouterPresence, StudyClaims} from '../../../src/lib/ledger/cluster.js'
import {StudyLedger} from '../../../src/lib/ledger/ledger.js'
import {PostgresLedgerStore} from '../../../src/lib/ledger/postgres-store.js'
import {SqliteLedgerStore} from '../../../src/lib/ledger/sqlite-store.js'
import type {LedgerStore} from '../../../src/lib/ledger/store.js'
import type {InstanceOutcome, InstanceReceipt} from '../../../src/lib/ledger/types.js'
import {Logger} from '../../../src/lib/output/logger.js'
import {type TestPostgres, startTestPostgres} from '../../helpers/postgres.js'
import {waitFor} from '../../helpers/wait.js'

const CT = '1.2.840.10008.5.1.4.1.1.2'

function receipt(study: string, n: number, overrides: Partial<InstanceReceipt> = {}): InstanceReceipt {
  return {sopInstanceUid: `${study}.${n}`, sopClassUid: CT, studyInstanceUid: study, seriesInstanceUid: `${study}.100`, patientId: 'P1', accessionNumber: 'A1', modality: 'CT', studyDate: '20261201', callingAeTitle: 'CT1', remoteAddress: '10.0.0.5:4000', bytes: 1000, receivedAt: 1_000_000 + n, ...overrides}
}

/** The same history of receipts, outcomes, completion and amendments, written to any store. */
async function history(store: LedgerStore): Promise<string[]> {
  const amended: string[] = []
  amended.push(...(await store.received([receipt('1.2.1', 1, {receivedAt: 1000}), receipt('1.2.1', 2, {receivedAt: 2000, modality: 'SR', seriesInstanceUid: '1.2.1.200'}), receipt('1.2.2', 1, {receivedAt: 3000, patientId: 'P2'})])))
  const outcomes: InstanceOutcome[] = [
    {sopInstanceUid: '1.2.1.1', status: 'stored', backend: 'orthanc1', at: 5000, kept: {file: '/r/1', offset: 0, length: 10}},
    {sopInstanceUid: '1.2.1.2', status: 'dead-letter', at: 6000, detail: 'refused'},
    {sopInstanceUid: '1.2.2.1', status: 'stored', backend: 'orthanc2', at: 6500},
  ]
  await store.outcomes(outcomes)
  await store.markStable(['1.2.1', '1.2.2'], 4000, 7000)
  // A late instance re-opens 1.2.1 (an amendment); a processing output re-opens 1.2.2 without being one.
  amended.push(...(await store.received([receipt('1.2.1', 3, {receivedAt: 8000}), receipt('1.2.1', 4, {receivedAt: 8100}), receipt('1.2.2', 9, {receivedAt: 8200, derived: true})])))
  await store.setReceipt('1.2.2', {state: 'verified', expected: 1, found: 1, missing: [], repaired: 0, checkedAt: '2026-12-01T00:00:00.000Z'})
  // Recovered instances after a restart: a known one is left alone, an unknown one recorded.
  await store.received([receipt('1.2.1', 1, {receivedAt: 9999, callingAeTitle: 'OTHER'}), receipt('1.2.3', 1, {receivedAt: 9000})], true)
  return amended
}

describe('the study ledger in PostgreSQL', () => {
  let pg: TestPostgres
  let dir: string
  const stores: Array<{close(): unknown}> = []
  const open = async (router: string, timeoutMs?: number) => {
    const store = await PostgresLedgerStore.open(pg.url, {router, timeoutMs})
    stores.push(store)
    return store
  }

  beforeAll(async () => {
    pg = await startTestPostgres()
    dir = await mkdtemp(path.join(os.tmpdir(), 'ddr-pg-ledger-'))
  }, 60_000)

  afterEach(async () => {
    for (const store of stores.splice(0)) await store.close()
    await pg.psql('DROP TABLE IF EXISTS studies, instances, study_claims, routers, processing, ddr_schema')
  })

  afterAll(async () => {
    await pg?.stop()
    if (dir) await rm(dir, {recursive: true, force: true})
  })

  it('records what the SQLite ledger records: studies, instances, outcomes, completion, amendments, receipts, recovery', async () => {
    const sqlite = new SqliteLedgerStore(path.join(dir, 'parity.db'))
    // Three routers start at once against an empty database: the tables are created once.
    const [store] = await Promise.all([open('router-1'), open('router-2'), open('router-3')])
    expect(await history(store)).toEqual(await history(sqlite))
    for (const uid of ['1.2.1', '1.2.2', '1.2.3']) {
      const [a, b] = [await store.study(uid), sqlite.study(uid)]
      expect(a).toBeDefined()
      expect(a).toEqual(b)
    }

    expect(await store.studies()).toEqual(sqlite.studies())
    expect(await store.studies({state: 'receiving', patientId: 'P1', since: 8000, limit: 1})).toEqual(sqlite.studies({state: 'receiving', patientId: 'P1', since: 8000, limit: 1}))
    expect(await store.counts()).toEqual(sqlite.counts())
    expect(await store.storedByBackend('1.2.1')).toEqual(sqlite.storedByBackend('1.2.1'))
    expect(await store.arrivalGaps(0)).toEqual(expect.arrayContaining(sqlite.arrivalGaps(0)))
    expect(await store.kept('1.2.1.1')).toEqual(sqlite.kept('1.2.1.1'))
    expect(await store.receiving()).toEqual(expect.arrayContaining(sqlite.receiving()))
    expect(await store.prune(8050)).toBe(sqlite.prune(8050))
    expect(await store.studies()).toEqual(sqlite.studies())
    sqlite.close()
  })

  it('gives a study one home however many routers claim it at once, and answers the same to latecomers', async () => {
    const routers = await Promise.all(['router-1', 'router-2', 'router-3'].map((name) => open(name)))
    for (let study = 0; study < 20; study++) {
      const uid = `1.9.${study}`
      const claims = await Promise.all(routers.map((store, i) => store.claim(uid, `orthanc${i + 1}`, `router-${i + 1}`)))
      expect(claims.filter((c) => c.won)).toHaveLength(1)
      const winner = claims.find((c) => c.won)!
      for (const claim of claims) expect(claim).toMatchObject({backend: winner.backend, router: winner.router})
      expect(await routers[0].claim(uid, 'orthanc9', 'router-9')).toEqual({backend: winner.backend, router: winner.router, won: false})
    }
  })

  it('keeps records while PostgreSQL is down, routes on, and writes them when it is back', async () => {
    const logs: string[] = []
    const ledger = new StudyLedger(await open('router-1', 1000), {stableSeconds: 60, keepDays: 30, logger: new Logger({write: (line) => logs.push(line)}), tickMs: 100})
    try {
      // Arrived now: the ledger's pruning (keepDays) leaves it alone.
      ledger.received(receipt('1.3.1', 1, {receivedAt: Date.now()}))
      await ledger.outcome({sopInstanceUid: '1.3.1.1', status: 'stored', backend: 'orthanc1', at: Date.now()})
      await pg.halt('immediate')
      ledger.received(receipt('1.3.1', 2, {receivedAt: Date.now()}))
      let written = false
      const outcome = ledger.outcome({sopInstanceUid: '1.3.1.2', status: 'stored', backend: 'orthanc1', at: Date.now()}).then(() => (written = true))
      await waitFor('the outage to be noticed', () => logs.some((l) => l.includes('ledger-unreachable')), 10_000)
      await new Promise((resolve) => setTimeout(resolve, 1500))
      // The spool must keep the instance until its outcome is written; new instances are still taken.
      expect(written).toBe(false)
      expect(ledger.refusal()).toBeUndefined()
      expect(ledger.unreachable()).toBeDefined()
      await pg.resume()
      await outcome
      await waitFor('the ledger to say it is back', () => logs.some((l) => l.includes('ledger-reachable')), 10_000)
      expect(ledger.unreachable()).toBeUndefined()
      const study = await ledger.store.study('1.3.1')
      expect(study?.instanceList.map((i) => [i.sopInstanceUid, i.status])).toEqual([
        ['1.3.1.1', 'stored'],
        ['1.3.1.2', 'stored'],
      ])
    } finally {
      await ledger.close()
    }
  }, 60_000)

  it('routes a new study on its own choice when the database stalls, then reconciles, following a claim made meanwhile', async () => {
    const logs: string[] = []
    const logger = new Logger({write: (line) => logs.push(line)})
    const [one, two] = [await open('router-1', 1000), await open('router-2', 1000)]
    const conflicts: Array<[string, string]> = []
    const claims = new StudyClaims(one, {router: 'router-1', timeoutMs: 300, logger, reconcileMs: 60_000, onConflict: (study, backend) => conflicts.push([study, backend])})
    try {
      expect(await claims.home('1.4.1', 'orthanc1')).toEqual({backend: 'orthanc1', confirmed: true, router: 'router-1'})
      pg.freeze()
      const started = Date.now()
      expect(await claims.home('1.4.2', 'orthanc1')).toEqual({backend: 'orthanc1', confirmed: false})
      expect(await claims.home('1.4.3', 'orthanc1')).toEqual({backend: 'orthanc1', confirmed: false})
      expect(Date.now() - started).toBeLessThan(2000)
      expect(claims.pending).toBe(2)
      pg.thaw()
      // Router 2 claimed 1.4.3 elsewhere while router 1 could not reach the database.
      await two.claim('1.4.3', 'orthanc2', 'router-2')
      await waitFor('the reconciliation', async () => {
        await claims.reconcile()
        return claims.pending === 0
      }, 15_000)
      expect(conflicts).toEqual([['1.4.3', 'orthanc2']])
      expect(logs.some((l) => l.includes('study-claim-reconciled') && l.includes('1.4.2'))).toBe(true)
      expect(logs.some((l) => l.includes('study-claim-conflict') && l.includes('1.4.3'))).toBe(true)
      expect(await two.claim('1.4.2', 'orthanc2', 'router-2')).toMatchObject({backend: 'orthanc1', router: 'router-1'})
    } finally {
      pg.thaw()
      claims.close()
    }
  }, 60_000)

  it('a router opens a ledger other routers are writing without DDL (its locks deadlocked with a prune)', async () => {
    await open('router-1')
    // Another router's transaction is under way on every table (as a prune's deletes are).
    const busy = new pg_.Client({connectionString: pg.url})
    await busy.connect()
    try {
      await busy.query('BEGIN')
      for (const table of ['instances', 'studies', 'study_claims', 'processing']) await busy.query(`DELETE FROM ${table} WHERE false`)
      const started = Date.now()
      await open('router-2', 2000)
      expect(Date.now() - started).toBeLessThan(2000)
    } finally {
      await busy.query('ROLLBACK')
      await busy.end()
    }
  })

  it('lists every router with its last heartbeat', async () => {
    const logger = new Logger({write: () => {}})
    const [one, two] = [await open('router-1'), await open('router-2')]
    const status = {healthy: true, reasons: [], received: 5, routed: 4, failed: 0, spoolDepth: 1}
    const presences = [
      new RouterPresence(one, () => ({name: 'router-1', address: '127.0.0.1:1', version: '1.0', startedAt: 1000, status}), {logger}),
      new RouterPresence(two, () => ({name: 'router-2', address: '127.0.0.1:2', version: '1.0', startedAt: 2000, status: {...status, healthy: false, reasons: ['draining']}}), {logger}),
    ]
    try {
      await Promise.all(presences.map((p) => p.beat()))
      await presences[0].beat()
      const routers = presences[0].routers()
      expect(routers.map((r) => [r.name, r.address, r.status.healthy])).toEqual([
        ['router-1', '127.0.0.1:1', true],
        ['router-2', '127.0.0.1:2', false],
      ])
      for (const r of routers) expect(r.ageSeconds).toBeLessThan(5)
    } finally {
      for (const p of presences) p.close()
    }
  })
})
