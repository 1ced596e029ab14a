import type {BackendConfig} from '../config/schema.js'
import {transferSyntaxes} from '../dicom/uids.js'

/** Every transfer syntax ddr knows (PS3.5 and PS3.6's list): what a folder or DICOMweb backend stores. */
const ALL_KNOWN = [...transferSyntaxes.keys()]

/**
 * Transfer syntaxes an Orthanc 1.10 backend (dcmtk 3.6.7) stores. Newer ones (JPEG XL, HTJ2K,
 * SMPTE 2110, encapsulated uncompressed) it refuses after a sender was told Success.
 */
export const ORTHANC_TRANSFER_SYNTAXES: readonly string[] = ALL_KNOWN.filter((uid) => !/^1\.2\.840\.10008\.1\.2\.(1\.98|4\.11\d|4\.20\d|7\.)/.test(uid))

/** The transfer syntaxes one backend can store (`transferSyntaxes` in its config, else what its type takes). */
export function storableTransferSyntaxes(config: BackendConfig): readonly string[] {
  if (config.transferSyntaxes !== undefined) return config.transferSyntaxes
  const type = config.type ?? 'orthanc'
  return type === 'orthanc' ? ORTHANC_TRANSFER_SYNTAXES : ALL_KNOWN
}

/** What the listener may accept: the syntaxes every backend can store, since any of them may receive an instance. */
export interface ListenerSyntaxes {
  accepted: string[]
  /** For each known syntax left out, the backends that cannot store it. */
  refusedBy: Map<string, string[]>
}

/**
 * The transfer syntaxes the listener accepts: each one every backend (mirrors included) can
 * store, because failover, rules and mirrors can send an instance to any of them, and Success
 * must mean some backend will take it. Bytes are never transcoded, so a syntax one backend cannot
 * store is refused at association time, when the sender can still offer another.
 */
export function listenerTransferSyntaxes(backends: readonly BackendConfig[]): ListenerSyntaxes {
  const refusedBy = new Map<string, string[]>()
  const accepted: string[] = []
  const storable = backends.map((b) => ({name: b.name, set: new Set(storableTransferSyntaxes(b))}))
  for (const uid of new Set([...ALL_KNOWN, ...backends.flatMap((b) => b.transferSyntaxes ?? [])])) {
    const missing = storable.filter((b) => !b.set.has(uid)).map((b) => b.name)
    if (missing.length === 0) accepted.push(uid)
    else refusedBy.set(uid, missing)
  }

  return {accepted, refusedBy}
}
