/** How a backend is reached for storing instances. */
export type BackendTransport = 'dimse' | 'rest'
export type RoutingPolicy = 'least-loaded' | 'round-robin' | 'weighted'

export interface BackendConfig {
  /** Short unique name used in logs, flags (`--backend NAME`) and env overrides. */
  name: string
  /** DICOM host and port of the backend's C-STORE SCP. */
  host: string
  port: number
  aeTitle: string
  /**
   * Base URL of the Orthanc REST API (health, statistics, uploads with transport "rest").
   * Leave it out for a DICOM SCP that is not Orthanc: health and load then come from C-ECHO and
   * the router's own counters.
   */
  url?: string
  username?: string
  password?: string
  /** Relative capacity for the weighted policy and study affinity hashing. */
  weight: number
  /** "dimse" forwards over C-STORE (default); "rest" posts to /instances. */
  transport: BackendTransport
  /** Associations (or HTTP requests) at once towards this backend; 1 for SCPs that serve one at a time. */
  maxAssociations: number
}

export interface DdrConfig {
  /** Where the config came from: a file path, or "defaults". */
  source: string
  listen: {host: string; port: number; aeTitle: string; maxAssociations: number}
  status: {host: string; port: number}
  spool: {
    dir: string
    /** Store-and-forward (default): Success once the instance is fsynced to the spool. Off: pass-through. */
    enabled: boolean
    /** Refuse new instances (A700) once the queue holds this many bytes. */
    maxBytes: number
    /** Refuse new instances (A700) when the spool's file system has less free space than this. */
    minFreePercent: number
    /** Out-of-resources answers (A7xx) tolerated per instance before it goes to dead-letter. */
    maxAttempts: number
    retryBaseMs: number
    retryMaxMs: number
  }
  routing: {policy: RoutingPolicy; affinity: boolean}
  health: {intervalMs: number; timeoutMs: number; failThreshold: number; recoverThreshold: number}
  stack: {dir: string}
  backends: BackendConfig[]
}

export const DEFAULT_ROUTER_AE_TITLE = 'DYNAMIC_DICOM_MW'
export const DEFAULT_ROUTER_PORT = 11113

/** The classic two-Orthanc setup: what ddr uses when no config file is found. */
export function defaultConfigObject(): Omit<DdrConfig, 'source'> {
  return {
    listen: {host: '0.0.0.0', port: DEFAULT_ROUTER_PORT, aeTitle: DEFAULT_ROUTER_AE_TITLE, maxAssociations: 64},
    status: {host: '127.0.0.1', port: 11180},
    spool: {dir: '.ddr/spool', enabled: true, maxBytes: 20 * 1024 ** 3, minFreePercent: 5, maxAttempts: 8, retryBaseMs: 1000, retryMaxMs: 60_000},
    routing: {policy: 'least-loaded', affinity: true},
    health: {intervalMs: 5000, timeoutMs: 3000, failThreshold: 2, recoverThreshold: 2},
    stack: {dir: '.ddr/stack'},
    backends: [
      {name: 'orthanc1', host: '127.0.0.1', port: 4242, aeTitle: 'ORTHANC1', url: 'http://127.0.0.1:8042', weight: 1, transport: 'dimse', maxAssociations: 4},
      {name: 'orthanc2', host: '127.0.0.1', port: 4252, aeTitle: 'ORTHANC2', url: 'http://127.0.0.1:8052', weight: 1, transport: 'dimse', maxAssociations: 4},
    ],
  }
}
