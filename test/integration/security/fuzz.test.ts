import {mkdir, mkdtemp, readdir, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {type Storescp, echoscu, makeTestDicom, startStorescp, storescu} from '../../helpers/dcmtk.js'
import {type RouterChild, hostileConnection, hostilePayload, memoryOf, prng, startRouterChild, validAssociateRq} from '../../helpers/hostile.js'
import {freePort} from '../../helpers/ports.js'

const CONNECTIONS = 2000
const TIME_BUDGET_MS = 20_000
const PARALLEL = 32
const RSS_LIMIT_KB = 200 * 1024

const validRequest = validAssociateRq('DDR_FUZZ')


describe('hostile input against ddr listen (compiled CLI, child process)', () => {
  let workDir: string
  let backend: Storescp
  let router: RouterChild
  let port: number

  beforeAll(async () => {
    workDir = await mkdtemp(path.join(os.tmpdir(), 'ddr-fuzz-'))
    await mkdir(path.join(workDir, 'received'))
    backend = await startStorescp({dir: path.join(workDir, 'received')})
    port = await freePort()
    const config = path.join(workDir, 'ddr.config.json')
    await writeFile(
      config,
      JSON.stringify({
        listen: {host: '127.0.0.1', port, aeTitle: 'DDR_FUZZ', artimTimeoutMs: 2000},
        status: {host: '127.0.0.1', port: await freePort()},
        spool: {dir: path.join(workDir, 'spool'), enabled: false},
        health: {intervalMs: 60_000},
        backends: [{name: 'scp', type: 'dimse', host: '127.0.0.1', port: backend.port, aeTitle: backend.aeTitle, maxAssociations: 1}],
      }),
    )
    router = await startRouterChild(config)
  })

  afterAll(async () => {
    await router?.stop()
    await backend?.stop()
    if (workDir) await rm(workDir, {recursive: true, force: true})
  })

  it('survives malformed PDUs on thousands of connections, still answers C-ECHO and routes, with bounded memory', async () => {
    const pid = router.child.pid!
    const baseline = memoryOf(pid)
    const seed = Date.now() % 1_000_000
    const random = prng(seed)
    const started = Date.now()
    let sent = 0
    let peakKb = 0
    const worker = async () => {
      while (sent < CONNECTIONS && Date.now() - started < TIME_BUDGET_MS) {
        sent++
        await hostileConnection(port, hostilePayload(random, validRequest))
        if (sent % 200 === 0) peakKb = Math.max(peakKb, memoryOf(pid).rssKb)
      }
    }

    await Promise.all(Array.from({length: PARALLEL}, worker))
    expect({seed, exitCode: router.child.exitCode}).toEqual({seed, exitCode: null})
    expect(sent).toBeGreaterThan(200)

    const echo = await echoscu(['-aec', 'DDR_FUZZ', '127.0.0.1', String(port)], {timeoutMs: 20_000})
    expect({seed, code: echo.code, stderr: echo.stderr}).toEqual({seed, code: 0, stderr: ''})
    const file = (await makeTestDicom(path.join(workDir, 'good.dcm'))).file
    const store = await storescu(['-aec', 'DDR_FUZZ', '127.0.0.1', String(port), file], {timeoutMs: 20_000})
    expect({seed, code: store.code, stderr: store.stderr}).toEqual({seed, code: 0, stderr: ''})
    expect(await readdir(backend.dir)).toHaveLength(1)

    const memory = memoryOf(pid)
    // The compiled CLI starts at about 120 MB RSS; 2000 hostile connections add about 30 MB (heap not yet collected).
    expect({seed, hwmBelowLimit: memory.hwmKb < RSS_LIMIT_KB, growthBelow100Mb: Math.max(peakKb, memory.rssKb) - baseline.rssKb < 100 * 1024}).toEqual({seed, hwmBelowLimit: true, growthBelow100Mb: true})
    expect(router.log()).not.toMatch(/internal error|uncaught|unhandled/i)
  }, 90_000)
})
