import {readFileSync} from 'node:fs'
import http from 'node:http'
import https from 'node:https'
import type {AddressInfo} from 'node:net'
import path from 'node:path'

import got from 'got'

import {DdrError} from '../../../src/lib/errors.js'
import {type HttpAgentOptions, createHttpAgents, describeRequestFailure, destroyHttpAgents} from '../../../src/lib/security/https.js'
import {type TestCertificates, makeTestCertificates} from '../../helpers/tls.js'

/** Loopback servers that answer "ok": HTTPS with the given options, or plain HTTP. */
async function listen(options: https.ServerOptions | 'plain-http', host = '127.0.0.1'): Promise<{port: number; close(): Promise<void>}> {
  const handler = (_request: http.IncomingMessage, response: http.ServerResponse) => response.end('ok')
  const server = options === 'plain-http' ? http.createServer(handler) : https.createServer(options, handler)
  server.on('tlsClientError', () => {})
  await new Promise<void>((resolve) => server.listen(0, host, resolve))
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

/** GET url with agents made from `trust`: 'ok', or describeRequestFailure of the error. */
async function fetchWith(url: string, trust?: HttpAgentOptions['https']): Promise<string | ReturnType<typeof describeRequestFailure>> {
  const agents = createHttpAgents({https: trust})
  try {
    return await got(url, {agent: agents, retry: {limit: 0}, timeout: {request: 5000}}).text()
  } catch (error) {
    return describeRequestFailure(error)
  } finally {
    destroyHttpAgents(agents)
  }
}

describe('HTTPS trust and failure reasons', () => {
  let certs: TestCertificates
  let server: {cert: Buffer; key: Buffer}

  beforeAll(async () => {
    certs = await makeTestCertificates()
    server = {cert: readFileSync(certs.serverCert), key: readFileSync(certs.serverKey)}
  })

  afterAll(async () => {
    await certs?.remove()
  })

  it('trusts a server signed by `ca`, and names an unknown CA otherwise', async () => {
    const site = await listen(server)
    try {
      const url = `https://127.0.0.1:${site.port}/`
      expect(await fetchWith(url, {ca: certs.ca})).toBe('ok')
      expect(await fetchWith(`https://localhost:${site.port}/`, {ca: certs.ca})).toBe('ok')
      expect(await fetchWith(url)).toEqual({reason: "TLS: the server's certificate was refused: its certificate is signed by an unknown CA (UNABLE_TO_VERIFY_LEAF_SIGNATURE)", tls: 'untrusted'})
      // Testing only: no check at all.
      expect(await fetchWith(url, {rejectUnauthorized: false})).toBe('ok')
    } finally {
      await site.close()
    }
  })

  it('takes a self-signed server certificate itself as `ca` (no need for an "insecure" switch), and says "self-signed" without it', async () => {
    const selfSigned = await listen({cert: readFileSync(certs.selfSignedCert), key: readFileSync(certs.selfSignedKey)})
    try {
      const url = `https://127.0.0.1:${selfSigned.port}/`
      expect(await fetchWith(url, {ca: certs.selfSignedCert})).toBe('ok')
      expect(await fetchWith(url)).toEqual({reason: "TLS: the server's certificate was refused: its certificate is self-signed and not trusted (DEPTH_ZERO_SELF_SIGNED_CERT)", tls: 'untrusted'})
      expect(await fetchWith(url, {ca: certs.ca})).toEqual({reason: "TLS: the server's certificate was refused: its certificate is self-signed and not trusted (DEPTH_ZERO_SELF_SIGNED_CERT)", tls: 'untrusted'})
    } finally {
      await selfSigned.close()
    }
  })

  it('names a certificate for another host', async () => {
    const site = await listen(server, '0.0.0.0')
    try {
      const failure = await fetchWith(`https://127.0.0.2:${site.port}/`, {ca: certs.ca})
      expect((failure as {reason: string}).reason).toMatch(/its certificate does not name this host \(ERR_TLS_CERT_ALTNAME_INVALID\): .*127\.0\.0\.2/)
    } finally {
      await site.close()
    }
  })

  it('tells an https:// URL on a plain HTTP port; an http:// URL on an HTTPS port is a reset', async () => {
    const plain = await listen('plain-http')
    const secure = await listen(server)
    try {
      const wrongScheme = await fetchWith(`https://127.0.0.1:${plain.port}/`, {ca: certs.ca})
      expect(wrongScheme).toMatchObject({tls: 'handshake'})
      expect((wrongScheme as {reason: string}).reason).toMatch(/^TLS handshake failed: the server does not speak TLS on this port \(.*\); is the URL http:\/\/\?$/)
      const plainToTls = await fetchWith(`http://127.0.0.1:${secure.port}/`)
      // A TLS server drops the plain request: nothing tells that apart from any other reset.
      expect(plainToTls).toEqual({reason: 'ECONNRESET'})
    } finally {
      await plain.close()
      await secure.close()
    }
  })

  it('presents the client certificate of cert/key to a server that requires one, and says so when there is none', async () => {
    const site = await listen({...server, ca: readFileSync(certs.ca), requestCert: true, rejectUnauthorized: true})
    try {
      const url = `https://127.0.0.1:${site.port}/`
      expect(await fetchWith(url, {ca: certs.ca, cert: certs.clientCert, key: certs.clientKey})).toBe('ok')
      const refused = await fetchWith(url, {ca: certs.ca})
      expect(refused).toMatchObject({tls: 'handshake'})
      expect((refused as {reason: string}).reason).toMatch(/certificate required.*\(the server may require a client certificate\)$/)
    } finally {
      await site.close()
    }
  })

  it('reads the PEM files when the agents are made: an unreadable one is CONFIG_INVALID naming the field and file', () => {
    const missing = path.join(certs.dir, 'missing.pem')
    expect(() => createHttpAgents({https: {ca: missing}, field: 'backends.pacs.https'})).toThrow(DdrError)
    expect(() => createHttpAgents({https: {ca: missing}, field: 'backends.pacs.https'})).toThrow(`cannot read backends.pacs.https.ca ${missing}`)
  })

  it('describes non-TLS failures by their code', () => {
    expect(describeRequestFailure(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), {code: 'ECONNREFUSED'}))).toEqual({reason: 'ECONNREFUSED'})
    expect(describeRequestFailure(new Error('boom'))).toEqual({reason: 'boom'})
  })
})
