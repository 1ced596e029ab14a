// Send's first step: is this input a DICOM file that can go out as it is, and where are its dataset
// bytes? It reads as little as it can (a head, then element headers only), where src/lib/inspect
// reads a whole file to show it. What both need (readers, UID names) lives in src/lib/dicom, so
// neither imports the other.
import {closeSync, openSync} from 'node:fs'

import {readDatasetFromFile, readTopLevelElements} from '../dicom/dataset-reader.js'
import {hasPart10Prefix, META_START, type MetaHeader, readMetaHeader, tryReadMetaHeader} from '../dicom/part10.js'
import {describeTag, Tag} from '../dicom/tags.js'
import {describeSopClass, isStorageSopClass, sopClassName} from '../dicom/uids.js'
import {DdrError, type DdrErrorCode} from '../errors.js'
import type {InputItem} from './inputs.js'
import {bufferSource, type ByteSource, checkDatasetComplete, fileSource} from './integrity.js'

/** A file that can be sent: what C-STORE needs, and where its dataset bytes are. */
export interface PreparedInstance {
  item: InputItem
  /** Position in the discovered inputs: results keep this order. */
  index: number
  sopClassUid: string
  sopInstanceUid: string
  transferSyntaxUid: string
  /** Offset of the first dataset byte (after the meta header) and the dataset's length. */
  datasetOffset: number
  datasetLength: number
  /** Something odd that does not stop the send (the meta header disagreeing with the dataset). */
  warning?: string
}

/** What reading an input found: an instance to send, a file to skip (not DICOM), or a bad DICOM file. */
export type PrepareOutcome =
  | {kind: 'instance'; instance: PreparedInstance}
  | {kind: 'skip'; reason: string}
  | {kind: 'fail'; reason: string; hint?: string; code?: DdrErrorCode}

const HEAD_BYTES = 64 * 1024
const MAX_META_BYTES = 1024 * 1024 + META_START
const WANTED = [Tag.SOPClassUID, Tag.SOPInstanceUID] as const

/**
 * Reads just enough of an input to send it: the meta header, SOPClassUID and SOPInstanceUID, and
 * a walk over the element headers that proves the file is not cut short. Never throws for a bad
 * file: it says why the file is skipped (not DICOM) or cannot be sent (truncated, no
 * SOPClassUID...). I/O errors (permissions) become failures too.
 */
export async function prepareInput(item: InputItem, index: number): Promise<PrepareOutcome> {
  try {
    if (item.source.kind === 'zip-entry') {
      if (/\.zip$/i.test(item.source.entry.name)) return {kind: 'skip', reason: 'a ZIP archive inside a ZIP archive (extract the outer one first)'}
      const bytes = await item.source.archive.read(item.source.entry)
      return await prepareSource(item, index, bufferSource(bytes), bytes.subarray(0, HEAD_BYTES))
    }

    const fd = openSync(item.source.path, 'r')
    try {
      // Discovery has just taken the size; the dataset check notices a file that shrank since.
      const source = fileSource(fd, item.source.path, item.size)
      return await prepareSource(item, index, source, await source.read(0, HEAD_BYTES))
    } finally {
      closeSync(fd)
    }
  } catch (error) {
    if (error instanceof DdrError) return {kind: 'fail', code: error.code, reason: error.message.replace(`${item.name}: `, ''), hint: error.hint}
    const code = (error as NodeJS.ErrnoException).code
    return {kind: 'fail', reason: `cannot read it: ${code ?? (error as Error).message}`, hint: code === 'EACCES' ? 'check the file permissions' : undefined}
  }
}

async function readMeta(item: InputItem, source: ByteSource, head: Buffer): Promise<{meta: MetaHeader; head: Buffer}> {
  let bytes = head
  for (;;) {
    const meta = bytes.length >= source.size ? readMetaHeader(bytes, {source: item.name}) : tryReadMetaHeader(bytes, {source: item.name})
    if (meta !== undefined) return {meta, head: bytes}
    if (bytes.length >= MAX_META_BYTES) readMetaHeader(bytes, {source: item.name}) // throws: a meta header this large is corrupt
    bytes = Buffer.concat([bytes, await source.read(bytes.length, bytes.length)])
  }
}

async function prepareSource(item: InputItem, index: number, source: ByteSource, firstBytes: Buffer): Promise<PrepareOutcome> {
  if (!hasPart10Prefix(firstBytes)) {
    return {kind: 'skip', reason: source.size < META_START ? `not DICOM (${source.size} bytes, no Part 10 header)` : 'not DICOM (no "DICM" at byte 128)'}
  }

  const {meta, head} = await readMeta(item, source, firstBytes)
  const datasetLength = source.size - meta.datasetOffset
  const wholeHead = head.length >= source.size
  let values = readTopLevelElements(head.subarray(meta.datasetOffset), meta.transferSyntaxUid, WANTED, {endOfData: wholeHead, source: item.name})
  if (!values.complete && !wholeHead && item.source.kind === 'file') values = await readDatasetFromFile(item.source.path, WANTED)
  const sopClassUid = values.values.get(Tag.SOPClassUID)
  const sopInstanceUid = values.values.get(Tag.SOPInstanceUID)

  if (!sopClassUid) {
    const metaSays = meta.mediaStorageSopClassUid ? `; its meta header's ${describeTag(Tag.MediaStorageSOPClassUID)} says ${describeSopClass(meta.mediaStorageSopClassUid)}` : ''
    const where = item.source.kind === 'file' ? item.name : 'the extracted file'
    return {kind: 'fail', code: 'INVALID_DICOM', reason: `missing ${describeTag(Tag.SOPClassUID)}: a receiver would reject or misfile it${metaSays}`, hint: `repair it with "ddr fix-sop ${where}", then send it again`}
  }
  if (sopClassName(sopClassUid) !== undefined && !isStorageSopClass(sopClassUid)) {
    return {kind: 'skip', reason: `not an instance to store: ${describeSopClass(sopClassUid)}`}
  }
  if (!sopInstanceUid) {
    return {kind: 'fail', code: 'INVALID_DICOM', reason: `missing ${describeTag(Tag.SOPInstanceUID)}: no receiver can store it`, hint: 'the file is incomplete; regenerate it from its source'}
  }

  const check = await checkDatasetComplete(source, meta.datasetOffset, meta.transferSyntaxUid)
  if (!check.complete) {
    return {kind: 'fail', code: 'INVALID_DICOM', reason: check.reason, hint: check.reason.startsWith('truncated') ? 'the file was cut short (an interrupted copy or download?); copy it again from its source' : 'dcmdump shows what is wrong with it'}
  }

  const warnings: string[] = []
  if (meta.mediaStorageSopClassUid && meta.mediaStorageSopClassUid !== sopClassUid) {
    warnings.push(`${describeTag(Tag.MediaStorageSOPClassUID)} says ${describeSopClass(meta.mediaStorageSopClassUid)} but the dataset's ${describeTag(Tag.SOPClassUID)} is ${describeSopClass(sopClassUid)}; sent as the latter`)
  }
  if (meta.mediaStorageSopInstanceUid && meta.mediaStorageSopInstanceUid !== sopInstanceUid) {
    warnings.push(`${describeTag(Tag.MediaStorageSOPInstanceUID)} ${meta.mediaStorageSopInstanceUid} differs from the dataset's ${describeTag(Tag.SOPInstanceUID)} ${sopInstanceUid}; sent as the latter`)
  }

  return {
    kind: 'instance',
    instance: {
      item,
      index,
      sopClassUid,
      sopInstanceUid,
      transferSyntaxUid: meta.transferSyntaxUid,
      datasetOffset: meta.datasetOffset,
      datasetLength,
      warning: warnings.length > 0 ? warnings.join('; ') : undefined,
    },
  }
}
