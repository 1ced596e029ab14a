/** How a backend is reached for storing instances. */
export type BackendTransport = 'dimse' | 'rest'
export type RoutingPolicy = 'least-loaded' | 'round-robin' | 'weighted'
/**
 * What a backend is: "orthanc" (default: DIMSE or REST transport, load from Orthanc /statistics),
 * "dimse" (any C-STORE SCP: load from the router's own counters), "folder" (files on a disk),
 * "dicomweb" (STOW-RS).
 */
export type BackendType = 'orthanc' | 'dimse' | 'folder' | 'dicomweb'

export interface BackendConfig {
  /** Short unique name used in logs, flags (`--backend NAME`) and env overrides. */
  name: string
  /** Undefined means "orthanc". */
  type?: BackendType
  /** DICOM host and port of the backend's C-STORE SCP ("" and 0 for folder and dicomweb backends). */
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
  /** A mirror gets a copy of every instance besides its primary backend, and takes no part in placement. */
  mirror?: boolean
  /** Folder backends: the root folder. */
  path?: string
  /** Folder backends: below this much free space (MB) the backend is reported down. */
  minFreeMb?: number
  /** DICOMweb backends: bearer token (instead of username/password). */
  token?: string
  /** DICOMweb backends: instances per STOW-RS request at most (1: one request per instance). */
  batchMaxInstances?: number
  /** DICOMweb backends: Part 10 bytes per STOW-RS request at most (a larger instance goes alone). */
  batchMaxBytes?: number
  /** DICOMweb backends: how long a request that is not full waits for more instances (ms; 0: only those already waiting). */
  batchWindowMs?: number
  /**
   * The longest one instance's delivery may take (ms): past it the attempt is abandoned and counted
   * as that instance's failure, not the backend's (not for folder backends).
   */
  storeTimeoutMs?: number
  /**
   * Transfer syntaxes this backend can store (orthanc and dimse backends); absent: Orthanc 1.10's
   * set for orthanc, every standard syntax for dimse. The listener accepts only what every backend takes.
   */
  transferSyntaxes?: string[]
  /** DICOM TLS towards this backend (DIMSE transport); absent: plain TCP. */
  tls?: BackendTlsConfig
  /**
   * Trust for the backend's https:// URL (REST API, uploads, health, DICOMweb); absent: Node's
   * built-in CAs and no client certificate. Separate from `tls`, which is DICOM TLS on the DIMSE port.
   */
  https?: BackendHttpsConfig
}

/** How a rule compares one header value. */
export interface RuleTagMatch {
  equals?: string
  prefix?: string
  regex?: string
}

/** One routing rule: the first rule whose `match` fits an instance decides its `action`. */
export interface RoutingRule {
  /** Names the rule in logs and `ddr route --explain` (default: rules[index]). */
  name?: string
  match: {
    callingAeTitle?: string
    calledAeTitle?: string
    modality?: string
    sopClassUid?: string
    /** Keyed by tag ("0008,0060") or keyword ("Modality"). */
    tags?: Record<string, RuleTagMatch>
  }
  action: {
    /** Place the instance only on these backends. */
    backends?: string[]
    /** Refuse the instance with this reason. */
    drop?: string
    /** Copy the instance to these backends too (besides the mirrors for every instance). */
    mirrors?: string[]
  }
}

export interface DdrConfig {
  /** Where the config came from: a file path, or "defaults". */
  source: string
  listen: {host: string; port: number; aeTitle: string; maxAssociations: number} & ListenSecurityConfig
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
  /** Routing rules, first match wins; none: every instance goes to the balanced primary set. */
  rules?: RoutingRule[]
}

/**
 * STOW-RS batching of dicomweb backends: up to 16 instances or 16 MiB per request; a request goes
 * as soon as a request slot is free (instances that arrive meanwhile wait and share the next one).
 */
export const DICOMWEB_BATCH_DEFAULTS = {maxInstances: 16, maxBytes: 16 * 1024 * 1024, windowMs: 0} as const

export const DEFAULT_ROUTER_AE_TITLE = 'DYNAMIC_DICOM_MW'
export const DEFAULT_ROUTER_PORT = 11113

/** The classic two-Orthanc setup: what ddr uses when no config file is found. */
export function defaultConfigObject(): Omit<DdrConfig, 'source'> {
  return {
    listen: {
      host: '0.0.0.0',
      port: DEFAULT_ROUTER_PORT,
      aeTitle: DEFAULT_ROUTER_AE_TITLE,
      maxAssociations: 64,
      allowedCallingAeTitles: [],
      allowedAddresses: [],
      requireCalledAeTitle: false,
      maxPduLength: 262_144,
      idleTimeoutMs: 300_000,
      artimTimeoutMs: 30_000,
      maxInstanceBytes: 4 * 1024 ** 3,
    },
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

// ---------------------------------------------------------------- listener security and DICOM TLS

/** Client side of DICOM TLS: PEM file paths. */
export interface BackendTlsConfig {
  /** CA bundle that signs the peer's certificate (default: Node's built-in CAs). */
  ca?: string
  /** Our client certificate and key, for peers that require one. */
  cert?: string
  key?: string
  /** Check the peer's certificate (default true). */
  rejectUnauthorized: boolean
}

/**
 * HTTPS towards a backend's `url`: PEM file paths, read when the backend's HTTP client is made.
 * `ca` replaces Node's built-in CAs for this backend (a private CA, or a self-signed server
 * certificate itself).
 */
export interface BackendHttpsConfig {
  /** CA bundle (or the self-signed server certificate) that the server's certificate must chain to. */
  ca?: string
  /** Our client certificate and key, for servers (or reverse proxies) that require one. */
  cert?: string
  key?: string
  /** Check the server's certificate and host name (default true; false is for tests only). */
  rejectUnauthorized: boolean
}

/** Listener side of DICOM TLS: PEM file paths. */
export interface ListenTlsConfig {
  cert: string
  key: string
  /** CA bundle that signs client certificates. */
  ca?: string
  /** Refuse TLS clients without a certificate signed by `ca`. */
  requireClientCert: boolean
}

/** Who may connect to the listener, and how much they may send. */
export interface ListenSecurityConfig {
  /** Calling AE titles allowed to associate; empty: anyone. */
  allowedCallingAeTitles: string[]
  /** Exact IP addresses or CIDR blocks allowed to associate; empty: anyone. */
  allowedAddresses: string[]
  /** Reject associations whose called AE title is not listen.aeTitle. */
  requireCalledAeTitle: boolean
  /** Largest PDU we announce and accept; a larger one aborts the association. */
  maxPduLength: number
  /** No PDU for this long while idle: the association is aborted. */
  idleTimeoutMs: number
  /** No A-ASSOCIATE-RQ (or TLS handshake) this long after connecting: the connection is closed. */
  artimTimeoutMs: number
  /** A C-STORE dataset larger than this is discarded as it arrives and answered A700. */
  maxInstanceBytes: number
  tls?: ListenTlsConfig
}
