import type {Backend} from '../../src/lib/backends/backend.js'
import {type BackendConfig, STORE_TIMEOUT_DEFAULT_MS, type OrthancBackendConfig} from '../../src/lib/config/schema.js'
import type {DimseResponse} from '../../src/lib/dimse/scu.js'
import type {ReceivedInstance} from '../../src/lib/dicom/received-instance.js'

/**
 * A backend whose answers the test scripts (for unit tests of routing decisions; integration
 * tests use real Orthanc and dcmtk). Records every SOP instance it was asked to store, and those it stored.
 */
export class ScriptedBackend implements Backend {
  readonly seen: string[] = []
  readonly stored: string[] = []
  answer: () => Promise<DimseResponse> = async () => ({status: 0})

  constructor(readonly config: BackendConfig) {}

  async store(instance: ReceivedInstance): Promise<DimseResponse> {
    this.seen.push(instance.sopInstanceUid)
    const response = await this.answer()
    if (response.status === 0) this.stored.push(instance.sopInstanceUid)
    return response
  }

  async echo(): Promise<number> {
    return 1
  }

  async close(): Promise<void> {}
}

/** A scripted DIMSE backend named `name` (AE title in upper case). */
export function scriptedBackend(name: string, overrides: Partial<OrthancBackendConfig> = {}): ScriptedBackend {
  return new ScriptedBackend({name, host: '127.0.0.1', port: 1, aeTitle: name.toUpperCase(), url: 'http://127.0.0.1:1', weight: 1, transport: 'dimse', maxAssociations: 4, storeTimeoutMs: STORE_TIMEOUT_DEFAULT_MS, ...overrides})
}
