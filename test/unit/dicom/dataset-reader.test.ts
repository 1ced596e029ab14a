import {mkdtempSync, rmSync, statSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {DdrError, isDdrError} from '../../../src/lib/errors.js'
import {datasetEncoding, readDatasetFromFile, readPart10Elements, readTopLevelElements} from '../../../src/lib/dicom/dataset-reader.js'
import {buildMetaHeader, readMetaHeader} from '../../../src/lib/dicom/part10.js'
import {Tag} from '../../../src/lib/dicom/tags.js'
import {SopClass, TransferSyntax} from '../../../src/lib/dicom/uids.js'
import {
  brokenFixture,
  deflate,
  encodeDataset,
  explicitBig,
  explicitLittle,
  fixturePath,
  goodFixtures,
  implicitLittle,
  type ManifestEntry,
  readFixture,
  type TestElement,
  type TestEncoding,
} from './helpers.js'

const routingTags = [Tag.SOPClassUID, Tag.SOPInstanceUID, Tag.StudyInstanceUID, Tag.SeriesInstanceUID, Tag.PatientID, Tag.Modality]

function expectedValues(entry: ManifestEntry): Map<number, string> {
  return new Map([
    [Tag.SOPClassUID, entry.sopClassUid],
    [Tag.SOPInstanceUID, entry.sopInstanceUid],
    [Tag.StudyInstanceUID, entry.studyInstanceUid],
    [Tag.SeriesInstanceUID, entry.seriesInstanceUid],
    [Tag.PatientID, entry.patientId],
    [Tag.Modality, entry.modality],
  ])
}

function datasetOf(entry: ManifestEntry): Buffer {
  const file = readFixture(entry)
  return file.subarray(readMetaHeader(file).datasetOffset)
}

function thrown(run: () => unknown): DdrError {
  try {
    run()
  } catch (error) {
    if (isDdrError(error)) return error
    throw error
  }
  throw new Error('expected a DdrError, nothing was thrown')
}

async function rejected(promise: Promise<unknown>): Promise<DdrError> {
  try {
    await promise
  } catch (error) {
    if (isDdrError(error)) return error
    throw error
  }
  throw new Error('expected a DdrError, the promise resolved')
}

const fixtureCases = goodFixtures.map((entry) => [entry.path, entry] as const)

describe('readTopLevelElements on the fixtures', () => {
  it.each(fixtureCases)('finds the routing values of %s', (_path, entry) => {
    const result = readTopLevelElements(datasetOf(entry), entry.transferSyntaxUid, routingTags)
    expect(result).toEqual({values: expectedValues(entry), complete: true})
  })

  it.each(fixtureCases)('finds them in %s read whole from memory and from disk, in big and tiny chunks', async (_path, entry) => {
    const wanted = [...routingTags, Tag.PatientName]
    const expected = new Map([...expectedValues(entry), [Tag.PatientName, entry.patientName]])
    const inMemory = readPart10Elements(readFixture(entry), wanted)
    expect(inMemory.values).toEqual(expected)
    expect(inMemory.complete).toBe(true)
    expect(inMemory.meta.transferSyntaxUid).toBe(entry.transferSyntaxUid)
    for (const chunkSize of [undefined, 256, 1000]) {
      const fromFile = await readDatasetFromFile(fixturePath(entry), wanted, {chunkSize})
      expect(fromFile.values).toEqual(expected)
      expect(fromFile.complete).toBe(true)
      expect(fromFile.meta.mediaStorageSopInstanceUid).toBe(entry.sopInstanceUid)
    }
  })

  it.each(fixtureCases)('never throws on a prefix of %s and is complete once the values are in', (_path, entry) => {
    const dataset = datasetOf(entry)
    const expected = expectedValues(entry)
    let completeAt = -1
    for (let length = 0; length <= dataset.length; length += length < 700 ? 1 : 41) {
      const result = readTopLevelElements(dataset.subarray(0, length), entry.transferSyntaxUid, routingTags)
      // Whatever was found so far is right (no value from inside a sequence, no half value).
      for (const [tag, value] of result.values) {
        if (value !== expected.get(tag)) throw new Error(`${entry.path}: ${length} bytes give ${tag.toString(16)} = ${value}`)
      }
      if (result.complete) {
        if (result.values.size !== expected.size) throw new Error(`${entry.path}: complete with ${length} bytes but only ${result.values.size} values`)
        if (completeAt < 0) completeAt = length
      } else if (completeAt >= 0) {
        throw new Error(`${entry.path}: complete with ${completeAt} bytes but not with ${length}`)
      }
    }
    expect(completeAt).toBeGreaterThan(0)
    // Tiny prefixes: not enough to say anything.
    for (let length = 0; length < 16; length++) {
      expect(readTopLevelElements(dataset.subarray(0, length), entry.transferSyntaxUid, routingTags).complete).toBe(false)
    }
  })

  it('skips a private CP-246 UN sequence that holds a decoy PatientID and StudyInstanceUID', () => {
    const entry = goodFixtures.find((e) => e.path.endsWith('mr-private-latin1.dcm'))!
    const result = readPart10Elements(readFixture(entry), [Tag.PatientID, Tag.StudyInstanceUID, 0x00291010, 0x00291011, 0x00291020])
    expect(result.values.get(Tag.PatientID)).toBe('DDR-P002')
    expect(result.values.get(Tag.StudyInstanceUID)).toBe(entry.studyInstanceUid)
    // Private text in Latin-1, a private US as a number, OB not returned.
    expect(result.values.get(0x00291010)).toBe('Privat: Größe')
    expect(result.values.get(0x00291011)).toBe('42')
    expect(result.values.has(0x00291020)).toBe(false)
  })

  it('decodes Latin-1 names with SpecificCharacterSet ISO_IR 100, in every syntax of the study', () => {
    for (const entry of goodFixtures.filter((e) => e.patientId === 'DDR-P002')) {
      const result = readPart10Elements(readFixture(entry), [Tag.SpecificCharacterSet, Tag.PatientName, Tag.InstitutionName])
      expect(result.values).toEqual(new Map([
        [Tag.SpecificCharacterSet, 'ISO_IR 100'],
        [Tag.PatientName, 'MÜLLER^JÜRGEN'],
        [Tag.InstitutionName, 'Universitätsklinikum Köln'],
      ]))
    }
  })

  it('decodes numbers in implicit VR and big endian', () => {
    for (const path of ['ct-implicit-le.dcm', 'ct-explicit-be.dcm', 'ct-explicit-le.dcm', 'ct-deflated.dcm']) {
      const entry = goodFixtures.find((e) => e.path.endsWith(path))!
      const result = readPart10Elements(readFixture(entry), [Tag.Rows, Tag.Columns, Tag.BitsStored, Tag.NumberOfFrames])
      expect([path, result.values]).toEqual([path, new Map([[Tag.Rows, '64'], [Tag.Columns, '64'], [Tag.BitsStored, '12']])])
    }
    const nm = goodFixtures.find((e) => e.path.endsWith('nm-multiframe.dcm'))!
    expect(readPart10Elements(readFixture(nm), [Tag.NumberOfFrames, Tag.FrameIncrementPointer]).values).toEqual(new Map([
      [Tag.NumberOfFrames, '4'],
      [Tag.FrameIncrementPointer, '00540010\\00540020'],
    ]))
  })

  it('reads elements after encapsulated pixel data', () => {
    for (const entry of goodFixtures.filter((e) => !datasetEncoding(e.transferSyntaxUid).deflated)) {
      // Nothing follows the pixel data in the fixtures: the end of the data is the answer.
      const result = readTopLevelElements(datasetOf(entry), entry.transferSyntaxUid, [0x7fe10010], {endOfData: true})
      expect([entry.path, result]).toEqual([entry.path, {values: new Map(), complete: true}])
      const prefix = readTopLevelElements(datasetOf(entry).subarray(0, -1), entry.transferSyntaxUid, [0x7fe10010], {endOfData: true})
      expect([entry.path, prefix.complete]).toEqual([entry.path, false])
    }
  })
})

describe('readTopLevelElements on built datasets', () => {
  const studyUid = '1.2.826.0.1.3680043.10.1.1'
  function bigSequenceDataset(items: number, undefinedLengths: boolean): TestElement[] {
    const item = (i: number): TestElement[] => [
      {tag: Tag.ReferencedSOPClassUID, vr: 'UI', value: SopClass.CTImageStorage},
      {tag: Tag.ReferencedSOPInstanceUID, vr: 'UI', value: `1.2.3.${i}`},
      // A nested sequence in each item, itself with a decoy study UID.
      {tag: 0x0040a170, vr: 'SQ', undefinedLength: undefinedLengths, undefinedItemLength: undefinedLengths, items: [[
        {tag: 0x00080100, vr: 'SH', value: '121311'},
        {tag: Tag.StudyInstanceUID, vr: 'UI', value: `9.9.${i}`},
      ]]},
    ]
    return [
      {tag: Tag.SpecificCharacterSet, vr: 'CS', value: 'ISO_IR 192'},
      {tag: Tag.SOPClassUID, vr: 'UI', value: SopClass.CTImageStorage},
      {tag: Tag.SOPInstanceUID, vr: 'UI', value: '1.2.3.4.5'},
      {tag: Tag.Modality, vr: 'CS', value: 'CT'},
      {tag: Tag.ReferencedImageSequence, vr: 'SQ', undefinedLength: undefinedLengths, undefinedItemLength: undefinedLengths, items: Array.from({length: items}, (_, i) => item(i))},
      {tag: Tag.PatientName, vr: 'PN', value: Buffer.from('Иванов^Пётр', 'utf8')},
      {tag: Tag.PatientID, vr: 'LO', value: 'P-123'},
      {tag: Tag.OtherPatientIDsSequence, vr: 'SQ', undefinedLength: undefinedLengths, items: []},
      {tag: Tag.StudyInstanceUID, vr: 'UI', value: studyUid},
      {tag: Tag.SeriesInstanceUID, vr: 'UI', value: '1.2.3.4.6'},
      {tag: Tag.PixelData, vr: 'OW', value: Buffer.alloc(4096, 0xfe)},
      {tag: 0x7fe10010, vr: 'LO', value: 'AFTER PIXELS'},
    ]
  }

  const encodings: Array<[string, TestEncoding, string, boolean]> = [
    ['implicit VR little endian', implicitLittle, TransferSyntax.ImplicitVRLittleEndian, false],
    ['explicit VR little endian', explicitLittle, TransferSyntax.ExplicitVRLittleEndian, false],
    ['explicit VR big endian', explicitBig, TransferSyntax.ExplicitVRBigEndian, false],
    ['deflated explicit VR little endian', explicitLittle, TransferSyntax.DeflatedExplicitVRLittleEndian, true],
  ]

  describe.each(encodings)('%s', (_name, encoding, transferSyntaxUid, deflated) => {
    it.each([true, false])('finds StudyInstanceUID after a 3000-item sequence (undefined lengths: %s)', (undefinedLengths) => {
      const plain = encodeDataset(bigSequenceDataset(3000, undefinedLengths), encoding)
      expect(plain.length).toBeGreaterThan(300_000)
      const dataset = deflated ? deflate(plain) : plain
      const wanted = [Tag.StudyInstanceUID, Tag.PatientID, Tag.PatientName, Tag.SOPClassUID]
      const result = readTopLevelElements(dataset, transferSyntaxUid, wanted)
      expect(result).toEqual({
        values: new Map([
          [Tag.SOPClassUID, SopClass.CTImageStorage],
          [Tag.PatientName, 'Иванов^Пётр'],
          [Tag.PatientID, 'P-123'],
          [Tag.StudyInstanceUID, studyUid],
        ]),
        complete: true,
      })
      // Cut inside the sequence: what came before is there, the study is not, and more is asked for.
      const cut = readTopLevelElements(dataset.subarray(0, Math.floor(dataset.length / 2)), transferSyntaxUid, wanted)
      expect(cut.complete).toBe(false)
      expect(cut.values.get(Tag.SOPClassUID)).toBe(SopClass.CTImageStorage)
      expect(cut.values.has(Tag.StudyInstanceUID)).toBe(false)
    })

    it('reads an element after the pixel data', () => {
      const plain = encodeDataset(bigSequenceDataset(3, true), encoding)
      const dataset = deflated ? deflate(plain) : plain
      expect(readTopLevelElements(dataset, transferSyntaxUid, [0x7fe10010]).values.get(0x7fe10010)).toBe('AFTER PIXELS')
    })

    it('stops at the first tag past the last wanted one, even when the data is cut there', () => {
      const elements = bigSequenceDataset(2, false)
      const plain = encodeDataset(elements, encoding)
      // SOPClassUID is wanted; the data ends 8 bytes into Modality (0008,0060), past the last wanted tag.
      const before = encodeDataset(elements.filter((e) => e.tag < Tag.Modality), encoding)
      const cut = plain.subarray(0, before.length + 8)
      const prefix = deflated ? deflate(cut) : cut
      expect(readTopLevelElements(prefix, transferSyntaxUid, [Tag.SOPClassUID, 0x00080017])).toEqual({
        values: new Map([[Tag.SOPClassUID, SopClass.CTImageStorage]]),
        complete: true,
      })
    })

    it('with endOfData, treats an absent element as final', () => {
      const plain = encodeDataset(bigSequenceDataset(2, true).filter((e) => e.tag < Tag.StudyInstanceUID), encoding)
      const dataset = deflated ? deflate(plain) : plain
      expect(readTopLevelElements(dataset, transferSyntaxUid, [Tag.StudyInstanceUID]).complete).toBe(false)
      expect(readTopLevelElements(dataset, transferSyntaxUid, [Tag.StudyInstanceUID], {endOfData: true})).toEqual({values: new Map(), complete: true})
    })
  })

  it('skips encapsulated pixel data whose fragments hold bytes that look like tags', () => {
    const lookalike = Buffer.from([0xfe, 0xff, 0xdd, 0xe0, 0, 0, 0, 0, 0xfe, 0xff, 0x0d, 0xe0, 0, 0, 0, 0])
    const dataset = encodeDataset([
      {tag: Tag.SOPClassUID, vr: 'UI', value: SopClass.CTImageStorage},
      {tag: Tag.PixelData, vr: 'OB', fragments: [lookalike, Buffer.alloc(1000, 0xff), lookalike]},
      {tag: 0x7fe10010, vr: 'LO', value: 'AFTER'},
    ], explicitLittle)
    expect(readTopLevelElements(dataset, TransferSyntax.JPEGLosslessSV1, [0x7fe10010]).values.get(0x7fe10010)).toBe('AFTER')
    for (let length = 0; length < dataset.length; length++) {
      expect(readTopLevelElements(dataset.subarray(0, length), TransferSyntax.JPEGLosslessSV1, [0x7fe10010]).complete).toBe(false)
    }
  })

  it('answers at once when nothing is wanted', () => {
    expect(readTopLevelElements(Buffer.alloc(0), TransferSyntax.ExplicitVRLittleEndian, [])).toEqual({values: new Map(), complete: true})
  })

  it('reads an unknown transfer syntax as explicit VR little endian', () => {
    const dataset = encodeDataset([{tag: Tag.PatientID, vr: 'LO', value: 'X1'}], explicitLittle)
    expect(readTopLevelElements(dataset, '1.2.3.4.5.6', [Tag.PatientID]).values.get(Tag.PatientID)).toBe('X1')
  })

  it('accepts a zlib-wrapped deflated dataset from a non-conformant sender', async () => {
    const {deflateSync} = await import('node:zlib')
    const dataset = deflateSync(encodeDataset([{tag: Tag.PatientID, vr: 'LO', value: 'Z1'}], explicitLittle))
    expect(readTopLevelElements(dataset, TransferSyntax.DeflatedExplicitVRLittleEndian, [Tag.PatientID]).values.get(Tag.PatientID)).toBe('Z1')
  })

  it('rejects bytes that are not a dataset in the declared syntax', () => {
    const implicitBytes = encodeDataset([{tag: Tag.SOPClassUID, vr: 'UI', value: SopClass.CTImageStorage}, {tag: Tag.PatientID, vr: 'LO', value: 'X'}], implicitLittle)
    const error = thrown(() => readTopLevelElements(implicitBytes, TransferSyntax.ExplicitVRLittleEndian, [Tag.PatientID], {source: 'from MODALITY'}))
    expect(error.code).toBe('INVALID_DICOM')
    expect(error.message).toMatch(/^from MODALITY: malformed dataset: SOPClassUID \(0008,0016\) has no valid VR \(bytes 0x1a 0x0\) at dataset byte 0$/)

    const badItem = Buffer.concat([
      encodeDataset([{tag: Tag.ReferencedImageSequence, vr: 'SQ', undefinedLength: true, items: []}], explicitLittle).subarray(0, 12),
      encodeDataset([{tag: Tag.PatientID, vr: 'LO', value: 'X'}], explicitLittle),
    ])
    expect(() => readTopLevelElements(badItem, TransferSyntax.ExplicitVRLittleEndian, [Tag.PatientID])).toThrow(/expected an item or a sequence delimiter, found PatientID \(0010,0020\) at dataset byte 12/)

    const notDeflate = Buffer.from('this is not deflate data at all, not even close!')
    expect(thrown(() => readTopLevelElements(notDeflate, TransferSyntax.DeflatedExplicitVRLittleEndian, [Tag.PatientID])).message).toMatch(/deflated dataset cannot be inflated/)
  })
})

describe('broken fixtures', () => {
  it('reads what a truncated file still has, and says when the cut hides the answer', async () => {
    const entry = brokenFixture('truncated-pixel-data.dcm')
    const early = await readDatasetFromFile(fixturePath(entry), routingTags)
    expect(early.complete).toBe(true)
    expect(early.values.get(Tag.StudyInstanceUID)).toBe(entry.studyInstanceUid)
    const late = await readDatasetFromFile(fixturePath(entry), [0x7fe10010])
    expect(late).toMatchObject({complete: false, values: new Map()})
    expect(readPart10Elements(readFixture(entry), [0x7fe10010]).complete).toBe(false)
  })

  it('rejects a text file named .dcm, naming it', async () => {
    const path = fixturePath(brokenFixture('not-dicom.dcm'))
    const error = await rejected(readDatasetFromFile(path, routingTags))
    expect(error.code).toBe('INVALID_DICOM')
    expect(error.message).toBe(`${path}: not a DICOM Part 10 file: no "DICM" prefix at byte 128`)
    expect(thrown(() => readPart10Elements(readFixture(brokenFixture('not-dicom.dcm')), routingTags)).code).toBe('INVALID_DICOM')
  })

  it('rejects a file cut inside the meta header', async () => {
    const error = await rejected(readDatasetFromFile(fixturePath(brokenFixture('truncated-meta.dcm')), routingTags))
    expect(error.code).toBe('INVALID_DICOM')
    expect(error.message).toMatch(/truncated file meta information/)
  })

  it('reports a missing SOPClassUID as absent, with the meta class beside it', async () => {
    const metaOk = await readDatasetFromFile(fixturePath(brokenFixture('missing-sop-class-meta-ok.dcm')), routingTags)
    expect(metaOk.complete).toBe(true)
    expect(metaOk.values.has(Tag.SOPClassUID)).toBe(false)
    expect(metaOk.meta.mediaStorageSopClassUid).toBe(SopClass.CTImageStorage)
    expect(metaOk.values.get(Tag.SOPInstanceUID)).toBe(brokenFixture('missing-sop-class-meta-ok.dcm').sopInstanceUid)

    const noClass = await readDatasetFromFile(fixturePath(brokenFixture('missing-sop-class-no-meta-class.dcm')), routingTags)
    expect(noClass.values.has(Tag.SOPClassUID)).toBe(false)
    expect(noClass.meta.mediaStorageSopClassUid).toBeUndefined()
    expect(noClass.values.get(Tag.Modality)).toBe('MR')

    const mismatch = await readDatasetFromFile(fixturePath(brokenFixture('sop-class-mismatch.dcm')), routingTags)
    expect(mismatch.values.get(Tag.SOPClassUID)).toBe(SopClass.CTImageStorage)
    expect(mismatch.meta.mediaStorageSopClassUid).toBe(SopClass.MRImageStorage)
  })
})

describe('readDatasetFromFile', () => {
  let dir: string
  beforeAll(() => {
    dir = mkdtempSync(join(tmpdir(), 'ddr-reader-'))
  })
  afterAll(() => {
    rmSync(dir, {recursive: true, force: true})
  })

  it('does not read the pixel data to find the study', async () => {
    const entry = goodFixtures.find((e) => e.path.endsWith('nm-multiframe.dcm'))!
    const result = await readDatasetFromFile(fixturePath(entry), routingTags, {chunkSize: 1024})
    expect(result.values).toEqual(expectedValues(entry))
    expect(result.bytesRead).toBeLessThanOrEqual(2048)
  })

  it('skips large values of known length on disk instead of reading them', async () => {
    // 20 MB of pixel data, then an element to find after it.
    const dataset = encodeDataset([
      {tag: Tag.SOPClassUID, vr: 'UI', value: SopClass.SecondaryCaptureImageStorage},
      {tag: Tag.StudyInstanceUID, vr: 'UI', value: '1.2.3'},
      {tag: Tag.PixelData, vr: 'OB', value: Buffer.alloc(20 * 1024 * 1024, 0x55)},
      {tag: 0x7fe10010, vr: 'LO', value: 'TAIL'},
    ], explicitLittle)
    const path = join(dir, 'big.dcm')
    writeFileSync(path, Buffer.concat([buildMetaHeader({sopClassUid: SopClass.SecondaryCaptureImageStorage, sopInstanceUid: '1.2.3.4', transferSyntaxUid: TransferSyntax.ExplicitVRLittleEndian}), dataset]))
    const result = await readDatasetFromFile(path, [Tag.StudyInstanceUID, 0x7fe10010])
    expect(result.values).toEqual(new Map([[Tag.StudyInstanceUID, '1.2.3'], [0x7fe10010, 'TAIL']]))
    expect(result.complete).toBe(true)
    expect(result.bytesRead).toBeLessThan(200 * 1024)
    expect(statSync(path).size).toBeGreaterThan(20 * 1024 * 1024)
  })

  it('says incomplete for a file cut inside a long value it skips on disk', async () => {
    // The element after the pixel data is wanted, so the answer depends on bytes the cut took away.
    const dataset = encodeDataset([
      {tag: Tag.SOPClassUID, vr: 'UI', value: SopClass.SecondaryCaptureImageStorage},
      {tag: Tag.StudyInstanceUID, vr: 'UI', value: '1.2.3'},
      {tag: Tag.PixelData, vr: 'OB', value: Buffer.alloc(300 * 1024, 0x55)},
      {tag: 0x7fe10010, vr: 'LO', value: 'TAIL'},
    ], explicitLittle)
    const file = Buffer.concat([buildMetaHeader({sopClassUid: SopClass.SecondaryCaptureImageStorage, sopInstanceUid: '1.2.3.4', transferSyntaxUid: TransferSyntax.ExplicitVRLittleEndian}), dataset])
    const path = join(dir, 'cut-in-pixels.dcm')
    writeFileSync(path, file.subarray(0, file.length - 100 * 1024))
    for (const chunkSize of [undefined, 256, 4096]) {
      const result = await readDatasetFromFile(path, [Tag.StudyInstanceUID, 0x7fe10010], {chunkSize})
      expect({chunkSize, complete: result.complete, values: result.values}).toEqual({chunkSize, complete: false, values: new Map([[Tag.StudyInstanceUID, '1.2.3']])})
    }
  })

  it('reads a long undefined-length sequence that spans many chunks', async () => {
    const elements: TestElement[] = [
      {tag: Tag.SOPClassUID, vr: 'UI', value: SopClass.CTImageStorage},
      {tag: Tag.ReferencedImageSequence, vr: 'SQ', undefinedLength: true, undefinedItemLength: true, items: Array.from({length: 5000}, (_, i) => [
        {tag: Tag.ReferencedSOPInstanceUID, vr: 'UI', value: `1.2.3.${i}`},
      ])},
      {tag: Tag.StudyInstanceUID, vr: 'UI', value: '1.2.3.99'},
    ]
    for (const [encoding, transferSyntaxUid] of [[implicitLittle, TransferSyntax.ImplicitVRLittleEndian], [explicitBig, TransferSyntax.ExplicitVRBigEndian]] as const) {
      const path = join(dir, `sequence-${transferSyntaxUid}.dcm`)
      writeFileSync(path, Buffer.concat([buildMetaHeader({sopClassUid: SopClass.CTImageStorage, sopInstanceUid: '1.2.3.4', transferSyntaxUid}), encodeDataset(elements, encoding)]))
      const result = await readDatasetFromFile(path, [Tag.StudyInstanceUID], {chunkSize: 4096})
      expect(result.values.get(Tag.StudyInstanceUID)).toBe('1.2.3.99')
    }
  })

  it('reads a deflated file in chunks', async () => {
    const entry = goodFixtures.find((e) => e.path.endsWith('ct-deflated.dcm'))!
    const result = await readDatasetFromFile(fixturePath(entry), [...routingTags, 0x7fe10010], {chunkSize: 512})
    expect(result.values).toEqual(expectedValues(entry))
    expect(result.complete).toBe(true)
  })
})
