import {readFileSync} from 'node:fs'
import {mkdtemp, rm, stat, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {deflateRawSync, inflateRawSync} from 'node:zlib'

import {readMetaHeader} from '../../../src/lib/dicom/part10.js'
import type {InputItem} from '../../../src/lib/send/inputs.js'
import {type PrepareOutcome, prepareInput} from '../../../src/lib/send/prepare.js'
import {bufferSource, checkDatasetComplete} from '../../../src/lib/send/integrity.js'
import {fixturesDir, goodFixtures as good} from '../../helpers/fixtures.js'
import {writeSyntheticStudies} from '../../helpers/datasets.js'

const DEFLATED = '1.2.840.10008.1.2.1.99'

async function prepareFile(file: string, name = file): Promise<PrepareOutcome> {
  const item: InputItem = {name, size: (await stat(file)).size, source: {kind: 'file', path: file}}
  return prepareInput(item, 0)
}

describe('prepareInput on the fixtures', () => {
  it.each(good.map((f) => [f.path, f]))('%s is ready to send, its dataset whole', async (_name, entry) => {
    const outcome = await prepareFile(path.join(fixturesDir, entry.path))
    expect(outcome).toMatchObject({kind: 'instance', instance: {sopClassUid: entry.sopClassUid, sopInstanceUid: entry.sopInstanceUid, transferSyntaxUid: entry.transferSyntaxUid}})
    if (outcome.kind !== 'instance') return
    expect(outcome.instance.datasetOffset + outcome.instance.datasetLength).toBe(entry.size)
    expect(outcome.instance.warning).toBeUndefined()
  })

  it('fails a file cut inside its pixel data, naming the element', async () => {
    const outcome = await prepareFile(path.join(fixturesDir, 'broken/truncated-pixel-data.dcm'))
    expect(outcome).toMatchObject({kind: 'fail', reason: expect.stringMatching(/^truncated: the file ends inside PixelData \(7FE0,0010\)/), hint: expect.stringContaining('cut short')})
  })

  it('fails a file cut inside its meta header', async () => {
    const outcome = await prepareFile(path.join(fixturesDir, 'broken/truncated-meta.dcm'), 'truncated-meta.dcm')
    expect(outcome).toMatchObject({kind: 'fail', reason: expect.stringMatching(/^truncated file meta information/)})
  })

  it('skips a text file named .dcm', async () => {
    expect(await prepareFile(path.join(fixturesDir, 'broken/not-dicom.dcm'))).toEqual({kind: 'skip', reason: 'not DICOM (no "DICM" at byte 128)'})
  })

  it.each(['missing-sop-class-meta-ok.dcm', 'missing-sop-class-no-meta-class.dcm'])('fails %s: missing SOPClassUID, with the fix-sop hint', async (name) => {
    const file = path.join(fixturesDir, 'broken', name)
    const outcome = await prepareFile(file)
    expect(outcome.kind).toBe('fail')
    if (outcome.kind !== 'fail') return
    expect(outcome.reason).toMatch(/^missing SOPClassUID \(0008,0016\)/)
    expect(outcome.hint).toBe(`repair it with "ddr fix-sop ${file}", then send it again`)
    if (name === 'missing-sop-class-meta-ok.dcm') expect(outcome.reason).toContain('MediaStorageSOPClassUID (0002,0002) says CT Image Storage')
  })

  it('sends a file whose meta header disagrees on the SOP class as its dataset says, with a warning', async () => {
    const outcome = await prepareFile(path.join(fixturesDir, 'broken/sop-class-mismatch.dcm'))
    expect(outcome).toMatchObject({kind: 'instance', instance: {sopClassUid: '1.2.840.10008.5.1.4.1.1.2', warning: expect.stringContaining('says MR Image Storage')}})
  })
})

describe('truncation check', () => {
  let dir: string

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'ddr-send-prepare-'))
  })

  afterAll(async () => {
    await rm(dir, {recursive: true, force: true})
  })

  it('finds the cut in a large file without reading its pixel data', async () => {
    const [instance] = await writeSyntheticStudies(dir, {studies: 1, instancesPerStudy: 1, pixelBytes: 600_000})
    const whole = readFileSync(instance.path)
    const cut = path.join(dir, 'cut.dcm')
    await writeFile(cut, whole.subarray(0, whole.length - 200_000))
    expect(await prepareFile(instance.path)).toMatchObject({kind: 'instance'})
    expect(await prepareFile(cut)).toMatchObject({kind: 'fail', reason: expect.stringMatching(/^truncated: the file ends inside PixelData/)})
  })

  const cuttable = good.filter((f) => f.transferSyntaxUid !== DEFLATED)
  it.each(cuttable.map((f) => [f.path]))('finds every cut of %s (in sequences, items, fragments, headers)', async (name) => {
    const file = readFileSync(path.join(fixturesDir, name))
    const {datasetOffset, transferSyntaxUid} = readMetaHeader(file)
    expect(await checkDatasetComplete(bufferSource(file), datasetOffset, transferSyntaxUid)).toEqual({complete: true})
    for (const at of [datasetOffset + 9, datasetOffset + 15, Math.floor((datasetOffset + file.length) / 2), file.length - 6, file.length - 1]) {
      const check = await checkDatasetComplete(bufferSource(file.subarray(0, at)), datasetOffset, transferSyntaxUid)
      expect({at, complete: check.complete}).toEqual({at, complete: false})
    }
  })

  it.each([['studies/1/ct-explicit-be.dcm'], ['studies/2/mr-private-latin1.dcm'], ['studies/3/us-multiframe-rle.dcm']])('misses no cut of %s except between top-level elements', async (name) => {
    const file = readFileSync(path.join(fixturesDir, name))
    const {datasetOffset, transferSyntaxUid} = readMetaHeader(file)
    const undetected: number[] = []
    for (let at = datasetOffset; at < file.length; at += 5) {
      if ((await checkDatasetComplete(bufferSource(file.subarray(0, at)), datasetOffset, transferSyntaxUid)).complete) undetected.push(at)
    }
    // A cut exactly between two top-level elements leaves a shorter but valid dataset: only
    // those pass, and a file has a few dozen of them, not thousands of bytes.
    expect(undetected.length).toBeLessThan(30)
    expect(undetected.every((at) => (at - datasetOffset) % 2 === 0)).toBe(true)
  })

  it.each(good.filter((f) => f.transferSyntaxUid === DEFLATED).map((f) => [f.path]))('walks the inflated elements of %s: a whole deflate stream around a cut dataset is not whole', async (name) => {
    const file = readFileSync(path.join(fixturesDir, name))
    const {datasetOffset, transferSyntaxUid} = readMetaHeader(file)
    const dataset = inflateRawSync(file.subarray(datasetOffset))
    // Re-deflated properly, but 7 bytes short of the last element's end.
    const cut = Buffer.concat([file.subarray(0, datasetOffset), deflateRawSync(dataset.subarray(0, dataset.length - 7))])
    const check = await checkDatasetComplete(bufferSource(cut), datasetOffset, transferSyntaxUid)
    expect(check).toEqual({complete: false, reason: expect.stringMatching(/^truncated: the inflated dataset ends inside .*\(its value needs \d+ bytes from dataset byte \d+, \d+ are there\)$/)})
  })

  it.each(good.filter((f) => f.transferSyntaxUid === DEFLATED).map((f) => [f.path]))('finds a cut in the deflate stream of %s', async (name) => {
    const file = readFileSync(path.join(fixturesDir, name))
    const {datasetOffset, transferSyntaxUid} = readMetaHeader(file)
    expect(await checkDatasetComplete(bufferSource(file), datasetOffset, transferSyntaxUid)).toEqual({complete: true})
    const check = await checkDatasetComplete(bufferSource(file.subarray(0, file.length - 40)), datasetOffset, transferSyntaxUid)
    expect(check).toEqual({complete: false, reason: 'truncated: the file ends inside the deflated dataset (the deflate stream is cut)'})
  })
})
