import {mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {OrthancClient} from '../../src/lib/orthanc/client.js'
import {type OrthancProcessOptions, startOrthanc, stopOrthanc} from '../../src/lib/stack/orthanc-process.js'
import {type TlsProxy, buildCivetwebSslShim, startTlsProxy} from './orthanc-https.js'
import {freePort} from './ports.js'

export interface TestOrthanc {
  name: string
  aeTitle: string
  dicomPort: number
  httpPort: number
  /** Base URL of the REST API: https://127.0.0.1:PORT with the `https` option. */
  url: string
  /** With `https`: who speaks TLS, Orthanc itself (SslEnabled) or a proxy in this process (no C compiler for the shim). */
  httpsBy?: 'orthanc' | 'proxy'
  dir: string
  pid: number
  client: OrthancClient
  /** Stops the process and removes its temp folder; safe to call twice. */
  stop(): Promise<void>
  /** Stops the process but keeps its data, ports and folder (a backend outage). */
  halt(): Promise<void>
  /** Starts it again after halt(), on the same ports with the same data. */
  resume(): Promise<void>
}

export interface TestOrthancOptions {
  name?: string
  aeTitle?: string
  plugins?: string[]
  extra?: Record<string, unknown>
  /** Keep the temp folder after stop (to read the log). */
  keepDir?: boolean
  /**
   * Serve the REST API over HTTPS with this server certificate (SAN 127.0.0.1) and key; `ca` is
   * what the returned client trusts. DDR_TEST_ORTHANC_HTTPS=proxy forces the proxy fallback.
   */
  https?: {cert: string; key: string; ca: string}
  /**
   * Require HTTP basic authentication (AuthenticationEnabled, RegisteredUsers) with this one user;
   * the returned client sends these credentials, any other client gets HTTP 401.
   */
  credentials?: {username: string; password: string}
}

let counter = 0

/** A real Orthanc on free ports in a fresh temp folder. Always call stop() (afterAll). */
export async function startTestOrthanc(options: TestOrthancOptions = {}): Promise<TestOrthanc> {
  counter += 1
  const name = options.name ?? `test-orthanc-${process.pid}-${counter}`
  const aeTitle = options.aeTitle ?? `ORTHANC${counter}`
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ddr-orthanc-'))
  const processOptions: OrthancProcessOptions = {
    name,
    aeTitle,
    dicomPort: await freePort(),
    httpPort: await freePort(),
    dir,
    plugins: options.plugins,
    extra: options.extra,
    credentials: options.credentials,
  }
  let httpsBy: TestOrthanc['httpsBy']
  let proxy: TlsProxy | undefined
  let info
  try {
    if (options.https !== undefined) {
      const shim = process.env.DDR_TEST_ORTHANC_HTTPS === 'proxy' ? undefined : await buildCivetwebSslShim(path.join(dir, 'ssl-shim'))
      httpsBy = shim === undefined ? 'proxy' : 'orthanc'
      if (shim !== undefined) {
        // Orthanc's SslCertificate is one PEM file holding the certificate and then its key.
        const certificate = path.join(dir, 'https.pem')
        await writeFile(certificate, Buffer.concat([await readFile(options.https.cert), await readFile(options.https.key)]))
        processOptions.https = {certificate, ca: options.https.ca}
        processOptions.env = {LD_LIBRARY_PATH: [shim, process.env.LD_LIBRARY_PATH].filter(Boolean).join(':')}
      }
    }

    info = await startOrthanc(processOptions)
    if (httpsBy === 'proxy') {
      proxy = await startTlsProxy({cert: await readFile(options.https!.cert), key: await readFile(options.https!.key), targetPort: info.httpPort})
      info = {...info, url: `https://127.0.0.1:${proxy.port}`}
    }
  } catch (error) {
    if (info !== undefined) await stopOrthanc(dir)
    await rm(dir, {recursive: true, force: true})
    throw error
  }

  const client = new OrthancClient({url: info.url, ...options.credentials, ...(options.https === undefined ? {} : {https: {ca: options.https.ca}})})
  let stopped = false
  const handle: TestOrthanc = {
    name,
    aeTitle,
    dicomPort: info.dicomPort,
    httpPort: info.httpPort,
    url: info.url,
    ...(httpsBy === undefined ? {} : {httpsBy}),
    dir,
    pid: info.pid,
    client,
    async halt() {
      await stopOrthanc(dir)
    },
    async resume() {
      handle.pid = (await startOrthanc(processOptions)).pid
    },
    async stop() {
      if (stopped) return
      stopped = true
      client.close()
      await proxy?.close()
      try {
        await stopOrthanc(dir)
      } finally {
        if (!options.keepDir) await rm(dir, {recursive: true, force: true})
      }
    },
  }
  return handle
}
