import type {BackendConfig} from '../config/schema.js'
import type {ClientTlsFiles} from '../dimse/tls.js'
import type {DdrErrorCode} from '../errors.js'

/** Where `ddr send` delivers: a DICOM C-STORE SCP, an Orthanc REST API, or a configured dicomweb or folder backend. */
export type SendTarget =
  | {
      protocol: 'dimse'
      host: string
      port: number
      calledAeTitle: string
      callingAeTitle: string
      /** The configured backend this came from, if any (for messages). */
      backend?: string
    }
  | {
      protocol: 'rest'
      /** Base URL of the Orthanc REST API (credentials in it are accepted and never shown). */
      url: string
      username?: string
      password?: string
      backend?: string
      /** Trust for an https:// URL (PEM files): --ca, or the configured backend's `https`. Not part of results. */
      https?: ClientTlsFiles
    }
  | {
      /** DICOMweb STOW-RS to a configured dicomweb backend (its url and credentials, batched). */
      protocol: 'stow'
      url: string
      backend: string
      config: BackendConfig
    }
  | {
      /** Files written into a configured folder backend, in its layout. */
      protocol: 'folder'
      path: string
      backend: string
      config: BackendConfig
    }

/** The target as results show it: no credentials. */
export type SendTargetSummary =
  | {protocol: 'dimse'; host: string; port: number; calledAeTitle: string; callingAeTitle: string; backend?: string}
  | {protocol: 'rest'; url: string; backend?: string}
  | {protocol: 'stow'; url: string; backend: string}
  | {protocol: 'folder'; path: string; backend: string}

/** A file that was not sent, or that the receiver refused. */
export interface SendFailure {
  /** The path as given, or "archive.zip!entry/name". */
  file: string
  /** Known once the file was read. */
  sopInstanceUid?: string
  /** Why, in words: "truncated: ...", "refused with status 0xA700 (...)", "connection lost: ...". */
  reason: string
  /** The DIMSE status the receiver answered, as "0xA700" (DIMSE only, when it answered). */
  status?: string
  /** The receiver's ErrorComment (0000,0902) or Orthanc's error message. */
  errorComment?: string
  /** The error code when ddr could not deliver it (network, association, bad file). */
  code?: DdrErrorCode
  /** What to do about it. */
  hint?: string
}

/** An input that is not a DICOM instance to send (a text file, a DICOMDIR...). */
export interface SendSkip {
  file: string
  reason: string
}

/** A file that was stored, with a remark: a warning status, or an inconsistency in the file. */
export interface SendWarning {
  file: string
  sopInstanceUid: string
  message: string
  /** The warning status (0xB000, 0xB007...), when the receiver gave one. */
  status?: string
}

/** What `ddr send` did; `--json` prints exactly this. */
export interface SendResult {
  target: SendTargetSummary
  /** Files found in the inputs (ZIP entries counted one by one): sent + failed + skipped. */
  files: number
  /** Instances the receiver stored (success or warning status). */
  sent: number
  failed: number
  skipped: number
  /** Size of the files sent (as on disk, meta header included). */
  bytes: number
  durationMs: number
  /** Associations (DIMSE) or HTTP connections (REST) used at most at once. */
  concurrency: number
  failures: SendFailure[]
  skips: SendSkip[]
  warnings: SendWarning[]
}

/** Progress while sending: for a progress bar or log lines. */
export type SendProgressEvent =
  | {phase: 'scan'; scanned: number; total: number}
  | {phase: 'send'; done: number; failed: number; total: number; bytesDone: number; bytesTotal: number}
