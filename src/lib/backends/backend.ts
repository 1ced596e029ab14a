import type {BackendConfig} from '../config/schema.js'
import type {DimseResponse} from '../dimse/scu.js'
import type {ReceivedInstance} from '../routing/instance.js'

/**
 * A destination for instances. `store` resolves with the backend's DICOM status (success or not)
 * and throws only when the backend could not be asked (network, association, timeout): the
 * router treats a throw as "try elsewhere" and a non-success status as the backend's verdict.
 */
export interface Backend {
  readonly config: BackendConfig
  store(instance: ReceivedInstance): Promise<DimseResponse>
  /** Verification: C-ECHO for DICOM backends. Resolves with the round-trip time in ms. */
  echo(timeoutMs: number): Promise<number>
  close(): Promise<void>
}
