import {X509Certificate} from 'node:crypto'
import {readFileSync} from 'node:fs'
import tls from 'node:tls'

import type {DdrConfig} from '../config/schema.js'
import {MIN_TLS_VERSION} from '../dimse/tls.js'
import {DdrError} from '../errors.js'
import {checkPemFile, loadServerTls} from './listener.js'

/** What of the config says how the status server is reached: its TLS, and the listener's CA as a fallback trust. */
export interface StatusTlsConfig {
  status: Pick<DdrConfig['status'], 'tls'>
  listen?: Pick<DdrConfig['listen'], 'tls'>
}

/** The status server's https options from status.tls (PEM files read and checked now), or undefined: plain HTTP. */
export function statusServerTls(status: Pick<DdrConfig['status'], 'tls'>): tls.TlsOptions | undefined {
  return status.tls === undefined ? undefined : loadServerTls(status.tls, 'status.tls')
}

function readPem(file: string, role: 'ca' | 'cert' | 'key', field: string): Buffer {
  checkPemFile(file, role, field)
  return readFileSync(file)
}

/**
 * How ddr's own commands trust the router's status server when it serves https (status.tls), as
 * options for an https agent; undefined without status.tls. They trust:
 * - the router's own certificate, status.tls.cert: ddr reads the very file the router serves, so a
 *   self-signed certificate needs nothing more, and that certificate is accepted whatever host name
 *   it was reached by (a wildcard status.host is reached as 127.0.0.1, which it may not name);
 * - and `ca`: status.tls.ca, else listen.tls.ca, else Node's built-in CAs. Another certificate they
 *   sign must name the host, as usual.
 * With requireClientCert, status.tls.cert and key are presented as the client certificate.
 * The PEM files are read now: a bad one is DdrError CONFIG_INVALID naming the field and the file.
 */
export function statusClientTls(config: StatusTlsConfig): tls.ConnectionOptions | undefined {
  const files = config.status.tls
  if (files === undefined) return undefined
  const cert = readPem(files.cert, 'cert', 'status.tls.cert')
  let own: Buffer
  try {
    own = new X509Certificate(cert).raw
  } catch (error) {
    throw new DdrError('CONFIG_INVALID', `status.tls.cert: ${files.cert} holds no readable certificate: ${(error as Error).message}`, {hint: 'point status.tls.cert at the PEM certificate the router serves', cause: error})
  }

  const [caFile, caField] = files.ca !== undefined ? [files.ca, 'status.tls.ca'] : config.listen?.tls?.ca !== undefined ? [config.listen.tls.ca, 'listen.tls.ca'] : [undefined, undefined]
  const anchors = caFile === undefined ? [...tls.rootCertificates] : [readPem(caFile, 'ca', caField!)]
  return {
    ca: [cert, ...anchors],
    ...(files.requireClientCert ? {cert, key: readPem(files.key, 'key', 'status.tls.key')} : {}),
    minVersion: MIN_TLS_VERSION,
    rejectUnauthorized: true,
    checkServerIdentity: (host, peer) => (peer.raw !== undefined && peer.raw.equals(own) ? undefined : tls.checkServerIdentity(host, peer)),
  }
}
