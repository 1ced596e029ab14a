import {FormatRegistry, type Static, type TSchema, Type} from '@sinclair/typebox'

/*
 * The configuration as one TypeBox schema: the TypeScript types below are derived from it,
 * validate.ts checks and defaults a parsed file against it, env.ts reads the environment variables
 * it names, and json-schema.ts publishes it as ddr.schema.json (`npm run schema`).
 *
 * A field with a `default` is required in the types (ddr fills it before anyone reads the config)
 * and optional in ddr.schema.json (a file may leave it out).
 *
 * Besides JSON Schema keywords, fields carry ddr's own annotations (see DdrAnnotations), which
 * ddr.schema.json leaves out or turns into what editors understand.
 */

/** ddr's own annotations on a field. */
export interface DdrAnnotations {
  /** What a valid value is, for messages ("must be <problem>"), when the JSON Schema keywords do not say it well. */
  problem?: string
  /** Words after "is required" when the field is missing. */
  requiredHint?: string
  /**
   * Environment variable that overrides the field. Inside a backend, the part after
   * `DDR_BACKEND_<NAME>_` (the backend's name upper-cased, "_" for other characters).
   */
  env?: string
  /** `null` means "not given": the hand-written checker this schema replaced read it so, and configs rely on it. */
  nullIsAbsent?: boolean
  /** What a valid key of a record is, for messages. */
  keyProblem?: string
}

type Options = DdrAnnotations & {description?: string; default?: unknown}

const integer = (minimum: number, maximum: number, options: Options = {}) => Type.Integer({minimum, maximum, ...options})
const nonEmpty = (options: Options = {}) => Type.String({minLength: 1, ...options})
/** A string that may be empty, and absent when null. */
const optionalText = (options: Options = {}) => Type.Optional(Type.String({nullIsAbsent: true, ...options}))

/** Printable ASCII without backslash, 1 to 16 characters: the AE VR of PS3.5. */
const AE_TITLE_PATTERN = '^[\\x20-\\x5b\\x5d-\\x7e]{1,16}$'
const AE_TITLE_PROBLEM = 'an AE title of 1 to 16 printable characters'
const aeTitle = (options: Options = {}) => Type.String({pattern: AE_TITLE_PATTERN, problem: AE_TITLE_PROBLEM, ...options})

/** PS3.5 9.1, as isValidUid in dicom/uids.ts: digit components without leading zeros, single dots, at most 64 characters. */
export const UID_PATTERN = '^(0|[1-9][0-9]*)(\\.(0|[1-9][0-9]*))*$'

// TypeBox knows no formats by itself; "uri" here is what Node's URL parser takes.
if (!FormatRegistry.Has('uri')) FormatRegistry.Set('uri', (value) => URL.canParse(value))

/** http:// or https:// (any case); `format: "uri"` checks that the rest parses. */
const httpUrl = (options: Options = {}) => Type.String({format: 'uri', pattern: '^[Hh][Tt][Tt][Pp][Ss]?://', problem: 'an http(s) URL', ...options})

const pemFile = (what: string, env?: string) => Type.Optional(nonEmpty({description: `${what} (PEM file).`, ...(env === undefined ? {} : {env})}))

// ---------------------------------------------------------------- listener

/** The server side of TLS, as PEM file paths: the DICOM listener's (`listen.tls`) and the status server's (`status.tls`). */
const serverTls = (description: string) =>
  Type.Object(
    {
      cert: nonEmpty({description: 'Our server certificate (PEM file).', requiredHint: '(PEM certificate file)'}),
      key: nonEmpty({description: 'Its private key (PEM file, not encrypted).', requiredHint: '(PEM private key file)'}),
      ca: Type.Optional(nonEmpty({description: 'CA bundle that signs client certificates (PEM file).'})),
      requireClientCert: Type.Boolean({default: false, description: 'Refuse TLS clients without a certificate signed by `ca`.'}),
    },
    {additionalProperties: false, description},
  )

/** Listener side of DICOM TLS: PEM file paths. */
export const ListenTlsSchema = serverTls('DICOM TLS on the listener; absent: plain TCP.')

export const DEFAULT_ROUTER_AE_TITLE = 'DYNAMIC_DICOM_MW'
export const DEFAULT_ROUTER_PORT = 11113

const ListenSchema = Type.Object(
  {
    host: nonEmpty({default: '0.0.0.0', description: 'Address the DICOM listener binds to.'}),
    port: integer(0, 65535, {default: DEFAULT_ROUTER_PORT, env: 'DDR_LISTEN_PORT', description: 'DICOM port of the router (0: any free port).'}),
    aeTitle: aeTitle({default: DEFAULT_ROUTER_AE_TITLE, env: 'DDR_LISTEN_AE_TITLE', description: 'AE title of the router.'}),
    maxAssociations: integer(1, 10000, {default: 64, description: 'Associations accepted at once.'}),
    workers: integer(1, 64, {
      default: 1,
      env: 'DDR_LISTEN_WORKERS',
      description: 'Router processes on this host sharing the DICOM port (1: one process). Above 1, a primary forks that many workers, each with its own spool folder (spool.dir/worker-<i>) and a shared SQLite ledger with study claims; the primary serves the status port (docs/cluster.md, "Several cores on one host").',
    }),
    allowedCallingAeTitles: Type.Array(
      // The lookahead: not only spaces (a blank AE title names no one).
      Type.String({pattern: '^(?=.*[^ ])[\\x20-\\x5b\\x5d-\\x7e]{1,16}$', problem: AE_TITLE_PROBLEM}),
      {default: [], description: 'Calling AE titles allowed to associate; empty: anyone.'},
    ),
    allowedAddresses: Type.Array(Type.String(), {default: [], description: 'Exact IP addresses or CIDR blocks allowed to associate; empty: anyone.'}),
    proxyProtocol: Type.Boolean({
      default: false,
      description: 'Every connection starts with a PROXY protocol header (v1/v2, HAProxy send-proxy-v2) naming the client: allow-lists, logs and receipts see it. Connections without one are closed: only for a router behind such a balancer.',
    }),
    requireCalledAeTitle: Type.Boolean({default: false, description: 'Reject associations whose called AE title is not listen.aeTitle.'}),
    maxPduLength: integer(4096, 16 * 1024 * 1024, {default: 262_144, description: 'Largest PDU we announce and accept; a larger one aborts the association.'}),
    idleTimeoutMs: integer(1000, 86_400_000, {default: 300_000, description: 'No PDU for this long while idle: the association is aborted.'}),
    artimTimeoutMs: integer(100, 600_000, {default: 30_000, description: 'No A-ASSOCIATE-RQ (or TLS handshake) this long after connecting: the connection is closed.'}),
    maxInstanceBytes: integer(1024, Number.MAX_SAFE_INTEGER, {default: 4 * 1024 ** 3, description: 'A C-STORE dataset larger than this is discarded as it arrives and answered A700.'}),
    tls: Type.Optional(ListenTlsSchema),
    allowQuery: Type.Boolean({default: true, description: 'Answer C-FIND, C-MOVE and C-GET for the whole fleet (same allow-lists and TLS as storage); false: storage only.'}),
  },
  {additionalProperties: false, default: {}, description: 'The DICOM listener, and who may connect to it.'},
)

// ---------------------------------------------------------------- backends

/** Client side of DICOM TLS: PEM file paths. */
export const BackendTlsSchema = Type.Object(
  {
    ca: pemFile("CA bundle that signs the peer's certificate (default: Node's built-in CAs)"),
    cert: pemFile('Our client certificate, for peers that require one'),
    key: pemFile('Its private key'),
    rejectUnauthorized: Type.Boolean({default: true, description: "Check the peer's certificate."}),
  },
  {additionalProperties: false, description: 'DICOM TLS towards this backend (DIMSE transport); absent: plain TCP.'},
)

/**
 * HTTPS towards a backend's `url`: PEM file paths, read when the backend's HTTP client is made.
 * `ca` replaces Node's built-in CAs for this backend (a private CA, or a self-signed server certificate itself).
 */
export const BackendHttpsSchema = Type.Object(
  {
    ca: pemFile("CA bundle (or the self-signed server certificate) that the server's certificate must chain to", 'HTTPS_CA'),
    cert: pemFile('Our client certificate, for servers (or reverse proxies) that require one', 'HTTPS_CERT'),
    key: pemFile('Its private key', 'HTTPS_KEY'),
    rejectUnauthorized: Type.Boolean({default: true, description: "Check the server's certificate and host name (false is for tests only)."}),
  },
  {
    additionalProperties: false,
    description: "Trust for the backend's https:// URL (REST API, uploads, health, DICOMweb); absent: Node's built-in CAs and no client certificate. Separate from `tls`, which is DICOM TLS on the DIMSE port.",
  },
)

/**
 * STOW-RS batching of dicomweb backends: up to 16 instances or 16 MiB per request; a request goes
 * as soon as a request slot is free (instances that arrive meanwhile wait and share the next one).
 */
export const DICOMWEB_BATCH_DEFAULTS = {maxInstances: 16, maxBytes: 16 * 1024 * 1024, windowMs: 0} as const

/** How long one instance's delivery may take by default (a 2 GB instance over a slow link fits). */
export const STORE_TIMEOUT_DEFAULT_MS = 120_000

/** The fields every backend has; each type lists them first, then its own. */
const backendCommon = () => ({
  name: Type.String({
    pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$',
    problem: 'a name of letters, digits, "_", "." or "-"',
    description: 'Short unique name used in logs, flags (`--backend NAME`) and environment variables (DDR_BACKEND_<NAME>_...).',
  }),
  weight: Type.Number({minimum: 0, default: 1, description: 'Relative capacity for the weighted policy and study affinity hashing.'}),
  maxAssociations: integer(1, 64, {default: 4, description: 'Associations (or HTTP requests) at once towards this backend; 1 for SCPs that serve one at a time.'}),
  mirror: Type.Optional(Type.Boolean({description: 'A mirror gets a copy of every instance besides its primary backend, and takes no part in placement.'})),
})

/** Where a DICOM backend's C-STORE SCP is. */
const dicomAddress = (type: string) => ({
  host: nonEmpty({default: '127.0.0.1', description: "DICOM host of the backend's C-STORE SCP."}),
  port: integer(1, 65535, {requiredHint: `for a${type === 'orthanc' ? 'n' : ''} ${type} backend`, description: "DICOM port of the backend's C-STORE SCP."}),
  aeTitle: aeTitle({requiredHint: `for a${type === 'orthanc' ? 'n' : ''} ${type} backend`, description: "AE title of the backend's C-STORE SCP."}),
})

const credentials = () => ({
  username: optionalText({env: 'USERNAME', description: 'HTTP basic authentication (better from the environment than the file).'}),
  password: optionalText({env: 'PASSWORD', description: 'HTTP basic authentication (better from the environment than the file).'}),
})

const storeTimeoutMs = () =>
  // At most a day: well within what a Node timer can wait (a delay past 2^31-1 ms would fire at once).
  integer(1000, 86_400_000, {
    default: STORE_TIMEOUT_DEFAULT_MS,
    description: "The longest one instance's delivery to this backend may take (ms) before it is abandoned and counted as that instance's failure, not the backend's.",
  })

const transferSyntaxesOf = (absent: string) =>
  Type.Optional(
    Type.Array(Type.String({pattern: UID_PATTERN, maxLength: 64, problem: 'a UID: digits and dots, at most 64 characters (e.g. "1.2.840.10008.1.2.1")'}), {
      minItems: 1,
      problem: 'a non-empty array of transfer syntax UIDs',
      description: `Transfer syntax UIDs this backend can store; absent: ${absent}. The listener accepts only what every backend takes.`,
    }),
  )

export const OrthancBackendSchema = Type.Object(
  {
    ...backendCommon(),
    type: Type.Optional(Type.Literal('orthanc', {description: 'An Orthanc (the default when `type` is absent).'})),
    ...dicomAddress('orthanc'),
    url: Type.Optional(
      httpUrl({
        description:
          'Base URL of the Orthanc REST API (health, statistics, uploads with transport "rest"). Leave it out for a DICOM SCP that is not Orthanc: health and load then come from C-ECHO and the router\'s own counters.',
      }),
    ),
    ...credentials(),
    transport: Type.Union([Type.Literal('dimse'), Type.Literal('rest')], {default: 'dimse', description: '"dimse" forwards over C-STORE; "rest" posts to /instances (needs url).'}),
    retrieveTransport: Type.Optional(
      Type.Union([Type.Literal('dimse'), Type.Literal('rest')], {
        description:
          'How ddr fetches this Orthanc\'s instances for C-MOVE, C-GET, `ddr get` and processing: "dimse" by C-GET from its DICOM port (Orthanc must allow it: DicomAlwaysAllowGet, or ddr in DicomModalities; with a url, what C-GET does not bring is fetched over REST), "rest" by GET /instances/{id}/file (needs url). Absent: "rest" with transport "rest" (REST gives uploaded files back as uploaded), else "dimse".',
      }),
    ),
    tls: Type.Optional(BackendTlsSchema),
    https: Type.Optional(BackendHttpsSchema),
    storeTimeoutMs: storeTimeoutMs(),
    transferSyntaxes: transferSyntaxesOf("the set Orthanc 1.10 accepts"),
  },
  {additionalProperties: false, title: 'orthanc backend', description: 'An Orthanc: DIMSE or REST transport; load from its /statistics when it has a url.'},
)

export const DimseBackendSchema = Type.Object(
  {
    ...backendCommon(),
    type: Type.Literal('dimse', {description: 'Any C-STORE SCP.'}),
    ...dicomAddress('dimse'),
    transport: Type.Literal('dimse', {default: 'dimse', description: 'Always "dimse" (C-STORE).'}),
    tls: Type.Optional(BackendTlsSchema),
    storeTimeoutMs: storeTimeoutMs(),
    transferSyntaxes: transferSyntaxesOf('every standard transfer syntax'),
  },
  {additionalProperties: false, title: 'dimse backend', description: "Any C-STORE SCP: health from C-ECHO, load from the router's own counters."},
)

export const FolderBackendSchema = Type.Object(
  {
    ...backendCommon(),
    type: Type.Literal('folder', {description: 'Part 10 files on a disk.'}),
    path: nonEmpty({requiredHint: 'for a folder backend', description: 'The root folder.'}),
    minFreeMb: Type.Number({minimum: 0, default: 100, description: 'Below this much free space (MB) the backend is reported down.'}),
  },
  {additionalProperties: false, title: 'folder backend', description: 'Part 10 files written into a folder.'},
)

export const DicomwebBackendSchema = Type.Object(
  {
    ...backendCommon(),
    type: Type.Literal('dicomweb', {description: 'A DICOMweb server (STOW-RS).'}),
    url: httpUrl({requiredHint: 'for a dicomweb backend (the STOW-RS base, e.g. http://pacs:8042/dicom-web)', description: 'The DICOMweb base URL (STOW-RS posts to <url>/studies).'}),
    ...credentials(),
    token: optionalText({description: 'Bearer token (instead of username/password).'}),
    https: Type.Optional(BackendHttpsSchema),
    batchMaxInstances: integer(1, 1000, {default: DICOMWEB_BATCH_DEFAULTS.maxInstances, description: 'Instances per STOW-RS request at most (1: one request per instance).'}),
    batchMaxBytes: integer(1, 2 ** 31, {default: DICOMWEB_BATCH_DEFAULTS.maxBytes, description: 'Part 10 bytes per STOW-RS request at most (a larger instance goes alone).'}),
    batchWindowMs: integer(0, 10_000, {default: DICOMWEB_BATCH_DEFAULTS.windowMs, description: 'How long a request that is not full waits for more instances (ms; 0: only those already waiting).'}),
    storeTimeoutMs: storeTimeoutMs(),
  },
  {additionalProperties: false, title: 'dicomweb backend', description: 'A DICOMweb server: instances go by STOW-RS, health by QIDO-RS.'},
)

/** The backend schemas by `type` (absent: "orthanc"). */
export const BACKEND_SCHEMAS = {orthanc: OrthancBackendSchema, dimse: DimseBackendSchema, folder: FolderBackendSchema, dicomweb: DicomwebBackendSchema} as const

/**
 * The schema of one backend, picked by its `type` (absent: "orthanc"), or undefined when the
 * value is not an object or names no known type.
 */
export function backendSchemaFor(value: unknown): AnnotatedSchema | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined
  const type = (value as {type?: unknown}).type ?? 'orthanc'
  return typeof type === 'string' && Object.hasOwn(BACKEND_SCHEMAS, type) ? BACKEND_SCHEMAS[type as BackendType] : undefined
}

/** One backend: a union discriminated by `type`. */
export const BackendSchema = Type.Union(Object.values(BACKEND_SCHEMAS) as [typeof OrthancBackendSchema, typeof DimseBackendSchema, typeof FolderBackendSchema, typeof DicomwebBackendSchema])

/** The classic two-Orthanc setup: the backends when the config has none. */
const DEFAULT_BACKENDS = [
  {name: 'orthanc1', host: '127.0.0.1', port: 4242, aeTitle: 'ORTHANC1', url: 'http://127.0.0.1:8042', weight: 1, transport: 'dimse', maxAssociations: 4},
  {name: 'orthanc2', host: '127.0.0.1', port: 4252, aeTitle: 'ORTHANC2', url: 'http://127.0.0.1:8052', weight: 1, transport: 'dimse', maxAssociations: 4},
]

// ---------------------------------------------------------------- rules

export const RuleTagMatchSchema = Type.Object(
  {
    equals: optionalText({description: 'The value equals this (padding trimmed).'}),
    prefix: optionalText({description: 'The value starts with this.'}),
    regex: optionalText({description: 'The value matches this regular expression (JavaScript syntax).'}),
  },
  {additionalProperties: false, minProperties: 1, maxProperties: 1, description: 'How a rule compares one header value: exactly one of equals, prefix, regex.'},
)

/** The match fields routing rules and processing modules share (one meaning: see routing/rules.ts). */
const ruleMatchFields = {
  callingAeTitle: () => optionalText({description: "The sender's AE title equals this."}),
  modality: () => optionalText({description: 'Modality (0008,0060) equals this.'}),
  sopClassUid: () => optionalText({description: 'The SOP class UID equals this.'}),
  tags: () =>
    Type.Optional(
      Type.Record(Type.String({pattern: '^(\\(?[0-9a-fA-F]{4},?[0-9a-fA-F]{4}\\)?|[A-Za-z][A-Za-z0-9]*)$'}), RuleTagMatchSchema, {
        additionalProperties: false,
        keyProblem: 'a tag like "0008,0060" or a keyword like "Modality"',
        description: 'Keyed by tag ("0008,0060") or keyword ("Modality").',
      }),
    ),
}

export const RoutingRuleSchema = Type.Object(
  {
    name: optionalText({description: 'Names the rule in logs and `ddr route --explain` (default: rules[index]).'}),
    match: Type.Object(
      {
        callingAeTitle: ruleMatchFields.callingAeTitle(),
        calledAeTitle: optionalText({description: 'The AE title the sender called equals this.'}),
        modality: ruleMatchFields.modality(),
        sopClassUid: ruleMatchFields.sopClassUid(),
        tags: ruleMatchFields.tags(),
      },
      {additionalProperties: false, requiredHint: '(use {} to match every instance)', description: 'What the instance must have; {} matches every instance.'},
    ),
    action: Type.Object(
      {
        backends: Type.Optional(Type.Array(Type.String(), {minItems: 1, problem: 'a non-empty array of backend names', description: 'Place the instance only on these backends.'})),
        drop: Type.Optional(nonEmpty({description: 'Refuse the instance with this reason.'})),
        mirrors: Type.Optional(Type.Array(Type.String(), {minItems: 1, problem: 'a non-empty array of backend names', description: 'Copy the instance to these backends too (besides the mirrors for every instance).'})),
      },
      {additionalProperties: false, description: 'What to do with it: backends, drop or mirrors (mirrors may go with either).'},
    ),
  },
  {additionalProperties: false, description: 'One routing rule: the first rule whose `match` fits an instance decides its `action`.'},
)

// ---------------------------------------------------------------- processing

/** A code as DICOM writes one: value, coding scheme, meaning. */
const code = (description: string) =>
  Type.Object(
    {
      value: Type.String({minLength: 1, maxLength: 16, description: 'Code Value (e.g. "18748-4"; at most 16 characters).'}),
      scheme: Type.String({minLength: 1, maxLength: 16, description: 'Coding Scheme Designator (e.g. "LN", "SCT", "DCM", or "99..." for a private scheme).'}),
      meaning: Type.String({minLength: 1, maxLength: 64, description: 'Code Meaning, as people read it (at most 64 characters).'}),
    },
    {additionalProperties: false, description},
  )

export const ProcessingModuleSchema = Type.Object(
  {
    name: Type.String({
      pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$',
      problem: 'a module name: a letter or digit, then letters, digits, ".", "_" or "-" (at most 64)',
      requiredHint: 'for a processing module',
      description: 'Names the module in logs, `ddr studies`, `ddr process --module` and the SR it writes (its observer).',
    }),
    match: Type.Object(
      {
        callingAeTitle: ruleMatchFields.callingAeTitle(),
        modality: ruleMatchFields.modality(),
        sopClassUid: ruleMatchFields.sopClassUid(),
        tags: ruleMatchFields.tags(),
      },
      {
        additionalProperties: false,
        requiredHint: '(use {} to run on every study)',
        description: "Which studies: those with at least one instance that matches, as a routing rule's match (without calledAeTitle); {} matches every study.",
      },
    ),
    command: Type.Optional(Type.Array(nonEmpty(), {minItems: 1, problem: 'a non-empty array: the program, then its arguments', description: 'The program and its arguments (no shell); it gets DDR_IN and DDR_OUT (docs/processing.md).'})),
    url: Type.Optional(httpUrl({description: 'An HTTP module: the study goes there as a multipart POST and the answer is result.json (docs/processing.md).'})),
    timeoutSeconds: integer(1, 86_400, {default: 600, description: 'An attempt that takes longer is killed (its process group) and counts as failed.'}),
    retries: integer(0, 100, {default: 2, description: 'Failed attempts tried again before the study is marked processing-failed.'}),
    retryDelaySeconds: integer(0, 86_400, {default: 30, description: 'Wait before the first retry; it doubles with each further one.'}),
    output: Type.Union([Type.Literal('sr'), Type.Literal('dicom'), Type.Literal('none')], {
      default: 'sr',
      description: '`sr`: a DICOM SR made from result.json is stored into the study; `dicom`: the DICOM files the module writes to DDR_OUT are; `none`: findings are only recorded.',
    }),
    title: Type.Optional(code('Document title of the SR (default: "<name> findings" under the private coding scheme 99DDR).')),
    settings: Type.Record(Type.String(), Type.Unknown(), {default: {}, description: "Handed to the module as task.json's settings."}),
    rerunOnAmendment: Type.Boolean({default: false, description: 'Run again when an amendment brings new instances to a study the module already ran on.'}),
  },
  {additionalProperties: false, description: 'A processing module: a program or HTTP service that looks at a complete study (docs/processing.md).'},
)

// ---------------------------------------------------------------- the whole file

export const ConfigSchema = Type.Object(
  {
    $schema: Type.Optional(Type.String({description: 'The JSON Schema of this file, for editors (e.g. "./ddr.schema.json"); ddr ignores it.'})),
    listen: ListenSchema,
    status: Type.Object(
      {
        host: nonEmpty({default: '127.0.0.1', description: 'Address of the HTTP status server (/status, /metrics).'}),
        port: integer(0, 65535, {default: 11180, env: 'DDR_STATUS_PORT', description: 'Its port.'}),
        // The console (src/lib/console, docs/console.md): pages and /api/ on this server.
        console: Type.Boolean({default: true, description: 'Serve the web console (/console/) and its HTTP API (/api/).'}),
        token: Type.Optional(
          Type.String({minLength: 16, problem: 'a token of at least 16 characters', env: 'DDR_STATUS_TOKEN', description: "Needed for the console's actions (upload, retry, discard) as `Authorization: Bearer` or through the console's login; required when host is not loopback. Better from the environment than the file."}),
        ),
        maxUploadBytes: integer(1024, Number.MAX_SAFE_INTEGER, {default: 2 * 1024 ** 3, description: 'Largest body POST /api/upload takes (bytes); larger uploads are answered 413.'}),
        tls: Type.Optional(
          serverTls(
            "HTTPS on the status server (/status, /metrics, the console, /api/), the listener's certificate options; absent: plain HTTP. ddr's own commands (dead-letters, balance-status, listen --drain, study --verify, process) then use https:// and trust this certificate, and `ca` (else listen.tls.ca, else Node's built-in CAs).",
          ),
        ),
      },
      {additionalProperties: false, default: {}, description: 'The HTTP status server.'},
    ),
    spool: Type.Object(
      {
        dir: nonEmpty({default: '.ddr/spool', env: 'DDR_SPOOL_DIR', description: 'Folder of the durable queue.'}),
        enabled: Type.Boolean({default: true, description: 'Store-and-forward: Success once the instance is fsynced to the spool. false: pass-through.'}),
        maxBytes: integer(1024 * 1024, Number.MAX_SAFE_INTEGER, {default: 20 * 1024 ** 3, description: 'Refuse new instances (A700) once the queue holds this many bytes.'}),
        minFreePercent: Type.Number({minimum: 0, default: 5, description: "Refuse new instances (A700) when the spool's file system has less free space than this."}),
        maxAttempts: integer(1, 1000, {default: 8, description: 'Out-of-resources answers (A7xx) tolerated per instance before it goes to dead-letter.'}),
        retryBaseMs: integer(10, 3_600_000, {default: 1000, description: 'First retry delay (ms); it doubles up to retryMaxMs.'}),
        retryMaxMs: integer(10, 86_400_000, {default: 60_000, description: 'Longest retry delay (ms).'}),
      },
      {additionalProperties: false, default: {}, description: 'The durable queue between the listener and the backends.'},
    ),
    ledger: Type.Object(
      {
        url: Type.Optional(
          Type.String({
            pattern: '^(sqlite:.+|postgres(ql)?://.+)',
            problem: 'a ledger URL: sqlite:PATH or postgres://USER@HOST:PORT/DATABASE',
            env: 'DDR_LEDGER_URL',
            description:
              'Where the study ledger lives: sqlite:PATH (relative to the working directory; default: sqlite:<spool.dir>/ledger.db), or postgres://USER@HOST:PORT/DATABASE, shared by several routers (docs/cluster.md).',
          }),
        ),
        password: Type.Optional(
          Type.String({minLength: 1, env: 'DDR_LEDGER_PASSWORD', description: "PostgreSQL password, when the URL has none (better from the environment than the file)."}),
        ),
        tls: Type.Optional(
          Type.Object(
            {
              ca: pemFile("CA bundle that signs the database server's certificate (default: Node's built-in CAs)"),
              cert: pemFile('Our client certificate, for servers that require one'),
              key: pemFile('Its private key'),
              rejectUnauthorized: Type.Boolean({default: true, description: "Check the server's certificate."}),
            },
            {additionalProperties: false, description: 'TLS towards PostgreSQL (absent: the URL decides, e.g. ?sslmode=require).'},
          ),
        ),
        routerName: Type.Optional(
          Type.String({
            pattern: '^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$',
            problem: 'a router name of letters, digits, ".", "_" and "-"',
            env: 'DDR_ROUTER_NAME',
            description: 'This router\'s name in a shared (PostgreSQL) ledger: its registration and the claims it makes (default: the host name and listen port).',
          }),
        ),
        claimTimeoutMs: integer(50, 60_000, {
          default: 2000,
          description: "How long a router waits for the shared ledger to say a new study's home before it routes on its own choice (logged as unconfirmed, reconciled later).",
        }),
      },
      {additionalProperties: false, default: {}, description: 'The study ledger: every instance the router acknowledged, per study.'},
    ),
    studies: Type.Object(
      {
        enabled: Type.Boolean({default: true, description: 'Keep the study ledger (store-and-forward mode only).'}),
        stableSeconds: integer(1, 86_400, {default: 60, description: 'A study is stable after this long without a new instance; a later instance re-opens it (an amendment).'}),
        keepDays: integer(1, 36_500, {default: 30, description: 'Studies whose last instance arrived longer ago than this leave the ledger.'}),
        receipts: Type.Boolean({default: true, description: 'Ask the backend what it holds of each stable, delivered study and repair what is missing from retention.'}),
        retentionHours: Type.Number({minimum: 0, default: 24, description: 'Delivered instances stay in spool.dir/retention this long, for repairs.'}),
        retentionBytes: integer(0, Number.MAX_SAFE_INTEGER, {default: 10 * 1024 ** 3, description: 'Retention holds at most this many bytes; the oldest copies go first.'}),
      },
      {additionalProperties: false, default: {}, description: 'Studies: completion and how long the ledger remembers them.'},
    ),
    routing: Type.Object(
      {
        policy: Type.Union([Type.Literal('least-loaded'), Type.Literal('round-robin'), Type.Literal('weighted')], {default: 'least-loaded', description: 'How a new study picks its backend.'}),
        affinity: Type.Boolean({default: true, description: 'Keep a study on the backend that got its first instance.'}),
      },
      {additionalProperties: false, default: {}, description: 'Placement of instances on the primary backends.'},
    ),
    health: Type.Object(
      {
        intervalMs: integer(100, 3_600_000, {default: 5000, description: 'Time between health checks of a backend (ms).'}),
        timeoutMs: integer(100, 600_000, {default: 3000, description: 'How long one check may take (ms).'}),
        failThreshold: integer(1, 100, {default: 2, description: 'Failed checks in a row before a backend is marked down.'}),
        recoverThreshold: integer(1, 100, {default: 2, description: 'Good checks in a row before a down backend is marked up.'}),
      },
      {additionalProperties: false, default: {}, description: 'Health checks of the backends.'},
    ),
    retrieve: Type.Object(
      {
        destinations: Type.Array(
          Type.Object(
            {
              aeTitle: aeTitle({requiredHint: 'for a move destination', description: 'The AE title a C-MOVE names (Move Destination).'}),
              host: nonEmpty({requiredHint: 'for a move destination', description: "Host of the destination's C-STORE SCP."}),
              port: integer(1, 65535, {requiredHint: 'for a move destination', description: "Port of the destination's C-STORE SCP."}),
              tls: Type.Optional(BackendTlsSchema),
            },
            {additionalProperties: false, description: 'A C-MOVE destination: where a viewer or workstation receives instances.'},
          ),
          {default: [], description: 'C-MOVE destinations by AE title; a C-MOVE to any other AE title is refused (A801).'},
        ),
        queryTimeoutMs: integer(100, 600_000, {default: 10_000, description: 'How long a backend may take to answer its part of a fleet-wide query (ms); a slower one is named in the warning.'}),
      },
      {additionalProperties: false, default: {}, description: 'Query/retrieve across the fleet (C-FIND, C-MOVE, C-GET, ddr find/get).'},
    ),
    stack: Type.Object(
      {dir: nonEmpty({default: '.ddr/stack', env: 'DDR_STACK_DIR', description: 'Where `ddr stack up` keeps the local Orthancs.'})},
      {additionalProperties: false, default: {}, description: 'The local test stack.'},
    ),
    backends: Type.Array(BackendSchema, {
      minItems: 1,
      default: DEFAULT_BACKENDS,
      problem: 'a non-empty array of backends',
      description: 'Where instances go; default: two local Orthancs (4242/8042 and 4252/8052).',
    }),
    rules: Type.Optional(Type.Array(RoutingRuleSchema, {problem: 'an array of rules', description: 'Routing rules, first match wins; none: every instance goes to the balanced primary set.'})),
    processing: Type.Object(
      {
        concurrency: integer(1, 64, {default: 1, description: 'Module runs at once, across all studies.'}),
        uidRoot: Type.Optional(
          Type.String({pattern: UID_PATTERN, maxLength: 40, problem: 'a UID root of at most 40 characters (digits and single dots, no component with a leading zero)', description: "UID root for what processing writes (SR study components); default: 2.25 (UUID-derived)."}),
        ),
        workDir: Type.Optional(nonEmpty({description: "Where each run's fresh DDR_IN and DDR_OUT folders are made (default: the system's temporary folder); never inside spool.dir."})),
        modules: Type.Array(ProcessingModuleSchema, {default: [], description: 'Modules that run on complete (stable) studies; none by default.'}),
      },
      {additionalProperties: false, default: {}, description: 'Processing modules on complete studies, their findings stored back as DICOM SR (store-and-forward with the study ledger).'},
    ),
  },
  {additionalProperties: false, title: 'ddr configuration', description: 'ddr.config.json: the configuration of ddr, the Dynamic DICOM Router.'},
)

// ---------------------------------------------------------------- the types

/** Every member of a union also lists the other members' fields as absent, so any backend's `url` (say) can be read without narrowing. */
type KeysOfUnion<T> = T extends unknown ? keyof T : never
type Exclusive<T, K extends PropertyKey = KeysOfUnion<T>> = T extends unknown ? T & {[P in Exclude<K, keyof T>]?: undefined} : never

export type OrthancBackendConfig = Static<typeof OrthancBackendSchema>
export type DimseBackendConfig = Static<typeof DimseBackendSchema>
export type FolderBackendConfig = Static<typeof FolderBackendSchema>
export type DicomwebBackendConfig = Static<typeof DicomwebBackendSchema>
/** One configured backend; narrow it by `type` (undefined means "orthanc"). */
export type BackendConfig = Exclusive<OrthancBackendConfig | DimseBackendConfig | FolderBackendConfig | DicomwebBackendConfig>
/** A backend reached over DICOM: an orthanc or dimse backend (narrowed by `type`, or by `aeTitle !== undefined`). */
export type DicomBackendConfig = Extract<BackendConfig, {aeTitle: string}>
/** What a backend is: "orthanc" (when `type` is absent), "dimse", "folder" or "dicomweb". */
export type BackendType = keyof typeof BACKEND_SCHEMAS
/** How a DICOM backend is reached for storing instances. */
export type BackendTransport = OrthancBackendConfig['transport']
export type BackendTlsConfig = Static<typeof BackendTlsSchema>
export type BackendHttpsConfig = Static<typeof BackendHttpsSchema>
export type ListenTlsConfig = Static<typeof ListenTlsSchema>
/** Server-side TLS files: `listen.tls` and `status.tls` have the same shape. */
export type ServerTlsConfig = ListenTlsConfig
export type MoveDestinationConfig = DdrConfig['retrieve']['destinations'][number]
export type RoutingPolicy = DdrConfig['routing']['policy']
export type RuleTagMatch = Static<typeof RuleTagMatchSchema>
export type RoutingRule = Static<typeof RoutingRuleSchema>
export type ProcessingModuleConfig = Static<typeof ProcessingModuleSchema>
export type ProcessingConfig = DdrConfig['processing']

/** A config file as ddr reads it (defaults filled). */
type ConfigFile = Static<typeof ConfigSchema>

/** The validated configuration, defaults filled. */
export interface DdrConfig extends Omit<ConfigFile, '$schema' | 'backends'> {
  /** Where the config came from: a file path, or "defaults". */
  source: string
  backends: BackendConfig[]
}

/** Who may connect to the listener, and how much they may send. */
export type ListenSecurityConfig = Omit<DdrConfig['listen'], 'host' | 'port' | 'aeTitle' | 'maxAssociations' | 'workers'>

/** Any schema node, with ddr's annotations readable. */
export type AnnotatedSchema = TSchema & DdrAnnotations
