import {createSecureContext} from 'node:tls'
import type tls from 'node:tls'

import type {DdrConfig, ServerTlsConfig} from '../config/schema.js'
import type {ScpOptions} from '../dimse/scp.js'
import {pemFileProblem, serverTlsOptions} from '../dimse/tls.js'
import {DdrError} from '../errors.js'
import {createAssociationCheck} from './access.js'

/**
 * The DimseServer options that come from listen.* security settings: who may associate
 * (allow-lists, called AE title, and the PROXY protocol that tells who a balancer's client is),
 * limits (PDU size, timeouts, instance size) and TLS.
 * Reads the TLS PEM files now, so a bad path fails at start with the field named.
 */
export function listenerSecurityOptions(listen: DdrConfig['listen']): Pick<ScpOptions, 'checkAssociation' | 'maxPduLength' | 'idleTimeoutMs' | 'artimTimeoutMs' | 'maxInstanceBytes' | 'tls' | 'proxyProtocol'> {
  const restricted = listen.allowedCallingAeTitles.length > 0 || listen.allowedAddresses.length > 0 || listen.requireCalledAeTitle
  return {
    maxPduLength: listen.maxPduLength,
    idleTimeoutMs: listen.idleTimeoutMs,
    artimTimeoutMs: listen.artimTimeoutMs,
    maxInstanceBytes: listen.maxInstanceBytes,
    ...(listen.proxyProtocol ? {proxyProtocol: true} : {}),
    ...(restricted ? {checkAssociation: createAssociationCheck(listen)} : {}),
    ...(listen.tls === undefined ? {} : {tls: loadServerTls(listen.tls, 'listen.tls')}),
  }
}

/**
 * A server's TLS options from its configured PEM files (`listen.tls`, `status.tls`), read and
 * checked now: a missing, unreadable or non-PEM file, an encrypted key, or a key that is not the
 * certificate's is DdrError CONFIG_INVALID naming the field and the file.
 */
export function loadServerTls(files: ServerTlsConfig, field: string): tls.TlsOptions {
  for (const role of ['cert', 'key', 'ca'] as const) {
    const file = files[role]
    if (file !== undefined) checkPemFile(file, role, `${field}.${role}`)
  }

  const options = serverTlsOptions(files, field)
  try {
    createSecureContext(options)
  } catch (error) {
    const mismatch = (error as {code?: string}).code === 'ERR_OSSL_X509_KEY_VALUES_MISMATCH'
    throw new DdrError(
      'CONFIG_INVALID',
      mismatch ? `${field}.key ${files.key} is not the private key of ${field}.cert ${files.cert}` : `${field}: ${files.cert}, ${files.key}${files.ca === undefined ? '' : ` or ${files.ca}`} cannot be used: ${(error as Error).message}`,
      {hint: `give ${field}.cert and ${field}.key as a certificate and its own key`, cause: error},
    )
  }

  return options
}

/** Throws DdrError CONFIG_INVALID naming `field` and the file when `file` cannot serve as `role` (see pemFileProblem). */
export function checkPemFile(file: string, role: 'ca' | 'cert' | 'key', field: string): void {
  const problem = pemFileProblem(file, role)
  if (problem !== undefined) throw new DdrError('CONFIG_INVALID', `${field}: ${problem}`, {hint: `point ${field} at a readable PEM file`})
}
