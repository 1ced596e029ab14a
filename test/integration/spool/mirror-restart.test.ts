import type {ChildProcess} from 'node:child_process'
import {readFileSync, readdirSync} from 'node:fs'
import {mkdtemp, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {readMetaHeader} from '../../../src/lib/dicom/part10.js'
import {ScuAssociation} from '../../../src/lib/dimse/scu.js'
import {spawnCompiledCli} from '../../helpers/compiled-cli.js'
import {type SyntheticInstance, writeSyntheticStudies} from '../../helpers/datasets.js'
import {datasetOf} from '../../helpers/fixtures.js'
import {type TestOrthanc, startTestOrthanc} from '../../helpers/orthanc.js'
import {freePort} from '../../helpers/ports.js'
import {waitFor} from '../../helpers/wait.js'

const CT = '1.2.840.10008.5.1.4.1.1.2'
const EXPLICIT_LE = '1.2.840.10008.1.2.1'

interface Status {
  counters: {routed: number; mirrored: number; mirrorPending: number; mirrorFailed: number}
  spool: {depth: number}
  mirrors: {durable: boolean; pending: number}
  backends: Array<{name: string; healthy: boolean}>
}

async function sendAll(port: number, calledAeTitle: string, instances: SyntheticInstance[]): Promise<number[]> {
  const association = await ScuAssociation.connect({host: '127.0.0.1', port, callingAeTitle: 'MIRRORTEST', calledAeTitle, contexts: [{abstractSyntax: CT, transferSyntax: EXPLICIT_LE}]})
  const statuses: number[] = []
  try {
    for (const instance of instances) {
      const file = readFileSync(instance.path)
      const response = await association.store({sopClassUid: CT, sopInstanceUid: instance.sopInstanceUid, transferSyntaxUid: EXPLICIT_LE, dataset: {buffer: datasetOf(file)}})
      statuses.push(response.status)
    }
  } finally {
    await association.release()
  }

  return statuses
}


describe('mirror copies survive a router killed with SIGKILL (store-and-forward)', () => {
  let primaries: TestOrthanc[] = []
  let probe: TestOrthanc
  let workDir: string
  let router: ChildProcess | undefined
  let configPath: string
  let listenPort: number
  let statusPort: number
  const routerLog: string[] = []

  function startRouter(): ChildProcess {
    const child = spawnCompiledCli(['listen', '--config', configPath])
    child.stdout!.resume()
    child.stderr!.setEncoding('utf8').on('data', (chunk: string) => routerLog.push(chunk))
    return child
  }

  async function status(): Promise<Status | undefined> {
    try {
      return (await (await fetch(`http://127.0.0.1:${statusPort}/status`)).json()) as Status
    } catch {
      return undefined
    }
  }

  async function stopRouter(signal: NodeJS.Signals): Promise<void> {
    const child = router
    router = undefined
    if (child === undefined || child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise((resolve) => child.once('exit', resolve))
    child.kill(signal)
    await exited
  }

  beforeAll(async () => {
    ;[primaries, probe] = await Promise.all([Promise.all([startTestOrthanc({name: 'east', aeTitle: 'EAST'}), startTestOrthanc({name: 'west', aeTitle: 'WEST'})]), startTestOrthanc({name: 'probe', aeTitle: 'PROBE'})])
    workDir = await mkdtemp(path.join(os.tmpdir(), 'ddr-mirror-restart-'))
    listenPort = await freePort()
    statusPort = await freePort()
    configPath = path.join(workDir, 'ddr.config.json')
    await writeFile(
      configPath,
      JSON.stringify({
        listen: {host: '127.0.0.1', port: listenPort, aeTitle: 'DDR_MIRROR'},
        status: {host: '127.0.0.1', port: statusPort},
        spool: {dir: path.join(workDir, 'spool'), retryBaseMs: 100, retryMaxMs: 1000},
        health: {intervalMs: 300, timeoutMs: 2000, failThreshold: 1, recoverThreshold: 1},
        backends: [
          ...primaries.map((o) => ({name: o.name, host: '127.0.0.1', port: o.dicomPort, aeTitle: o.aeTitle, url: o.url})),
          {name: 'probe', type: 'dimse', host: '127.0.0.1', port: probe.dicomPort, aeTitle: probe.aeTitle, mirror: true},
        ],
      }),
    )
  })

  afterAll(async () => {
    await stopRouter('SIGKILL')
    await Promise.all([...primaries, probe].filter(Boolean).map((o) => o.stop()))
    if (workDir) await rm(workDir, {recursive: true, force: true})
  })

  it('the mirror gets every instance byte-exact after the restart, and each instance is on exactly one primary', async () => {
    // Small instances go to the spool journal, large ones (> 128 KB) into files of their own: both paths.
    const instances = [
      ...(await writeSyntheticStudies(path.join(workDir, 'small'), {studies: 4, instancesPerStudy: 10, pixelBytes: 8192, prefix: 'SMALL'})),
      ...(await writeSyntheticStudies(path.join(workDir, 'large'), {studies: 2, instancesPerStudy: 3, pixelBytes: 300_000, prefix: 'LARGE'})),
    ]
    await probe.halt()
    router = startRouter()
    await waitFor('the router to listen', async () => (await status()) !== undefined, 30_000)

    expect(await sendAll(listenPort, 'DDR_MIRROR', instances)).toEqual(instances.map(() => 0))
    // Every primary delivery is done (the spool is empty), every mirror copy waits: the mirror is away.
    await waitFor('the primaries to have everything', async () => {
      const s = await status()
      return s !== undefined && s.spool.depth === 0 && s.counters.routed === instances.length
    })
    const before = (await status())!
    expect(before.mirrors).toMatchObject({durable: true, pending: instances.length})
    expect(before.counters).toMatchObject({mirrored: 0, mirrorPending: instances.length, mirrorFailed: 0})
    expect(before.backends.find((b) => b.name === 'probe')!.healthy).toBe(false)
    expect(readdirSync(path.join(workDir, 'spool', 'mirror')).filter((n) => n.endsWith('~probe.dcm'))).toHaveLength(instances.length)

    await stopRouter('SIGKILL')
    await probe.resume()
    router = startRouter()
    await waitFor('the mirror copies to be delivered after the restart', async () => {
      const s = await status()
      return s !== undefined && s.spool.depth === 0 && s.counters.mirrored >= instances.length && s.mirrors.pending === 0
    })
    // Every copy was taken up from its file (log lines reach us up to 25 ms after they are written).
    // The large ones' spool files went at delivery: only their mirror copies remained.
    await waitFor('the mirror recovery log line', async () => /mirror-recovered copies=\d+/.test(routerLog.join('')), 10_000)
    expect(routerLog.join('')).toMatch(/mirror-recovered copies=46 givenUp=0/)
    const after = (await status())!
    expect(after.counters).toMatchObject({mirrorFailed: 0, mirrorPending: 0})
    expect(readdirSync(path.join(workDir, 'spool', 'mirror'))).toEqual([])

    for (const instance of instances) {
      const expected = datasetOf(readFileSync(instance.path))
      const holders: string[] = []
      for (const primary of primaries) {
        const id = await primary.client.lookupInstance(instance.sopInstanceUid)
        if (id === undefined) continue
        holders.push(primary.name)
        expect(datasetOf(await primary.client.instanceFile(id)).equals(expected)).toBe(true)
      }

      expect({sop: instance.sopInstanceUid, holders: holders.length}).toEqual({sop: instance.sopInstanceUid, holders: 1})
      const copyId = await probe.client.lookupInstance(instance.sopInstanceUid)
      expect({sop: instance.sopInstanceUid, onMirror: copyId !== undefined}).toEqual({sop: instance.sopInstanceUid, onMirror: true})
      const copy = await probe.client.instanceFile(copyId!)
      expect({sop: instance.sopInstanceUid, identical: datasetOf(copy).equals(expected), syntax: readMetaHeader(copy).transferSyntaxUid}).toEqual({sop: instance.sopInstanceUid, identical: true, syntax: EXPLICIT_LE})
    }

    const counts = await Promise.all(primaries.map(async (p) => (await p.client.statistics()).CountInstances))
    expect(counts.reduce((a, b) => a + b, 0)).toBe(instances.length)
    expect((await probe.client.statistics()).CountInstances).toBe(instances.length)
    await stopRouter('SIGTERM')
  })
})
