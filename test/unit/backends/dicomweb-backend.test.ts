import {createServer, type IncomingMessage, type Server} from 'node:http'
import type {AddressInfo} from 'node:net'

import {DicomwebBackend} from '../../../src/lib/backends/dicomweb-backend.js'
import type {ReceivedInstance} from '../../../src/lib/routing/instance.js'

interface Seen {
  url: string
  contentType: string
  authorization?: string
  body: Buffer
}

function instance(): ReceivedInstance {
  return {
    id: 'i1',
    sopClassUid: '1.2.840.10008.5.1.4.1.1.2',
    sopInstanceUid: '1.2.3.4',
    transferSyntaxUid: '1.2.840.10008.1.2.1',
    callingAeTitle: 'A',
    calledAeTitle: 'B',
    metaHeader: Buffer.from('META'),
    // A dataset holding CRLF and "--": the part is framed by its boundary, not by its content.
    dataset: {buffer: Buffer.from('DATA\r\n--SET')},
    datasetLength: 11,
    receivedAt: 0,
  }
}

async function body(request: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = []
  for await (const chunk of request) chunks.push(chunk as Buffer)
  return Buffer.concat(chunks)
}

describe('DicomwebBackend against a scripted STOW-RS server', () => {
  let server: Server
  let url: string
  const seen: Seen[] = []
  let answer: {status: number; json?: unknown} = {status: 200, json: {}}

  beforeAll(async () => {
    server = createServer(async (request, response) => {
      seen.push({url: request.url!, contentType: String(request.headers['content-type']), authorization: request.headers.authorization, body: await body(request)})
      response.writeHead(answer.status, {'content-type': 'application/dicom+json'})
      response.end(answer.json === undefined ? '' : JSON.stringify(answer.json))
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/dicom-web`
  })

  afterAll(async () => {
    await new Promise((resolve) => server.close(resolve))
  })

  const backend = () => new DicomwebBackend({name: 'web', type: 'dicomweb', host: '', port: 0, aeTitle: '', url, token: 'secret', weight: 1, transport: 'rest', maxAssociations: 2}, 5000)

  it('posts one multipart/related application/dicom part with the Part 10 bytes, with the bearer token', async () => {
    answer = {status: 200, json: {}}
    expect(await backend().store(instance())).toEqual({status: 0})
    const request = seen.at(-1)!
    expect(request.url).toBe('/dicom-web/studies')
    expect(request.authorization).toBe('Bearer secret')
    const boundary = /boundary=([^;]+)/.exec(request.contentType)![1]
    expect(request.contentType).toMatch(/^multipart\/related; type="application\/dicom"; /)
    const text = request.body.toString('latin1')
    expect(text.startsWith(`--${boundary}\r\nContent-Type: application/dicom\r\n`)).toBe(true)
    expect(text.endsWith(`\r\n--${boundary}--\r\n`)).toBe(true)
    const part = text.slice(text.indexOf('\r\n\r\n') + 4, text.lastIndexOf(`\r\n--${boundary}--`))
    expect(part).toBe('METADATA\r\n--SET')
  })

  it('maps failures: failed SOP item → its reason, 4xx → C000, 5xx → throws', async () => {
    answer = {status: 409, json: {'00081198': {vr: 'SQ', Value: [{'00081155': {vr: 'UI', Value: ['1.2.3.4']}, '00081197': {vr: 'US', Value: [0xa700]}}]}}}
    expect((await backend().store(instance())).status).toBe(0xa700)
    answer = {status: 415}
    expect((await backend().store(instance())).status).toBe(0xc000)
    answer = {status: 503}
    await expect(backend().store(instance())).rejects.toThrow(/STOW-RS POST .*\/studies answered HTTP 503/)
    answer = {status: 200, json: []}
    expect(await backend().echo(2000)).toBeGreaterThanOrEqual(0)
    answer = {status: 500}
    await expect(backend().echo(2000)).rejects.toThrow(/QIDO-RS GET .*studies\?limit=1 failed: HTTP 500/)
  })
})
