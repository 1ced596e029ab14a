import {createServer, type IncomingMessage, type Server} from 'node:http'
import type {AddressInfo} from 'node:net'

import {DicomwebBackend, stowOutcomes} from '../../../src/lib/backends/dicomweb-backend.js'
import {DICOMWEB_BATCH_DEFAULTS, type DicomwebBackendConfig, STORE_TIMEOUT_DEFAULT_MS} from '../../../src/lib/config/schema.js'
import type {ReceivedInstance} from '../../../src/lib/dicom/received-instance.js'

/** A dicomweb backend with the defaults validation fills. */
const dicomweb = (name: string, url: string): DicomwebBackendConfig => ({
  name,
  type: 'dicomweb',
  url,
  weight: 1,
  maxAssociations: 4,
  batchMaxInstances: DICOMWEB_BATCH_DEFAULTS.maxInstances,
  batchMaxBytes: DICOMWEB_BATCH_DEFAULTS.maxBytes,
  batchWindowMs: DICOMWEB_BATCH_DEFAULTS.windowMs,
  storeTimeoutMs: STORE_TIMEOUT_DEFAULT_MS,
})

interface Seen {
  url: string
  contentType: string
  authorization?: string
  body: Buffer
  /** The multipart body's parts (their content, headers removed). */
  parts: string[]
}

interface Answer {
  status: number
  json?: unknown
}

function instance(sopInstanceUid = '1.2.3.4', dataset = 'DATA\r\n--SET'): ReceivedInstance {
  return {
    id: `id-${sopInstanceUid}`,
    sopClassUid: '1.2.840.10008.5.1.4.1.1.2',
    sopInstanceUid,
    transferSyntaxUid: '1.2.840.10008.1.2.1',
    callingAeTitle: 'A',
    calledAeTitle: 'B',
    metaHeader: Buffer.from('META'),
    // A dataset holding CRLF and "--": the part is framed by its boundary, not by its content.
    dataset: {buffer: Buffer.from(dataset, 'latin1')},
    datasetLength: Buffer.byteLength(dataset, 'latin1'),
    receivedAt: 0,
  }
}

async function body(request: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of request) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

/** The parts of a multipart/related body, as RFC 2046 frames them (the CRLF before a delimiter belongs to it). */
function multipartParts(contentType: string, raw: Buffer): string[] {
  const boundary = /boundary=([^;]+)/.exec(contentType)![1]
  const text = raw.toString('latin1')
  if (!text.startsWith(`--${boundary}\r\n`) || !text.endsWith(`\r\n--${boundary}--\r\n`)) throw new Error(`not a well-framed multipart body: ${JSON.stringify(text.slice(0, 80))}`)
  const inner = text.slice(0, -`\r\n--${boundary}--\r\n`.length)
  return inner
    .split(`\r\n--${boundary}\r\n`)
    .map((part, index) => (index === 0 ? part.slice(`--${boundary}\r\n`.length) : part))
    .map((part) => {
      const headers = part.slice(0, part.indexOf('\r\n\r\n'))
      expect(headers).toMatch(/^Content-Type: application\/dicom\r\nContent-Length: \d+$/)
      const content = part.slice(part.indexOf('\r\n\r\n') + 4)
      expect(Number(/Content-Length: (\d+)/.exec(headers)![1])).toBe(content.length)
      return content
    })
}

const failedItem = (uid: string, reason: number) => ({'00081155': {vr: 'UI', Value: [uid]}, '00081197': {vr: 'US', Value: [reason]}})
const referencedItem = (uid: string, warning?: number) => ({'00081155': {vr: 'UI', Value: [uid]}, ...(warning === undefined ? {} : {'00081196': {vr: 'US', Value: [warning]}})})
const stowAnswer = (referenced: unknown[], failed: unknown[]) => ({'00081199': {vr: 'SQ', Value: referenced}, '00081198': {vr: 'SQ', Value: failed}})

describe('DicomwebBackend against a scripted STOW-RS server', () => {
  let server: Server
  let url: string
  let seen: Seen[] = []
  /** Answers each request from its parts; may hold the answer back (gate). */
  let answer: (parts: string[]) => Answer | Promise<Answer> = () => ({status: 200, json: {}})
  let opened: DicomwebBackend[] = []

  beforeAll(async () => {
    server = createServer(async (request, response) => {
      const raw = await body(request)
      const contentType = String(request.headers['content-type'])
      const parts = request.method === 'POST' ? multipartParts(contentType, raw) : []
      seen.push({url: request.url!, contentType, authorization: request.headers.authorization, body: raw, parts})
      const reply = await answer(parts)
      response.writeHead(reply.status, {'content-type': 'application/dicom+json'})
      response.end(reply.json === undefined ? '' : JSON.stringify(reply.json))
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/dicom-web`
  })

  beforeEach(() => {
    seen = []
    answer = () => ({status: 200, json: {}})
  })

  afterEach(async () => {
    await Promise.all(opened.map((b) => b.close()))
    opened = []
  })

  afterAll(async () => {
    server.closeAllConnections()
    await new Promise((resolve) => server.close(resolve))
  })

  const backend = (overrides: Partial<DicomwebBackendConfig> = {}) => {
    const made = new DicomwebBackend({...dicomweb('web', url), token: 'secret', maxAssociations: 2, ...overrides}, 5000)
    opened.push(made)
    return made
  }

  it('posts one multipart/related application/dicom part with the Part 10 bytes, with the bearer token', async () => {
    expect(await backend().store(instance())).toEqual({status: 0})
    const request = seen.at(-1)!
    expect(request.url).toBe('/dicom-web/studies')
    expect(request.authorization).toBe('Bearer secret')
    expect(request.contentType).toMatch(/^multipart\/related; type="application\/dicom"; boundary=/)
    expect(request.parts).toEqual(['METADATA\r\n--SET'])
  })

  it('maps failures of a single instance: failed SOP item → its reason, 4xx → C000, 5xx → throws', async () => {
    answer = () => ({status: 409, json: stowAnswer([], [failedItem('1.2.3.4', 0xa700)])})
    expect((await backend().store(instance())).status).toBe(0xa700)
    answer = () => ({status: 415})
    expect((await backend().store(instance())).status).toBe(0xc000)
    answer = () => ({status: 503})
    await expect(backend().store(instance())).rejects.toThrow(/STOW-RS POST .*\/studies answered HTTP 503/)
    answer = () => ({status: 200, json: []})
    expect(await backend().echo(2000)).toBeGreaterThanOrEqual(0)
    answer = () => ({status: 500})
    await expect(backend().echo(2000)).rejects.toThrow(/QIDO-RS GET .*studies\?limit=1 failed: HTTP 500/)
  })

  it('packs store() calls made together into one request, each part byte-exact and in order', async () => {
    const web = backend()
    const instances = ['1.1', '1.2', '1.3', '1.4', '1.5'].map((uid) => instance(uid, `DS-${uid}\r\n--x`))
    const outcomes = await Promise.all(instances.map((i) => web.store(i)))
    expect(outcomes).toEqual(instances.map(() => ({status: 0})))
    expect(seen).toHaveLength(1)
    expect(seen[0].parts).toEqual(instances.map((i) => `META${(i.dataset as {buffer: Buffer}).buffer.toString('latin1')}`))
    expect(web.stats).toEqual({requests: 1, instances: 5, largestBatch: 5, resentAlone: 0})
    expect(web.storeSlots).toBe(2 * 16)
  })

  it('coalesces instances that arrive while every request slot is busy into the next request', async () => {
    const web = backend({maxAssociations: 1})
    let release!: () => void
    const gate = new Promise<void>((resolve) => {
      release = resolve
    })
    answer = async (parts) => {
      if (seen.length === 1) await gate
      return {status: 200, json: stowAnswer(parts.map((_, index) => referencedItem(`2.${index}`)), [])}
    }

    const first = web.store(instance('2.0'))
    while (seen.length === 0) await new Promise((resolve) => setTimeout(resolve, 5))
    const later = [1, 2, 3].map((n) => web.store(instance(`2.${n}`)))
    await new Promise((resolve) => setTimeout(resolve, 50))
    expect(seen).toHaveLength(1) // the slot is busy: the others wait
    release()
    await first
    await Promise.all(later)
    expect(seen.map((s) => s.parts.length)).toEqual([1, 3])
  })

  it('keeps to batchMaxInstances and batchMaxBytes, and never puts one SOP Instance UID twice in a request', async () => {
    const byCount = backend({batchMaxInstances: 2, maxAssociations: 3})
    await Promise.all(['3.1', '3.2', '3.3', '3.4', '3.5'].map((uid) => byCount.store(instance(uid))))
    expect(seen.map((s) => s.parts.length)).toEqual([2, 2, 1])

    seen = []
    // 4 + 11 bytes each: two fit in 30 bytes, three do not.
    const byBytes = backend({batchMaxBytes: 30, maxAssociations: 4})
    await Promise.all(['4.1', '4.2', '4.3'].map((uid) => byBytes.store(instance(uid))))
    expect(seen.map((s) => s.parts.length)).toEqual([2, 1])

    seen = []
    const twice = backend()
    await Promise.all([twice.store(instance('5.1')), twice.store(instance('5.1', 'OTHER')), twice.store(instance('5.2'))])
    expect(seen.map((s) => s.parts.length)).toEqual([2, 1])
  })

  it('resolves each caller with its own outcome from a partial failure, and asks again alone about an instance the answer leaves out', async () => {
    const web = backend()
    answer = (parts) => {
      if (parts.length > 1) {
        return {status: 202, json: stowAnswer([referencedItem('6.1'), referencedItem('6.2', 0xb007)], [failedItem('6.3', 0xa700), failedItem('6.5', 0x0110)])}
      }

      // 6.4 on its own: the server refuses it.
      return {status: 409, json: stowAnswer([], [])}
    }

    const outcomes = await Promise.all(['6.1', '6.2', '6.3', '6.4', '6.5'].map((uid) => web.store(instance(uid))))
    expect(outcomes.map((o) => o.status)).toEqual([0, 0xb007, 0xa700, 0xc000, 0x0110])
    expect(seen.map((s) => s.parts.length)).toEqual([5, 1])
    expect(seen[1].parts[0]).toBe('METADATA\r\n--SET')
    expect(web.stats).toMatchObject({requests: 2, instances: 6, resentAlone: 1})
  })

  it('believes the referenced items of a 400 (what Orthanc answers when one part is not DICOM), and never reports the rest stored', async () => {
    const web = backend()
    answer = (parts) => (parts.length > 1 ? {status: 400, json: stowAnswer([referencedItem('7.1'), referencedItem('7.3')], [])} : {status: 400, json: stowAnswer([], [])})
    const outcomes = await Promise.all(['7.1', '7.2', '7.3'].map((uid) => web.store(instance(uid))))
    expect(outcomes.map((o) => o.status)).toEqual([0, 0xc000, 0])
    expect(seen.map((s) => s.parts.length)).toEqual([3, 1])
  })

  it('rejects every instance of a request the server could not take (5xx, 401, network)', async () => {
    const web = backend()
    answer = () => ({status: 401})
    const results = await Promise.allSettled(['8.1', '8.2'].map((uid) => web.store(instance(uid))))
    expect(results.map((r) => r.status)).toEqual(['rejected', 'rejected'])
    expect(String((results[0] as PromiseRejectedResult).reason)).toMatch(/answered HTTP 401/)
    expect(seen).toHaveLength(1)

    const nowhere = new DicomwebBackend({...dicomweb('gone', 'http://127.0.0.1:1/dicom-web'), maxAssociations: 1}, 2000)
    await expect(nowhere.store(instance())).rejects.toMatchObject({code: 'BACKEND_UNREACHABLE'})
  })
})

describe('stowOutcomes', () => {
  it('maps a single-instance answer as before: 200 success, 202 warning, failed item its reason, 4xx refusal', () => {
    expect(stowOutcomes(200, {}, ['1'])).toEqual([{status: 0}])
    expect(stowOutcomes(202, {}, ['1'])[0]?.status).toBe(0xb000)
    expect(stowOutcomes(409, stowAnswer([], [failedItem('1', 0xa700)]) as never, ['1'])[0]?.status).toBe(0xa700)
    expect(stowOutcomes(200, stowAnswer([], [failedItem('2', 0x0110)]) as never, ['1'])[0]?.status).toBe(0)
    expect(stowOutcomes(400, undefined, ['1'])[0]?.status).toBe(0xc000)
    // A failed item without a UID, in a single-instance answer, is that instance's.
    expect(stowOutcomes(200, stowAnswer([], [{'00081197': {vr: 'US', Value: [0xc122]}}]) as never, ['1'])[0]?.status).toBe(0xc122)
    // A failure reason of 0 is not a success.
    expect(stowOutcomes(409, stowAnswer([], [failedItem('1', 0)]) as never, ['1'])[0]?.status).toBe(0xc000)
  })

  it('in a batch, names each instance from the answer, and leaves open what the answer does not say', () => {
    expect(stowOutcomes(200, {}, ['1', '2'])).toEqual([{status: 0}, {status: 0}])
    expect(stowOutcomes(200, stowAnswer([referencedItem('1')], [{'00081197': {vr: 'US', Value: [0x0110]}}]) as never, ['1', '2'])).toEqual([{status: 0}, undefined])
    expect(stowOutcomes(202, stowAnswer([referencedItem('1')], [failedItem('2', 0xa700)]) as never, ['1', '2', '3']).map((o) => o?.status)).toEqual([0, 0xa700, undefined])
    expect(stowOutcomes(409, undefined, ['1', '2'])).toEqual([undefined, undefined])
    // Named both stored and failed: failed wins.
    expect(stowOutcomes(202, stowAnswer([referencedItem('1')], [failedItem('1', 0xa700)]) as never, ['1', '2'])[0]?.status).toBe(0xa700)
  })
})
