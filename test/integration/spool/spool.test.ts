import {type ChildProcess, spawn} from 'node:child_process'
import {existsSync, readFileSync, readdirSync} from 'node:fs'
import {mkdir, mkdtemp, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {readMetaHeader} from '../../../src/lib/dicom/part10.js'
import {ScuAssociation} from '../../../src/lib/dimse/scu.js'
import {SqliteLedgerStore} from '../../../src/lib/ledger/sqlite-store.js'
import {type SyntheticInstance, writeSyntheticStudies} from '../../helpers/datasets.js'
import {datasetOf} from '../../helpers/fixtures.js'
import {type Storescp, echoscu, startStorescp, storescu} from '../../helpers/dcmtk.js'
import {type TestOrthanc, startTestOrthanc} from '../../helpers/orthanc.js'
import {freePort} from '../../helpers/ports.js'
import {type TestRouter, startTestRouter} from '../../helpers/router.js'
import {waitFor} from '../../helpers/wait.js'

const CT = '1.2.840.10008.5.1.4.1.1.2'
const EXPLICIT_LE = '1.2.840.10008.1.2.1'

/** Sends instances one by one with our raw-bytes client; returns the SOP UIDs the router acknowledged with Success. */
async function sendRaw(port: number, aeTitle: string, instances: SyntheticInstance[], onAck?: (count: number) => void): Promise<{acked: string[]; statuses: number[]; error?: Error}> {
  const acked: string[] = []
  const statuses: number[] = []
  let association: ScuAssociation | undefined
  try {
    association = await ScuAssociation.connect({host: '127.0.0.1', port, callingAeTitle: 'SPOOLTEST', calledAeTitle: aeTitle, contexts: [{abstractSyntax: CT, transferSyntax: EXPLICIT_LE}]})
    for (const instance of instances) {
      const file = readFileSync(instance.path)
      const meta = readMetaHeader(file)
      const response = await association.store({sopClassUid: CT, sopInstanceUid: instance.sopInstanceUid, transferSyntaxUid: EXPLICIT_LE, dataset: {buffer: file.subarray(meta.datasetOffset)}})
      statuses.push(response.status)
      if (response.status === 0) acked.push(instance.sopInstanceUid)
      onAck?.(acked.length)
    }

    await association.release()
    return {acked, statuses}
  } catch (error) {
    association?.abort()
    return {acked, statuses, error: error as Error}
  }
}

async function holders(backends: TestOrthanc[], sopInstanceUid: string): Promise<string[]> {
  const found: string[] = []
  for (const backend of backends) if ((await backend.client.lookupInstance(sopInstanceUid)) !== undefined) found.push(backend.name)
  return found
}


describe('spool: a router killed with SIGKILL mid-stream', () => {
  // The backends are storescp in bit-preserving mode with a unique file per received C-STORE: a
  // second delivery of an instance is a second file (Orthanc would keep one copy and hide it), and
  // each file holds the dataset bytes exactly as they came over the wire.
  let backends: Storescp[] = []
  let workDir: string
  let router: ChildProcess | undefined
  let configPath: string
  let listenPort: number
  let statusPort: number
  const routerLog: string[] = []

  function startRouterProcess(): ChildProcess {
    const child = spawn(process.execPath, ['bin/run.js', 'listen', '--config', configPath], {stdio: ['ignore', 'ignore', 'pipe']})
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => routerLog.push(chunk))
    return child
  }

  async function status(): Promise<{spool: {depth: number}; counters: {routed: number}} | undefined> {
    try {
      return (await (await fetch(`http://127.0.0.1:${statusPort}/status`)).json()) as {spool: {depth: number}; counters: {routed: number}}
    } catch {
      return undefined
    }
  }

  /** Every file each storescp wrote so far (one per C-STORE it received), as `backend/name`. */
  function receivedFiles(): string[] {
    return backends.flatMap((backend) => readdirSync(backend.dir).map((name) => `${backend.aeTitle}/${name}`))
  }

  beforeAll(async () => {
    workDir = await mkdtemp(path.join(os.tmpdir(), 'ddr-crash-'))
    backends = await Promise.all(
      ['ONE', 'TWO'].map(async (aeTitle) => {
        const dir = path.join(workDir, aeTitle)
        await mkdir(dir)
        return startStorescp({dir, aeTitle, extraArgs: ['+B', '+uf']})
      }),
    )
    listenPort = await freePort()
    statusPort = await freePort()
    configPath = path.join(workDir, 'ddr.config.json')
    await writeFile(
      configPath,
      JSON.stringify({
        listen: {host: '127.0.0.1', port: listenPort, aeTitle: 'DDR_CRASH'},
        status: {host: '127.0.0.1', port: statusPort},
        spool: {dir: path.join(workDir, 'spool'), retryBaseMs: 100, retryMaxMs: 1000},
        // Health checks must not give up on the stalled backends during the few seconds before the kill.
        health: {intervalMs: 500, timeoutMs: 20_000, failThreshold: 2, recoverThreshold: 1},
        // storescp without --fork serves one association at a time.
        backends: backends.map((b) => ({name: b.aeTitle.toLowerCase(), type: 'dimse', host: '127.0.0.1', port: b.port, aeTitle: b.aeTitle, maxAssociations: 1})),
      }),
    )
  })

  afterAll(async () => {
    router?.kill('SIGKILL')
    await Promise.all(backends.map((b) => b.stop()))
    if (workDir) await rm(workDir, {recursive: true, force: true})
  })

  it('delivers every acknowledged instance after a restart on the same spool, byte for byte, and redelivers only what was in flight', async () => {
    // Small instances go to the journal, those above 128 KB to files of their own: interleaved, so
    // both kinds are delivered before the stall and both wait in the spool at the kill.
    const small = await writeSyntheticStudies(path.join(workDir, 'small'), {studies: 4, instancesPerStudy: 25, pixelBytes: 16_384, prefix: 'SMALL'})
    const large = await writeSyntheticStudies(path.join(workDir, 'large'), {studies: 4, instancesPerStudy: 25, pixelBytes: 200_000, prefix: 'LARGE'})
    const instances = small.flatMap((instance, index) => [instance, large[index]])
    const sentDataset = new Map(instances.map((i) => [i.sopInstanceUid, datasetOf(readFileSync(i.path))]))
    const isLarge = (sopInstanceUid: string) => sentDataset.get(sopInstanceUid)!.length > 128 * 1024
    expect(instances.filter((i) => isLarge(i.sopInstanceUid))).toHaveLength(large.length)

    router = startRouterProcess()
    await waitFor('the router to listen', async () => (await status()) !== undefined, 30_000)

    // After 60 acknowledgements both backends stall (SIGSTOP): what arrives next waits in the spool,
    // and the one delivery in flight on each backend is never answered. At 150 the router dies.
    let stalledAt = -1
    let killedAt = -1
    const sent = await sendRaw(listenPort, 'DDR_CRASH', instances, (count) => {
      if (count === 60 && stalledAt < 0) {
        stalledAt = count
        for (const backend of backends) process.kill(backend.pid, 'SIGSTOP')
      }

      if (count === 150 && killedAt < 0) {
        killedAt = count
        router!.kill('SIGKILL')
      }
    })
    expect([stalledAt, killedAt]).toEqual([60, 150])
    expect(sent.error).toBeDefined() // the association died with the router
    expect(sent.acked.length).toBeGreaterThanOrEqual(150)
    expect(sent.acked.length).toBeLessThan(instances.length)
    await new Promise((resolve) => router!.once('exit', resolve))

    // The backends go on: each reads what was already in its socket (the unanswered delivery) and
    // is done with the dead association once it answers a C-ECHO (one association at a time).
    for (const backend of backends) process.kill(backend.pid, 'SIGCONT')
    for (const backend of backends) await waitFor(`${backend.aeTitle} to serve again`, async () => (await echoscu(['-aec', backend.aeTitle, '127.0.0.1', String(backend.port)], {timeoutMs: 5000})).code === 0, 20_000)
    const beforeRestart = new Set(receivedFiles())

    router = startRouterProcess()
    await waitFor('the spool to drain after the restart', async () => (await status())?.spool.depth === 0, 60_000)
    // Log lines reach us up to 25 ms after they are written (the router batches them).
    await waitFor('the recovery log line', () => /spool-recovered queued=\d+/.test(routerLog.join('')), 10_000)
    const recovered = Number(/spool-recovered queued=(\d+)/.exec(routerLog.join(''))?.[1])

    // Every C-STORE each backend received, before the kill or after the restart.
    const deliveries = receivedFiles().map((name) => {
      const file = readFileSync(path.join(workDir, name))
      return {backend: name.split('/')[0].toLowerCase(), afterRestart: !beforeRestart.has(name), sopInstanceUid: readMetaHeader(file).mediaStorageSopInstanceUid!, dataset: datasetOf(file)}
    })
    const before = deliveries.filter((d) => !d.afterRestart)
    const after = deliveries.filter((d) => d.afterRestart)

    // Byte for byte: every delivered copy carries the dataset the sender sent.
    for (const delivery of deliveries) {
      expect({sop: delivery.sopInstanceUid, known: sentDataset.has(delivery.sopInstanceUid), identical: sentDataset.get(delivery.sopInstanceUid)?.equals(delivery.dataset)}).toEqual({sop: delivery.sopInstanceUid, known: true, identical: true})
    }

    // Every acknowledged instance arrived, on one backend.
    const homes = new Map<string, Set<string>>()
    for (const delivery of deliveries) homes.set(delivery.sopInstanceUid, (homes.get(delivery.sopInstanceUid) ?? new Set()).add(delivery.backend))
    for (const sopInstanceUid of sent.acked) expect({sopInstanceUid, on: [...(homes.get(sopInstanceUid) ?? [])].length}).toEqual({sopInstanceUid, on: 1})

    // The restart delivered exactly what the spool handed back, each once, journal records and files alike.
    const uids = (list: typeof deliveries) => list.map((d) => d.sopInstanceUid)
    const twice = (list: typeof deliveries) => uids(list).filter((uid, index, all) => all.indexOf(uid) !== index)
    expect({deliveredTwiceBeforeTheKill: twice(before), deliveredTwiceAfterTheRestart: twice(after)}).toEqual({deliveredTwiceBeforeTheKill: [], deliveredTwiceAfterTheRestart: []})
    expect(after.length).toBe(recovered)
    expect(recovered).toBeGreaterThanOrEqual(150 - 60 - 2)
    expect({small: after.some((d) => !isLarge(d.sopInstanceUid)), large: after.some((d) => isLarge(d.sopInstanceUid))}).toEqual({small: true, large: true})
    expect({small: before.some((d) => !isLarge(d.sopInstanceUid)), large: before.some((d) => isLarge(d.sopInstanceUid))}).toEqual({small: true, large: true})

    // Delivered instances are not handed back (journal .done lists, files removed): the only
    // instances delivered twice are the ones in flight when the backends stalled, which they
    // received but never confirmed (one association per backend).
    const redelivered = uids(after).filter((uid) => uids(before).includes(uid))
    expect(redelivered.length).toBeLessThanOrEqual(backends.length)

    // The study ledger agrees with the backends: every acknowledged instance is in it, stored on
    // the backend that holds it (read while the router still runs, as `ddr study` does).
    const ledger = new SqliteLedgerStore(path.join(workDir, 'spool', 'ledger.db'), {readonly: true})
    try {
      const recorded = new Map<string, {status: string; backend: string | null}>()
      for (const study of new Set(instances.map((i) => i.studyInstanceUid))) {
        for (const instance of ledger.study(study)?.instanceList ?? []) recorded.set(instance.sopInstanceUid, instance)
      }

      for (const sopInstanceUid of sent.acked) {
        const [holder] = homes.get(sopInstanceUid)!
        expect({sopInstanceUid, ...recorded.get(sopInstanceUid)}).toMatchObject({sopInstanceUid, status: 'stored', backend: holder})
      }
    } finally {
      ledger.close()
    }

    if (process.env.DDR_TEST_DEBUG) console.log({acked: sent.acked.length, recovered, before: before.length, after: after.length, redelivered: redelivered.length})
    router.kill('SIGTERM')
    await new Promise((resolve) => router!.once('exit', resolve))
  })
})

describe('spool: all backends down while instances arrive', () => {
  let orthancs: TestOrthanc[] = []
  let router: TestRouter
  let workDir: string

  beforeAll(async () => {
    orthancs = await Promise.all([startTestOrthanc({name: 'north', aeTitle: 'NORTH'}), startTestOrthanc({name: 'south', aeTitle: 'SOUTH'})])
    router = await startTestRouter(orthancs, {health: {failThreshold: 1, recoverThreshold: 1, intervalMs: 300}})
    workDir = await mkdtemp(path.join(os.tmpdir(), 'ddr-down-'))
  })

  afterAll(async () => {
    await router?.stop()
    await Promise.all(orthancs.map((o) => o.stop()))
    if (workDir) await rm(workDir, {recursive: true, force: true})
  })

  it('acknowledges everything, delivers it all when they return, and duplicates nothing', async () => {
    const instances = await writeSyntheticStudies(workDir, {studies: 5, instancesPerStudy: 20, pixelBytes: 8192})
    await Promise.all(orthancs.map((o) => o.halt()))
    await waitFor('both backends marked down', () => router.service.backends.every((b) => !b.healthy), 20_000)

    const result = await storescu(['-aec', router.aeTitle, '127.0.0.1', String(router.port), ...instances.map((i) => i.path)], {timeoutMs: 120_000})
    expect(result.code).toBe(0)
    // a re-send of the same instances while they wait is acknowledged without queueing twice
    const again = await storescu(['-aec', router.aeTitle, '127.0.0.1', String(router.port), ...instances.slice(0, 10).map((i) => i.path)], {timeoutMs: 60_000})
    expect(again.code).toBe(0)
    const waiting = router.service.status().spool!
    expect(waiting.depth).toBe(instances.length)
    expect(waiting.oldestAgeSeconds).not.toBeNull()

    await Promise.all(orthancs.map((o) => o.resume()))
    await router.drained()
    for (const instance of instances) {
      expect({sop: instance.sopInstanceUid, on: (await holders(orthancs, instance.sopInstanceUid)).length}).toEqual({sop: instance.sopInstanceUid, on: 1})
    }

    const counts = await Promise.all(orthancs.map(async (o) => (await o.client.statistics()).CountInstances))
    expect(counts[0] + counts[1]).toBe(instances.length)
  })
})

describe('spool: refusals, dead letters and the high-water mark', () => {
  let storescp: Storescp
  let router: TestRouter
  let workDir: string

  beforeAll(async () => {
    workDir = await mkdtemp(path.join(os.tmpdir(), 'ddr-dead-'))
    storescp = await startStorescp({dir: workDir, aeTitle: 'STRICT'})
    router = await startTestRouter([{name: 'strict', aeTitle: 'STRICT', dicomPort: storescp.port, maxAssociations: 1}], {spool: {maxBytes: 1024 * 1024}})
  })

  afterAll(async () => {
    await router?.stop()
    await storescp?.stop()
    if (workDir) await rm(workDir, {recursive: true, force: true})
  })

  it('moves an instance the backend refuses to dead-letter with a reason file', async () => {
    const broken = readFileSync(path.resolve('fixtures/broken/missing-sop-class-meta-ok.dcm'))
    const meta = readMetaHeader(broken)
    const association = await ScuAssociation.connect({host: '127.0.0.1', port: router.port, callingAeTitle: 'SPOOLTEST', calledAeTitle: router.aeTitle, contexts: [{abstractSyntax: meta.mediaStorageSopClassUid!, transferSyntax: meta.transferSyntaxUid}]})
    const response = await association.store({sopClassUid: meta.mediaStorageSopClassUid!, sopInstanceUid: meta.mediaStorageSopInstanceUid!, transferSyntaxUid: meta.transferSyntaxUid, dataset: {buffer: broken.subarray(meta.datasetOffset)}})
    await association.release()
    expect(response.status).toBe(0) // durably spooled: the router took responsibility
    await router.drained()

    const deadDir = path.join(router.config.spool.dir, 'dead-letter')
    const reasons = readdirSync(deadDir).filter((name) => name.endsWith('.reason.json'))
    expect(reasons).toHaveLength(1)
    const reason = JSON.parse(readFileSync(path.join(deadDir, reasons[0]), 'utf8')) as {status: string; sopInstanceUid: string; reason: string}
    expect(reason.sopInstanceUid).toBe(meta.mediaStorageSopInstanceUid)
    expect(reason.status).toMatch(/^0x(C|A9)/)
    expect(reason.reason).toContain('strict answered')
    expect(existsSync(path.join(deadDir, reasons[0].replace('.reason.json', '.dcm')))).toBe(true)
    expect(router.service.status().spool!.deadLetters).toBe(1)
  })

  it('refuses new instances with A700 above the high-water mark instead of filling the disk', async () => {
    await storescp.stop() // nothing drains the spool now
    const instances = await writeSyntheticStudies(path.join(workDir, 'big'), {studies: 1, instancesPerStudy: 8, pixelBytes: 300_000})
    const sent = await sendRaw(router.port, router.aeTitle, instances)
    expect(sent.statuses.slice(0, 3)).toEqual([0, 0, 0])
    expect(sent.statuses).toContain(0xa700)
    expect(router.service.status().spool!.refusing).toMatch(/spool\.maxBytes/)
    expect(router.logs.some((line) => line.includes('spool-full'))).toBe(true)
  })
})
