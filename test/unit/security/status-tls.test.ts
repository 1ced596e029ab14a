import {readFileSync} from 'node:fs'
import https from 'node:https'
import type {AddressInfo} from 'node:net'
import path from 'node:path'

import got from 'got'

import {validateConfig} from '../../../src/lib/config/validate.js'
import {ConsoleGuard} from '../../../src/lib/console/guard.js'
import {DdrError} from '../../../src/lib/errors.js'
import {describeRequestFailure} from '../../../src/lib/security/https.js'
import {type StatusTlsConfig, statusClientTls, statusServerTls} from '../../../src/lib/security/status-tls.js'
import {routerHttpsAgent, routerStatusUrl} from '../../../src/lib/status/client.js'
import {type TestCertificates, makeTestCertificates} from '../../helpers/tls.js'

/** The DdrError a call throws. */
function thrown(call: () => unknown): DdrError {
  try {
    call()
  } catch (error) {
    expect(error).toBeInstanceOf(DdrError)
    return error as DdrError
  }

  throw new Error('expected a DdrError')
}

function invalid(config: unknown): string {
  return thrown(() => validateConfig(config, 'ddr.config.json')).message
}

/** An https server on loopback presenting this certificate and key (or with these options); answers "ok". */
async function serve(cert: string | https.ServerOptions, key?: string): Promise<{port: number; close(): Promise<void>}> {
  const options = typeof cert === 'string' ? {cert: readFileSync(cert), key: readFileSync(key!)} : cert
  const server = https.createServer(options, (_request, response) => response.end('ok'))
  server.on('tlsClientError', () => {})
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections()
        server.close(() => resolve())
      }),
  }
}

/** GET / as ddr's commands reach the status server with this config: "ok", or why it failed. */
async function reach(port: number, config: StatusTlsConfig, host = '127.0.0.1'): Promise<string> {
  const agent = routerHttpsAgent(config)!
  try {
    return await got(`https://${host}:${port}/`, {agent: {https: agent}, retry: {limit: 0}, timeout: {request: 5000}}).text()
  } catch (error) {
    return describeRequestFailure(error).reason
  } finally {
    agent.destroy()
  }
}

describe('status.tls in the config', () => {
  it('takes the listener’s certificate options, and wants cert, key, and ca with requireClientCert', () => {
    const config = validateConfig({status: {tls: {cert: 'status.pem', key: 'status.key'}}}, 't')
    expect(config.status.tls).toEqual({cert: 'status.pem', key: 'status.key', requireClientCert: false})
    expect(validateConfig({}, 't').status.tls).toBeUndefined()
    const message = invalid({status: {tls: {requireClientCert: true, passphrase: 'x'}}})
    for (const field of ['status.tls.cert', 'status.tls.key', 'status.tls.ca', 'status.tls.passphrase']) expect(message).toContain(field)
  })

  it('gives https:// as the router’s address', () => {
    expect(routerStatusUrl({host: '0.0.0.0', port: 11180, tls: {cert: 'c', key: 'k', requireClientCert: false}})).toBe('https://127.0.0.1:11180')
    expect(routerStatusUrl({host: '127.0.0.1', port: 11180})).toBe('http://127.0.0.1:11180')
  })
})

describe('status.tls files', () => {
  let certs: TestCertificates

  beforeAll(async () => {
    certs = await makeTestCertificates()
  })

  afterAll(async () => {
    await certs?.remove()
  })

  const tls = (files: {cert: string; key: string; ca?: string}, requireClientCert = false) => ({cert: files.cert, key: files.key, ...(files.ca === undefined ? {} : {ca: files.ca}), requireClientCert})

  it('names the field and the file when one is missing, not PEM, or the key is not the certificate’s', () => {
    const missing = path.join(certs.dir, 'nope.pem')
    const notThere = thrown(() => statusServerTls({tls: tls({cert: missing, key: certs.selfSignedKey})}))
    expect(notThere.code).toBe('CONFIG_INVALID')
    expect(notThere.message).toBe(`status.tls.cert: cannot read ${missing} (no such file)`)
    expect(thrown(() => statusServerTls({tls: tls({cert: certs.selfSignedCert, key: certs.selfSignedCert})})).message).toBe(`status.tls.key: ${certs.selfSignedCert} is not a PEM file with a private key (no "-----BEGIN ...PRIVATE KEY-----" line)`)
    expect(thrown(() => statusServerTls({tls: tls({cert: certs.selfSignedCert, key: certs.serverKey})})).message).toBe(`status.tls.key ${certs.serverKey} is not the private key of status.tls.cert ${certs.selfSignedCert}`)
    expect(thrown(() => statusServerTls({tls: tls({cert: certs.serverCert, key: certs.serverKey, ca: missing})})).message).toBe(`status.tls.ca: cannot read ${missing} (no such file)`)
    expect(thrown(() => statusClientTls({status: {tls: tls({cert: missing, key: certs.serverKey})}})).message).toBe(`status.tls.cert: cannot read ${missing} (no such file)`)
    expect(statusServerTls({tls: tls({cert: certs.serverCert, key: certs.serverKey, ca: certs.ca})})).toMatchObject({minVersion: 'TLSv1.2', requestCert: false})
    expect(statusServerTls({})).toBeUndefined()
  })

  it('trusts its own self-signed certificate with nothing more, and refuses another server', async () => {
    const own = await serve(certs.selfSignedCert, certs.selfSignedKey)
    const other = await serve(certs.serverCert, certs.serverKey)
    try {
      const config = {status: {tls: tls({cert: certs.selfSignedCert, key: certs.selfSignedKey})}}
      expect(await reach(own.port, config)).toBe('ok')
      expect(await reach(own.port, config, 'localhost')).toBe('ok')
      expect(await reach(other.port, config)).toMatch(/^TLS: the server's certificate was refused: its certificate is signed by an unknown CA/)
    } finally {
      await own.close()
      await other.close()
    }
  })

  it('trusts a certificate signed by status.tls.ca, else listen.tls.ca; its own under any name, another only for the names it holds', async () => {
    const signed = await serve(certs.serverCert, certs.serverKey)
    // The CA's own certificate as a server certificate: trusted (it is the CA), but it names no host.
    const nameless = await serve(certs.ca, path.join(certs.dir, 'ca.key'))
    try {
      const withCa = {status: {tls: tls({cert: certs.selfSignedCert, key: certs.selfSignedKey, ca: certs.ca})}}
      expect(await reach(signed.port, withCa)).toBe('ok')
      expect(await reach(signed.port, {status: {tls: tls({cert: certs.selfSignedCert, key: certs.selfSignedKey})}, listen: {tls: tls({cert: certs.serverCert, key: certs.serverKey, ca: certs.ca})}})).toBe('ok')
      expect(await reach(nameless.port, withCa)).toMatch(/ERR_TLS_CERT_ALTNAME_INVALID/)
      expect(await reach(nameless.port, {status: {tls: tls({cert: certs.ca, key: path.join(certs.dir, 'ca.key')})}})).toBe('ok')
    } finally {
      await signed.close()
      await nameless.close()
    }
  })

  it('with requireClientCert, presents status.tls.cert as the client certificate', async () => {
    const files = tls({cert: certs.serverCert, key: certs.serverKey, ca: certs.ca}, true)
    const server = await serve(statusServerTls({tls: files})!)
    try {
      expect(await reach(server.port, {status: {tls: files}})).toBe('ok')
      // The same files without requireClientCert: no client certificate, the handshake is refused.
      expect(await reach(server.port, {status: {tls: {...files, requireClientCert: false}}})).toMatch(/certificate required|ECONNRESET/)
    } finally {
      await server.close()
    }
  })
})

describe('the console session cookie', () => {
  it('is Secure when the console is served over TLS', () => {
    const token = 'a-token-of-some-length'
    expect(new ConsoleGuard('127.0.0.1', token, true).login(token)).toMatch(/^__Host-ddr_session=[^;]+; HttpOnly; Secure; SameSite=Strict; Path=\/; Max-Age=43200$/)
    expect(new ConsoleGuard('127.0.0.1', token).login(token)).not.toContain('Secure')
  })
})
