import {mkdir, writeFile} from 'node:fs/promises'
import path from 'node:path'

import {buildMetaHeader} from './part10.js'
import {Tag} from './tags.js'
import {generateUid} from './uids.js'
import {hasShortLength} from './vr.js'

const CT_IMAGE_STORAGE = '1.2.840.10008.5.1.4.1.1.2'
const EXPLICIT_VR_LITTLE_ENDIAN = '1.2.840.10008.1.2.1'

function element(tag: number, vr: string, value: Buffer): Buffer {
  const long = !hasShortLength(vr)
  const padded = value.length % 2 === 0 ? value : Buffer.concat([value, Buffer.from([vr === 'UI' || vr === 'OB' ? 0 : 0x20])])
  const header = Buffer.alloc(long ? 12 : 8)
  header.writeUInt16LE(tag >>> 16, 0)
  header.writeUInt16LE(tag & 0xffff, 2)
  header.write(vr, 4, 'latin1')
  if (long) header.writeUInt32LE(padded.length, 8)
  else header.writeUInt16LE(padded.length, 6)
  return Buffer.concat([header, padded])
}

const text = (tag: number, vr: string, value: string) => element(tag, vr, Buffer.from(value, 'latin1'))
const us = (tag: number, value: number) => {
  const b = Buffer.alloc(2)
  b.writeUInt16LE(value, 0)
  return element(tag, 'US', b)
}

export interface SyntheticInstance {
  path: string
  sopInstanceUid: string
  studyInstanceUid: string
  seriesInstanceUid: string
  patientId: string
}

/**
 * Writes CT instances (explicit VR little endian, with a private element) for `studies` studies of
 * `instancesPerStudy` instances each; `pixelBytes` sets the size. For tests and benchmarks that
 * need many distinct studies; fixtures/ covers the variety of syntaxes and classes.
 */
export async function writeSyntheticStudies(
  dir: string,
  options: {studies: number; instancesPerStudy: number; pixelBytes?: number; prefix?: string},
): Promise<SyntheticInstance[]> {
  await mkdir(dir, {recursive: true})
  const pixelBytes = options.pixelBytes ?? 32 * 1024
  const side = Math.max(1, Math.floor(Math.sqrt(pixelBytes / 2)))
  const pixels = Buffer.alloc(side * side * 2)
  for (let i = 0; i < pixels.length; i++) pixels[i] = (i * 31) & 0xff
  const written: SyntheticInstance[] = []
  for (let s = 0; s < options.studies; s++) {
    const studyInstanceUid = generateUid()
    const seriesInstanceUid = generateUid()
    const patientId = `${options.prefix ?? 'SYN'}-${s}`
    for (let n = 0; n < options.instancesPerStudy; n++) {
      const sopInstanceUid = generateUid()
      const dataset = Buffer.concat([
        text(Tag.SpecificCharacterSet, 'CS', 'ISO_IR 100'),
        text(Tag.SOPClassUID, 'UI', CT_IMAGE_STORAGE),
        text(Tag.SOPInstanceUID, 'UI', sopInstanceUid),
        text(Tag.Modality, 'CS', 'CT'),
        text(0x00090010, 'LO', 'DDR TEST'),
        text(0x00091001, 'LO', `private ${s}/${n}`),
        text(Tag.PatientName, 'PN', `SYNTHETIC^${s}`),
        text(Tag.PatientID, 'LO', patientId),
        text(Tag.StudyInstanceUID, 'UI', studyInstanceUid),
        text(Tag.SeriesInstanceUID, 'UI', seriesInstanceUid),
        text(0x00200013, 'IS', String(n + 1)),
        us(0x00280002, 1),
        text(0x00280004, 'CS', 'MONOCHROME2'),
        us(0x00280010, side),
        us(0x00280011, side),
        us(0x00280100, 16),
        us(0x00280101, 12),
        us(0x00280102, 11),
        us(0x00280103, 0),
        element(Tag.PixelData, 'OW', pixels),
      ])
      const meta = buildMetaHeader({sopClassUid: CT_IMAGE_STORAGE, sopInstanceUid, transferSyntaxUid: EXPLICIT_VR_LITTLE_ENDIAN})
      const file = path.join(dir, `s${s}-i${n}.dcm`)
      await writeFile(file, Buffer.concat([meta, dataset]))
      written.push({path: file, sopInstanceUid, studyInstanceUid, seriesInstanceUid, patientId})
    }
  }

  return written
}
