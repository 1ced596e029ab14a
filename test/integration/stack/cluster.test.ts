import {existsSync, readFileSync} from 'node:fs'
import {chmod, mkdtemp, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {loadConfig} from '../../../src/lib/config/load.js'
import type {DdrConfig} from '../../../src/lib/config/schema.js'
import {OrthancClient} from '../../../src/lib/orthanc/client.js'
import {isAlive} from '../../../src/lib/stack/processes.js'
import {stackDown, stackStatus, stackUp, type StackPartResult, type StackResult} from '../../../src/lib/stack/stack.js'
import {runCompiledCli} from '../../helpers/compiled-cli.js'
import {writeSyntheticStudies} from '../../helpers/datasets.js'
import {storescu} from '../../helpers/dcmtk.js'
import {freePorts} from '../../helpers/ports.js'
import {waitFor} from '../../helpers/wait.js'

const rows = (parts: StackPartResult[] | undefined) => (parts ?? []).map((part) => [part.name, part.state])

describe('ddr stack up --routers: PostgreSQL, routers and HAProxy', () => {
  let root: string
  let configPath: string
  let config: DdrConfig
  let orthancUrl: string
  let listenPort: number
  let postgresPort: number
  let files: string[]

  const stack = async (action: string, extra: string[] = []) => {
    const result = await runCompiledCli(['stack', action, '--json', '--config', configPath, ...extra], {cwd: root, timeoutMs: 120_000})
    try {
      return {...result, json: JSON.parse(result.stdout) as StackResult}
    } catch {
      throw new Error(`stack ${action}: stdout is not JSON (exit ${result.code}):\n${result.stdout}\n${result.stderr}`)
    }
  }

  beforeAll(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'ddr-cluster-it-'))
    // PostgreSQL runs as the postgres user (we are root): it must get through to stack/postgres.
    await chmod(root, 0o711)
    const [dicom, http, listen, postgres] = await freePorts(4)
    listenPort = listen
    postgresPort = postgres
    orthancUrl = `http://127.0.0.1:${http}`
    configPath = path.join(root, 'ddr.config.json')
    await writeFile(
      configPath,
      JSON.stringify({
        stack: {dir: path.join(root, 'stack')},
        listen: {host: '127.0.0.1', port: listenPort, aeTitle: 'DDR_CLUSTER'},
        spool: {retryBaseMs: 100, retryMaxMs: 1000},
        health: {intervalMs: 500},
        backends: [{name: 'cluster-orthanc', port: dicom, aeTitle: 'CLUSTER_O', url: orthancUrl}],
      }),
    )
    config = loadConfig({configPath})
    files = (await writeSyntheticStudies(path.join(root, 'studies'), {studies: 2, instancesPerStudy: 2, pixelBytes: 2048, prefix: 'CLUSTER'})).map((instance) => instance.path)
  })

  afterAll(async () => {
    if (config !== undefined) await stackDown(config).catch(() => undefined)
    if (root !== undefined) await rm(root, {recursive: true, force: true})
  })

  it('gives the routers the PostgreSQL URL by default (ddr stack up --routers 2)', async () => {
    const up = await stack('up', ['--routers', '2', '--postgres-port', String(postgresPort)])
    expect(up.json.backends.map((backend) => backend.state)).toEqual(['started'])
    expect(rows(up.json.cluster)[0]).toEqual(['postgresql', 'started'])
    const routers = up.json.cluster!.filter((part) => part.kind === 'router')
    const url = up.json.cluster!.find((part) => part.kind === 'postgres')!.url
    expect(url).toBe(`postgres://ddr@127.0.0.1:${postgresPort}/ddr`)
    for (const router of routers) {
      expect(router.ledgerUrl).toBe(url)
      expect(JSON.parse(readFileSync(path.join(router.dir, 'router.json'), 'utf8')).ledgerUrl).toBe(url)
      expect(router.state).toBe('started')
    }

    expect(up.code).toBe(0)
    // They share the ledger: each one's /status lists both, from their heartbeats in PostgreSQL.
    for (const router of routers) {
      await waitFor(`${router.name} to see both routers`, async () => {
        const status = (await (await fetch(`http://127.0.0.1:${router.statusPort}/status`)).json()) as {cluster?: {router: string; routers: Array<{name: string}>}}
        return status.cluster?.router === router.name && status.cluster.routers.map((r) => r.name).join(',') === 'router-1,router-2'
      }, 15_000)
    }
  })

  it('starts them (routers on their own SQLite ledgers here), routes through HAProxy, reports them, and is idempotent', async () => {
    const up = await stackUp(config, {cluster: {routers: 2, routerLedger: 'sqlite', postgresPort, postgresFsync: false}})
    expect(up.ok).toBe(true)
    // PostgreSQL and HAProxy run since the test before; the routers restart on SQLite ledgers.
    expect(rows(up.cluster)).toEqual([
      ['postgresql', 'already-running'],
      ['router-1', expect.stringMatching(/^(started|restarted)$/)],
      ['router-2', expect.stringMatching(/^(started|restarted)$/)],
      // Running since the test before, in front of the same ports: left as it is.
      ['haproxy', 'already-running'],
    ])
    const [postgres, router1, router2, haproxy] = up.cluster!
    expect(postgres).toMatchObject({url: `postgres://ddr@127.0.0.1:${postgresPort}/ddr`, dir: path.join(root, 'stack', 'postgres')})
    expect(haproxy).toMatchObject({host: '127.0.0.1', port: listenPort})
    for (const router of [router1, router2]) {
      expect(router.dir).toBe(path.join(root, 'stack', 'routers', router.name))
      expect(router.ledgerUrl).toBe(`sqlite:${path.join(router.dir, 'spool', 'ledger.db')}`)
      expect(isAlive(router.pid!)).toBe(true)
    }

    const cfg = readFileSync(path.join(root, 'stack', 'haproxy', 'haproxy.cfg'), 'utf8')
    expect(cfg).toContain(`    bind 127.0.0.1:${listenPort}\n`)
    expect(cfg).toContain(`    server router-1 127.0.0.1:${router1.port} check port ${router1.statusPort}\n`)

    // One association per file, through HAProxy on listen.port, with the router's AE title.
    for (const file of files) {
      const sent = await storescu(['-aec', 'DDR_CLUSTER', '127.0.0.1', String(listenPort), file])
      expect(sent.code).toBe(0)
    }

    const orthanc = new OrthancClient({url: orthancUrl})
    try {
      await waitFor('the instances in Orthanc', async () => (await orthanc.statistics()).CountInstances === files.length, 20_000)
    } finally {
      orthanc.close()
    }

    const status = await stack('status')
    expect(status.code).toBe(0)
    expect(rows(status.json.cluster)).toEqual([
      ['postgresql', 'running'],
      ['router-1', 'running'],
      ['router-2', 'running'],
      ['haproxy', 'running'],
    ])
    const routers = status.json.cluster!.filter((part) => part.kind === 'router')
    expect(routers.map((router) => router.balancer)).toEqual(['UP', 'UP'])
    expect(routers.reduce((sum, router) => sum + router.received!, 0)).toBe(files.length)
    expect(routers.every((router) => router.received! > 0)).toBe(true)
    const table = await runCompiledCli(['stack', 'status', '--config', configPath], {cwd: root})
    expect(table.stdout).toMatch(/PART\s+STATE\s+ADDRESS\s+PID\s+DETAILS/)
    expect(table.stdout).toMatch(new RegExp(`router-1\\s+running\\s+127\\.0\\.0\\.1:${router1.port}\\s+${router1.pid}\\s+status :${router1.statusPort}, haproxy UP`))

    const again = await stackUp(config, {cluster: {routers: 2, routerLedger: 'sqlite', postgresPort, postgresFsync: false}})
    expect(rows(again.cluster).map(([, state]) => state)).toEqual(['already-running', 'already-running', 'already-running', 'already-running'])
    expect(again.cluster!.map((part) => part.pid)).toEqual(up.cluster!.map((part) => part.pid))
  })

  it('stack down drains the routers, stops HAProxy and PostgreSQL, then the Orthancs; status says so', async () => {
    const before = await stackStatus(config)
    const pids = [...before.backends, ...before.cluster!].map((part) => part.pid).filter((pid) => pid !== undefined)
    const down = await stack('down')
    expect(down.code).toBe(0)
    expect(down.json.backends.map((backend) => backend.state)).toEqual(['stopped'])
    expect(rows(down.json.cluster)).toEqual([
      ['postgresql', 'stopped'],
      ['router-1', 'stopped'],
      ['router-2', 'stopped'],
      ['haproxy', 'stopped'],
    ])
    // Drained, not killed: each router logged its drain and stopped on its own.
    for (const name of ['router-1', 'router-2']) expect(readFileSync(path.join(root, 'stack', 'routers', name, 'router.log'), 'utf8')).toMatch(/INFO\s+drained .*\n.*INFO\s+stopped/)
    for (const pid of pids) expect(isAlive(pid!)).toBe(false)
    expect(existsSync(path.join(root, 'stack', 'routers', 'router-1', 'spool'))).toBe(true)

    const after = await stackStatus(config)
    expect(rows(after.cluster).map(([, state]) => state)).toEqual(['not-running', 'not-running', 'not-running', 'not-running'])
  })
})
