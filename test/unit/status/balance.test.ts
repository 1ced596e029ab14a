import {mkdir, mkdtemp, rm, stat, writeFile} from 'node:fs/promises'
import http from 'node:http'
import type {AddressInfo} from 'node:net'
import os from 'node:os'
import path from 'node:path'

import type {BackendConfig, DdrConfig} from '../../../src/lib/config/schema.js'
import {validateConfig} from '../../../src/lib/config/validate.js'
import {DimseServer} from '../../../src/lib/dimse/scp.js'
import {ExitCode} from '../../../src/lib/errors.js'
import {
  type BackendBalance,
  type BalanceStatusResult,
  balanceExitCode,
  formatBalance,
  formatWatchFrame,
  gatherBalance,
  watchBalance,
} from '../../../src/lib/status/balance.js'
import {parseRouterStatus} from '../../../src/lib/status/client.js'
import {freePort} from '../../helpers/ports.js'

const IMPLICIT_VR_LITTLE_ENDIAN = '1.2.840.10008.1.2'

function row(overrides: Partial<BackendBalance> = {}): BackendBalance {
  return {
    name: 'orthanc1',
    type: 'orthanc',
    mirror: false,
    address: 'ORTHANC1@127.0.0.1:4242',
    url: 'http://127.0.0.1:8042',
    transport: 'dimse',
    weight: 1,
    healthy: true,
    healthReason: null,
    reachable: true,
    echoMs: 1.5,
    restMs: 2.25,
    instances: 120,
    studies: 4,
    diskBytes: 5 * 1024 * 1024,
    freeBytes: null,
    minFreeBytes: null,
    routed: null,
    failed: null,
    inFlight: null,
    storeLatencyMs: null,
    score: null,
    routerHealthy: null,
    routerHealthReason: null,
    ...overrides,
  }
}

function result(overrides: Partial<BalanceStatusResult> = {}): BalanceStatusResult {
  return {checkedAt: '2026-01-01T10:00:00.000Z', routerUrl: 'http://127.0.0.1:11180', router: null, routerError: 'not running (nothing listens on http://127.0.0.1:11180)', backends: [row()], ...overrides}
}

const runningRouter: NonNullable<BalanceStatusResult['router']> = {
  url: 'http://127.0.0.1:11180',
  version: '0.1.0',
  startedAt: '2026-01-01T09:00:00.000Z',
  uptimeSeconds: 3725,
  policy: 'least-loaded',
  affinity: true,
  associations: 1,
  counters: {received: 10, routed: 9, failed: 1, failovers: 2},
  queueDepth: 3,
  studiesRemembered: 4,
  spool: {depth: 4, bytes: 2048, oldestAgeSeconds: 75, retries: 5, deadLetters: 1, refusing: null},
  mirrors: null,
  studies: {receiving: 2, stable: 5, receipts: {verified: 3, repairing: 0, incomplete: 1, unverifiable: 0, unchecked: 1}},
  cluster: null,
}

describe('formatBalance', () => {
  it('with a shared ledger: every router of the cluster, the silent and the draining ones named so', () => {
    const routers = [
      {name: 'router-1', address: '10.0.0.1:11180', version: '0.1.0', ageSeconds: 2, healthy: true, reasons: [], received: 40, routed: 38, failed: 0, spoolDepth: 2},
      {name: 'router-2', address: '10.0.0.2:11180', version: '0.1.0', ageSeconds: 1, healthy: false, reasons: ['draining'], received: 12, routed: 12, failed: 0, spoolDepth: 0},
      {name: 'router-3', address: '10.0.0.3:11180', version: '0.1.0', ageSeconds: 45, healthy: true, reasons: [], received: 7, routed: 7, failed: 1, spoolDepth: 0},
    ]
    const text = formatBalance(result({router: {...runningRouter, cluster: {router: 'router-1', claims: {claimed: 5, followed: 3, unconfirmed: 1, conflicts: 0, pending: 1}, ledgerUnreachableSince: null, routers}}, routerError: null}))
    expect(text).toContain('cluster: this router is router-1; study claims: 5 made, 3 followed, 1 routed unconfirmed, 1 waiting for the ledger')
    expect(text).toMatch(/^router-1\s+10\.0\.0\.1:11180\s+up\s+2s ago\s+40\s+38\s+0\s+2\s+0\.1\.0$/m)
    expect(text).toMatch(/^router-2\s+10\.0\.0\.2:11180\s+draining\s+1s ago/m)
    expect(text).toMatch(/^router-3\s+10\.0\.0\.3:11180\s+silent\s+45s ago/m)
  })

  it("reads the cluster from a router's /status, and none from one without a shared ledger", () => {
    const body = {counters: {received: 1, routed: 1, failed: 0, failovers: 0}, backends: [], cluster: {router: 'router-2', claims: {claimed: 1, pending: 0}, ledgerUnreachableSince: null, routers: [{name: 'router-2', address: 'h:1', version: '1', ageSeconds: 0.5, status: {healthy: true, reasons: [], received: 1, routed: 1, failed: 0, spoolDepth: 0}}]}}
    expect(parseRouterStatus(body, 'u')?.cluster).toEqual({
      router: 'router-2',
      claims: {claimed: 1, followed: 0, unconfirmed: 0, conflicts: 0, pending: 0},
      ledgerUnreachableSince: null,
      routers: [{name: 'router-2', address: 'h:1', version: '1', ageSeconds: 0.5, healthy: true, reasons: [], received: 1, routed: 1, failed: 0, spoolDepth: 0}],
    })
    expect(parseRouterStatus({counters: {received: 1}, backends: []}, 'u')?.cluster).toBeNull()
  })

  it('without a router: says so, and leaves the router columns out', () => {
    const text = formatBalance(result())
    const lines = text.split('\n')
    expect(lines[0]).toBe('router: not running (nothing listens on http://127.0.0.1:11180); backends asked directly')
    expect(lines[2]).toMatch(/^BACKEND\s+ADDRESS\s+HEALTH\s+REST\s+C-ECHO\s+INSTANCES\s+STUDIES\s+DISK\s+WEIGHT$/)
    expect(lines[3]).toMatch(/^orthanc1\s+ORTHANC1@127\.0\.0\.1:4242\s+up\s+2\.3 ms\s+1\.5 ms\s+120\s+4\s+5\.0 MiB\s+1$/)
    expect(text).not.toContain('ROUTED')
  })

  it('with a router: its counters, queue depth, spool, and per-backend routed/failed/in-flight/score', () => {
    const text = formatBalance(
      result({
        router: runningRouter,
        routerError: null,
        backends: [
          row({routed: 6, failed: 0, inFlight: 1, score: 4.5, storeLatencyMs: 4.5, routerHealthy: true}),
          row({name: 'orthanc2', address: 'ORTHANC2@127.0.0.1:4252', healthy: false, reachable: false, healthReason: 'C-ECHO: refused', echoMs: null, restMs: null, instances: null, studies: null, diskBytes: null, routed: 3, failed: 1, inFlight: 0, score: 8, routerHealthy: false, routerHealthReason: 'C-ECHO failed'}),
        ],
      }),
    )
    expect(text).toContain('router http://127.0.0.1:11180 (ddr 0.1.0, up 1h 2m): policy least-loaded, affinity on')
    expect(text).toContain('  received 10, routed 9, failed 1, failovers 2; queue depth 3; 1 association open')
    expect(text).toContain('  spool: 4 waiting (2.0 KiB), oldest 1m 15s, 5 retries, 1 dead letters')
    expect(text).toContain('  studies: 2 receiving, 5 stable (receipts: 3 verified, 0 repairing, 1 incomplete, 0 unverifiable, 1 not checked yet)')
    expect(text).toMatch(/ROUTED\s+FAILED\s+IN-FLIGHT\s+SCORE/)
    expect(text).toMatch(/^orthanc1 .* up .*\s6\s+0\s+1\s+4\.5$/m)
    expect(text).toMatch(/^orthanc2\s+ORTHANC2@127\.0\.0\.1:4252\s+down\s+-\s+-\s+-\s+-\s+-\s+1\s+3\s+1\s+0\s+8$/m)
    expect(text).toContain('orthanc2: C-ECHO: refused')
    expect(text).toContain('orthanc2: the router sees it down: C-ECHO failed')
    expect(text).not.toContain('no backend answers')
  })

  it('a folder backend: its path, file count and free space (FREE column); a mirror says so instead of a weight; the router\'s mirror copies', () => {
    const folder = row({name: 'archive', type: 'folder', mirror: true, address: 'folder /srv/dicom', url: null, transport: 'rest', echoMs: null, restMs: null, instances: 12, studies: null, diskBytes: null, freeBytes: 3 * 1024 ** 3, minFreeBytes: 100 * 1024 ** 2})
    const web = row({name: 'cloud', type: 'dicomweb', address: 'DICOMweb https://pacs.example/dicom-web', url: 'https://pacs.example/dicom-web', transport: 'rest', echoMs: null, restMs: 12, instances: null, studies: null, diskBytes: null})
    const text = formatBalance(result({router: {...runningRouter, mirrors: {durable: true, mirrored: 40, pending: 6, failed: 0, oldestAgeSeconds: 90}}, routerError: null, backends: [row({routerHealthy: true}), folder, web]}))
    expect(text).toMatch(/^BACKEND\s+ADDRESS\s+HEALTH\s+REST\s+C-ECHO\s+INSTANCES\s+STUDIES\s+DISK\s+FREE\s+WEIGHT\s+ROUTED/m)
    expect(text).toMatch(/^archive\s+folder \/srv\/dicom\s+up\s+-\s+-\s+12\s+-\s+-\s+3\.0 GiB\s+mirror\s/m)
    expect(text).toMatch(/^cloud\s+DICOMweb https:\/\/pacs\.example\/dicom-web\s+up\s+12 ms\s+-\s+-\s+-\s+-\s+-\s+1\s/m)
    expect(text).toContain('  mirrors: 40 copied, 6 pending (on disk), oldest 1m 30s, 0 given up')
    // Without folders the FREE column stays out.
    expect(formatBalance(result())).not.toContain('FREE')
  })

  it('a reachable backend failing one check is "degraded"; none answering says so', () => {
    expect(formatBalance(result({backends: [row({healthy: false, healthReason: 'REST: HTTP 401'})]}))).toMatch(/^orthanc1\s+\S+\s+degraded\s/m)
    expect(formatBalance(result({backends: [row({healthy: false, reachable: false, healthReason: 'x'})]}))).toMatch(/no backend answers$/)
  })

  it('paints only when asked', () => {
    expect(formatBalance(result())).not.toContain('\u001B[')
    expect(formatBalance(result(), {color: true})).toContain('\u001B[32m')
  })
})

describe('balanceExitCode', () => {
  it('is 3 only when no backend answers; a down backend among others is information', () => {
    expect(balanceExitCode(result())).toBe(ExitCode.ok)
    expect(balanceExitCode(result({backends: [row(), row({healthy: false, reachable: false})]}))).toBe(ExitCode.ok)
    expect(balanceExitCode(result({backends: [row({healthy: false, reachable: true})]}))).toBe(ExitCode.ok)
    expect(balanceExitCode(result({backends: [row({healthy: false, reachable: false}), row({healthy: false, reachable: false})]}))).toBe(ExitCode.peer)
  })
})

describe('formatWatchFrame', () => {
  it('redraws in place on a terminal: home, every line cleared to its end, the rest of the screen cleared', () => {
    const frame = formatWatchFrame(result(), {intervalSeconds: 2, inPlace: true})
    expect(frame.startsWith('\u001B[H')).toBe(true)
    expect(frame.endsWith('\u001B[K\n\u001B[J')).toBe(true)
    expect(frame).toContain('every 2 s (Ctrl-C to stop)\u001B[K\n')
  })

  it('appends frames otherwise, without escape codes', () => {
    const frame = formatWatchFrame(result(), {intervalSeconds: 5, inPlace: false})
    expect(frame).not.toContain('\u001B')
    expect(frame.endsWith('\n\n')).toBe(true)
  })
})

describe('watchBalance', () => {
  it('gathers every interval until aborted and returns the last result', async () => {
    const controller = new AbortController()
    const seen: BalanceStatusResult[] = []
    let calls = 0
    const last = await watchBalance(async () => result({checkedAt: String(++calls)}), {
      intervalMs: 10,
      signal: controller.signal,
      onResult: (r) => {
        seen.push(r)
        if (seen.length === 3) controller.abort()
      },
    })
    expect(seen.map((r) => r.checkedAt)).toEqual(['1', '2', '3'])
    expect(last?.checkedAt).toBe('3')
  })

  it('drops a round in progress when aborted', async () => {
    const controller = new AbortController()
    setTimeout(() => controller.abort(), 20)
    let results = 0
    const last = await watchBalance(() => new Promise<BalanceStatusResult>((resolve) => setTimeout(() => resolve(result()), 5000).unref()), {intervalMs: 10, signal: controller.signal, onResult: () => results++})
    expect(last).toBeUndefined()
    expect(results).toBe(0)
  })
})

describe('gatherBalance against a fake Orthanc, a DICOM SCP and a fake router', () => {
  let orthanc: http.Server
  let router: http.Server
  let scp: DimseServer
  let refusingScp: DimseServer
  let orthancUrl: string
  let routerPort: number
  let scpPort: number
  let refusingPort: number

  const listen = async (server: http.Server) => {
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    return (server.address() as AddressInfo).port
  }

  beforeAll(async () => {
    orthanc = http.createServer((request, response) => {
      const json = (status: number, value: unknown) => response.writeHead(status, {'content-type': 'application/json'}).end(JSON.stringify(value))
      if (request.headers.authorization !== `Basic ${Buffer.from('ddr:secret').toString('base64')}`) return json(401, {Message: 'Unauthorized'})
      if (request.url === '/system') return json(200, {Name: 'fake', Version: '1.10.1'})
      if (request.url === '/statistics') return json(200, {CountPatients: 2, CountStudies: 3, CountSeries: 3, CountInstances: 42, TotalDiskSize: '123456', TotalDiskSizeMB: 0})
      json(404, {})
    })
    orthancUrl = `http://127.0.0.1:${await listen(orthanc)}`
    router = http.createServer((_, response) =>
      response.writeHead(200, {'content-type': 'application/json'}).end(
        JSON.stringify({counters: {received: 5, routed: 5, failed: 0, failovers: 0}, queueDepth: 0, backends: [{name: 'REST-ONE', healthy: true, healthReason: 'ok', inFlight: 2, latencyMs: 3, score: 9, routed: 5, failed: 0}]}),
      ),
    )
    routerPort = await listen(router)
    const beginStore = () => {
      throw new Error('no stores in this test')
    }

    scp = new DimseServer({aeTitle: 'SCP', transferSyntaxes: [IMPLICIT_VR_LITTLE_ENDIAN], beginStore})
    scpPort = await scp.listen(0, '127.0.0.1')
    refusingScp = new DimseServer({
      aeTitle: 'PICKY',
      transferSyntaxes: [IMPLICIT_VR_LITTLE_ENDIAN],
      beginStore,
      checkAssociation: () => ({accept: false, result: 1, source: 1, reason: 3, why: 'calling AE title not recognized'}),
    })
    refusingPort = await refusingScp.listen(0, '127.0.0.1')
  })

  afterAll(async () => {
    await scp?.close(0)
    await refusingScp?.close(0)
    for (const server of [orthanc, router]) {
      server?.closeAllConnections()
      await new Promise((resolve) => server?.close(resolve))
    }
  })

  const config = (backends: Array<Partial<BackendConfig>>, statusPort: number): DdrConfig =>
    validateConfig({status: {host: '127.0.0.1', port: statusPort}, health: {timeoutMs: 2000}, backends: backends.map((b, i) => ({name: `b${i}`, port: 1, aeTitle: 'X', ...b}))}, 'test')

  it('measures each backend, merges the router view by name, and never throws for a down one', async () => {
    const deadPort = await freePort()
    const result = await gatherBalance(
      config(
        [
          {name: 'rest-one', transport: 'rest', url: orthancUrl, username: 'ddr', password: 'secret'},
          {name: 'scp', port: scpPort, aeTitle: 'SCP'},
          {name: 'picky', port: refusingPort, aeTitle: 'PICKY'},
          {name: 'dead', port: deadPort, aeTitle: 'DEAD', url: `http://127.0.0.1:${deadPort}`},
          {name: 'locked', transport: 'rest', url: orthancUrl, username: 'ddr', password: 'wrong'},
        ],
        routerPort,
      ),
    )
    expect(result.router).toMatchObject({url: `http://127.0.0.1:${routerPort}`, counters: {routed: 5}, spool: null})
    const [rest, dicom, picky, dead, locked] = result.backends
    // A REST backend: no C-ECHO, counts from /statistics, router columns matched case-insensitively.
    expect(rest).toMatchObject({healthy: true, reachable: true, echoMs: null, instances: 42, studies: 3, diskBytes: 123456, routed: 5, inFlight: 2, score: 9, routerHealthy: true})
    expect(rest.restMs).toBeGreaterThan(0)
    // A plain DICOM SCP without a url: C-ECHO only.
    expect(dicom).toMatchObject({healthy: true, reachable: true, restMs: null, instances: null, routed: null, routerHealthy: null})
    expect(dicom.echoMs).toBeGreaterThan(0)
    // It answers, but refuses us: reachable, not healthy.
    expect(picky).toMatchObject({healthy: false, reachable: true, echoMs: null})
    expect(picky.healthReason).toMatch(/^C-ECHO: .*reject/i)
    expect(dead).toMatchObject({healthy: false, reachable: false})
    expect(dead.healthReason).toMatch(/C-ECHO: .*ECONNREFUSED.*; REST: .*ECONNREFUSED/)
    expect(locked).toMatchObject({healthy: false, reachable: true, instances: null})
    expect(locked.healthReason).toMatch(/REST: .*HTTP 401/)
    expect(balanceExitCode(result)).toBe(ExitCode.ok)
  })

  it('checks a folder backend (writable, free space, files) and a dicomweb backend (QIDO-RS) as what they are, not as Orthanc', async () => {
    const root = await mkdtemp(path.join(os.tmpdir(), 'ddr-balance-folder-'))
    const web = http.createServer((request, response) => {
      const ok = request.headers.authorization === 'Bearer good'
      webRequests.push(`${request.method} ${request.url}`)
      response.writeHead(ok ? 200 : 401, {'content-type': 'application/dicom+json'}).end(ok ? '[]' : '')
    })
    const webRequests: string[] = []
    const webUrl = `http://127.0.0.1:${await listen(web)}/dicom-web`
    try {
      await mkdir(path.join(root, 'P1', 'S1', 'E1'), {recursive: true})
      for (const name of ['a.dcm', 'b.dcm', '.c.dcm.x1.part']) await writeFile(path.join(root, 'P1', 'S1', 'E1', name), 'x')
      const statusPort = await freePort()
      const backends = [
        {name: 'primary', port: scpPort, aeTitle: 'SCP'},
        {name: 'archive', type: 'folder', path: root, minFreeMb: 1, mirror: true},
        {name: 'full', type: 'folder', path: root, minFreeMb: 1e12},
        {name: 'missing', type: 'folder', path: path.join(root, 'nowhere')},
        {name: 'cloud', type: 'dicomweb', url: webUrl, token: 'good'},
        {name: 'locked', type: 'dicomweb', url: webUrl, token: 'bad'},
        {name: 'gone', type: 'dicomweb', url: `http://127.0.0.1:${await freePort()}/dicom-web`},
      ]
      const result = await gatherBalance(validateConfig({status: {host: '127.0.0.1', port: statusPort}, health: {timeoutMs: 2000}, backends}, 'test'))
      const [, archive, full, missing, cloud, locked, gone] = result.backends
      expect(archive).toMatchObject({type: 'folder', mirror: true, address: `folder ${root}`, url: null, healthy: true, reachable: true, instances: 2, echoMs: null, restMs: null, minFreeBytes: 1024 * 1024})
      expect(archive.freeBytes).toBeGreaterThan(0)
      expect(full).toMatchObject({healthy: false, reachable: true})
      expect(full.healthReason).toMatch(/^folder: .* MB free, below minFreeMb 1000000000000$/)
      expect(missing).toMatchObject({healthy: false, reachable: false, instances: null})
      expect(missing.healthReason).toMatch(/nowhere does not exist/)
      // balance-status only looks: the missing folder is not created.
      await expect(stat(path.join(root, 'nowhere'))).rejects.toMatchObject({code: 'ENOENT'})
      expect(cloud).toMatchObject({type: 'dicomweb', address: `DICOMweb ${webUrl}`, healthy: true, reachable: true, echoMs: null, instances: null})
      expect(cloud.restMs).toBeGreaterThan(0)
      expect(locked).toMatchObject({healthy: false, reachable: true})
      expect(locked.healthReason).toMatch(/^QIDO-RS: .*HTTP 401/)
      expect(gone).toMatchObject({healthy: false, reachable: false})
      expect(gone.healthReason).toMatch(/^QIDO-RS: .*ECONNREFUSED/)
      // QIDO-RS only: never Orthanc's /system or /statistics, never a C-ECHO.
      expect(new Set(webRequests)).toEqual(new Set(['GET /dicom-web/studies?limit=1']))
    } finally {
      web.closeAllConnections()
      await new Promise((resolve) => web.close(resolve))
      await rm(root, {recursive: true, force: true})
    }
  })

  it('only the backends asked for; exit 3 when none answers; the router not running is not an error', async () => {
    const deadPort = await freePort()
    const statusPort = await freePort()
    const all = config([{name: 'dead', port: deadPort}, {name: 'scp', port: scpPort, aeTitle: 'SCP'}], statusPort)
    const result = await gatherBalance(all, {backends: [all.backends[0]]})
    expect(result.backends.map((b) => b.name)).toEqual(['dead'])
    expect(result).toMatchObject({router: null, routerError: `not running (nothing listens on http://127.0.0.1:${statusPort})`})
    expect(balanceExitCode(result)).toBe(ExitCode.peer)
  })
})
