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
   * Lets go of connections no call is using now (idle associations), so a peer that serves one
   * association at a time can take another caller's; `ddr send` calls it when its queue runs dry.
   */
  releaseIdle?(): Promise<void>
  close(): Promise<void>
}

/** store() calls a caller should keep outstanding at once towards this backend. */
export function storeSlots(backend: Backend): number {
  return backend.storeSlots ?? backend.config.maxAssociations
}
