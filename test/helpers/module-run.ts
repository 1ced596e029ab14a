// Running a processing module shipped in modules/ the way ddr does, on instances made for the test.
import {execFile} from 'node:child_process'
import {copyFile, mkdir, readFile, rm, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {promisify} from 'node:util'

import dcmjs from 'dcmjs'

import {generateUid} from '../../src/lib/dicom/uids.js'
import {type ModuleResult, type Task, parseResult} from '../../src/lib/processing/contract.js'

const run = promisify(execFile)
const CT = '1.2.840.10008.5.1.4.1.1.2'
const EXPLICIT_LE = '1.2.840.10008.1.2.1'
const RLE = '1.2.840.10008.1.2.5'

/** An instance made for a module's test. */
export interface Made {
  file: string
  sopInstanceUid: string
  seriesInstanceUid: string
  transferSyntaxUid: string
}

/** RLE Lossless of one 16-bit frame: two PackBits segments (high bytes, low bytes), literal runs only. */
function rleFrame(values: Uint16Array): Buffer {
  const pack = (bytes: number[]) => {
    const out: number[] = []
    for (let i = 0; i < bytes.length; i += 128) {
      const run = bytes.slice(i, i + 128)
      out.push(run.length - 1, ...run)
    }

    if (out.length % 2 === 1) out.push(0x80) // a no-op byte keeps segments even
    return Buffer.from(out)
  }

  const high = pack([...values].map((v) => v >> 8))
  const low = pack([...values].map((v) => v & 0xff))
  const header = Buffer.alloc(64)
  header.writeUInt32LE(2, 0)
  header.writeUInt32LE(64, 4)
  header.writeUInt32LE(64 + high.length, 8)
  return Buffer.concat([header, high, low])
}

/** A 12-bit 16x16 CT instance with the given pixels (one array per frame), written with dcmjs. */
export async function makeInstance(dir: string, name: string, options: {study: string; series: string; frames: Uint16Array[]; attributes?: Record<string, unknown>; rle?: boolean; numberOfFrames?: number}): Promise<Made> {
  const sopInstanceUid = generateUid()
  const transferSyntaxUid = options.rle ? RLE : EXPLICIT_LE
  const dataset: Record<string, unknown> = {
    SOPClassUID: CT,
    SOPInstanceUID: sopInstanceUid,
    StudyInstanceUID: options.study,
    SeriesInstanceUID: options.series,
    Modality: 'CT',
    PatientID: 'IQ-1',
    PatientName: 'QUALITY^TEST',
    PatientBirthDate: '19700101',
    PatientSex: 'O',
    StudyDate: '20260101',
    AccessionNumber: 'IQ-ACC',
    SamplesPerPixel: 1,
    PhotometricInterpretation: 'MONOCHROME2',
    Rows: 16,
    Columns: 16,
    BitsAllocated: 16,
    BitsStored: 12,
    HighBit: 11,
    PixelRepresentation: 0,
    ...(options.numberOfFrames === undefined ? {} : {NumberOfFrames: options.numberOfFrames}),
    ...options.attributes,
    PixelData: options.rle ? options.frames.map((f) => new Uint8Array(rleFrame(f)).buffer) : [new Uint8Array(Buffer.concat(options.frames.map((f) => Buffer.from(f.buffer)))).buffer],
    _vrMap: {PixelData: options.rle ? 'OB' : 'OW'},
  }
  for (const [key, value] of Object.entries(dataset)) if (value === undefined) delete dataset[key]
  const {DicomDict, DicomMetaDictionary} = (dcmjs as any).data
  const dict = new DicomDict(DicomMetaDictionary.denaturalizeDataset({FileMetaInformationVersion: new Uint8Array([0, 1]).buffer, MediaStorageSOPClassUID: CT, MediaStorageSOPInstanceUID: sopInstanceUid, TransferSyntaxUID: transferSyntaxUid, ImplementationClassUID: '2.25.1'}))
  dict.dict = DicomMetaDictionary.denaturalizeDataset(dataset)
  const file = path.join(dir, name)
  await writeFile(file, Buffer.from(dict.write({fragmentMultiframe: false})))
  return {file, sopInstanceUid, seriesInstanceUid: options.series, transferSyntaxUid}
}

/** A 16x16 image whose values climb through most of the 12-bit range. */
export const ramp = () => Uint16Array.from({length: 256}, (_, i) => (i * 13) % 4000)

/** Runs a module (its index.mjs) as ddr does: DDR_IN with the files and task.json, DDR_OUT empty; returns result.json, checked against the contract, and stderr. */
export async function runModule(module: string, dir: string, instances: Made[], settings: Record<string, unknown> = {}): Promise<{result: ModuleResult; stderr: string}> {
  const inDir = path.join(dir, 'in')
  const outDir = path.join(dir, 'out')
  await rm(inDir, {recursive: true, force: true})
  await rm(outDir, {recursive: true, force: true})
  await mkdir(inDir, {recursive: true})
  await mkdir(outDir, {recursive: true})
  const series = new Map<string, Task['series'][number]>()
  for (const i of instances) {
    await copyFile(i.file, path.join(inDir, `${i.sopInstanceUid}.dcm`))
    const entry = series.get(i.seriesInstanceUid) ?? {seriesInstanceUid: i.seriesInstanceUid, modality: null, instances: []}
    entry.instances.push({sopInstanceUid: i.sopInstanceUid, sopClassUid: CT, file: `${i.sopInstanceUid}.dcm`, transferSyntaxUid: i.transferSyntaxUid})
    series.set(i.seriesInstanceUid, entry)
  }

  const task: Task = {version: 1, module: path.basename(path.dirname(module)), settings, study: {studyInstanceUid: '2.25.1', patientId: 'IQ-1', accessionNumber: null, studyDate: null, modalities: []}, series: [...series.values()], backend: null, run: 1, attempt: 1, output: 'sr'}
  await writeFile(path.join(inDir, 'task.json'), JSON.stringify(task))
  const {stderr} = await run(process.execPath, [module], {env: {...process.env, DDR_IN: inDir, DDR_OUT: outDir}})
  // What ddr does with the answer: check it against the contract.
  const result = parseResult(await readFile(path.join(outDir, 'result.json'), 'utf8'), {sopInstanceUids: new Set(instances.map((i) => i.sopInstanceUid)), seriesInstanceUids: new Set(instances.map((i) => i.seriesInstanceUid))})
  return {result, stderr}
}
