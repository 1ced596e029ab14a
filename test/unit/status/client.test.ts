import http from 'node:http'
import type {AddressInfo} from 'node:net'

import {fetchRouterStatus, parseRouterStatus, routerStatusUrl} from '../../../src/lib/status/client.js'
import {freePort} from '../../helpers/ports.js'

/** A router /status document as the router serves it today (with the spool the router may add). */
const statusDocument = {
  version: '0.1.0',
  startedAt: '2026-01-01T00:00:00.000Z',
  uptimeSeconds: 3725,
  listen: {host: '0.0.0.0', port: 11113, aeTitle: 'DYNAMIC_DICOM_MW'},
  policy: 'least-loaded',
  affinity: true,
  associations: 2,
  counters: {received: 10, routed: 9, failed: 1, failovers: 0, bytes: 12345, dropped: 0, mirrored: 7, mirrorFailed: 1, mirrorPending: 2},
  queueDepth: 3,
  mirrors: {durable: true, pending: 2, oldestAgeSeconds: 30},
  spool: {depth: 4, bytes: 2048, oldestAgeSeconds: 12, retries: 5, deadLetters: 1, refusing: null},
  studiesRemembered: 2,
  backends: [
    {name: 'orthanc1', host: '127.0.0.1', port: 4242, weight: 2, healthy: true, healthReason: 'ok', inFlight: 1, latencyMs: 4.5, score: 4.5, routed: 6, failed: 0, storedInstances: 6},
    {name: 'orthanc2', host: '127.0.0.1', port: 4252, weight: 1, healthy: false, healthReason: 'C-ECHO failed', inFlight: 0, latencyMs: 8, score: 8, routed: 3, failed: 1},
  ],
}

describe('routerStatusUrl', () => {
  it('reaches a wildcard listen address on loopback and brackets IPv6', () => {
    expect(routerStatusUrl({host: '127.0.0.1', port: 11180})).toBe('http://127.0.0.1:11180')
    expect(routerStatusUrl({host: '0.0.0.0', port: 1})).toBe('http://127.0.0.1:1')
    expect(routerStatusUrl({host: '::', port: 2})).toBe('http://[::1]:2')
    expect(routerStatusUrl({host: '::1', port: 3})).toBe('http://[::1]:3')
    expect(routerStatusUrl({host: 'router.example', port: 4})).toBe('http://router.example:4')
  })
})

describe('parseRouterStatus', () => {
  it('reads the fields balance-status shows, spool included', () => {
    const view = parseRouterStatus(statusDocument, 'http://x')!
    expect(view).toMatchObject({url: 'http://x', version: '0.1.0', uptimeSeconds: 3725, policy: 'least-loaded', affinity: true, associations: 2, queueDepth: 3})
    expect(view.counters).toEqual({received: 10, routed: 9, failed: 1, failovers: 0})
    expect(view.spool).toEqual({depth: 4, bytes: 2048, oldestAgeSeconds: 12, retries: 5, deadLetters: 1, refusing: null})
    expect(view.mirrors).toEqual({durable: true, mirrored: 7, pending: 2, failed: 1, oldestAgeSeconds: 30})
    expect(view.backends[1]).toEqual({name: 'orthanc2', healthy: false, healthReason: 'C-ECHO failed', inFlight: 0, latencyMs: 8, score: 8, routed: 3, failed: 1, weight: 1})
  })

  it('tolerates a router without a spool and with fields missing', () => {
    const {spool: _spool, mirrors: _mirrors, ...older} = statusDocument
    const view = parseRouterStatus({...older, counters: {received: 1, routed: 1, failed: 0, failovers: 0}, version: undefined, backends: [{name: 'a'}]}, 'http://x')!
    expect(view.spool).toBeNull()
    expect(view.mirrors).toBeNull()
    expect(view.version).toBeNull()
    expect(view.backends[0]).toEqual({name: 'a', healthy: false, healthReason: null, inFlight: 0, latencyMs: null, score: null, routed: 0, failed: 0, weight: null})
    expect(parseRouterStatus({...statusDocument, spool: null}, 'http://x')!.spool).toBeNull()
  })

  it('reads a field of the wrong type as missing, leaves unknown fields out, and does not touch the document', () => {
    const document = structuredClone(statusDocument) as Record<string, any>
    document.uptimeSeconds = 'long'
    document.counters.routed = '9'
    document.spool.bytes = 'many'
    document.backends[0].healthy = 'yes'
    document.backends.push(42)
    const before = structuredClone(document)
    const view = parseRouterStatus(document, 'http://x')!
    expect(view.uptimeSeconds).toBeNull()
    expect(view.counters.routed).toBe(0)
    expect(view.spool).toEqual({depth: 4, bytes: null, oldestAgeSeconds: 12, retries: 5, deadLetters: 1, refusing: null})
    expect(view.backends.map((b) => [b.name, b.healthy])).toEqual([['orthanc1', false], ['orthanc2', false]])
    expect(Object.keys(view.backends[0])).not.toContain('host')
    expect(Object.keys(view)).not.toContain('listen')
    expect(document).toEqual(before)
  })

  it('refuses documents that are not a router status', () => {
    expect(parseRouterStatus({hello: 'world'}, 'http://x')).toBeUndefined()
    expect(parseRouterStatus([], 'http://x')).toBeUndefined()
    expect(parseRouterStatus({counters: {}, backends: {}}, 'http://x')).toBeUndefined()
  })
})

describe('fetchRouterStatus', () => {
  let server: http.Server
  let base: string
  let answer: (response: http.ServerResponse) => void

  beforeAll(async () => {
    server = http.createServer((request, response) => {
      if (request.url !== '/status') return void response.writeHead(404).end()
      answer(response)
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  })

  afterAll(async () => {
    server.closeAllConnections()
    await new Promise((resolve) => server.close(resolve))
  })

  it('returns the status of a running router', async () => {
    answer = (response) => response.writeHead(200, {'content-type': 'application/json'}).end(JSON.stringify(statusDocument))
    const probe = await fetchRouterStatus(`${base}/`)
    expect(probe.running).toBe(true)
    if (probe.running) expect(probe.status).toMatchObject({url: base, queueDepth: 3, counters: {routed: 9}})
  })

  it('says "not running" when nothing listens there', async () => {
    const url = `http://127.0.0.1:${await freePort()}`
    expect(await fetchRouterStatus(url)).toEqual({url, running: false, error: `not running (nothing listens on ${url})`})
  })

  it('says what is wrong when something else answers', async () => {
    answer = (response) => response.writeHead(500).end('oops')
    expect(await fetchRouterStatus(base)).toMatchObject({running: false, error: expect.stringMatching(/HTTP 500: not a ddr router/)})
    answer = (response) => response.writeHead(200, {'content-type': 'text/html'}).end('<html></html>')
    expect(await fetchRouterStatus(base)).toMatchObject({running: false, error: expect.stringMatching(/did not answer JSON/)})
    answer = (response) => response.writeHead(200, {'content-type': 'application/json'}).end('{"status": "ok"}')
    expect(await fetchRouterStatus(base)).toMatchObject({running: false, error: expect.stringMatching(/not a ddr router status/)})
  })

  it('gives up after the timeout', async () => {
    answer = () => {} // never answers
    const started = Date.now()
    const probe = await fetchRouterStatus(base, {timeoutMs: 200})
    expect(probe).toMatchObject({running: false, error: expect.stringMatching(/ETIMEDOUT/)})
    expect(Date.now() - started).toBeLessThan(2000)
  })
})
