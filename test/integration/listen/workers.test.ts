import type {ChildProcessWithoutNullStreams} from 'node:child_process'
import {copyFile, mkdir, mkdtemp, readFile, readdir, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import Database from 'better-sqlite3'

import {runCompiledCli, spawnCompiledCli} from '../../helpers/compiled-cli.js'
import {type SyntheticInstance, writeSyntheticStudies} from '../../helpers/datasets.js'
import {storescu} from '../../helpers/dcmtk.js'
import {fixturePath, goodFixtures} from '../../helpers/fixtures.js'
import {type TestOrthanc, startTestOrthanc} from '../../helpers/orthanc.js'
import {freePort} from '../../helpers/ports.js'
import {waitFor} from '../../helpers/wait.js'

const AE = 'DDR_WORKERS'
const SENDERS_PER_STUDY = 3
const TOKEN = 'workers-test-token-0123456789'

interface WorkerEntry {
  worker: number
  pid: number
  statusPort: number
  router?: string
  healthy?: boolean
  status?: {counters: {received: number}; spool: {depth: number} | null}
}

interface PrimaryStatus {
  counters: {received: number; routed: number}
  spool: {depth: number; deadLetters: number}
  workers: {expected: number; running: number; entries: WorkerEntry[]}
}

/**
 * `ddr listen --workers 2` (the compiled CLI) in front of two Orthancs: one DICOM port, one spool
 * folder per worker, one SQLite ledger with study claims, the primary's status port
 * (docs/cluster.md, "Several cores on one host").
 */
describe('ddr listen --workers 2', () => {
  let orthancs: TestOrthanc[]
  let dir: string
  let spoolDir: string
  let configFile: string
  let port: number
  let statusPort: number
  let primary: ChildProcessWithoutNullStreams
  const log: string[] = []
  let batch = 0
  const adopted = goodFixtures.find((entry) => entry.transferSyntaxUid === '1.2.840.10008.1.2.1') ?? goodFixtures[0]

  const url = (pathname: string) => `http://127.0.0.1:${statusPort}${pathname}`
  const status = async () => (await (await fetch(url('/status'))).json()) as PrimaryStatus

  async function sendStudies(count: number): Promise<{studies: Map<string, SyntheticInstance[]>; codes: number[]}> {
    batch++
    // Each of a study's three senders sends a series of its own.
    const instances = await writeSyntheticStudies(path.join(dir, `batch-${batch}`), {studies: count, instancesPerStudy: 3 * SENDERS_PER_STUDY, pixelBytes: 2048, prefix: `W${batch}`})
    const studies = new Map<string, SyntheticInstance[]>()
    for (const instance of instances) studies.set(instance.studyInstanceUid, [...(studies.get(instance.studyInstanceUid) ?? []), instance])
    const sends: Array<Promise<{code: number | null}>> = []
    for (const study of studies.values()) {
      for (let sender = 0; sender < SENDERS_PER_STUDY; sender++) {
        const share = study.filter((_, i) => i % SENDERS_PER_STUDY === sender)
        sends.push(storescu(['-aec', AE, '127.0.0.1', String(port), ...share.map((i) => i.path)], {timeoutMs: 60_000}))
      }
    }

    return {studies, codes: (await Promise.all(sends)).map((r) => r.code ?? -1)}
  }

  /** Waits until every instance is on an Orthanc, then says each study is whole on exactly one. */
  async function expectEachStudyOnOneOrthanc(studies: Map<string, SyntheticInstance[]>, timeoutMs = 30_000): Promise<void> {
    const total = [...studies.values()].reduce((sum, s) => sum + s.length, 0)
    let seen = new Map<string, Record<string, number>>()
    const look = async () => {
      seen = new Map()
      for (const study of studies.keys()) {
        const held: Record<string, number> = {}
        for (const orthanc of orthancs) {
          const n = (await orthanc.client.studyInstanceUids(study)).length
          if (n > 0) held[orthanc.name] = n
        }

        seen.set(study, held)
      }

      return [...seen.values()].reduce((sum, held) => sum + Object.values(held).reduce((a, b) => a + b, 0), 0) >= total
    }

    await waitFor(`${total} instances on the Orthancs`, look, timeoutMs, 250).catch((error: Error) => {
      throw new Error(`${error.message}: ${JSON.stringify([...seen])}`)
    })
    for (const [study, instances] of studies) {
      const held = seen.get(study)!
      expect([study, held]).toEqual([study, {[Object.keys(held)[0]]: instances.length}])
    }
  }

  const ledger = <T>(sql: string): T[] => {
    const db = new Database(path.join(spoolDir, 'ledger.db'), {readonly: true})
    try {
      return db.prepare(sql).all() as T[]
    } finally {
      db.close()
    }
  }

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'ddr-workers-'))
    spoolDir = path.join(dir, 'spool')
    orthancs = await Promise.all([startTestOrthanc({name: 'alpha', aeTitle: 'ALPHA'}), startTestOrthanc({name: 'beta', aeTitle: 'BETA'})])
    ;[port, statusPort] = [await freePort(), await freePort()]
    // Left by an earlier single-process run: an acknowledged instance in the root spool (worker 1 takes it over)...
    await mkdir(path.join(spoolDir, 'queue'), {recursive: true})
    await copyFile(fixturePath(adopted), path.join(spoolDir, 'queue', 'earlier-0001.dcm'))
    // ...and a dead letter in worker 2's folder, for the console's API through the primary.
    const deadLetters = path.join(spoolDir, 'worker-2', 'dead-letter')
    await mkdir(deadLetters, {recursive: true})
    const letter = goodFixtures.find((entry) => entry.sopInstanceUid !== adopted.sopInstanceUid)!
    await copyFile(fixturePath(letter), path.join(deadLetters, 'dl-0001-aaaa.dcm'))
    await writeFile(path.join(deadLetters, 'dl-0001-aaaa.reason.json'), JSON.stringify({reason: 'refused: 0xA900', sopInstanceUid: letter.sopInstanceUid, studyInstanceUid: letter.studyInstanceUid, callingAeTitle: 'CT1'}))
    configFile = path.join(dir, 'ddr.config.json')
    await writeFile(
      configFile,
      JSON.stringify({
        listen: {host: '127.0.0.1', port, aeTitle: AE},
        status: {host: '127.0.0.1', port: statusPort, token: TOKEN},
        spool: {dir: spoolDir, retryBaseMs: 200, retryMaxMs: 1000},
        ledger: {routerName: 'host'},
        studies: {stableSeconds: 600, receipts: false},
        health: {intervalMs: 500, failThreshold: 3, recoverThreshold: 1},
        backends: orthancs.map((o) => ({name: o.name, host: '127.0.0.1', port: o.dicomPort, aeTitle: o.aeTitle, url: o.url})),
      }),
    )
    primary = spawnCompiledCli(['listen', '--config', configFile, '--workers', '2'])
    primary.stdout.resume()
    primary.stderr.setEncoding('utf8').on('data', (chunk: string) => log.push(chunk))
    await waitFor('the workers to take traffic', async () => (await fetch(url('/healthz')).catch(() => undefined))?.status === 200, 30_000).catch((error: Error) => {
      throw new Error(`${error.message}: ${log.join('')}`)
    })
  }, 60_000)

  afterAll(async () => {
    if (primary?.exitCode === null && primary.signalCode === null) {
      // The workers stop with their primary (they watch its IPC channel).
      primary.kill('SIGKILL')
    }

    await Promise.all((orthancs ?? []).map((o) => o.stop()))
    if (dir) await rm(dir, {recursive: true, force: true})
  })

  it('keeps each study on one Orthanc whichever worker each association reached; the primary sums the workers', async () => {
    const {studies, codes} = await sendStudies(4)
    expect(codes).toEqual(Array(4 * SENDERS_PER_STUDY).fill(0))
    await expectEachStudyOnOneOrthanc(studies)
    const list = [...studies.keys()].map((s) => `'${s}'`).join(',')
    await waitFor('the ledger to record every instance stored', () => ledger<{n: number}>(`SELECT COUNT(*) AS n FROM instances WHERE study_instance_uid IN (${list}) AND status = 'stored'`)[0].n === 4 * 9, 10_000)
    // Receipts from both workers; the claims' point: a study's associations did land on both.
    expect(ledger<{router: string}>(`SELECT DISTINCT router FROM instances WHERE study_instance_uid IN (${list}) ORDER BY router`)).toEqual([{router: 'host-w1'}, {router: 'host-w2'}])
    expect(Math.max(...ledger<{n: number}>(`SELECT COUNT(DISTINCT router) AS n FROM instances WHERE study_instance_uid IN (${list}) GROUP BY study_instance_uid`).map((r) => r.n))).toBe(2)
    expect(ledger<{n: number}>(`SELECT COUNT(*) AS n FROM study_claims WHERE study_instance_uid IN (${list})`)[0].n).toBe(4)
    // The root spool's instance, left by an earlier single-process run, was taken over and delivered.
    await waitFor('the adopted instance on an Orthanc', async () => (await Promise.all(orthancs.map((o) => o.client.studyInstanceUids(adopted.studyInstanceUid!)))).some((held) => held.length > 0), 10_000).catch((error: Error) => {
      throw new Error(`${error.message}: ${log.join('').split('\n').filter((line) => line.includes('adopt') || line.includes(adopted.sopInstanceUid)).join('\n')}`)
    })
    expect((await readdir(path.join(spoolDir, 'queue'))).filter((name) => name.endsWith('.dcm'))).toEqual([])
    expect(log.join('')).toMatch(/spool-adopted worker=1 folder=\S+spool instances=1/)

    const healthz = await fetch(url('/healthz'))
    expect([healthz.status, await healthz.text()]).toEqual([200, 'ok\nworker 1: ok\nworker 2: ok\n'])
    const summed = await status()
    expect(summed.counters.received).toBe(4 * 9 + 1)
    expect(summed.workers.entries.map((e) => [e.worker, e.router, e.healthy])).toEqual([
      [1, 'host-w1', true],
      [2, 'host-w2', true],
    ])
    expect(summed.workers.entries.reduce((sum, e) => sum + e.status!.counters.received, 0)).toBe(4 * 9 + 1)
    expect(await (await fetch(url('/metrics'))).text()).toMatch(/^ddr_instances_received_total 37$/m)
  }, 60_000)

  it('serves the dead letters of every worker, and lets no one act without the token, through the primary or around it', async () => {
    const list = (await (await fetch(url('/api/dead-letters'))).json()) as {total: number; deadLetters: Array<{id: string; worker: number}>}
    expect(list.total).toBe(1)
    expect(list.deadLetters.map((d) => [d.id, d.worker])).toEqual([['w2-dl-0001-aaaa', 2]])
    expect((await fetch(url('/api/dead-letters/w2-dl-0001-aaaa'))).status).toBe(200)
    // Actions need the token at the primary...
    expect((await fetch(url('/api/dead-letters/w2-dl-0001-aaaa'), {method: 'DELETE'})).status).toBe(401)
    expect((await fetch(url('/drain'), {method: 'POST'})).status).toBe(401)
    // ...and a worker's private port takes none without the primary's secret, not even with the token.
    const worker2 = (await status()).workers.entries.find((e) => e.worker === 2)!
    const direct = await fetch(`http://127.0.0.1:${worker2.statusPort}/api/dead-letters/dl-0001-aaaa`, {method: 'DELETE', headers: {authorization: `Bearer ${TOKEN}`}})
    expect(direct.status).toBe(401)
    const discarded = await fetch(url('/api/dead-letters/w2-dl-0001-aaaa'), {method: 'DELETE', headers: {authorization: `Bearer ${TOKEN}`}})
    expect([discarded.status, await discarded.json()]).toEqual([200, {id: 'w2-dl-0001-aaaa', outcome: 'discarded'}])
    expect((await status()).spool.deadLetters).toBe(0)
  })

  it('refuses a second router on a spool folder a worker holds, naming the folder and the pid', async () => {
    const worker1 = (await status()).workers.entries.find((e) => e.worker === 1)!
    const second = await runCompiledCli(['listen', '--config', configFile, '--workers', '1', '--port', String(await freePort()), '--status-port', String(await freePort())], {timeoutMs: 30_000})
    expect(second.code).toBe(2)
    expect(second.stderr).toContain(`spool folder ${spoolDir} is in use by process ${worker1.pid}`)
  }, 40_000)

  it('refuses, as one router does, a status port open to the network without a token, and pass-through', async () => {
    const raw = JSON.parse(await readFile(configFile, 'utf8')) as {status: Record<string, unknown>; spool: Record<string, unknown>}
    const exposed = path.join(dir, 'exposed.json')
    await writeFile(exposed, JSON.stringify({...raw, status: {host: '0.0.0.0', port: await freePort()}}))
    const refused = await runCompiledCli(['listen', '--config', exposed, '--workers', '2'], {timeoutMs: 20_000})
    expect([refused.code, refused.stderr]).toEqual([2, expect.stringContaining('no status.token is set')])
    const passThrough = await runCompiledCli(['listen', '--config', configFile, '--workers', '2', '--no-spool'], {timeoutMs: 20_000})
    expect([passThrough.code, passThrough.stderr]).toEqual([2, expect.stringContaining('listen.workers is 2, but spool.enabled is false')])
  }, 40_000)

  it('restarts a worker killed with SIGKILL, which then delivers what it had acknowledged', async () => {
    await Promise.all(orthancs.map((o) => o.halt()))
    const {studies, codes} = await sendStudies(2)
    expect(codes).toEqual(Array(2 * SENDERS_PER_STUDY).fill(0))
    const before = await status()
    const victim = before.workers.entries.find((e) => (e.status?.spool?.depth ?? 0) > 0)!
    expect(victim).toBeDefined()
    process.kill(victim.pid, 'SIGKILL')
    await Promise.all(orthancs.map((o) => o.resume()))
    // What the killed worker acknowledged is only in its spool folder: delivered once it is restarted.
    await expectEachStudyOnOneOrthanc(studies)
    const restarted = (await status()).workers.entries.find((e) => e.worker === victim.worker)!
    expect([restarted.healthy, restarted.pid === victim.pid]).toEqual([true, false])
    expect(log.join('')).toMatch(new RegExp(`worker-died worker=${victim.worker} pid=${victim.pid}`))
    expect(log.join('')).toMatch(new RegExp(`spool-recovered worker=${victim.worker}`))
  }, 60_000)

  it('drains every worker and exits on ddr listen --drain', async () => {
    const drain = await runCompiledCli(['listen', '--drain', '--config', configFile], {timeoutMs: 20_000})
    expect([drain.code, drain.stderr, drain.stdout]).toEqual([0, '', expect.stringMatching(/^draining: the router takes no new associations; 0 open, 0 queued/)])
    const exit = await new Promise<number | null>((resolve) => (primary.exitCode === null ? primary.on('exit', (code) => resolve(code)) : resolve(primary.exitCode)))
    expect(exit).toBe(0)
    expect(log.join('')).toMatch(/stopped workers=2 restarts=1 drained=true/)
  }, 30_000)
})
