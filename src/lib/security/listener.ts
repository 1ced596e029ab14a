import type {DdrConfig} from '../config/schema.js'
import type {ScpOptions} from '../dimse/scp.js'
import {serverTlsOptions} from '../dimse/tls.js'
import {createAssociationCheck} from './access.js'

/**
 * The DimseServer options that come from listen.* security settings: who may associate
 * (allow-lists, called AE title), limits (PDU size, timeouts, instance size) and TLS.
 * Reads the TLS PEM files now, so a bad path fails at start with the field named.
 */
export function listenerSecurityOptions(listen: DdrConfig['listen']): Pick<ScpOptions, 'checkAssociation' | 'maxPduLength' | 'idleTimeoutMs' | 'artimTimeoutMs' | 'maxInstanceBytes' | 'tls'> {
  const restricted = listen.allowedCallingAeTitles.length > 0 || listen.allowedAddresses.length > 0 || listen.requireCalledAeTitle
  return {
    maxPduLength: listen.maxPduLength,
    idleTimeoutMs: listen.idleTimeoutMs,
    artimTimeoutMs: listen.artimTimeoutMs,
    maxInstanceBytes: listen.maxInstanceBytes,
    ...(restricted ? {checkAssociation: createAssociationCheck(listen)} : {}),
    ...(listen.tls === undefined ? {} : {tls: serverTlsOptions(listen.tls, 'listen.tls')}),
  }
}
