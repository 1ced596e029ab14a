import type {BackendConfig} from '../config/schema.js'
import {redactUrl} from '../output/redact.js'
import type {Backend} from './backend.js'
import {DicomwebBackend} from './dicomweb-backend.js'
import {DimseBackend} from './dimse-backend.js'
import {FolderBackend} from './folder-backend.js'
import {OrthancRestBackend} from './rest-backend.js'

/** Options every backend kind may need. */
export interface BackendFactoryOptions {
  /** Our AE title, for DIMSE backends. */
  callingAeTitle: string
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
      return new DimseBackend(config, {callingAeTitle: options.callingAeTitle})
    }

    default: {
      return config.transport === 'rest' ? new OrthancRestBackend(config) : new DimseBackend(config, {callingAeTitle: options.callingAeTitle})
    }
  }
}

/** Whether a backend is an Orthanc whose REST API gives /statistics (load and stored counts). */
export function hasOrthancStatistics(config: BackendConfig): boolean {
  return (config.type ?? 'orthanc') === 'orthanc' && config.url !== undefined
}

/** How a backend is reached, for logs and health messages. */
export function describeBackendAddress(config: BackendConfig): string {
  switch (config.type ?? 'orthanc') {
    case 'folder': {
      return `folder ${config.path}`
    }

    case 'dicomweb': {
      return `STOW-RS ${redactUrl(config.url ?? '', {credentials: 'drop'})}`
    }

    default: {
      return config.transport === 'rest' ? `REST ${redactUrl(config.url ?? '', {credentials: 'drop'})}` : `${config.aeTitle}@${config.host}:${config.port}`
    }
  }
}
