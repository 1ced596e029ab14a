import {execFile} from 'node:child_process'
import {mkdir, writeFile} from 'node:fs/promises'
import net from 'node:net'
import path from 'node:path'
import tls from 'node:tls'
import {promisify} from 'node:util'

const run = promisify(execFile)

/**
 * Debian 12's Orthanc 1.10.1 serves HTTPS through civetweb 1.15, which opens "libssl.so" at run
 * time and looks up SSL_get_peer_certificate by name. Since OpenSSL 3 that name is a macro for
 * SSL_get1_peer_certificate, so civetweb keeps a NULL pointer and Orthanc segfaults on the first
 * HTTPS connection (civetweb/civetweb#1334; without libssl-dev's libssl.so link it cannot even
 * load OpenSSL). This library gives the old name back, with the same meaning (a new reference).
 */
const LIBSSL_SHIM = `/* libssl.so for civetweb 1.15 on OpenSSL 3: everything from libssl.so.3, plus the pre-3.0 name. */
typedef struct ssl_st SSL;
typedef struct x509_st X509;
X509 *SSL_get1_peer_certificate(const SSL *ssl);
X509 *SSL_get_peer_certificate(const SSL *ssl) { return SSL_get1_peer_certificate(ssl); }
`
const LIBCRYPTO_SHIM = '/* libcrypto.so: everything from libcrypto.so.3 (its DT_NEEDED) */\n'

/**
 * Builds, in `dir`, a libssl.so and a libcrypto.so that civetweb can load (see LIBSSL_SHIM) and
 * returns `dir` for LD_LIBRARY_PATH, or undefined when there is no C compiler (cc).
 */
export async function buildCivetwebSslShim(dir: string): Promise<string | undefined> {
  await mkdir(dir, {recursive: true})
  await writeFile(path.join(dir, 'ssl-shim.c'), LIBSSL_SHIM)
  await writeFile(path.join(dir, 'crypto-shim.c'), LIBCRYPTO_SHIM)
  try {
    // --no-as-needed: keep the DT_NEEDED entry even though the shim itself calls little or nothing.
    await run('cc', ['-shared', '-fPIC', '-o', 'libssl.so', 'ssl-shim.c', '-Wl,--no-as-needed', '-l:libssl.so.3'], {cwd: dir})
    await run('cc', ['-shared', '-fPIC', '-o', 'libcrypto.so', 'crypto-shim.c', '-Wl,--no-as-needed', '-l:libcrypto.so.3'], {cwd: dir})
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw new Error(`cannot build the libssl shim for Orthanc's HTTPS in ${dir}: ${(error as {stderr?: string}).stderr ?? (error as Error).message}`)
  }

  return dir
}

export interface TlsProxy {
  port: number
  close(): Promise<void>
}

/**
 * A TLS-terminating proxy on a free loopback port in this process, in front of a plain TCP port
 * (what nginx does in front of Orthanc in production). Used when Orthanc's own HTTPS cannot run.
 */
export async function startTlsProxy(options: {cert: Buffer; key: Buffer; targetPort: number}): Promise<TlsProxy> {
  const sockets = new Set<net.Socket>()
  const server = tls.createServer({cert: options.cert, key: options.key, minVersion: 'TLSv1.2'}, (client) => {
    const upstream = net.connect({host: '127.0.0.1', port: options.targetPort})
    client.setNoDelay(true)
    upstream.setNoDelay(true)
    sockets.add(client).add(upstream)
    const end = () => {
      client.destroy()
      upstream.destroy()
      sockets.delete(client)
      sockets.delete(upstream)
    }

    client.pipe(upstream).pipe(client)
    for (const socket of [client, upstream]) {
      socket.on('error', end)
      socket.on('close', end)
    }
  })
  server.on('tlsClientError', () => {}) // a client that refuses our certificate: its problem, not the proxy's
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', resolve)
  })
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const socket of sockets) socket.destroy()
        server.close(() => resolve())
      }),
  }
}
