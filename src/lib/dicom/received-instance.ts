import {stat} from 'node:fs/promises'

import {readFileSlice} from '../fs/durable.js'
import {readDatasetFromFile} from './dataset-reader.js'
import type {MetaHeader} from './part10.js'
import {Tag} from './tags.js'

/**
 * Dataset bytes to send or store: in memory (one buffer, or the fragments as they arrived, in
 * order, never copied together), or a slice of a file (streamed, never loaded whole).
 */
export type DatasetSource = {buffer: Buffer} | {buffers: readonly Buffer[]} | {path: string; offset: number; length: number}

/** The dataset's bytes when they are in memory, in order, without a copy; undefined for a file slice. */
export function datasetBuffers(source: DatasetSource): readonly Buffer[] | undefined {
  if ('buffer' in source) return [source.buffer]
  if ('buffers' in source) return source.buffers
  return undefined
}

/** The dataset's bytes in one buffer, when they are in memory (fragments are copied together: for readers that need them contiguous). */
export function datasetBuffer(source: DatasetSource): Buffer | undefined {
  if ('buffer' in source) return source.buffer
  if ('buffers' in source) return source.buffers.length === 1 ? source.buffers[0] : Buffer.concat(source.buffers)
  return undefined
}

/** How many bytes the dataset has. */
export function datasetSourceLength(source: DatasetSource): number {
  if ('buffer' in source) return source.buffer.length
  if ('buffers' in source) {
    let length = 0
    for (const buffer of source.buffers) length += buffer.length
    return length
  }

  return source.length
}

/** Where a spooled instance lies in a journal segment: what senders need to read it; the spool keeps the rest. */
export interface JournalSlot {
  readonly segment: {readonly path: string}
  /** Where the record's payload (meta header, then dataset) starts in the segment file. */
  readonly payloadOffset: number
}

/** The header elements routing reads from each dataset on receipt (the rest is never parsed). */
export const ROUTING_TAGS = [Tag.StudyInstanceUID, Tag.SeriesInstanceUID, Tag.PatientID, Tag.Modality, Tag.AccessionNumber, Tag.StudyDate, Tag.AcquisitionNumber, Tag.ImagesInAcquisition]

/** What is read back from a stored instance: the routing values and its identity. */
export const RECOVERY_TAGS = [...ROUTING_TAGS, Tag.SOPInstanceUID, Tag.SOPClassUID]

/**
 * One instance as the router received it: where its bytes are (exactly as the sender sent them),
 * and the few header values the rooms above need. Shared by intake, spool, routing, backends and
 * send, so it lives here, below all of them.
 */
export interface ReceivedInstance {
  /** Unique within this router process; names the spool file. */
  id: string
  sopClassUid: string
  sopInstanceUid: string
  transferSyntaxUid: string
  studyInstanceUid?: string
  seriesInstanceUid?: string
  patientId?: string
  modality?: string
  accessionNumber?: string
  studyDate?: string
  /** AcquisitionNumber and ImagesInAcquisition, when the sender gave them: a study can be known whole by count. */
  acquisitionNumber?: string
  imagesInAcquisition?: number
  callingAeTitle: string
  calledAeTitle: string
  /** The Part 10 meta header we wrote in front of the received dataset. */
  metaHeader: Buffer
  /** The dataset bytes exactly as the sender sent them (a file slice when large or spooled). */
  dataset: DatasetSource
  /** The Part 10 file, when the instance is on disk in a file of its own. */
  path?: string
  /** The spool journal record holding it (small spooled instances; set and read by the spool). */
  journal?: JournalSlot
  datasetLength: number
  receivedAt: number
}

/** The ROUTING_TAGS values as the received instance's fields. */
export function routingValues(values: Map<number, string>): Pick<ReceivedInstance, 'studyInstanceUid' | 'seriesInstanceUid' | 'patientId' | 'modality' | 'accessionNumber' | 'studyDate' | 'acquisitionNumber' | 'imagesInAcquisition'> {
  const images = Number.parseInt(values.get(Tag.ImagesInAcquisition) ?? '', 10)
  return {
    acquisitionNumber: values.get(Tag.AcquisitionNumber),
    imagesInAcquisition: Number.isFinite(images) && images > 0 ? images : undefined,
    studyInstanceUid: values.get(Tag.StudyInstanceUID),
    seriesInstanceUid: values.get(Tag.SeriesInstanceUID),
    patientId: values.get(Tag.PatientID),
    modality: values.get(Tag.Modality),
    accessionNumber: values.get(Tag.AccessionNumber),
    studyDate: values.get(Tag.StudyDate),
  }
}

/** An instance read back from disk: its header values, and where its bytes are. */
export function receivedInstanceFromDisk(id: string, meta: MetaHeader, values: Map<number, string>, where: Pick<ReceivedInstance, 'metaHeader' | 'dataset' | 'path' | 'journal'>): ReceivedInstance {
  return {
    id,
    sopClassUid: meta.mediaStorageSopClassUid ?? values.get(Tag.SOPClassUID) ?? '',
    sopInstanceUid: meta.mediaStorageSopInstanceUid ?? values.get(Tag.SOPInstanceUID) ?? '',
    transferSyntaxUid: meta.transferSyntaxUid,
    ...routingValues(values),
    callingAeTitle: meta.sourceApplicationEntityTitle ?? '',
    calledAeTitle: '',
    ...where,
    datasetLength: datasetSourceLength(where.dataset),
    receivedAt: idTime(id) ?? Date.now(),
  }
}

/**
 * An instance kept as a Part 10 file of its own (our meta header, then the dataset bytes as
 * received: a spool queue file, a pending mirror copy), read back: meta header, routing values,
 * and the file as its bytes (nothing else is read into memory).
 */
export async function readPart10Instance(file: string, id: string): Promise<ReceivedInstance> {
  const {meta, values} = await readDatasetFromFile(file, RECOVERY_TAGS)
  const length = (await stat(file)).size - meta.datasetOffset
  return receivedInstanceFromDisk(id, meta, values, {metaHeader: await readFileSlice(file, 0, meta.datasetOffset), dataset: {path: file, offset: meta.datasetOffset, length}, path: file})
}

/** Instance ids start with the receive time in base 36 (see newInstanceId in listen/intake). */
function idTime(id: string): number | undefined {
  const time = Number.parseInt(id.split('-')[0], 36)
  return Number.isFinite(time) ? time : undefined
}
