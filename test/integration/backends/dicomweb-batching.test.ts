import {readFileSync} from 'node:fs'
import {mkdtemp, rm} from 'node:fs/promises'
import http from 'node:http'
import type {AddressInfo} from 'node:net'
import os from 'node:os'
import path from 'node:path'

import type {DicomwebBackend} from '../../../src/lib/backends/dicomweb-backend.js'
import {validateConfig} from '../../../src/lib/config/validate.js'
import {readMetaHeader} from '../../../src/lib/dicom/part10.js'
import {Logger} from '../../../src/lib/output/logger.js'
import {type RouterService, startRouterService} from '../../../src/lib/listen/service.js'
import {DICOMWEB_PLUGIN} from '../../../src/lib/stack/orthanc-process.js'
import {writeSyntheticStudies} from '../../helpers/datasets.js'
import {datasetOf, fixturesDir, goodFixtures, onTheWire, sendFixturesRaw} from '../../helpers/fixtures.js'
import {type TestOrthanc, startTestOrthanc} from '../../helpers/orthanc.js'
import {waitFor} from '../../helpers/wait.js'

/** One STOW-RS request as the proxy saw it. */
interface StowRequest {
  parts: number
  status: number
}

/**
 * A proxy in front of Orthanc that counts STOW-RS requests and the parts each carried, and can
 * play "down" (503 to everything) so that a backlog builds up in the router's spool.
 */
async function startCountingProxy(target: string): Promise<{url: string; requests: StowRequest[]; setDown(down: boolean): void; close(): Promise<void>}> {
  const requests: StowRequest[] = []
  let down = false
  const upstream = new URL(target)
  const server = http.createServer((request, response) => {
    const chunks: Buffer[] = []
    request.on('data', (chunk: Buffer) => chunks.push(chunk))
    request.on('end', () => {
      const body = Buffer.concat(chunks)
      const isStow = request.method === 'POST' && request.url === '/dicom-web/studies'
      const boundary = /boundary=([^;\s]+)/.exec(String(request.headers['content-type']))?.[1]
      const parts = isStow && boundary !== undefined ? body.toString('latin1').split(`--${boundary}\r\n`).length - 1 : 0
      if (down) {
        if (isStow) requests.push({parts, status: 503})
        response.writeHead(503).end()
        return
      }

      const forward = http.request({host: upstream.hostname, port: upstream.port, method: request.method, path: request.url, headers: {...request.headers, host: upstream.host}}, (answer) => {
        if (isStow) requests.push({parts, status: answer.statusCode ?? 0})
        response.writeHead(answer.statusCode ?? 502, answer.headers)
        answer.pipe(response)
      })
      forward.on('error', () => response.writeHead(502).end())
      forward.end(body)
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    requests,
    setDown(value) {
      down = value
    },
    async close() {
      server.closeAllConnections()
      await new Promise((resolve) => server.close(resolve))
    },
  }
}


describe('dicomweb backend: STOW-RS batching into a real Orthanc', () => {
  let orthanc: TestOrthanc
  let proxy: Awaited<ReturnType<typeof startCountingProxy>>
  let service: RouterService
  let workDir: string

  beforeAll(async () => {
    workDir = await mkdtemp(path.join(os.tmpdir(), 'ddr-stow-batch-'))
    orthanc = await startTestOrthanc({name: 'web', aeTitle: 'WEB', plugins: [DICOMWEB_PLUGIN], extra: {DicomWeb: {Enable: true, Root: '/dicom-web/'}}})
    proxy = await startCountingProxy(orthanc.url)
    const config = validateConfig(
      {
        listen: {host: '127.0.0.1', port: 0, aeTitle: 'DDR_TEST'},
        status: {host: '127.0.0.1', port: 0},
        spool: {dir: path.join(workDir, 'spool'), retryBaseMs: 100, retryMaxMs: 500},
        health: {intervalMs: 200, timeoutMs: 2000, failThreshold: 1, recoverThreshold: 1},
        backends: [{name: 'web', type: 'dicomweb', url: `${proxy.url}/dicom-web`, maxAssociations: 2, batchMaxInstances: 8}],
      },
      'test',
    )
    service = await startRouterService(config, {logger: new Logger({write: () => {}}), statusServer: false})
  })

  afterAll(async () => {
    await service?.stop(5000)
    await proxy?.close()
    await orthanc?.stop()
    if (workDir) await rm(workDir, {recursive: true, force: true})
  })

  it('sends a backlog in few multi-instance requests, and Orthanc stores every instance byte-exact', async () => {
    // The archive is away while the instances arrive: they wait in the spool.
    proxy.setDown(true)
    await waitFor('the backend to be marked down', () => !service.backends[0].healthy)
    const statuses = await sendFixturesRaw(service.port, 'DDR_TEST')
    expect(statuses.every((s) => s === 0)).toBe(true)
    expect(service.forwarder!.depth).toBe(goodFixtures.length)

    proxy.setDown(false)
    await service.forwarder!.idle()

    const stored = proxy.requests.filter((r) => r.status === 200)
    // Every instance went in exactly once, and in batches: 2 request slots × 8 instances.
    expect(stored.reduce((sum, r) => sum + r.parts, 0)).toBe(goodFixtures.length)
    expect(Math.max(...stored.map((r) => r.parts))).toBe(8)
    expect(stored.length).toBeLessThanOrEqual(Math.ceil(goodFixtures.length / 8) + 2)
    const stats = (service.backends[0].backend as DicomwebBackend).stats
    expect(stats.resentAlone).toBe(0)
    expect(stats.largestBatch).toBe(8)

    for (const fixture of goodFixtures) {
      const expected = onTheWire(datasetOf(readFileSync(path.join(fixturesDir, fixture.path))))
      const id = await orthanc.client.lookupInstance(fixture.sopInstanceUid)
      expect({fixture: fixture.path, inOrthanc: id !== undefined}).toEqual({fixture: fixture.path, inOrthanc: true})
      const file = await orthanc.client.instanceFile(id!)
      expect({fixture: fixture.path, identical: datasetOf(file).equals(expected), syntax: readMetaHeader(file).transferSyntaxUid}).toEqual({fixture: fixture.path, identical: true, syntax: fixture.transferSyntaxUid})
    }

    expect(service.status().counters).toMatchObject({routed: goodFixtures.length, failed: 0})
  })

  it('a request with one part Orthanc cannot store: the others are stored, that one alone is refused', async () => {
    const web = service.backends[0].backend as DicomwebBackend
    // Two instances Orthanc has never seen (the fixtures are already there from the test above).
    const fresh = await writeSyntheticStudies(path.join(workDir, 'fresh'), {studies: 1, instancesPerStudy: 2, pixelBytes: 2048})
    const good = fresh.map((instance) => readFileSync(instance.path))
    const asInstance = (file: Buffer, uid: string) => {
      const meta = readMetaHeader(file)
      return {
        id: `direct-${uid}`,
        sopClassUid: meta.mediaStorageSopClassUid!,
        sopInstanceUid: uid,
        transferSyntaxUid: meta.transferSyntaxUid,
        callingAeTitle: 'T',
        calledAeTitle: 'T',
        metaHeader: file.subarray(0, meta.datasetOffset),
        dataset: {buffer: file.subarray(meta.datasetOffset)},
        datasetLength: file.length - meta.datasetOffset,
        receivedAt: Date.now(),
      }
    }

    const inOrthanc = () => Promise.all(fresh.map(async (instance) => (await orthanc.client.lookupInstance(instance.sopInstanceUid)) !== undefined))
    expect(await inOrthanc()).toEqual([false, false])
    // A Part 10 header in front of bytes that are no dataset: Orthanc refuses that part.
    const broken = Buffer.concat([good[0].subarray(0, readMetaHeader(good[0]).datasetOffset), Buffer.from('this is not a dataset')])
    const before = proxy.requests.length
    const outcomes = await Promise.all([web.store(asInstance(good[0], fresh[0].sopInstanceUid)), web.store(asInstance(broken, '1.2.3.999')), web.store(asInstance(good[1], fresh[1].sopInstanceUid))])
    expect(outcomes.map((o) => o.status)).toEqual([0, 0xc000, 0])
    expect(proxy.requests.slice(before).map((r) => r.parts)).toEqual([3, 1])
    // Stored by this request, byte for byte.
    expect(await inOrthanc()).toEqual([true, true])
    for (const [index, instance] of fresh.entries()) {
      const file = await orthanc.client.instanceFile((await orthanc.client.lookupInstance(instance.sopInstanceUid))!)
      expect({sop: instance.sopInstanceUid, identical: datasetOf(file).equals(datasetOf(good[index]))}).toEqual({sop: instance.sopInstanceUid, identical: true})
    }
  })
})
