import type {BackendConfig} from '../config/schema.js'
import type {Backend} from './backend.js'
import {DicomwebBackend} from './dicomweb-backend.js'
import {DimseBackend, type DimseBackendOptions} from './dimse-backend.js'
import {FolderBackend} from './folder-backend.js'
import {OrthancRestBackend} from './rest-backend.js'

/** Options every backend kind may need. */
export interface BackendFactoryOptions {
  /** Our AE title, for DIMSE backends. */
  callingAeTitle: string
  /** DIMSE backends: how long to wait for an association (default 5 s). */
  connectTimeoutMs?: number
}

/** Makes the Backend for one configured backend, by its type (and, for Orthanc, its transport). */
export function createBackend(config: BackendConfig, options: BackendFactoryOptions): Backend {
  switch (config.type) {
    case 'folder': {
      return new FolderBackend(config)
    }

    case 'dicomweb': {
      return new DicomwebBackend(config)
    }

    case 'dimse': {
      return new DimseBackend(config, dimseOptions(options))
    }

    default: {
      return config.transport === 'rest' ? new OrthancRestBackend(config) : new DimseBackend(config, dimseOptions(options))
    }
  }
}

function dimseOptions(options: BackendFactoryOptions): DimseBackendOptions {
  return {callingAeTitle: options.callingAeTitle, ...(options.connectTimeoutMs === undefined ? {} : {connectTimeoutMs: options.connectTimeoutMs})}
}
