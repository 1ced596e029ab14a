import {mkdtemp, readFile, rm} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {writeSyntheticStudies} from '../../helpers/datasets.js'
import {storescu} from '../../helpers/dcmtk.js'
import {startTestHaproxy, type TestHaproxy} from '../../helpers/haproxy.js'
import {startTestOrthanc, type TestOrthanc} from '../../helpers/orthanc.js'
import {startTestRouter, type TestRouter} from '../../helpers/router.js'
import {waitFor} from '../../helpers/wait.js'

/** What the router's GET /status says it received (as an operator reads it). */
async function received(router: TestRouter): Promise<number> {
  const response = await fetch(`http://127.0.0.1:${router.service.statusPort}/status`)
  return ((await response.json()) as {counters: {received: number}}).counters.received
}

describe('HAProxy (src/lib/stack/haproxy.ts) in front of two routers', () => {
  let work: string
  let orthanc: TestOrthanc
  let routers: TestRouter[] = []
  let haproxy: TestHaproxy
  let files: string[]

  /** One association per file through HAProxy's port, one after another. */
  const sendEach = async (paths: string[]) => {
    for (const file of paths) {
      const result = await storescu(['-aec', 'DDR_TEST', '127.0.0.1', String(haproxy.port), file])
      expect(result.stderr).not.toMatch(/error|fail/i)
      expect(result.code).toBe(0)
    }
  }

  beforeAll(async () => {
    work = await mkdtemp(path.join(os.tmpdir(), 'ddr-haproxy-it-'))
    orthanc = await startTestOrthanc()
    // Two routers with their own spools and SQLite ledgers (the shared PostgreSQL ledger comes with #20).
    routers = await Promise.all([startTestRouter([orthanc]), startTestRouter([orthanc])])
    // What `ddr listen` does when POST /drain arrives on its status port.
    for (const router of routers) void router.service.drainRequested.then(() => router.service.drain(30_000))
    haproxy = await startTestHaproxy(routers.map((router) => ({port: router.port, checkPort: router.service.statusPort!})))
    files = (await writeSyntheticStudies(path.join(work, 'studies'), {studies: 1, instancesPerStudy: 10, pixelBytes: 2048, prefix: 'HAPROXY'})).map((instance) => instance.path)
  })

  afterAll(async () => {
    await haproxy?.stop()
    await Promise.allSettled(routers.map((router) => router.stop()))
    await orthanc?.stop()
    if (work !== undefined) await rm(work, {recursive: true, force: true})
  })

  it('checks each router on GET /healthz and spreads associations over both (leastconn)', async () => {
    await haproxy.waitForServer('router-1', 'UP')
    await haproxy.waitForServer('router-2', 'UP')
    await sendEach(files.slice(0, 4))
    const counts = await Promise.all(routers.map(received))
    expect(counts.reduce((sum, count) => sum + count, 0)).toBe(4)
    expect(counts.every((count) => count > 0)).toBe(true)
    await Promise.all(routers.map((router) => router.drained()))
    await waitFor('4 instances in Orthanc', async () => (await orthanc.client.statistics()).CountInstances === 4, 10_000)
    const config = await readFile(path.join(haproxy.dir, 'haproxy.cfg'), 'utf8')
    expect(config).toMatch(/^\s+balance leastconn$/m)
    expect(config).toMatch(/^\s+server router-1 127\.0\.0\.1:\d+ check port \d+$/m)
  })

  it('marks a draining router DOWN (its /healthz answers 503) within seconds; new associations go to the other, also before it noticed', async () => {
    const [draining, other] = routers
    const before = await Promise.all(routers.map(received))
    const answer = await fetch(`http://127.0.0.1:${draining.service.statusPort}/drain`, {method: 'POST'})
    expect(answer.status).toBe(200)
    const started = Date.now()
    // Before HAProxy notices (1 to 2 s), the draining router refuses connections: HAProxy retries them on the other one.
    await Promise.all(files.slice(4, 7).map((file) => sendEach([file])))
    expect(Date.now() - started).toBeLessThan(1000)
    await haproxy.waitForServer('router-1', 'DOWN', 5000)
    expect(Date.now() - started).toBeLessThan(4000)
    // Down because it said 503, not because nothing answered: the status server is still there.
    const state = (await haproxy.servers()).find((server) => server.name === 'router-1')
    expect(state?.check).toMatch(/Layer7 wrong status/)
    expect((await fetch(`http://127.0.0.1:${draining.service.statusPort}/healthz`)).status).toBe(503)

    await sendEach(files.slice(7))
    expect(await received(draining)).toBe(before[0])
    expect(await received(other)).toBe(before[1] + files.length - 4)
    await other.drained()
    await waitFor(`${files.length} instances in Orthanc`, async () => (await orthanc.client.statistics()).CountInstances === files.length, 10_000)
    expect((await haproxy.servers()).find((server) => server.name === 'router-2')?.status).toBe('UP')
  })
})
