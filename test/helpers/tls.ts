import {execFile} from 'node:child_process'
import {mkdtemp, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {promisify} from 'node:util'

const run = promisify(execFile)

export interface TestCertificates {
  dir: string
  /** The CA that signs server and client certificates. */
  ca: string
  serverCert: string
  serverKey: string
  clientCert: string
  clientKey: string
  /** A client certificate from another CA (must be refused). */
  strangerCert: string
  strangerKey: string
  /** A self-signed server certificate for 127.0.0.1 and localhost (SAN), its own trust anchor. */
  selfSignedCert: string
  selfSignedKey: string
  remove(): Promise<void>
}

async function openssl(args: string[], cwd: string): Promise<void> {
  await run('openssl', args, {cwd})
}

async function keyAndCsr(cwd: string, name: string, subject: string): Promise<void> {
  await openssl(['req', '-new', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subject], cwd)
}

/**
 * A throw-away PKI in a temp folder, made with openssl: a CA, a server certificate for 127.0.0.1 and
 * localhost (SAN), a client certificate signed by the CA, a "stranger" client certificate from another
 * CA, and a self-signed server certificate.
 */
export async function makeTestCertificates(): Promise<TestCertificates> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ddr-tls-'))
  const days = ['-days', '2']
  for (const ca of ['ca', 'stranger-ca']) {
    await openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', `${ca}.key`, '-out', `${ca}.pem`, ...days, '-subj', `/CN=ddr test ${ca}`], dir)
  }

  await writeFile(path.join(dir, 'server.ext'), 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n')
  await writeFile(path.join(dir, 'client.ext'), 'extendedKeyUsage=clientAuth,serverAuth\n')
  await keyAndCsr(dir, 'server', '/CN=localhost')
  await openssl(['x509', '-req', '-in', 'server.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'server.pem', ...days, '-extfile', 'server.ext'], dir)
  await keyAndCsr(dir, 'client', '/CN=ddr test client')
  await openssl(['x509', '-req', '-in', 'client.csr', '-CA', 'ca.pem', '-CAkey', 'ca.key', '-CAcreateserial', '-out', 'client.pem', ...days, '-extfile', 'client.ext'], dir)
  await keyAndCsr(dir, 'stranger', '/CN=ddr test stranger')
  await openssl(['x509', '-req', '-in', 'stranger.csr', '-CA', 'stranger-ca.pem', '-CAkey', 'stranger-ca.key', '-CAcreateserial', '-out', 'stranger.pem', ...days, '-extfile', 'client.ext'], dir)
  await openssl(['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', 'self-signed.key', '-out', 'self-signed.pem', ...days, '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost'], dir)
  const at = (file: string) => path.join(dir, file)
  return {
    dir,
    ca: at('ca.pem'),
    serverCert: at('server.pem'),
    serverKey: at('server.key'),
    clientCert: at('client.pem'),
    clientKey: at('client.key'),
    strangerCert: at('stranger.pem'),
    strangerKey: at('stranger.key'),
    selfSignedCert: at('self-signed.pem'),
    selfSignedKey: at('self-signed.key'),
    remove: () => rm(dir, {recursive: true, force: true}),
  }
}
