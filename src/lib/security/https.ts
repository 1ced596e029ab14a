import {Agent as HttpAgent} from 'node:http'
import {Agent as HttpsAgent} from 'node:https'

import {envName} from '../config/load.js'
import type {BackendConfig} from '../config/schema.js'
import {type ClientTlsFiles, MIN_TLS_VERSION, clientTlsOptions} from '../dimse/tls.js'

/** The HTTP and HTTPS agents of one client: kept-alive connections, and the trust for https:// URLs. */
export interface HttpAgents {
  http: HttpAgent
  https: HttpsAgent
}

export interface HttpAgentOptions {
  /** PEM files for https:// URLs; absent: Node's built-in CAs, no client certificate. */
  https?: ClientTlsFiles
  /** How errors name the PEM fields ("backends.pacs.https" → "backends.pacs.https.ca"; "--ca" for a flag). */
  field?: string
  /** Connections at once per host (default: no limit). */
  maxSockets?: number
}

/**
 * Agents for got's `agent` option. The TLS options live in the HTTPS agent, which applies them to
 * every connection it opens (they win over per-request options), so one place decides the trust.
 * PEM files are read now: an unreadable file throws CONFIG_INVALID naming the field.
 */
export function createHttpAgents(options: HttpAgentOptions = {}): HttpAgents {
  const maxSockets = options.maxSockets ?? Infinity
  const tls = options.https === undefined ? {minVersion: MIN_TLS_VERSION} : clientTlsOptions(options.https, options.field ?? 'https')
  return {
    http: new HttpAgent({keepAlive: true, maxSockets}),
    https: new HttpsAgent({keepAlive: true, maxSockets, ...tls}),
  }
}

/** Closes every connection of the agents. */
export function destroyHttpAgents(agents: HttpAgents): void {
  agents.http.destroy()
  agents.https.destroy()
}

/** Agents for a configured backend's `url`, with its `https` trust. */
export function backendHttpAgents(backend: BackendConfig, maxSockets?: number): HttpAgents {
  return createHttpAgents({https: backend.https, field: `backends.${backend.name}.https`, maxSockets})
}

/** Why a request failed, in words; `tls` says whether the TLS layer refused (and how). */
export interface RequestFailure {
  reason: string
  tls?: 'untrusted' | 'handshake'
}

/** OpenSSL / Node verification codes, as the user should read them. */
const CERTIFICATE_PROBLEMS: Record<string, string> = {
  DEPTH_ZERO_SELF_SIGNED_CERT: 'its certificate is self-signed and not trusted',
  SELF_SIGNED_CERT_IN_CHAIN: 'its certificate chain ends in a self-signed CA that is not trusted',
  UNABLE_TO_VERIFY_LEAF_SIGNATURE: 'its certificate is signed by an unknown CA',
  UNABLE_TO_GET_ISSUER_CERT: 'its certificate is signed by an unknown CA',
  UNABLE_TO_GET_ISSUER_CERT_LOCALLY: 'its certificate is signed by an unknown CA',
  CERT_UNTRUSTED: 'its certificate is not trusted',
  INVALID_CA: 'its CA certificate is not a valid CA',
  CERT_SIGNATURE_FAILURE: 'its certificate signature does not verify',
  CERT_HAS_EXPIRED: 'its certificate has expired',
  CERT_NOT_YET_VALID: 'its certificate is not valid yet',
  CERT_REVOKED: 'its certificate is revoked',
  CERT_REJECTED: 'its certificate is rejected',
  ERR_TLS_CERT_ALTNAME_INVALID: 'its certificate does not name this host',
}

/** OpenSSL's reason from an error message ("...:SSL routines:ssl3_get_record:wrong version number:..."). */
function opensslReason(error: Error & {reason?: unknown}): string {
  if (typeof error.reason === 'string' && error.reason !== '') return error.reason
  const match = /SSL routines:[^:]*:([^:]+)/.exec(error.message)
  return (match?.[1] ?? error.message).trim()
}

/**
 * Why an HTTP request (got or Node) failed before any answer: a TLS refusal told apart from the
 * network, e.g. "TLS: the server's certificate is signed by an unknown CA (UNABLE_TO_VERIFY_LEAF_SIGNATURE)",
 * "ECONNREFUSED". Never includes the URL: callers name it (redacted).
 */
export function describeRequestFailure(error: unknown): RequestFailure {
  const outer = error as Error & {code?: string}
  const inner = (outer?.cause ?? outer) as Error & {code?: string; reason?: string}
  const code = inner?.code ?? outer?.code
  if (code !== undefined && CERTIFICATE_PROBLEMS[code] !== undefined) {
    const detail = code === 'ERR_TLS_CERT_ALTNAME_INVALID' && typeof inner.reason === 'string' ? `: ${inner.reason}` : ''
    return {reason: `TLS: the server's certificate was refused: ${CERTIFICATE_PROBLEMS[code]} (${code})${detail}`, tls: 'untrusted'}
  }

  if (code !== undefined && (code === 'EPROTO' || code.startsWith('ERR_SSL_'))) {
    const reason = opensslReason(inner)
    if (/wrong version number|packet length too long|unknown protocol|record layer failure/i.test(reason)) {
      return {reason: `TLS handshake failed: the server does not speak TLS on this port (${reason}); is the URL http://?`, tls: 'handshake'}
    }

    return {reason: `TLS handshake failed: ${reason}${/alert|certificate required/i.test(reason) ? ' (the server may require a client certificate)' : ''}`, tls: 'handshake'}
  }

  if (code !== undefined && code.startsWith('HPE_')) {
    return {reason: `the answer is not HTTP (${code}); if the server speaks HTTPS, use an https:// URL`}
  }

  return {reason: code ?? (outer instanceof Error ? outer.message : String(error))}
}

/** What to do about a failed request to a configured backend's URL. */
export function backendRequestHint(failure: RequestFailure, backendName: string): string | undefined {
  if (failure.tls === 'untrusted') {
    return `give the CA that signs the server's certificate (or the self-signed certificate itself) as backends[].https.ca of backend ${backendName} (or DDR_BACKEND_${envName(backendName)}_HTTPS_CA)`
  }

  if (failure.tls === 'handshake') return `check the URL scheme and port of backend ${backendName}, and backends[].https.cert/key if the server requires a client certificate`
  return undefined
}
