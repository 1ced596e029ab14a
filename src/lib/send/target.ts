import {redactUrl} from '../output/redact.js'
import {selectBackends} from '../config/load.js'
import {type DdrConfig, DEFAULT_ROUTER_AE_TITLE, DEFAULT_ROUTER_PORT} from '../config/schema.js'
import {DdrError} from '../errors.js'
import {type ClientTlsFiles, pemFileProblem} from '../dimse/tls.js'
import type {BackendConfig} from '../config/schema.js'
import type {SendTarget} from './types.js'

/** The AE title ddr calls itself when sending, unless told otherwise. */
export const DEFAULT_CALLING_AE_TITLE = 'DDR'
export const DEFAULT_SEND_HOST = 'localhost'

/** What the user asked for on the command line. */
export interface TargetChoice {
  host?: string
  port?: number
  calledAeTitle?: string
  callingAeTitle?: string
  /**
   * A configured backend by name: its DICOM address (or its REST API when its transport is
   * "rest"); STOW-RS for a dicomweb backend; its folder, in its layout, for a folder backend.
   */
  backend?: string
  /** An Orthanc REST API: a URL, or the name of a configured backend (its url and credentials). */
  rest?: string
  /** DICOM TLS (--tls): PEM paths; a configured backend's own `tls` is used when this is absent. */
  tls?: ClientTlsFiles
  /** HTTPS uploads (--ca): the PEM CA bundle (or self-signed certificate) the server's certificate must chain to. */
  ca?: string
}

/** A DIMSE target, with DICOM TLS when asked for (kept out of results: file paths only, but not part of the summary). */
export type DimseSendTarget = Extract<SendTarget, {protocol: 'dimse'}> & {tls?: ClientTlsFiles}

const AE_TITLE = /^[\x20-\x5b\x5d-\x7e]{1,16}$/ // PS3.5 AE: printable ASCII without backslash
const URL_PATTERN = /^https?:\/\//i

function checkAeTitle(flag: string, value: string): string {
  if (!AE_TITLE.test(value) || value.trim() === '') {
    throw new DdrError('USAGE', `${flag} ${JSON.stringify(value)} is not an AE title`, {hint: 'an AE title has 1 to 16 printable characters, no backslash'})
  }
  return value
}

function sameUrl(a: string, b: string): boolean {
  return redactUrl(a, {credentials: 'drop'}) === redactUrl(b, {credentials: 'drop'})
}

/**
 * Where to send, from the command line and (only when a backend is named, or a REST URL may
 * match one) the configuration. Credentials come from the configuration and its
 * DDR_BACKEND_<NAME>_USERNAME / _PASSWORD environment overrides, or from the URL: ddr has no
 * default credentials.
 */
export function resolveSendTarget(choice: TargetChoice, config: () => DdrConfig): SendTarget | DimseSendTarget {
  const callingAeTitle = checkAeTitle('--calling-ae', choice.callingAeTitle ?? DEFAULT_CALLING_AE_TITLE)
  if (choice.rest !== undefined && choice.backend !== undefined) {
    throw new DdrError('USAGE', '--rest and --backend both name a target', {hint: 'use --rest NAME to upload to a configured backend over REST, or --backend NAME for its DICOM port'})
  }

  if (choice.rest !== undefined) {
    if (URL_PATTERN.test(choice.rest)) {
      try {
        new URL(choice.rest)
      } catch {
        throw new DdrError('USAGE', `--rest ${choice.rest} is not a URL`, {hint: 'for example --rest http://127.0.0.1:8042'})
      }
      // A configured backend at the same URL lends its credentials and HTTPS trust (it is the same server).
      const known = config().backends.find((backend) => backend.url !== undefined && sameUrl(backend.url, choice.rest!))
      return restTarget(choice.rest, known, choice.ca)
    }
    const [backend] = selectBackends(config(), [choice.rest])
    if (backend.type === 'dicomweb' || backend.type === 'folder') {
      throw new DdrError('USAGE', `backend ${backend.name} is a ${backend.type} backend, not an Orthanc REST API`, {hint: `use --backend ${backend.name} (${backend.type === 'dicomweb' ? 'STOW-RS' : 'writes the files into its folder'})`})
    }
    if (backend.url === undefined) throw new DdrError('USAGE', `backend ${backend.name} has no url, so it cannot take REST uploads`, {hint: `add "url" to it in ${config().source}`})
    return restTarget(backend.url, backend, choice.ca, backend.name)
  }

  if (choice.backend !== undefined) {
    const [backend] = selectBackends(config(), [choice.backend])
    if (backend.type === 'dicomweb' || backend.type === 'folder') {
      const dimseOnly = [choice.host === undefined ? undefined : '--host', choice.port === undefined ? undefined : '--port', choice.calledAeTitle === undefined ? undefined : '--called-ae', choice.callingAeTitle === undefined ? undefined : '--calling-ae', choice.tls === undefined ? undefined : '--tls'].filter((flag) => flag !== undefined)
      if (dimseOnly.length > 0) {
        throw new DdrError('USAGE', `${dimseOnly.join(', ')} ${dimseOnly.length === 1 ? 'does' : 'do'} not apply to backend ${backend.name}: it is a ${backend.type} backend, not a DICOM receiver`, {hint: `leave ${dimseOnly.length === 1 ? 'it' : 'them'} out; its ${backend.type === 'dicomweb' ? 'url and credentials' : 'path'} come from ${config().source}`})
      }
      // A dicomweb backend's HTTPS trust is its configured `https`.
      if (choice.ca !== undefined) throw caWithoutRest()
      return backend.type === 'dicomweb'
        ? {protocol: 'stow', url: backend.url!, backend: backend.name, config: backend}
        : {protocol: 'folder', path: backend.path!, backend: backend.name, config: backend}
    }
    if (backend.transport === 'rest' && backend.url !== undefined) return restTarget(backend.url, backend, choice.ca, backend.name)
    if (choice.ca !== undefined) throw caWithoutRest()
    return {
      protocol: 'dimse',
      host: choice.host ?? backend.host,
      port: choice.port ?? backend.port,
      calledAeTitle: checkAeTitle('--called-ae', choice.calledAeTitle ?? backend.aeTitle),
      callingAeTitle,
      backend: backend.name,
      ...(choice.tls ?? backend.tls ? {tls: choice.tls ?? backend.tls} : {}),
    }
  }

  if (choice.ca !== undefined) throw caWithoutRest()
  return {
    protocol: 'dimse',
    host: choice.host ?? DEFAULT_SEND_HOST,
    port: choice.port ?? DEFAULT_ROUTER_PORT,
    calledAeTitle: checkAeTitle('--called-ae', choice.calledAeTitle ?? DEFAULT_ROUTER_AE_TITLE),
    callingAeTitle,
    ...(choice.tls ? {tls: choice.tls} : {}),
  }
}

function caWithoutRest(): DdrError {
  return new DdrError('USAGE', '--ca is the CA for HTTPS uploads (--rest URL or a backend with transport "rest")', {hint: 'for DICOM TLS use --tls --tls-ca FILE'})
}

/**
 * An upload target. `--ca` (checked here: readable, PEM) replaces the configured backend's CA and
 * needs an https:// URL; the backend's client certificate and rejectUnauthorized stay.
 */
function restTarget(url: string, backend: BackendConfig | undefined, ca: string | undefined, name?: string): SendTarget {
  let https: ClientTlsFiles | undefined = backend?.https
  if (ca !== undefined) {
    if (!/^https:/i.test(url)) throw new DdrError('USAGE', `--ca is for an https:// URL, and ${redactUrl(url, {credentials: 'drop'})} is plain http`, {hint: 'use the https:// URL of the server, or leave --ca out'})
    const problem = pemFileProblem(ca, 'ca')
    if (problem !== undefined) throw new DdrError('USAGE', `--ca: ${problem}`, {hint: 'give a PEM file with the CA certificate that signs the server certificate (or the self-signed server certificate itself)'})
    https = {...backend?.https, ca, rejectUnauthorized: true}
  }

  return {
    protocol: 'rest',
    url,
    username: backend?.username,
    password: backend?.password,
    ...(name === undefined ? {} : {backend: name}),
    ...(https === undefined ? {} : {https}),
  }
}

/**
 * dcmtk spells its AE title options with one dash (`-aet`, `-aec`); oclif reads `-aet` as three
 * short flags. Rewrites exactly those spellings (also `-aet=X`) to ddr's long flags.
 */
export function dcmtkStyleArgv(argv: string[]): string[] {
  const long: Record<string, string> = {'-aet': '--calling-ae', '-aec': '--called-ae'}
  const out: string[] = []
  for (const [index, arg] of argv.entries()) {
    if (arg === '--') return [...out, ...argv.slice(index)]
    const [name, ...value] = arg.split('=')
    out.push(long[name] === undefined ? arg : value.length > 0 ? `${long[name]}=${value.join('=')}` : long[name])
  }
  return out
}
