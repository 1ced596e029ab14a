import {mkdtemp, rm} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import type {PurgeResult} from '../../../src/lib/orthanc/purge.js'
import {runCompiledCli, writeTestConfig} from '../../helpers/compiled-cli.js'
import {writeSyntheticStudies} from '../../helpers/datasets.js'
import {storescu} from '../../helpers/dcmtk.js'
import {type TestOrthanc, startTestOrthanc} from '../../helpers/orthanc.js'
import {freePort} from '../../helpers/ports.js'
import {type TestRouter, startTestRouter} from '../../helpers/router.js'

// Runs the compiled CLI: `npm run build` first.
describe('ddr purge (compiled CLI) against two real Orthanc servers holding routed studies', () => {
  let orthancs: TestOrthanc[] = []
  let router: TestRouter | undefined
  let workDir: string
  let config: string
  let batch = 0

  /** Routes `studies` new synthetic studies (3 instances each) through the router and waits until both Orthancs hold them. */
  async function route(studies: number): Promise<void> {
    batch++
    const before = await instanceCounts()
    const instances = await writeSyntheticStudies(path.join(workDir, `batch-${batch}`), {studies, instancesPerStudy: 3, pixelBytes: 4096, prefix: `PURGE${batch}`})
    const result = await storescu(['-aec', router!.aeTitle, '127.0.0.1', String(router!.port), ...instances.map((i) => i.path)], {timeoutMs: 60_000})
    expect(result.code).toBe(0)
    await router!.drained()
    const wanted = before.reduce((sum, n) => sum + n, 0) + instances.length
    const deadline = Date.now() + 30_000
    while ((await instanceCounts()).reduce((sum, n) => sum + n, 0) < wanted) {
      if (Date.now() > deadline) throw new Error('routed instances did not arrive')
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
  }

  const instanceCounts = () => Promise.all(orthancs.map(async (o) => (await o.client.statistics()).CountInstances))

  beforeAll(async () => {
    workDir = await mkdtemp(path.join(os.tmpdir(), 'ddr-purge-'))
    orthancs = await Promise.all([startTestOrthanc({name: 'alpha', aeTitle: 'ALPHA'}), startTestOrthanc({name: 'beta', aeTitle: 'BETA'})])
    // Receipts off: a stable study's receipt would find the purged instances missing and re-send
    // them from retention (what receipts are for; docs/commands/purge.md says so).
    router = await startTestRouter(
      orthancs.map((o) => ({...o, url: o.url})),
      {studies: {receipts: false}},
    )
    config = await writeTestConfig(path.join(workDir, 'ddr.config.json'), {orthancs, statusPort: await freePort()})
    await route(8)
  })

  afterAll(async () => {
    await router?.stop()
    await Promise.all(orthancs.map((o) => o.stop()))
    if (workDir) await rm(workDir, {recursive: true, force: true})
  })

  it('without --yes on a non-terminal: refuses with a clear message, exit 2, deletes nothing', async () => {
    const before = await instanceCounts()
    expect(before.every((n) => n > 0)).toBe(true)
    // "yes" on stdin must not count: stdin is not a terminal.
    const run = await runCompiledCli(['purge', '--config', config], {input: 'yes\n'})
    expect(run.code).toBe(2)
    expect(run.stdout).toBe('')
    expect(run.stderr).toContain('error [USAGE]: refusing to purge without confirmation: stdin is not a terminal')
    expect(run.stderr).toContain('--yes')
    expect(await instanceCounts()).toEqual(before)

    const json = await runCompiledCli(['purge', '--json', '--config', config])
    expect(json.code).toBe(2)
    expect(JSON.parse(json.stdout)).toMatchObject({error: {code: 'USAGE', exit: 2}})
    expect(await instanceCounts()).toEqual(before)
  })

  it('--dry-run counts per backend and deletes nothing', async () => {
    const before = await instanceCounts()
    const run = await runCompiledCli(['purge', '--dry-run', '--json', '--config', config])
    expect(run.code).toBe(0)
    const result = JSON.parse(run.stdout) as PurgeResult
    expect(result).toMatchObject({dryRun: true, deleted: 0, failed: 0})
    for (const [index, orthanc] of orthancs.entries()) {
      const stats = await orthanc.client.statistics()
      expect(result.backends[index]).toMatchObject({
        name: orthanc.name,
        state: 'dry-run',
        before: {instances: stats.CountInstances, studies: stats.CountStudies, patients: stats.CountPatients},
        deleted: {instances: 0},
      })
    }

    const human = await runCompiledCli(['purge', '--dry-run', '--config', config])
    expect(human.code).toBe(0)
    expect(human.stdout).toMatch(/^alpha\s+dry-run\s+\d+\s+\d+\s+\d+/m)
    expect(human.stdout).toContain(`dry run: ${before[0] + before[1]} instances would be deleted; nothing was deleted`)
    expect(await instanceCounts()).toEqual(before)
  })

  it('--yes --backend NAME purges only that backend', async () => {
    const [alphaBefore, betaBefore] = await instanceCounts()
    const run = await runCompiledCli(['purge', '--yes', '--backend', 'alpha', '--json', '--config', config])
    expect(run.code).toBe(0)
    const result = JSON.parse(run.stdout) as PurgeResult
    expect(result.backends).toHaveLength(1)
    expect(result.backends[0]).toMatchObject({name: 'alpha', state: 'purged', before: {instances: alphaBefore}, deleted: {instances: alphaBefore}, failed: 0, remaining: 0})
    expect(result.deleted).toBe(alphaBefore)
    expect(await instanceCounts()).toEqual([0, betaBefore])
  })

  it('--yes leaves 0 instances on every backend and reports per backend', async () => {
    await route(6)
    const before = await instanceCounts()
    const run = await runCompiledCli(['purge', '--yes', '--config', config])
    expect(run.code).toBe(0)
    // Progress (listr2) goes to stderr; the table to stdout.
    expect(run.stdout).toMatch(/BACKEND\s+STATE\s+BEFORE\s+DELETED\s+FAILED\s+REMAINING/)
    expect(run.stdout).toMatch(new RegExp(`^alpha\\s+purged\\s+${before[0]}\\s+${before[0]}\\s+0\\s+0$`, 'm'))
    expect(run.stdout).toMatch(new RegExp(`^beta\\s+purged\\s+${before[1]}\\s+${before[1]}\\s+0\\s+0$`, 'm'))
    expect(run.stdout).toContain(`${before[0] + before[1]} instances deleted`)
    expect(run.stderr).toMatch(/alpha: \d+ instances deleted/)
    for (const orthanc of orthancs) expect(await orthanc.client.statistics()).toMatchObject({CountInstances: 0, CountStudies: 0, CountPatients: 0})

    const again = await runCompiledCli(['purge', '--yes', '--json', '--config', config])
    expect(again.code).toBe(0)
    expect((JSON.parse(again.stdout) as PurgeResult).backends.map((b) => b.state)).toEqual(['empty', 'empty'])
  })

  it('an unreachable backend: exit 3, the reachable ones are still purged', async () => {
    await route(2)
    const withDead = await writeTestConfig(path.join(workDir, 'with-dead.json'), {
      orthancs,
      statusPort: await freePort(),
      extraBackends: [{name: 'gone', host: '127.0.0.1', port: await freePort(), aeTitle: 'GONE', url: `http://127.0.0.1:${await freePort()}`}],
    })
    const dry = await runCompiledCli(['purge', '--dry-run', '--json', '--config', withDead])
    expect(dry.code).toBe(3)
    expect((JSON.parse(dry.stdout) as PurgeResult).backends.find((b) => b.name === 'gone')).toMatchObject({state: 'unreachable', before: null})

    const run = await runCompiledCli(['purge', '--yes', '--json', '--config', withDead])
    expect(run.code).toBe(3)
    const result = JSON.parse(run.stdout) as PurgeResult
    const gone = result.backends.find((b) => b.name === 'gone')!
    expect(gone.state).toBe('unreachable')
    expect(gone.errors[0]).toMatch(/http:\/\/127\.0\.0\.1:\d+\/statistics failed: ECONNREFUSED/)
    expect(await instanceCounts()).toEqual([0, 0])
  })

  it('an unknown backend name is a usage error (exit 2)', async () => {
    const run = await runCompiledCli(['purge', '--yes', '--backend', 'nope', '--config', config])
    expect(run.code).toBe(2)
    expect(run.stderr).toContain('unknown backend "nope" (configured: alpha, beta)')
  })
})
