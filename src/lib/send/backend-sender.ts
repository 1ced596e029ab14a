import {open} from 'node:fs/promises'

import {type Backend, storeSlots} from '../backends/backend.js'
import {DicomwebBackend} from '../backends/dicomweb-backend.js'
import {FolderBackend} from '../backends/folder-backend.js'
import {readDatasetFromFile, readTopLevelElements} from '../dicom/dataset-reader.js'
import {Tag} from '../dicom/tags.js'
import type {ReceivedInstance} from '../dicom/received-instance.js'
import {DdrError} from '../errors.js'
import {answeredDelivery, asDdrError, type DeliveryOptions, type DeliveryReport, interruptedError, WorkQueue} from './delivery.js'
import type {PreparedInstance} from './prepare.js'
import type {SendTarget} from './types.js'

export interface BackendDeliveryOptions extends DeliveryOptions {
  /** Per STOW-RS request (default 120 s). */
  timeoutMs?: number
}

/** The header values the folder layout needs. */
const LAYOUT_TAGS = [Tag.PatientID, Tag.StudyInstanceUID, Tag.SeriesInstanceUID]

/**
 * A file to send as the router's backends see an instance: its own meta header and dataset, the
 * file itself as the bytes (or the ZIP entry's bytes in memory), so what arrives is the file as it is.
 */
async function asReceived(instance: PreparedInstance, withLayout: boolean): Promise<ReceivedInstance> {
  const {source} = instance.item
  let metaHeader: Buffer
  let dataset: ReceivedInstance['dataset']
  let values = new Map<number, string>()
  if (source.kind === 'file') {
    const handle = await open(source.path, 'r')
    try {
      metaHeader = Buffer.alloc(instance.datasetOffset)
      await handle.read(metaHeader, 0, instance.datasetOffset, 0)
    } finally {
      await handle.close()
    }

    dataset = {path: source.path, offset: instance.datasetOffset, length: instance.datasetLength}
    if (withLayout) values = (await readDatasetFromFile(source.path, LAYOUT_TAGS)).values
  } else {
    const bytes = await source.archive.read(source.entry)
    metaHeader = bytes.subarray(0, instance.datasetOffset)
    dataset = {buffer: bytes.subarray(instance.datasetOffset)}
    if (withLayout) values = readTopLevelElements(dataset.buffer, instance.transferSyntaxUid, LAYOUT_TAGS, {endOfData: true, source: instance.item.name}).values
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
    path: source.kind === 'file' ? source.path : undefined,
    datasetLength: instance.datasetLength,
    receivedAt: Date.now(),
  }
}

/**
 * Sends prepared files to a configured dicomweb backend (STOW-RS, batched as the router does:
 * `concurrency` requests at once, each carrying several files) or folder backend (each file
 * written atomically into its PatientID/Study/Series/SOPInstanceUID.dcm place), through the same
 * backend classes the router uses. Every file arrives as it is, meta header included. The
 * backend's answer for each file is its outcome; a backend that cannot be reached before anything
 * got through (network, credentials, a folder that is not writable or is full) stops the send.
 */
export async function deliverToBackend(instances: PreparedInstance[], target: Extract<SendTarget, {protocol: 'stow' | 'folder'}>, options: BackendDeliveryOptions): Promise<DeliveryReport> {
  const report: DeliveryReport = {deliveries: [], connected: false}
  const config = {...target.config, maxAssociations: Math.max(1, options.concurrency)}
  const backend: Backend = target.protocol === 'stow' ? new DicomwebBackend(config, options.timeoutMs ?? 120_000) : new FolderBackend(config)
  const queue = new WorkQueue(instances, options.onDelivery)
  let stop = false

  if (target.protocol === 'folder') {
    // The folder's health first (created if need be, writable, free space above minFreeMb): a
    // folder that cannot take files fails the whole send at once, with the reason.
    try {
      await backend.echo(5000)
      report.connected = true
    } catch (error) {
      stop = true
      report.connectionError = new DdrError('BACKEND_UNREACHABLE', `folder backend ${target.backend}: ${(error as Error).message}`, {hint: 'check the folder exists or can be created, is writable, and has more free space than the backend\'s minFreeMb', cause: error})
    }
  }

  const worker = async (): Promise<void> => {
    for (let work = queue.take(); work !== undefined; work = queue.take()) {
      if (stop || options.signal?.aborted) {
        queue.giveBack(work)
        return
      }

      const {instance} = work
      let received: ReceivedInstance
      try {
        received = await asReceived(instance, target.protocol === 'folder')
      } catch (error) {
        queue.record({instance, stored: false, error: asDdrError(error, 'INVALID_DICOM')})
        continue
      }

      try {
        const response = await backend.store(received)
        report.connected = true
        queue.record(answeredDelivery(instance, response))
      } catch (error) {
        const failure = asDdrError(error)
        if (!report.connected) {
          // Nothing got through yet: the backend is not there (or refuses us): stop here.
          stop = true
          report.connectionError ??= failure
          queue.giveBack(work)
          return
        }

        if (!queue.retry(work)) queue.record({instance, stored: false, error: failure})
      }
    }
  }

  try {
    // STOW-RS batches what is in flight together: enough workers to fill `concurrency` requests.
    await Promise.all(Array.from({length: Math.max(1, Math.min(storeSlots(backend), instances.length))}, () => worker()))
  } finally {
    await backend.close()
  }

  if (queue.size > 0) {
    const cause = report.connectionError
    queue.failRemaining(options.signal?.aborted ? interruptedError() : new DdrError(cause?.code ?? 'BACKEND_UNREACHABLE', `not sent: ${cause?.message ?? 'stopped'}`, {hint: cause?.hint, cause}))
  }

  report.deliveries.push(...queue.deliveries)
  return report
}
