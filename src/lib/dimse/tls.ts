import {readFileSync} from 'node:fs'
import type tls from 'node:tls'

import {DdrError} from '../errors.js'

/** DICOM TLS (PS3.15 B.1/B.9): TLS 1.2 or later, never older. */
export const MIN_TLS_VERSION: tls.SecureVersion = 'TLSv1.2'

/** Listener TLS as PEM file paths. */
export interface ServerTlsFiles {
  cert: string
  key: string
  ca?: string
  requireClientCert?: boolean
}

/** Client TLS as PEM file paths. */
export interface ClientTlsFiles {
  ca?: string
  cert?: string
  key?: string
  /** Check the server's certificate (default true). */
  rejectUnauthorized?: boolean
}

/** "listen.tls" + "ca" → "listen.tls.ca"; "--tls" + "ca" → "--tls-ca" (a flag). */
function fieldName(prefix: string, name: string): string {
  return prefix.startsWith('--') ? `${prefix}-${name}` : `${prefix}.${name}`
}

function readPem(file: string, field: string): Buffer {
  try {
    return readFileSync(file)
  } catch (error) {
    throw new DdrError('CONFIG_INVALID', `cannot read ${field} ${file}: ${(error as Error).message}`, {hint: `point ${field} at a readable PEM file`, cause: error})
  }
}

/** What a PEM file of each role must hold. */
const PEM_LABELS = {ca: 'CERTIFICATE', cert: 'CERTIFICATE', key: 'PRIVATE KEY'} as const

/**
 * Why a PEM file cannot serve as `role` (a CA bundle, a certificate, a private key), or undefined
 * when it can: unreadable, not PEM, or an encrypted key (ddr takes no passphrases). The message
 * names the file, not the field: callers put the field (or flag) in front.
 */
export function pemFileProblem(file: string, role: keyof typeof PEM_LABELS): string | undefined {
  let text: string
  try {
    text = readFileSync(file, 'latin1')
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'a folder, not a file' : (error as Error).message
    return `cannot read ${file} (${why})`
  }

  if (role === 'key' && text.includes('-----BEGIN ENCRYPTED PRIVATE KEY-----')) {
    return `${file} holds an encrypted private key; ddr needs it unencrypted (protect the file with chmod 600 instead)`
  }

  const label = PEM_LABELS[role]
  if (!new RegExp(`-----BEGIN [A-Z ]*${label}-----`).test(text)) return `${file} is not a PEM file with a ${label.toLowerCase()} (no "-----BEGIN ...${label}-----" line)`
  return undefined
}

/**
 * Options for tls.createServer from PEM files (read once, at start). `fieldPrefix` names the
 * config fields in errors ("listen.tls").
 */
export function serverTlsOptions(files: ServerTlsFiles, fieldPrefix = 'tls'): tls.TlsOptions {
  const requireClientCert = files.requireClientCert ?? false
  return {
    cert: readPem(files.cert, fieldName(fieldPrefix, 'cert')),
    key: readPem(files.key, fieldName(fieldPrefix, 'key')),
    ...(files.ca === undefined ? {} : {ca: readPem(files.ca, fieldName(fieldPrefix, 'ca'))}),
    minVersion: MIN_TLS_VERSION,
    requestCert: requireClientCert,
    rejectUnauthorized: requireClientCert,
  }
}

/** Options for tls.connect from PEM files; undefined files use Node's built-in CAs and no client certificate. */
export function clientTlsOptions(files: ClientTlsFiles, fieldPrefix = 'tls'): tls.ConnectionOptions {
  return {
    ...(files.ca === undefined ? {} : {ca: readPem(files.ca, fieldName(fieldPrefix, 'ca'))}),
    ...(files.cert === undefined ? {} : {cert: readPem(files.cert, fieldName(fieldPrefix, 'cert'))}),
    ...(files.key === undefined ? {} : {key: readPem(files.key, fieldName(fieldPrefix, 'key'))}),
    minVersion: MIN_TLS_VERSION,
    rejectUnauthorized: files.rejectUnauthorized ?? true,
  }
}
