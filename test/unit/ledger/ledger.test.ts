import {mkdtemp, rm} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import Database from 'better-sqlite3'

import {StudyLedger} from '../../../src/lib/ledger/ledger.js'
import {arrivalGaps, formatGaps, openStoredInstances} from '../../../src/lib/ledger/query.js'
import {SqliteLedgerStore} from '../../../src/lib/ledger/sqlite-store.js'
import type {InstanceReceipt} from '../../../src/lib/ledger/types.js'
import {Logger} from '../../../src/lib/output/logger.js'
import {waitFor} from '../../helpers/wait.js'

const CT = '1.2.840.10008.5.1.4.1.1.2'

function receipt(study: string, n: number, overrides: Partial<InstanceReceipt> = {}): InstanceReceipt {
  return {sopInstanceUid: `${study}.${n}`, sopClassUid: CT, studyInstanceUid: study, seriesInstanceUid: `${study}.100`, patientId: 'P1', accessionNumber: 'A1', modality: 'CT', studyDate: '20261201', callingAeTitle: 'CT1', remoteAddress: '10.0.0.5:4000', bytes: 1000, receivedAt: Date.now(), ...overrides}
}

describe('the study ledger (SQLite)', () => {
  let dir: string
  let file: string

  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'ddr-ledger-'))
    file = path.join(dir, 'ledger.db')
  })

  afterEach(async () => {
    await rm(dir, {recursive: true, force: true})
  })

  it('records instances per study, their outcomes, and lists studies newest first', () => {
    const store = new SqliteLedgerStore(file)
    store.received([receipt('1.2.1', 1, {receivedAt: 1000}), receipt('1.2.1', 2, {receivedAt: 2000, modality: 'SR', seriesInstanceUid: '1.2.1.200'}), receipt('1.2.2', 1, {receivedAt: 3000, patientId: 'P2'})])
    store.outcomes([
      {sopInstanceUid: '1.2.1.1', status: 'stored', backend: 'orthanc1', at: 5000},
      {sopInstanceUid: '1.2.1.2', status: 'dead-letter', at: 6000, detail: 'refused'},
    ])
    expect(store.studies().map((s) => s.studyInstanceUid)).toEqual(['1.2.2', '1.2.1'])
    expect(store.summary('1.2.1')).toMatchObject({
      patientId: 'P1',
      accessionNumber: 'A1',
      modalities: ['CT', 'SR'],
      instances: 2,
      bytes: 2000,
      backend: 'orthanc1',
      state: 'receiving',
      delivered: {queued: 0, stored: 1, deadLetter: 1},
      firstReceived: new Date(1000).toISOString(),
      lastReceived: new Date(2000).toISOString(),
    })
    expect(store.studies({patientId: 'P2'}).map((s) => s.studyInstanceUid)).toEqual(['1.2.2'])
    expect(store.studies({since: 2500}).map((s) => s.studyInstanceUid)).toEqual(['1.2.2'])
    const detail = store.study('1.2.1')!
    expect(detail.series).toEqual([
      {seriesInstanceUid: '1.2.1.100', modality: 'CT', instances: 1},
      {seriesInstanceUid: '1.2.1.200', modality: 'SR', instances: 1},
    ])
    expect(detail.instanceList[1]).toMatchObject({sopInstanceUid: '1.2.1.2', status: 'dead-letter', detail: 'refused', callingAeTitle: 'CT1', remoteAddress: '10.0.0.5:4000'})
    store.close()
  })

  it('marks a quiet study stable, re-opens it for a late instance (an amendment), and recovery does not undo what it knows', () => {
    const store = new SqliteLedgerStore(file)
    store.received([receipt('1.2.3', 1, {receivedAt: 1000})])
    expect(store.markStable(['1.2.3'], 500, 2000)).toEqual([]) // an instance arrived after the quiet point
    expect(store.markStable(['1.2.3'], 1500, 2000).map((s) => s.state)).toEqual(['stable'])
    expect(store.counts()).toMatchObject({receiving: 0, stable: 1, receipts: {unchecked: 1}})
    store.outcomes([{sopInstanceUid: '1.2.3.1', status: 'stored', backend: 'b', at: 1500}])
    // Read back from the spool after a restart: known instances keep their outcome.
    store.received([receipt('1.2.3', 1, {receivedAt: 1000})], true)
    expect(store.summary('1.2.3')).toMatchObject({state: 'stable', delivered: {stored: 1, queued: 0}})
    expect(store.received([receipt('1.2.3', 2, {receivedAt: 3000})])).toEqual(['1.2.3'])
    expect(store.summary('1.2.3')).toMatchObject({state: 'receiving', amendments: 1, instances: 2, stableAt: null})
    expect(store.study('1.2.3')!.instanceList.map((i) => i.amendment)).toEqual([false, true])
    store.close()
  })

  it('prunes studies older than keepDays and opens read-only for the commands', () => {
    const store = new SqliteLedgerStore(file)
    store.received([receipt('1.2.4', 1, {receivedAt: 1000}), receipt('1.2.5', 1, {receivedAt: 10_000})])
    expect(store.prune(5000)).toBe(1)
    const reader = new SqliteLedgerStore(file, {readonly: true})
    expect(reader.studies().map((s) => s.studyInstanceUid)).toEqual(['1.2.5'])
    expect(() => reader.received([receipt('1.2.6', 1)])).toThrow()
    reader.close()
    store.close()
    expect(() => new SqliteLedgerStore(path.join(dir, 'missing.db'), {readonly: true})).toThrow(expect.objectContaining({code: 'CONFIG_NOT_FOUND'}))
  })

  it('measures the pauses inside studies per sender and modality, and suggests a stable timer that waits them out', async () => {
    const store = new SqliteLedgerStore(file)
    // CT1 pauses 1, 2 and 9 s inside study 1.3.1; MR1 sends 1.3.2 in one go, then an amendment 40 s later.
    store.received([0, 1000, 3000, 12_000].map((at, n) => receipt('1.3.1', n, {receivedAt: 100_000 + at})))
    store.received([0, 500].map((at, n) => receipt('1.3.2', n, {receivedAt: 100_000 + at, callingAeTitle: 'MR1', modality: 'MR'})))
    store.markStable(['1.3.2'], 200_000, 200_000)
    store.received([receipt('1.3.2', 9, {receivedAt: 140_500, callingAeTitle: 'MR1', modality: 'MR'})])
    store.close()
    const result = await arrivalGaps({ledger: {url: `sqlite:${file}`}, spool: {dir}, studies: {stableSeconds: 60}} as never, 0)
    expect(result.senders).toEqual([
      {callingAeTitle: 'CT1', modality: 'CT', studies: 1, gaps: {count: 3, p50: 2, p95: 9, max: 9}, amendments: {count: 0, longestGap: null}, suggestedStableSeconds: 15},
      {callingAeTitle: 'MR1', modality: 'MR', studies: 1, gaps: {count: 1, p50: 0.5, p95: 0.5, max: 0.5}, amendments: {count: 1, longestGap: 40}, suggestedStableSeconds: 5},
    ])
    expect(formatGaps(result)).toMatch(/^CT1\s+CT\s+1\s+2\.0 s\s+9\.0 s\s+9\.0 s\s+0\s+15 s$/m)
  })

  it('StudyLedger commits what arrived within a few milliseconds together, logs a study stable after stableSeconds, and an amendment', async () => {
    const lines: string[] = []
    const ledger = new StudyLedger(new SqliteLedgerStore(file), {stableSeconds: 1, keepDays: 30, tickMs: 50, logger: new Logger({write: (line) => lines.push(line)})})
    ledger.received(receipt('1.2.7', 1))
    ledger.received(receipt('1.2.7', 2))
    // Committed together: another connection sees both at once.
    const reader = new SqliteLedgerStore(file, {readonly: true})
    await waitFor('the commit', () => reader.summary('1.2.7')?.instances === 2, 2000, 2)
    expect(reader.summary('1.2.7')).toMatchObject({instances: 2, state: 'receiving'})
    await waitFor('the study to become stable', () => reader.summary('1.2.7')?.state === 'stable', 5000)
    expect(lines.some((l) => l.includes('study-stable') && l.includes('1.2.7'))).toBe(true)
    ledger.received(receipt('1.2.7', 3))
    await waitFor('the amendment', () => lines.some((l) => l.includes('study-amended') && l.includes('1.2.7')), 2000)
    expect(reader.summary('1.2.7')).toMatchObject({state: 'receiving', amendments: 1})
    reader.close()
    ledger.close()
  })

  it('a study whose count tags say it is whole (every instance with ImagesInAcquisition, every acquisition complete) is stable after the short quiet, not stableSeconds', async () => {
    const lines: string[] = []
    const ledger = new StudyLedger(new SqliteLedgerStore(file), {stableSeconds: 60, countedQuietMs: 200, keepDays: 30, tickMs: 50, logger: new Logger({write: (line) => lines.push(line)})})
    const reader = new SqliteLedgerStore(file, {readonly: true})
    // Whole: two acquisitions of 2 images each.
    for (const n of [1, 2]) ledger.received(receipt('1.2.8', n, {acquisitionNumber: '1', imagesInAcquisition: 2}))
    for (const n of [3, 4]) ledger.received(receipt('1.2.8', n, {acquisitionNumber: '2', imagesInAcquisition: 2}))
    // One image short of its count; and a whole acquisition beside an instance without counts.
    for (const n of [1, 2]) ledger.received(receipt('1.2.9', n, {imagesInAcquisition: 3}))
    ledger.received(receipt('1.2.10', 1, {imagesInAcquisition: 1}))
    ledger.received(receipt('1.2.10', 2, {seriesInstanceUid: '1.2.10.200'}))
    await waitFor('the counted study to become stable', () => reader.summary('1.2.8')?.state === 'stable', 3000)
    expect(lines.find((l) => l.includes('study-stable') && l.includes('1.2.8'))).toContain('every acquisition is whole by ImagesInAcquisition (2 acquisition(s))')
    await new Promise((resolve) => setTimeout(resolve, 400))
    expect(reader.summary('1.2.9')?.state).toBe('receiving')
    expect(reader.summary('1.2.10')?.state).toBe('receiving')
    reader.close()
    ledger.close()
  })

  it("tells who follows it when a study becomes stable (after it is recorded so), and an instance processing made from a study re-opens it without being an amendment", async () => {
    const ledger = new StudyLedger(new SqliteLedgerStore(file), {stableSeconds: 1, keepDays: 30, tickMs: 50, logger: new Logger({write: () => {}})})
    const stable: Array<{uid: string; stateInStore?: string; amendments: number}> = []
    ledger.on('stable', (study) => stable.push({uid: study.studyInstanceUid, stateInStore: (ledger.store as SqliteLedgerStore).summary(study.studyInstanceUid)?.state, amendments: study.amendments}))
    ledger.received(receipt('1.2.8', 1))
    await waitFor('stable', () => stable.length === 1, 5000)
    expect(stable).toEqual([{uid: '1.2.8', stateInStore: 'stable', amendments: 0}])
    ledger.received(receipt('1.2.8', 2, {derived: true, callingAeTitle: 'DDR'}))
    await waitFor('stable again', () => stable.length === 2, 5000)
    expect(stable[1]).toEqual({uid: '1.2.8', stateInStore: 'stable', amendments: 0})
    expect((ledger.store as SqliteLedgerStore).study('1.2.8')!.instanceList.map((i) => [i.callingAeTitle, i.amendment])).toEqual([
      ['CT1', false],
      ['DDR', false],
    ])
    ledger.close()
  })

  it('keeps which processing module ran on which study: scheduled once, outputs kept across runs, shown with the study, pruned with it', () => {
    const store = new SqliteLedgerStore(file)
    store.received([receipt('1.2.9', 1, {receivedAt: 1000})])
    const runs = store.processing
    runs.schedule('1.2.9', ['a', 'b'], 1000)
    runs.schedule('1.2.9', ['a'], 2000)
    expect(runs.due(5000, 10).map((r) => [r.module, r.state, r.run, r.attempts])).toEqual([
      ['a', 'pending', 1, 0],
      ['b', 'pending', 1, 0],
    ])
    runs.take('1.2.9', 'a', 'r1')
    runs.finish('1.2.9', 'a', {state: 'pending', detail: 'exit: exited with code 1', nextAttemptAt: 9000})
    expect(runs.due(5000, 10).map((r) => r.module)).toEqual(['b'])
    runs.take('1.2.9', 'a', 'r1')
    runs.finish('1.2.9', 'a', {state: 'done', outputs: ['2.25.1'], inputs: 1, inputsDigest: 'd1'})
    runs.take('1.2.9', 'b', 'r1')
    expect(runs.requeueInterrupted({router: 'r1', own: true, silentSeconds: 15})).toBe(1)
    expect(runs.get('1.2.9', 'b')).toMatchObject({state: 'pending', attempts: 0})
    runs.finish('1.2.9', 'b', {state: 'skipped', detail: 'no instance of the study matches'})
    runs.reschedule('1.2.9', 'a')
    expect(runs.get('1.2.9', 'a')).toMatchObject({state: 'pending', run: 2, attempts: 0, detail: null, outputs: ['2.25.1']})
    runs.take('1.2.9', 'a', 'r1')
    runs.finish('1.2.9', 'a', {state: 'failed', detail: 'timeout: killed', outputs: ['2.25.2']})
    expect(runs.outputsOf('1.2.9')).toEqual(new Set(['2.25.1', '2.25.2']))
    expect(store.summary('1.2.9')!.processing).toEqual([{module: 'a', state: 'failed', attempts: 1, detail: 'timeout: killed'}])
    expect(runs.counts()).toEqual([{module: 'a', state: 'failed', runs: 1}])
    const reader = new SqliteLedgerStore(file, {readonly: true})
    expect(reader.studies()[0].processing).toEqual([{module: 'a', state: 'failed', attempts: 1, detail: 'timeout: killed'}])
    reader.close()
    expect(store.prune(5000)).toBe(1)
    expect(runs.forStudy('1.2.9')).toEqual([])
    store.close()
  })

  it("says what each backend stored, read-only beside the router, for ddr find and ddr get to answer for folder backends", () => {
    const store = new SqliteLedgerStore(file)
    store.received([receipt('1.2.5', 1), receipt('1.2.5', 2), receipt('1.2.6', 1, {patientId: 'P2', studyDate: '20250101'})])
    store.outcomes([
      {sopInstanceUid: '1.2.5.1', status: 'stored', backend: 'archive', at: 1},
      {sopInstanceUid: '1.2.5.2', status: 'dead-letter', at: 1},
      {sopInstanceUid: '1.2.6.1', status: 'stored', backend: 'archive', at: 1},
    ])
    const config = {ledger: {url: `sqlite:${file}`}, spool: {dir}}
    expect(openStoredInstances({...config, backends: [{name: 'pacs', type: 'dimse'}]} as never)).toBeUndefined()
    const stored = openStoredInstances({...config, backends: [{name: 'archive', type: 'folder', path: dir}]} as never)!
    try {
      expect(stored.storedOn('archive', {}).map((i) => i.sopInstanceUid).sort()).toEqual(['1.2.5.1', '1.2.6.1'])
      expect(stored.storedOn('archive', {patientId: 'P*', studyDate: '20260101-'})).toEqual([{sopInstanceUid: '1.2.5.1', seriesInstanceUid: '1.2.5.100', studyInstanceUid: '1.2.5', patientId: 'P1', sopClassUid: CT, modality: 'CT'}])
      expect(stored.storedOn('archive', {studyInstanceUids: ['1.2.6'], sopInstanceUids: ['1.2.6.1', '1.2.5.1']}).map((i) => i.sopInstanceUid)).toEqual(['1.2.6.1'])
    } finally {
      stored.close()
      store.close()
    }

    expect(openStoredInstances({ledger: {url: `sqlite:${path.join(dir, 'none.db')}`}, spool: {dir}, backends: [{name: 'archive', type: 'folder', path: dir}]} as never)).toBeUndefined()
  })

  it('reads a ledger written before the processing table existed', () => {
    const old = new Database(file)
    old.exec(`CREATE TABLE studies (study_instance_uid TEXT PRIMARY KEY, patient_id TEXT, accession_number TEXT, study_date TEXT, first_received INTEGER NOT NULL, last_received INTEGER NOT NULL, state TEXT NOT NULL, stable_at INTEGER, amendments INTEGER NOT NULL DEFAULT 0, receipt TEXT) WITHOUT ROWID;
      CREATE TABLE instances (sop_instance_uid TEXT PRIMARY KEY, study_instance_uid TEXT NOT NULL, series_instance_uid TEXT, sop_class_uid TEXT NOT NULL, modality TEXT, bytes INTEGER NOT NULL, calling_ae TEXT NOT NULL, remote_address TEXT, received_at INTEGER NOT NULL, status TEXT NOT NULL DEFAULT 'queued', backend TEXT, delivered_at INTEGER, detail TEXT, amendment INTEGER NOT NULL DEFAULT 0, kept TEXT) WITHOUT ROWID;
      INSERT INTO studies VALUES ('1.2.10', 'P', NULL, NULL, 1, 1, 'stable', 1, 0, NULL);
      PRAGMA user_version = 1;`)
    old.close()
    const reader = new SqliteLedgerStore(file, {readonly: true})
    expect(reader.studies()).toMatchObject([{studyInstanceUid: '1.2.10', processing: []}])
    reader.close()
    const writer = new SqliteLedgerStore(file)
    expect(writer.summary('1.2.10')!.processing).toEqual([])
    writer.close()
  })
})
