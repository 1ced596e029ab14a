import {mkdtemp, rm} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import type {BalanceStatusResult} from '../../../src/lib/status/balance.js'
import {runCompiledCli, spawnCompiledCli, writeTestConfig} from '../../helpers/compiled-cli.js'
import {writeSyntheticStudies} from '../../helpers/datasets.js'
import {storescu} from '../../helpers/dcmtk.js'
import {type TestOrthanc, startTestOrthanc} from '../../helpers/orthanc.js'
import {freePort} from '../../helpers/ports.js'
import {type TestRouter, startTestRouter} from '../../helpers/router.js'
import {waitFor} from '../../helpers/wait.js'

// Runs the compiled CLI: `npm run build` first.
describe('ddr balance-status (compiled CLI) against two real Orthanc servers holding routed studies', () => {
  let orthancs: TestOrthanc[] = []
  let router: TestRouter | undefined
  let workDir: string
  let withRouter: string
  let withoutRouter: string
  const sent = 24

  beforeAll(async () => {
    workDir = await mkdtemp(path.join(os.tmpdir(), 'ddr-balance-'))
    orthancs = await Promise.all([startTestOrthanc({name: 'alpha', aeTitle: 'ALPHA'}), startTestOrthanc({name: 'beta', aeTitle: 'BETA'})])
    // Round-robin over new studies (affinity keeps each study whole): both backends get studies. With the
    // default policy the placement follows rendezvous hashing of random UIDs, and all 8 studies landed
    // on one backend about once in 128 runs (it did once, in a fresh-clone CI run).
    router = await startTestRouter(orthancs.map((o) => ({...o, url: o.url})), {routing: {policy: 'round-robin'}})
    const instances = await writeSyntheticStudies(path.join(workDir, 'studies'), {studies: 8, instancesPerStudy: 3, pixelBytes: 4096})
    const result = await storescu(['-aec', router.aeTitle, '127.0.0.1', String(router.port), ...instances.map((i) => i.path)], {timeoutMs: 60_000})
    expect(result.code).toBe(0)
    await router.drained()
    await waitFor('every instance stored', async () => (await totalInstances(orthancs)) === sent, 30_000)
    withRouter = await writeTestConfig(path.join(workDir, 'with-router.json'), {orthancs, statusPort: router.service.statusPort!})
    // A status port nothing listens on: the router is "not running".
    withoutRouter = await writeTestConfig(path.join(workDir, 'without-router.json'), {orthancs, statusPort: await freePort()})
  })

  afterAll(async () => {
    await router?.stop()
    await Promise.all(orthancs.map((o) => o.stop()))
    if (workDir) await rm(workDir, {recursive: true, force: true})
  })

  it('--json: counts match Orthanc statistics, and the router counters come from its status port', async () => {
    const run = await runCompiledCli(['balance-status', '--json', '--config', withRouter])
    expect(run.stderr).toBe('')
    expect(run.code).toBe(0)
    const result = JSON.parse(run.stdout) as BalanceStatusResult
    const status = router!.service.status()
    expect(result.router).not.toBeNull()
    expect(result.routerError).toBeNull()
    expect(result.router!.counters.routed).toBe(status.counters.routed)
    expect(result.router!.queueDepth).toBe(0)
    expect(result.backends.map((b) => b.name)).toEqual(['alpha', 'beta'])
    for (const orthanc of orthancs) {
      const stats = await orthanc.client.statistics()
      const row = result.backends.find((b) => b.name === orthanc.name)!
      const seen = status.backends.find((b) => b.name === orthanc.name)!
      expect(row).toMatchObject({
        healthy: true,
        healthReason: null,
        reachable: true,
        instances: stats.CountInstances,
        studies: stats.CountStudies,
        diskBytes: Number(stats.TotalDiskSize),
        address: `${orthanc.aeTitle}@127.0.0.1:${orthanc.dicomPort}`,
        routed: seen.routed,
        failed: 0,
        inFlight: 0,
        routerHealthy: true,
        weight: 1,
      })
      expect(row.echoMs).toBeGreaterThan(0)
      expect(row.restMs).toBeGreaterThan(0)
      expect(typeof row.score).toBe('number')
    }

    expect(result.backends.reduce((sum, b) => sum + b.instances!, 0)).toBe(sent)
    // Both backends got studies (round-robin over 8 studies).
    expect(result.backends.every((b) => b.instances! > 0)).toBe(true)
  })

  it('--json without a running router: asks the backends directly, router null with the reason', async () => {
    const run = await runCompiledCli(['balance-status', '--json', '--config', withoutRouter])
    expect(run.code).toBe(0)
    const result = JSON.parse(run.stdout) as BalanceStatusResult
    expect(result.router).toBeNull()
    expect(result.routerError).toMatch(/not running/)
    for (const orthanc of orthancs) {
      const stats = await orthanc.client.statistics()
      expect(result.backends.find((b) => b.name === orthanc.name)).toMatchObject({healthy: true, instances: stats.CountInstances, studies: stats.CountStudies, routed: null, score: null})
    }
  })

  it('human output: a table, the router line, and says when the router is not running', async () => {
    const running = await runCompiledCli(['balance-status', '--config', withRouter])
    expect(running.code).toBe(0)
    expect(running.stdout).toMatch(/^router http:\/\/127\.0\.0\.1:\d+/)
    expect(running.stdout).toMatch(/BACKEND\s+ADDRESS\s+HEALTH\s+REST\s+C-ECHO\s+INSTANCES\s+STUDIES\s+DISK\s+WEIGHT\s+ROUTED\s+FAILED\s+IN-FLIGHT\s+SCORE/)
    expect(running.stdout).toMatch(/^alpha\s+ALPHA@127\.0\.0\.1:\d+\s+up\s/m)

    const alone = await runCompiledCli(['balance-status', '--config', withoutRouter])
    expect(alone.code).toBe(0)
    expect(alone.stdout).toMatch(/^router: not running .*backends asked directly/)
    expect(alone.stdout).not.toContain('ROUTED')
  })

  it('a down backend is reported with its reason, exit 0 while another answers', async () => {
    const config = await writeTestConfig(path.join(workDir, 'one-down.json'), {
      orthancs,
      statusPort: router!.service.statusPort!,
      extraBackends: [{name: 'gone', host: '127.0.0.1', port: await freePort(), aeTitle: 'GONE', url: `http://127.0.0.1:${await freePort()}`}],
    })
    const run = await runCompiledCli(['balance-status', '--json', '--config', config])
    expect(run.code).toBe(0)
    const gone = (JSON.parse(run.stdout) as BalanceStatusResult).backends.find((b) => b.name === 'gone')!
    expect(gone).toMatchObject({healthy: false, reachable: false, instances: null, echoMs: null, restMs: null, routed: null})
    expect(gone.healthReason).toMatch(/C-ECHO: .*ECONNREFUSED.*REST: .*ECONNREFUSED|REST: .*ECONNREFUSED.*C-ECHO/s)

    const human = await runCompiledCli(['balance-status', '--config', config])
    expect(human.stdout).toMatch(/^gone\s+GONE@127\.0\.0\.1:\d+\s+down\s/m)
    expect(human.stdout).toMatch(/^gone: .*ECONNREFUSED/m)
    expect(human.stdout).toMatch(/^gone: the running router does not route to it/m)
  })

  it('exit 3 when no backend answers', async () => {
    const config = await writeTestConfig(path.join(workDir, 'all-down.json'), {
      orthancs: [],
      statusPort: await freePort(),
      extraBackends: [{name: 'gone', host: '127.0.0.1', port: await freePort(), aeTitle: 'GONE', url: `http://127.0.0.1:${await freePort()}`}],
    })
    const json = await runCompiledCli(['balance-status', '--json', '--config', config])
    expect(json.code).toBe(3)
    expect(JSON.parse(json.stdout)).toMatchObject({router: null, backends: [{name: 'gone', reachable: false}]})
    const human = await runCompiledCli(['balance-status', '--config', config])
    expect(human.code).toBe(3)
    expect(human.stdout).toMatch(/no backend answers/)
  })

  it('--watch with --json prints one JSON document per refresh until Ctrl-C, and --watch takes no value', async () => {
    for (const args of [['--watch', '1', '--json'], ['--json', '--watch']]) {
      const child = spawnCompiledCli(['balance-status', ...args, '--config', withoutRouter])
      let stdout = ''
      let stderr = ''
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk))
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
      const closed = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)))
      const wanted = args.includes('1') ? 2 : 1
      try {
        await waitFor(`${wanted} lines of output`, async () => stdout.split('\n').filter(Boolean).length >= wanted, 20_000)
      } finally {
        child.kill('SIGINT')
      }

      expect(await closed).toBe(0)
      expect(stderr).toBe('')
      const documents = stdout.trim().split('\n').map((line) => JSON.parse(line) as BalanceStatusResult)
      expect(documents.length).toBeGreaterThanOrEqual(wanted)
      for (const document of documents) expect(document.backends.map((b) => b.instances)).toEqual(await Promise.all(orthancs.map(async (o) => (await o.client.statistics()).CountInstances)))
    }
  })
})

async function totalInstances(orthancs: TestOrthanc[]): Promise<number> {
  const counts = await Promise.all(orthancs.map(async (o) => (await o.client.statistics()).CountInstances))
  return counts.reduce((sum, n) => sum + n, 0)
}

