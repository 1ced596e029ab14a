import type {BackendConfig} from '../config/schema.js'
import type {DimseResponse} from '../dimse/scu.js'
import type {ReceivedInstance} from '../dicom/received-instance.js'

/**
 * A destination for instances. `store` resolves with the backend's DICOM status (success or not)
 * and throws only when the backend could not be asked (network, association, timeout): the
 * router treats a throw as "try elsewhere" and a non-success status as the backend's verdict.
 * The router and `ddr send` both store through these classes: one way to each kind of backend.
 */
export interface Backend {
  readonly config: BackendConfig
  /**
   * How many store() calls are worth having outstanding at once. Default: config.maxAssociations
   * (one per association or request). A backend that packs several instances into one request
   * (STOW-RS batching) asks for more, so callers give it enough to fill its requests.
   */
  readonly storeSlots?: number
  store(instance: ReceivedInstance): Promise<DimseResponse>
  /** Verification: C-ECHO for DICOM backends. Resolves with the round-trip time in ms. */
  echo(timeoutMs: number): Promise<number>
  /**
   * The backend's health and load, measured the same way for the router's health checks and
   * balance-status (checkBackend in check.ts asks it, and falls back to echo() without it).
   */
  check?(options: CheckOptions): Promise<BackendCheck>
  /**
   * Lets go of connections no call is using now (idle associations), so a peer that serves one
   * association at a time can take another caller's; `ddr send` calls it when its queue runs dry.
   */
  releaseIdle?(): Promise<void>
  close(): Promise<void>
}

/** How to look at a backend. */
export interface CheckOptions {
  /** How long each request of the check may take (ms). */
  timeoutMs: number
  /**
   * Leave out the backend's own round trip (C-ECHO, Orthanc's GET /system, QIDO-RS, the folder):
   * a store just proved it works, and an SCP that serves one association at a time is spared an
   * extra one. Orthanc's /statistics is still asked.
   */
  passive?: boolean
  /**
   * A look from outside (balance-status) rather than the router's own: nothing is created (a
   * missing folder is reported, not made), a folder's files are counted, and HTTP round trips are
   * timed on a connection a first request has opened.
   */
  survey?: boolean
}

/**
 * What one check of a backend found. The router's health checks and balance-status ask the same
 * check of the same Backend classes; each shows the part it needs.
 */
export interface BackendCheck {
  /**
   * Why the backend cannot take instances now, one entry per part that failed, named by the part:
   * "C-ECHO: ...", "REST: ..." (Orthanc's REST API), "QIDO-RS: ...", "folder: ...". Empty when
   * every part passed.
   */
  problems: string[]
  /** Some part got an answer (a folder: it exists); false means nothing answered. */
  answered: boolean
  /**
   * The backend's own round trip (ms): C-ECHO (the association included when a new one was
   * needed), Orthanc's GET /system for a REST backend, QIDO-RS for a dicomweb backend, the folder
   * check for a folder. Null when left out (passive) or when it failed.
   */
  echoMs: number | null
  /** Orthanc's GET /statistics round trip (ms); null when not asked or when it failed. */
  statisticsMs: number | null
  /** From Orthanc's /statistics; for a folder in a survey, its .dcm files (when cheap to count). */
  instances: number | null
  studies: number | null
  diskBytes: number | null
  /** Orthanc's TotalDiskSizeMB. */
  diskSizeMb: number | null
  /** Folder backends: free space on the folder's file system, and the least it must keep (minFreeMb). */
  freeBytes: number | null
  minFreeBytes: number | null
}

/** store() calls a caller should keep outstanding at once towards this backend. */
export function storeSlots(backend: Backend): number {
  return backend.storeSlots ?? backend.config.maxAssociations
}
