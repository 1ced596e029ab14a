import {mkdtemp, readFile, rm} from 'node:fs/promises'
import http from 'node:http'
import os from 'node:os'
import path from 'node:path'

import type {DdrConfig} from '../../../src/lib/config/schema.js'
import {validateConfig} from '../../../src/lib/config/validate.js'
import {type Console, type DeadLetterActions, checkConsoleExposure, createConsole} from '../../../src/lib/console/console.js'
import type {Ingest} from '../../../src/lib/console/upload.js'
import {hasPart10Prefix} from '../../../src/lib/dicom/part10.js'
import type {StudyLedger} from '../../../src/lib/ledger/ledger.js'
import {Logger} from '../../../src/lib/output/logger.js'
import type {DeadLetter} from '../../../src/lib/spool/spool.js'
import type {RouterStatus} from '../../../src/lib/status/server.js'
import {StatusServer} from '../../../src/lib/status/server.js'
import {expectDdrError} from '../../helpers/expect.js'
import {goodFixtures, readFixture} from '../../helpers/fixtures.js'
import {writeZip} from '../../helpers/zip.js'

const TOKEN = 'a-token-of-sixteen-plus'

function routerStatus(counters: Partial<RouterStatus['counters']> = {}): RouterStatus {
  return {
    version: 'test',
    startedAt: new Date().toISOString(),
    uptimeSeconds: 1,
    listen: {host: '127.0.0.1', port: 11113, aeTitle: 'DDR'},
    policy: 'least-loaded',
    affinity: true,
    associations: 0,
    counters: {received: 0, routed: 0, failed: 0, failovers: 0, bytes: 0, dropped: 0, mirrored: 0, mirrorFailed: 0, mirrorPending: 0, ...counters},
    queueDepth: 0,
    mirrors: {durable: true, pending: 0, oldestAgeSeconds: null},
    spool: {depth: 0, bytes: 0, oldestAgeSeconds: null, deadLetters: 0, refusing: null, retries: 0},
    studiesRemembered: 0,
    backends: [],
  }
}

/** Dead letters in memory, as the spool would list them. */
class FakeDeadLetters implements DeadLetterActions {
  letters: DeadLetter[] = []
  retried: string[] = []

  add(id: string, reason: string, study = '1.2.3'): void {
    this.letters.push({id, file: `/dl/${id}.dcm`, bytes: 10, at: new Date(Date.now() - this.letters.length * 1000).toISOString(), details: {reason, status: '0xC000', sopInstanceUid: `9.${id}`, studyInstanceUid: study, callingAeTitle: 'CT1'}})
  }

  async list() {
    return [...this.letters]
  }

  async get(id: string) {
    return this.letters.find((l) => l.id === id)
  }

  async retry(id: string) {
    if (!(await this.discard(id))) return undefined
    this.retried.push(id)
    return 'queued' as const
  }

  async discard(id: string) {
    const before = this.letters.length
    this.letters = this.letters.filter((l) => l.id !== id)
    return this.letters.length < before
  }
}

interface Harness {
  url: string
  logs: string[]
  ingested: string[]
  deadLetters: FakeDeadLetters
  console: Console
  close(): Promise<void>
}

let scratch: string

beforeAll(async () => {
  scratch = await mkdtemp(path.join(os.tmpdir(), 'ddr-console-unit-'))
})

afterAll(async () => {
  await rm(scratch, {recursive: true, force: true})
})

async function start(status: Record<string, unknown> = {}, extra: {ledger?: StudyLedger} = {}): Promise<Harness> {
  const config: DdrConfig = validateConfig({status: {host: '127.0.0.1', port: 0, ...status}, spool: {dir: scratch}, backends: [{name: 'one', port: 1, aeTitle: 'ONE'}, {name: 'two', port: 2, aeTitle: 'TWO'}]}, 'test')
  const logs: string[] = []
  const ingested: string[] = []
  // The intake stands in: Part 10 files are stored, anything else is not DICOM.
  const ingest: Ingest = async (file, from) => {
    ingested.push(from.source)
    if (!hasPart10Prefix(file)) return {outcome: 'invalid', reason: `${from.source}: not a DICOM Part 10 file`}
    return {outcome: 'stored', sopInstanceUid: `sop-of-${from.source}`, status: 0}
  }

  const deadLetters = new FakeDeadLetters()
  const web = createConsole({config, logger: new Logger({write: (line) => logs.push(line)}), status: () => routerStatus(), ingest, scratchDir: scratch, deadLetters, ...extra})
  const server = new StatusServer(() => routerStatus(), undefined, web.handle)
  const port = await server.listen(0, '127.0.0.1')
  return {
    url: `http://127.0.0.1:${port}`,
    logs,
    ingested,
    deadLetters,
    console: web,
    async close() {
      web.close()
      await server.close()
    },
  }
}

function form(files: Array<{name: string; data: Buffer}>): FormData {
  const body = new FormData()
  for (const file of files) body.append('file', new Blob([new Uint8Array(file.data)]), file.name)
  return body
}

/** A raw HTTP request (fetch will not send a forged Host header). */
function rawRequest(port: number, options: http.RequestOptions & {body?: string}): Promise<{status: number; body: string}> {
  return new Promise((resolve, reject) => {
    const request = http.request({host: '127.0.0.1', port, ...options}, (response) => {
      const chunks: Buffer[] = []
      response.on('data', (c: Buffer) => chunks.push(c))
      response.on('end', () => resolve({status: response.statusCode ?? 0, body: Buffer.concat(chunks).toString('utf8')}))
    })
    request.on('error', reject)
    request.end(options.body)
  })
}

const dicom = goodFixtures.find((e) => e.transferSyntaxUid === '1.2.840.10008.1.2.1')!

describe('console API', () => {
  let h: Harness

  beforeAll(async () => {
    h = await start()
  })

  afterAll(async () => {
    await h.close()
  })

  it('serves the pages with a strict content security policy, the vendored modules, and sends browsers from / to /console/', async () => {
    const page = await fetch(`${h.url}/console/`)
    expect(page.status).toBe(200)
    expect(page.headers.get('content-security-policy')).toContain("script-src 'self'")
    expect(await page.text()).toContain('app.js')
    const hooks = await (await fetch(`${h.url}/console/vendor/hooks.mjs`)).text()
    expect(hooks).toContain('from"./preact.mjs"')
    expect(hooks).not.toMatch(/from\s*"preact"/)
    expect((await fetch(`${h.url}/console/vendor/nothing.js`)).status).toBe(404)
    expect((await fetch(`${h.url}/console/../../package.json`)).status).toBe(404)
    const root = await fetch(`${h.url}/`, {headers: {accept: 'text/html'}, redirect: 'manual'})
    expect(root.status).toBe(302)
    expect(root.headers.get('location')).toBe('/console/')
    // Scripts keep /status at the root.
    expect(((await (await fetch(`${h.url}/`)).json()) as RouterStatus).version).toBe('test')
  })

  it('answers the fleet as JSON and as an event stream', async () => {
    const fleet = (await (await fetch(`${h.url}/api/fleet`)).json()) as {status: RouterStatus; series: {time: number[]}}
    expect(fleet.status.version).toBe('test')
    expect(Array.isArray(fleet.series.time)).toBe(true)
    const controller = new AbortController()
    const stream = await fetch(`${h.url}/api/fleet/events`, {signal: controller.signal})
    expect(stream.headers.get('content-type')).toBe('text/event-stream')
    const reader = stream.body!.getReader()
    const first = new TextDecoder().decode((await reader.read()).value)
    expect(first).toContain('event: fleet')
    controller.abort()
  })

  it('uploads files through the intake: 200 when all stored, 207 when some are not, 400 when none could be read, each named', async () => {
    const all = await fetch(`${h.url}/api/upload`, {method: 'POST', body: form([{name: 'a.dcm', data: readFixture(dicom)}])})
    expect(all.status).toBe(200)
    expect(await all.json()).toEqual({results: [{file: 'a.dcm', sopInstanceUid: 'sop-of-a.dcm', studyInstanceUid: dicom.studyInstanceUid, status: 'stored'}]})

    const some = await fetch(`${h.url}/api/upload`, {method: 'POST', body: form([{name: 'b.dcm', data: readFixture(dicom)}, {name: 'notes.txt', data: Buffer.from('hello')}])})
    expect(some.status).toBe(207)
    const results = ((await some.json()) as {results: Array<{file: string; status: string; reason?: string}>}).results
    expect(results.map((r) => [r.file, r.status])).toEqual([['b.dcm', 'stored'], ['notes.txt', 'invalid']])
    expect(results[1].reason).toContain('notes.txt')

    const none = await fetch(`${h.url}/api/upload`, {method: 'POST', body: form([{name: 'x.txt', data: Buffer.from('x')}])})
    expect(none.status).toBe(400)
    expect(h.logs.some((l) => l.includes('upload') && l.includes('by=127.0.0.1'))).toBe(true)
  })

  it('takes ZIP archives entry by entry: a broken entry is named (archive!entry) and the rest stored', async () => {
    const zip = await writeZip(path.join(scratch, 'cd.zip'), [
      {name: 'DICOM/', data: Buffer.alloc(0)},
      {name: 'DICOM/IM1', data: readFixture(dicom)},
      {name: 'DICOM/README.TXT', data: Buffer.from('not an image')},
    ])
    const answer = await fetch(`${h.url}/api/upload`, {method: 'POST', body: form([{name: 'cd.zip', data: await readFile(zip)}])})
    expect(answer.status).toBe(207)
    const results = ((await answer.json()) as {results: Array<{file: string; status: string}>}).results
    expect(results.map((r) => [r.file, r.status])).toEqual([['cd.zip!DICOM/IM1', 'stored'], ['cd.zip!DICOM/README.TXT', 'invalid']])

    // A file that starts like a ZIP and is not one: invalid, named.
    const fake = Buffer.concat([Buffer.from([0x50, 0x4b, 0x03, 0x04]), Buffer.alloc(100)])
    const broken = await fetch(`${h.url}/api/upload`, {method: 'POST', body: form([{name: 'broken.zip', data: fake}])})
    expect(broken.status).toBe(400)
    const reason = ((await broken.json()) as {results: Array<{reason: string}>}).results[0].reason
    expect(reason).toContain('broken.zip')
    expect(reason).not.toContain(scratch)
  })

  it('says what is wrong with a request that is not an upload: not multipart 415, malformed 400 naming the part, empty 400', async () => {
    expect((await fetch(`${h.url}/api/upload`, {method: 'POST', body: 'x', headers: {'content-type': 'text/plain'}})).status).toBe(415)
    const body = '--XYZ\r\nContent-Disposition: form-data; name="file"; filename="half.dcm"\r\nContent-Type: application/dicom\r\n\r\nDICM-and-then-nothing'
    const malformed = await fetch(`${h.url}/api/upload`, {method: 'POST', body, headers: {'content-type': 'multipart/form-data; boundary=XYZ'}})
    expect(malformed.status).toBe(400)
    expect(((await malformed.json()) as {error: string}).error).toContain('half.dcm')
    const empty = await fetch(`${h.url}/api/upload`, {method: 'POST', body: '--XYZ--\r\n', headers: {'content-type': 'multipart/form-data; boundary=XYZ'}})
    expect(empty.status).toBe(400)
  })

  it('lists dead letters with filters, retries and discards one or all matching, and logs who did it', async () => {
    h.deadLetters.add('d1', 'Orthanc refused: out of resources', '1.1')
    h.deadLetters.add('d2', 'dropped by rule: test', '1.2')
    h.deadLetters.add('d3', 'out of resources 8 times', '1.1')
    const list = (await (await fetch(`${h.url}/api/dead-letters?reason=RESOURCES`)).json()) as {total: number; matched: number; deadLetters: Array<{id: string; reason: string; callingAeTitle: string}>}
    expect(list.total).toBe(3)
    expect(list.deadLetters.map((d) => d.id)).toEqual(['d1', 'd3'])
    expect(list.deadLetters[0].callingAeTitle).toBe('CT1')

    const one = await fetch(`${h.url}/api/dead-letters/d2/retry`, {method: 'POST'})
    expect(await one.json()).toEqual({id: 'd2', outcome: 'queued'})
    expect(h.logs.some((l) => l.includes('dead-letter-retried') && l.includes('id=d2') && l.includes('by=127.0.0.1') && l.includes('auth=loopback'))).toBe(true)
    expect((await fetch(`${h.url}/api/dead-letters/d2/retry`, {method: 'POST'})).status).toBe(404)

    // A bulk action needs a filter or "all".
    expect((await fetch(`${h.url}/api/dead-letters/discard`, {method: 'POST', body: '{}', headers: {'content-type': 'application/json'}})).status).toBe(400)
    const bulk = (await (await fetch(`${h.url}/api/dead-letters/retry`, {method: 'POST', body: JSON.stringify({study: '1.1'}), headers: {'content-type': 'application/json'}})).json()) as {matched: number}
    expect(bulk.matched).toBe(2)
    expect(h.deadLetters.retried).toEqual(['d2', 'd1', 'd3'])
    expect(h.logs.some((l) => l.includes('dead-letters-retried') && l.includes('count=2') && l.includes('study=1.1'))).toBe(true)

    h.deadLetters.add('d4', 'refused')
    expect((await fetch(`${h.url}/api/dead-letters/d4`, {method: 'DELETE'})).status).toBe(200)
    expect(h.deadLetters.letters).toEqual([])
    expect(h.logs.some((l) => l.includes('dead-letter-discarded') && l.includes('id=d4'))).toBe(true)
  })

  it('explains a dropped file with the router own placement, naming no temp path', async () => {
    const answer = await fetch(`${h.url}/api/explain?callingAeTitle=MODALITY1`, {method: 'POST', body: form([{name: 'ct.dcm', data: readFixture(dicom)}])})
    expect(answer.status).toBe(200)
    const result = (await answer.json()) as {file: string; backend: string; order: string[]; callingAeTitle: string; sopInstanceUid: string}
    expect(result).toMatchObject({file: 'ct.dcm', callingAeTitle: 'MODALITY1', sopInstanceUid: dicom.sopInstanceUid})
    expect(['one', 'two']).toContain(result.backend)
    const bad = await fetch(`${h.url}/api/explain`, {method: 'POST', body: form([{name: 'notes.txt', data: Buffer.from('hello')}])})
    expect(bad.status).toBe(400)
    expect(((await bad.json()) as {error: string}).error).not.toContain(scratch)
  })

  it('refuses actions from another origin or site, and any request under a foreign Host name (DNS rebinding)', async () => {
    const port = Number(new URL(h.url).port)
    const crossOrigin = await rawRequest(port, {method: 'POST', path: '/api/dead-letters/retry', headers: {origin: 'http://evil.example', 'content-type': 'application/json'}, body: '{"all":true}'})
    expect(crossOrigin.status).toBe(403)
    expect(crossOrigin.body).toContain('cross-origin')
    const crossSite = await rawRequest(port, {method: 'DELETE', path: '/api/dead-letters/x', headers: {'sec-fetch-site': 'cross-site'}})
    expect(crossSite.status).toBe(403)
    const rebound = await rawRequest(port, {method: 'GET', path: '/api/fleet', headers: {host: `evil.example:${port}`}})
    expect(rebound.status).toBe(403)
    expect(rebound.body).toContain('not a loopback name')
    // Same origin (what the console's own pages send) is fine.
    const same = await rawRequest(port, {method: 'POST', path: '/api/dead-letters/nothing/retry', headers: {origin: h.url, 'sec-fetch-site': 'same-origin'}})
    expect(same.status).toBe(404)
    expect(h.logs.some((l) => l.includes('console-refused'))).toBe(true)
  })
})

describe('console API with status.token', () => {
  let h: Harness

  beforeAll(async () => {
    h = await start({token: TOKEN})
  })

  afterAll(async () => {
    await h.close()
  })

  it('asks actions for the token (401 without it), takes it as a bearer token or through a login cookie, and keeps reading open', async () => {
    expect((await fetch(`${h.url}/api/fleet`)).status).toBe(200)
    const without = await fetch(`${h.url}/api/upload`, {method: 'POST', body: form([{name: 'a.dcm', data: readFixture(dicom)}])})
    expect(without.status).toBe(401)
    expect(h.ingested).toEqual([])
    const wrong = await fetch(`${h.url}/api/upload`, {method: 'POST', body: form([{name: 'a.dcm', data: readFixture(dicom)}]), headers: {authorization: 'Bearer not-the-token-at-all'}})
    expect(wrong.status).toBe(401)
    const bearer = await fetch(`${h.url}/api/upload`, {method: 'POST', body: form([{name: 'a.dcm', data: readFixture(dicom)}]), headers: {authorization: `Bearer ${TOKEN}`}})
    expect(bearer.status).toBe(200)
    expect(h.logs.some((l) => l.includes('upload') && l.includes('auth=token'))).toBe(true)

    expect((await fetch(`${h.url}/api/login`, {method: 'POST', body: JSON.stringify({token: 'guess-guess-guess'})})).status).toBe(401)
    const login = await fetch(`${h.url}/api/login`, {method: 'POST', body: JSON.stringify({token: TOKEN})})
    const cookie = login.headers.get('set-cookie')!
    expect(cookie).toMatch(/^ddr_session=[^;]+; HttpOnly; SameSite=Strict/)
    const session = cookie.split(';')[0]
    expect(((await (await fetch(`${h.url}/api/session`, {headers: {cookie: session}})).json()) as {loggedIn: boolean}).loggedIn).toBe(true)
    h.deadLetters.add('z1', 'refused')
    expect((await fetch(`${h.url}/api/dead-letters/z1`, {method: 'DELETE', headers: {cookie: session}})).status).toBe(200)
    await fetch(`${h.url}/api/logout`, {method: 'POST', headers: {cookie: session}})
    h.deadLetters.add('z2', 'refused')
    expect((await fetch(`${h.url}/api/dead-letters/z2`, {method: 'DELETE', headers: {cookie: session}})).status).toBe(401)
  })
})

describe('console limits', () => {
  it('answers 413 past status.maxUploadBytes, whether the size is declared or only found while reading', async () => {
    const h = await start({maxUploadBytes: 4096})
    try {
      const big = readFixture(goodFixtures.find((e) => e.size > 8192)!)
      const declared = await fetch(`${h.url}/api/upload`, {method: 'POST', body: form([{name: 'big.dcm', data: big}])})
      expect(declared.status).toBe(413)
      expect(((await declared.json()) as {error: string}).error).toContain('status.maxUploadBytes')
      // Chunked: no Content-Length, the limit is found in the stream: one file too large, or two
      // files each under the limit and together over it.
      const port = Number(new URL(h.url).port)
      const boundary = 'B0UNDARY'
      const part = (name: string, data: Buffer) => Buffer.concat([Buffer.from(`--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${name}"\r\n\r\n`), data, Buffer.from('\r\n')])
      for (const payload of [Buffer.concat([part('big.dcm', big), Buffer.from(`--${boundary}--\r\n`)]), Buffer.concat([part('one.dcm', big.subarray(0, 3000)), part('two.dcm', big.subarray(0, 3000)), Buffer.from(`--${boundary}--\r\n`)])]) {
        const chunked = await new Promise<number>((resolve, reject) => {
          const request = http.request({host: '127.0.0.1', port, method: 'POST', path: '/api/upload', headers: {'content-type': `multipart/form-data; boundary=${boundary}`, 'transfer-encoding': 'chunked'}}, (response) => {
            response.resume()
            resolve(response.statusCode ?? 0)
          })
          request.on('error', reject)
          request.end(payload)
        })
        expect(chunked).toBe(413)
      }

      expect(h.ingested).toEqual([])
    } finally {
      await h.close()
    }
  })

  it('refuses to start a console anyone on the network could act through', async () => {
    const base = {listen: {}, backends: [{name: 'one', port: 1, aeTitle: 'ONE'}]}
    const error = await expectDdrError(Promise.resolve().then(() => checkConsoleExposure(validateConfig({...base, status: {host: '0.0.0.0'}}, 'test'))))
    expect(error.code).toBe('CONFIG_INVALID')
    expect(error.message).toContain('status.token')
    expect(() => checkConsoleExposure(validateConfig({...base, status: {host: '0.0.0.0', token: TOKEN}}, 'test'))).not.toThrow()
    expect(() => checkConsoleExposure(validateConfig({...base, status: {host: '0.0.0.0', console: false}}, 'test'))).not.toThrow()
    expect(() => checkConsoleExposure(validateConfig({...base, status: {host: '::1'}}, 'test'))).not.toThrow()
  })
})

describe('console studies', () => {
  it('searches the ledger by patient, accession, study UID and state', async () => {
    const summary = (uid: string, patientId: string, accessionNumber: string) => ({studyInstanceUid: uid, patientId, accessionNumber})
    const rows = [summary('1.1', 'P1', 'A1'), summary('1.2', 'P1', 'A2'), summary('1.3', 'P2', 'A1')]
    const asked: unknown[] = []
    const ledger = {
      store: {
        studies: (query: {patientId?: string; state?: string}) => {
          asked.push(query)
          return rows.filter((r) => query.patientId === undefined || r.patientId === query.patientId)
        },
        summary: (uid: string) => rows.find((r) => r.studyInstanceUid === uid),
        study: (uid: string) => (uid === '1.1' ? {...rows[0], series: [], instanceList: []} : undefined),
      },
    } as unknown as StudyLedger
    const h = await start({}, {ledger})
    try {
      const get = async (query: string) => ((await (await fetch(`${h.url}/api/studies?${query}`)).json()) as {studies: Array<{studyInstanceUid: string}>}).studies.map((s) => s.studyInstanceUid)
      expect(await get('patient=P1')).toEqual(['1.1', '1.2'])
      expect(await get('accession=A1')).toEqual(['1.1', '1.3'])
      expect(await get('study=1.2')).toEqual(['1.2'])
      await get('state=stable')
      expect(asked.at(-1)).toMatchObject({state: 'stable'})
      expect((await fetch(`${h.url}/api/studies/1.1`)).status).toBe(200)
      expect((await fetch(`${h.url}/api/studies/9.9`)).status).toBe(404)
    } finally {
      await h.close()
    }
  })
})
