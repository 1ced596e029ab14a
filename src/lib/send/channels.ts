// How `ddr send` reaches each kind of target: through the router's own Backend classes
// (src/lib/backends), so each kind of backend has one way to be sent to. What is send's own is how
// it reads the answers: its messages and hints name its flags.
import {closeSync, openSync, readSync} from 'node:fs'

import {storeSlots} from '../backends/backend.js'
import {ContextPlan} from '../backends/context-plan.js'
import {DimseBackend} from '../backends/dimse-backend.js'
import {credentialVariables} from '../config/env.js'
import {type DimseBackendConfig, type OrthancBackendConfig, STORE_TIMEOUT_DEFAULT_MS} from '../config/schema.js'
import {readDatasetFromFile, readTopLevelElements} from '../dicom/dataset-reader.js'
import type {DatasetSource, ReceivedInstance} from '../dicom/received-instance.js'
import {Tag} from '../dicom/tags.js'
import {clientTlsOptions} from '../dimse/tls.js'
import {DdrError} from '../errors.js'
import {redactUrl} from '../output/redact.js'
import {answeredDelivery, type Delivery, type SendChannel} from './delivery.js'
import type {PreparedInstance} from './prepare.js'
import type {DimseSendTarget} from './target.js'
import type {SendTarget} from './types.js'

export interface ChannelOptions {
  /** Associations (DIMSE), uploads (REST) or STOW-RS requests at once. */
  concurrency: number
  /** DIMSE: how long to wait for an association (default 10 s) and for progress on a request (default 60 s). */
  connectTimeoutMs?: number
  requestTimeoutMs?: number
}

/** Datasets up to this size are read into memory ahead, while the previous instance is on the wire (DIMSE). */
const READ_AHEAD_MAX_BYTES = 1024 * 1024

/** The header values the folder layout needs. */
const LAYOUT_TAGS = [Tag.PatientID, Tag.StudyInstanceUID, Tag.SeriesInstanceUID]

const TRANSCODING_HINT = 'ddr sends files in their own transfer syntax, never transcoded: let the receiver accept it, or convert the file first (dcmdjpeg, dcmconv)'

/** Reads `length` bytes of a file from `position`, synchronously (small reads, usually from the page cache). */
function readSlice(file: string, name: string, position: number, length: number): Buffer {
  const fd = openSync(file, 'r')
  try {
    const buffer = Buffer.allocUnsafe(length)
    let filled = 0
    while (filled < length) {
      const bytesRead = readSync(fd, buffer, filled, length - filled, position + filled)
      if (bytesRead === 0) throw new DdrError('INVALID_DICOM', `${name} is shorter than when it was read (${position + filled} of ${position + length} bytes)`)
      filled += bytesRead
    }

    return buffer
  } finally {
    closeSync(fd)
  }
}

/**
 * A file to send as the router's backends see an instance: its own meta header and dataset, the
 * file itself as the bytes (or the ZIP entry's bytes in memory), so what arrives is the file as
 * it is. `inMemory`: a file up to READ_AHEAD_MAX_BYTES is read whole now (the DIMSE read-ahead);
 * `layout`: the folder layout's header values are read too.
 */
async function asReceived(instance: PreparedInstance, options: {inMemory: boolean; layout: boolean}): Promise<ReceivedInstance> {
  const {source, name} = instance.item
  const {datasetOffset, datasetLength} = instance
  let metaHeader: Buffer
  let dataset: DatasetSource
  let path: string | undefined
  let values = new Map<number, string>()
  if (source.kind === 'zip-entry') {
    const bytes = await source.archive.read(source.entry)
    metaHeader = bytes.subarray(0, datasetOffset)
    dataset = {buffer: bytes.subarray(datasetOffset)}
    if (options.layout) values = readTopLevelElements(dataset.buffer, instance.transferSyntaxUid, LAYOUT_TAGS, {endOfData: true, source: name}).values
  } else if (options.inMemory && datasetLength <= READ_AHEAD_MAX_BYTES) {
    const bytes = readSlice(source.path, name, 0, datasetOffset + datasetLength)
    metaHeader = bytes.subarray(0, datasetOffset)
    dataset = {buffer: bytes.subarray(datasetOffset)}
  } else {
    metaHeader = readSlice(source.path, name, 0, datasetOffset)
    dataset = {path: source.path, offset: datasetOffset, length: datasetLength}
    path = source.path
    if (options.layout) values = (await readDatasetFromFile(source.path, LAYOUT_TAGS)).values
  }

  return {
    id: `send-${instance.index}`,
    sopClassUid: instance.sopClassUid,
    sopInstanceUid: instance.sopInstanceUid,
    transferSyntaxUid: instance.transferSyntaxUid,
    patientId: values.get(Tag.PatientID),
    studyInstanceUid: values.get(Tag.StudyInstanceUID),
    seriesInstanceUid: values.get(Tag.SeriesInstanceUID),
    callingAeTitle: '',
    calledAeTitle: '',
    metaHeader,
    dataset,
    path,
    datasetLength,
    receivedAt: Date.now(),
  }
}

/**
 * C-STORE through a DimseBackend: its association pool proposes one presentation context per
 * (SOP class, transfer syntax) pair of the files, all known before the first association, and
 * `concurrency` associations carry many files each. Files are ordered by context group (almost
 * always one), so associations opened one after the other each propose one group.
 */
function dimseChannel(instances: PreparedInstance[], target: DimseSendTarget, options: ChannelOptions): {channel: SendChannel; order: PreparedInstance[]} {
  const plan = new ContextPlan()
  const groups = instances.map((instance) => plan.add({abstractSyntax: instance.sopClassUid, transferSyntax: instance.transferSyntaxUid}))
  const order = instances.map((instance, index) => ({instance, group: groups[index]})).sort((a, b) => a.group - b.group).map(({instance}) => instance)
  // PEM files are read once, before the first association; a missing file is a usage error naming the flag.
  const tls = target.tls === undefined ? undefined : clientTlsOptions(target.tls, '--tls')
  const config: DimseBackendConfig = {
    name: target.backend ?? 'send',
    type: 'dimse',
    transport: 'dimse',
    host: target.host,
    port: target.port,
    aeTitle: target.calledAeTitle,
    weight: 1,
    maxAssociations: options.concurrency,
    storeTimeoutMs: STORE_TIMEOUT_DEFAULT_MS,
  }
  const backend = new DimseBackend(config, {
    callingAeTitle: target.callingAeTitle,
    connectTimeoutMs: options.connectTimeoutMs ?? 10_000,
    requestTimeoutMs: options.requestTimeoutMs ?? 60_000,
    // A file takes as long as it takes while it makes progress (requestTimeoutMs).
    storeTimeoutMs: null,
    ...(tls === undefined ? {} : {tls}),
    contexts: plan.allGroups().flat(),
  })
  const channel: SendChannel = {
    backend,
    slots: options.concurrency,
    readAhead: true,
    unreachableEndsWorker: true,
    notSentReason: `no association with ${target.calledAeTitle}@${target.host}:${target.port}`,
    prepare: (instance) => asReceived(instance, {inMemory: true, layout: false}),
    store: (instance, received) => backend.store(received).then((response) => answeredDelivery(instance, response)),
    classify(error) {
      if (error.code === 'INVALID_DICOM') return {kind: 'instance', error}
      if (error.code === 'BACKEND_REFUSED') return {kind: 'instance', error: error.hint === undefined ? new DdrError(error.code, error.message, {hint: TRANSCODING_HINT}) : error}
      return {kind: error.duringRequest ? 'interrupted' : 'unreachable', error}
    },
  }
  return {channel, order}
}

/**
 * POST /instances through an OrthancRestBackend, the whole Part 10 file as it is. "AlreadyStored"
 * counts as stored, with a remark; Orthanc refusing one file fails that file; refused credentials
 * stop the upload (every other file would fail the same way).
 */
async function restChannel(target: Extract<SendTarget, {protocol: 'rest'}>, options: ChannelOptions): Promise<SendChannel> {
  // got loads in ~70 ms: only HTTP sends pay for it.
  const {OrthancRestBackend, orthancStored} = await import('../backends/rest-backend.js')
  const {describeRequestFailure} = await import('../security/https.js')
  const parsed = new URL(target.url)
  const base = redactUrl(target.url, {credentials: 'drop'})
  // Only the REST side of this config is read (an upload never uses the DICOM address, which a
  // --rest URL does not give): url, credentials (from the flag's backend, else the URL), https.
  const config: OrthancBackendConfig = {
    name: target.backend ?? 'rest',
    transport: 'rest',
    url: base,
    username: target.username ?? (parsed.username ? decodeURIComponent(parsed.username) : undefined),
    password: target.password ?? (parsed.password ? decodeURIComponent(parsed.password) : undefined),
    ...(target.https === undefined ? {} : {https: {...target.https, rejectUnauthorized: target.https.rejectUnauthorized ?? true}}),
    host: parsed.hostname,
    port: 0,
    aeTitle: '',
    weight: 1,
    maxAssociations: options.concurrency,
    storeTimeoutMs: STORE_TIMEOUT_DEFAULT_MS,
  }
  const backend = new OrthancRestBackend(config, {maxSockets: options.concurrency, httpsField: target.backend === undefined ? 'https' : `backends.${target.backend}.https`})
  return {
    backend,
    slots: options.concurrency,
    readAhead: false,
    unreachableEndsWorker: false,
    notSentReason: 'upload stopped',
    prepare: (instance) => asReceived(instance, {inMemory: false, layout: false}),
    async store(instance, received): Promise<Delivery | {stop: DdrError}> {
      const answer = await backend.upload(received)
      if (!('error' in answer)) {
        if (orthancStored(answer)) return {instance, stored: true, warning: answer.orthancStatus === 'AlreadyStored' ? 'Orthanc already had this instance (kept its first copy)' : undefined}
        return {instance, stored: false, errorComment: answer.orthancStatus, error: new DdrError('BACKEND_REFUSED', `Orthanc answered status ${answer.orthancStatus ?? '(none)'}`)}
      }

      const status = answer.httpStatus
      if (status === 401 || status === 403) {
        return {
          stop: new DdrError('BACKEND_REFUSED', `POST ${base}/instances: HTTP ${status} (not authorized)`, {
            hint:
              target.backend === undefined
                ? 'give the credentials with --rest NAME of a configured backend (DDR_BACKEND_<NAME>_USERNAME / DDR_BACKEND_<NAME>_PASSWORD) or in the URL'
                : `check the username and password of backend ${target.backend} (${credentialVariables(target.backend)})`,
            cause: answer.error,
          }),
        }
      }

      return {instance, stored: false, errorComment: answer.detail, error: new DdrError('BACKEND_REFUSED', `Orthanc refused it: HTTP ${status}${answer.detail ? ` (${answer.detail})` : ''}`)}
    },
    classify(error) {
      if (error.code === 'INVALID_DICOM') return {kind: 'instance', error}
      const {tls} = describeRequestFailure(error.cause ?? error)
      const hint =
        tls === 'untrusted'
          ? `give the CA that signs the server's certificate (or the self-signed certificate itself) with --ca FILE${target.backend === undefined ? '' : `, or as backends[].https.ca of backend ${target.backend}`}`
          : tls === 'handshake'
            ? 'check the URL scheme (https:// or http://) and port'
            : `is Orthanc running at ${base}?`
      return {kind: 'unreachable', error: new DdrError(error.code, error.message, {hint, cause: error.cause})}
    },
  }
}

/**
 * A configured dicomweb backend (STOW-RS, batched as the router does: `concurrency` requests at
 * once, each carrying several files) or folder backend (each file written atomically into its
 * PatientID/Study/Series/SOPInstanceUID.dcm place). A folder that cannot take files (not
 * writable, full) stops the send before the first file.
 */
async function configuredChannel(target: Extract<SendTarget, {protocol: 'stow' | 'folder'}>, options: ChannelOptions): Promise<SendChannel> {
  const config = {...target.config, maxAssociations: Math.max(1, options.concurrency)}
  const backend =
    target.protocol === 'stow' ? new (await import('../backends/dicomweb-backend.js')).DicomwebBackend(config, STORE_TIMEOUT_DEFAULT_MS) : new (await import('../backends/folder-backend.js')).FolderBackend(config)
  const folder = target.protocol === 'folder'
  return {
    backend,
    // STOW-RS batches what is in flight together: enough store() calls to fill `concurrency` requests.
    slots: storeSlots(backend),
    readAhead: false,
    unreachableEndsWorker: false,
    notSentReason: 'stopped',
    ...(folder
      ? {
          async before() {
            try {
              await backend.echo(5000)
              return undefined
            } catch (error) {
              return new DdrError('BACKEND_UNREACHABLE', `folder backend ${target.backend}: ${(error as Error).message}`, {hint: "check the folder exists or can be created, is writable, and has more free space than the backend's minFreeMb", cause: error})
            }
          },
        }
      : {}),
    prepare: (instance) => asReceived(instance, {inMemory: false, layout: folder}),
    store: (instance, received) => backend.store(received).then((response) => answeredDelivery(instance, response)),
    classify: (error) => ({kind: error.code === 'INVALID_DICOM' ? 'instance' : 'unreachable', error}),
  }
}

/**
 * The channel for a send target, and the order its files go in. Throws DdrError USAGE for a
 * --tls PEM file that cannot be read.
 */
export async function openChannel(target: SendTarget | DimseSendTarget, instances: PreparedInstance[], options: ChannelOptions): Promise<{channel: SendChannel; order: PreparedInstance[]}> {
  switch (target.protocol) {
    case 'dimse': {
      return dimseChannel(instances, target, options)
    }

    case 'rest': {
      return {channel: await restChannel(target, options), order: instances}
    }

    default: {
      return {channel: await configuredChannel(target, options), order: instances}
    }
  }
}
