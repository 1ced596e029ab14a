import {spawn} from 'node:child_process'
import {mkdtemp, rm} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import Database from 'better-sqlite3'

import {StudyLedger} from '../../../src/lib/ledger/ledger.js'
import {SqliteLedgerStore} from '../../../src/lib/ledger/sqlite-store.js'
import type {InstanceReceipt} from '../../../src/lib/ledger/types.js'
import {Logger} from '../../../src/lib/output/logger.js'
import {repoRoot} from '../../helpers/compiled-cli.js'
import {waitFor} from '../../helpers/wait.js'

const CT = '1.2.840.10008.5.1.4.1.1.2'
const STUDIES = 20

function receipt(study: string, n: number): InstanceReceipt {
  return {sopInstanceUid: `${study}.${n}`, sopClassUid: CT, studyInstanceUid: study, seriesInstanceUid: `${study}.100`, patientId: 'P1', modality: 'CT', callingAeTitle: 'CT1', bytes: 1000, receivedAt: Date.now()}
}

/**
 * One process of a shared SQLite ledger (the compiled store, as a worker of `ddr listen --workers`
 * opens it): waits for "go" on stdin, claims the studies for its own backend as fast as it can,
 * heartbeats, and prints every claim's answer as JSON.
 */
const CLAIMER = `
import {SqliteLedgerStore} from ${JSON.stringify(path.join(repoRoot, 'dist/lib/ledger/sqlite-store.js'))}
const [file, router, backend, count] = process.argv.slice(1)
const store = new SqliteLedgerStore(file, {shared: {router}})
process.stdout.write('ready\\n')
process.stdin.once('data', async () => {
  const claims = []
  for (let i = 0; i < Number(count); i++) claims.push(await store.claim('1.2.9.' + i, backend, router))
  await store.heartbeat({name: router, address: '127.0.0.1:1', version: 'test', startedAt: Date.now(), status: {healthy: true, reasons: [], received: 0, routed: 0, failed: 0, spoolDepth: 0}})
  process.stdout.write(JSON.stringify(claims) + '\\n')
  store.close()
})
`

function claimer(file: string, router: string, backend: string) {
  const child = spawn(process.execPath, ['--input-type=module', '-e', CLAIMER, file, router, backend, String(STUDIES)], {stdio: ['pipe', 'pipe', 'pipe']})
  let out = ''
  let err = ''
  child.stdout.setEncoding('utf8').on('data', (chunk: string) => (out += chunk))
  child.stderr.setEncoding('utf8').on('data', (chunk: string) => (err += chunk))
  const done = new Promise<Array<{backend: string; router: string; won: boolean}>>((resolve, reject) =>
    child.on('exit', (code) => (code === 0 ? resolve(JSON.parse(out.split('\n')[1])) : reject(new Error(`${router} exited ${code}: ${err}`)))),
  )
  return {child, ready: () => out.startsWith('ready'), done}
}

describe('one SQLite ledger shared by several processes (ddr listen --workers)', () => {
  let dir: string
  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'ddr-shared-ledger-'))
  })
  afterEach(async () => {
    await rm(dir, {recursive: true, force: true})
  })

  it('keeps claims and heartbeats only when shared: one router pays nothing for them', () => {
    const single = new SqliteLedgerStore(path.join(dir, 'single.db'))
    expect(single.claims).toBeUndefined()
    expect(single.registry).toBeUndefined()
    single.close()
    const shared = new SqliteLedgerStore(path.join(dir, 'shared.db'), {shared: {router: 'r-w1'}})
    expect(shared.claims).toBe(shared)
    expect(shared.registry).toBe(shared)
    shared.close()
  })

  it('gives each of 20 studies one home when two processes claim them all at once', async () => {
    const file = path.join(dir, 'ledger.db')
    new SqliteLedgerStore(file, {shared: {router: 'primary'}}).close()
    const one = claimer(file, 'r-w1', 'alpha')
    const two = claimer(file, 'r-w2', 'beta')
    await waitFor('both claimers ready', () => one.ready() && two.ready(), 20_000)
    one.child.stdin.end('go\n')
    two.child.stdin.end('go\n')
    const [a, b] = await Promise.all([one.done, two.done])
    for (let i = 0; i < STUDIES; i++) {
      // Exactly one won; both were told the same home.
      expect([a[i].won, b[i].won].filter(Boolean)).toHaveLength(1)
      expect(a[i]).toMatchObject({backend: b[i].backend, router: b[i].router})
    }

    const db = new Database(file, {readonly: true})
    try {
      expect(db.prepare('SELECT COUNT(*) AS n FROM study_claims').get()).toEqual({n: STUDIES})
      expect(db.prepare('SELECT name FROM routers ORDER BY name').all()).toEqual([{name: 'r-w1'}, {name: 'r-w2'}])
    } finally {
      db.close()
    }

    const store = new SqliteLedgerStore(file, {shared: {router: 'r-w1'}})
    try {
      expect((await store.routers()).map((r) => r.name)).toEqual(['r-w1', 'r-w2'])
    } finally {
      store.close()
    }
  }, 60_000)

  it('writes every record once another process lets go of a write lock held longer than busy_timeout', async () => {
    const file = path.join(dir, 'ledger.db')
    const lines: string[] = []
    const ledger = new StudyLedger(new SqliteLedgerStore(file, {shared: {router: 'r-w1'}}), {stableSeconds: 600, keepDays: 1, logger: new Logger({write: (line) => lines.push(line)})})
    // Another worker's connection holds the write lock for 3 s (busy_timeout is 2 s).
    const other = new Database(file)
    other.exec('BEGIN IMMEDIATE')
    for (let n = 0; n < 10; n++) ledger.received(receipt('1.2.8', n))
    const outcome = ledger.outcome({sopInstanceUid: '1.2.8.0', status: 'stored', backend: 'alpha', at: Date.now()})
    let outcomeWritten = false
    void outcome.then(() => (outcomeWritten = true))
    await new Promise((resolve) => setTimeout(resolve, 3000))
    expect(outcomeWritten).toBe(false)
    other.exec('COMMIT')
    other.close()
    await outcome
    await ledger.close()
    expect(lines.some((line) => line.includes('ledger-busy'))).toBe(true)
    expect(lines.filter((line) => line.includes('ledger-failed'))).toEqual([])
    const db = new Database(file, {readonly: true})
    try {
      expect(db.prepare("SELECT COUNT(*) AS n, SUM(status = 'stored') AS stored, COUNT(DISTINCT router) AS routers FROM instances WHERE study_instance_uid = '1.2.8'").get()).toEqual({n: 10, stored: 1, routers: 1})
    } finally {
      db.close()
    }
  }, 30_000)
})
