import {type ChildProcess, spawn} from 'node:child_process'
import {existsSync, readFileSync, readdirSync} from 'node:fs'
import {mkdtemp, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {readMetaHeader} from '../../../src/lib/dicom/part10.js'
import {ScuAssociation} from '../../../src/lib/dimse/scu.js'
import {SqliteLedgerStore} from '../../../src/lib/ledger/sqlite-store.js'
import {type SyntheticInstance, writeSyntheticStudies} from '../../helpers/datasets.js'
import {type Storescp, startStorescp, storescu} from '../../helpers/dcmtk.js'
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
  let orthancs: TestOrthanc[] = []
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

  beforeAll(async () => {
    orthancs = await Promise.all([startTestOrthanc({name: 'one', aeTitle: 'ONE'}), startTestOrthanc({name: 'two', aeTitle: 'TWO'})])
    workDir = await mkdtemp(path.join(os.tmpdir(), 'ddr-crash-'))
    listenPort = await freePort()
    statusPort = await freePort()
    configPath = path.join(workDir, 'ddr.config.json')
    await writeFile(
      configPath,
      JSON.stringify({
        listen: {host: '127.0.0.1', port: listenPort, aeTitle: 'DDR_CRASH'},
        status: {host: '127.0.0.1', port: statusPort},
        spool: {dir: path.join(workDir, 'spool'), retryBaseMs: 100, retryMaxMs: 1000},
        health: {intervalMs: 500, timeoutMs: 2000, failThreshold: 2, recoverThreshold: 1},
        backends: orthancs.map((o) => ({name: o.name, host: '127.0.0.1', port: o.dicomPort, aeTitle: o.aeTitle, url: o.url})),
      }),
    )
  })

  afterAll(async () => {
    router?.kill('SIGKILL')
    await Promise.all(orthancs.map((o) => o.stop()))
    if (workDir) await rm(workDir, {recursive: true, force: true})
  })

  it('delivers every acknowledged instance after a restart on the same spool, each exactly once', async () => {
    const instances = await writeSyntheticStudies(path.join(workDir, 'data'), {studies: 8, instancesPerStudy: 50, pixelBytes: 16_384})
    router = startRouterProcess()
    await waitFor('the router to listen', async () => (await status()) !== undefined, 30_000)

    let killedAt = -1
    const sent = await sendRaw(listenPort, 'DDR_CRASH', instances, (count) => {
      if (count === 150 && killedAt < 0) {
        killedAt = count
        router!.kill('SIGKILL')
      }
    })
    expect(killedAt).toBe(150)
    expect(sent.error).toBeDefined() // the association died with the router
    expect(sent.acked.length).toBeGreaterThanOrEqual(150)
    expect(sent.acked.length).toBeLessThan(instances.length)
    await new Promise((resolve) => router!.once('exit', resolve))
    const storedBeforeKill = (await Promise.all(orthancs.map(async (o) => (await o.client.statistics()).CountInstances))).reduce((a, b) => a + b, 0)

    router = startRouterProcess()
    await waitFor('the spool to drain after the restart', async () => (await status())?.spool.depth === 0, 60_000)
    // Log lines reach us up to 25 ms after they are written (the router batches them).
    await waitFor('the recovery log line', () => /spool-recovered queued=\d+/.test(routerLog.join('')), 10_000)
    const recovered = Number(/spool-recovered queued=(\d+)/.exec(routerLog.join(''))?.[1])
    // Delivered instances are not handed back (the journal's .done lists): what comes back is what
    // was acknowledged and not yet stored, give or take the deliveries in flight at the kill
    // (4 associations per backend) and the last event-loop turn of .done entries.
    expect(recovered).toBeLessThanOrEqual(sent.acked.length - storedBeforeKill + 16)

    for (const sopInstanceUid of sent.acked) {
      expect({sopInstanceUid, on: (await holders(orthancs, sopInstanceUid)).length}).toEqual({sopInstanceUid, on: 1})
    }

    // The study ledger agrees with the backends: every acknowledged instance is in it, stored on
    // the backend that holds it (read while the router still runs, as `ddr study` does).
    const ledger = new SqliteLedgerStore(path.join(workDir, 'spool', 'ledger.db'), {readonly: true})
    try {
      const recorded = new Map<string, {status: string; backend: string | null}>()
      for (const study of new Set(instances.map((i) => i.studyInstanceUid))) {
        for (const instance of ledger.study(study)?.instanceList ?? []) recorded.set(instance.sopInstanceUid, instance)
      }

      for (const sopInstanceUid of sent.acked) {
        const [holder] = await holders(orthancs, sopInstanceUid)
        expect({sopInstanceUid, ...recorded.get(sopInstanceUid)}).toMatchObject({sopInstanceUid, status: 'stored', backend: holder})
      }
    } finally {
      ledger.close()
    }

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
