import {inflateRawSync} from 'node:zlib'

import {buildMetaHeader, readMetaHeader} from '../../../src/lib/dicom/part10.js'
import {decideSopClass, encodeUidElement, inferSopClass, modalityAllows, repairPart10, spliceDataset} from '../../../src/lib/dicom/repair.js'
import {Tag} from '../../../src/lib/dicom/tags.js'
import {generateUid, SopClass, TransferSyntax} from '../../../src/lib/dicom/uids.js'
import {openPart10, walkDataset, walkPart10} from '../../../src/lib/dicom/walker.js'
import {brokenFixture, deflate, encodeDataset, explicitBig, explicitLittle, goodFixtures, implicitLittle, readFixture, type TestElement, type TestEncoding} from './helpers.js'

const CT = SopClass.CTImageStorage
const MR = SopClass.MRImageStorage

/** PS3.5 9.1, written out independently of src/: digits and dots, no leading zero in a component, at most 64 characters. */
function isPs35Uid(uid: string): boolean {
  if (uid.length === 0 || uid.length > 64) return false
  return uid.split('.').every((component) => /^(0|[1-9][0-9]*)$/.test(component))
}

/** A Part 10 file with a meta header whose MediaStorageSOPClassUID may be empty or absent. */
function part10(dataset: Buffer, options: {metaClass?: string | null; instance?: string; transferSyntax?: string}): Buffer {
  const transferSyntaxUid = options.transferSyntax ?? TransferSyntax.ExplicitVRLittleEndian
  const built = buildMetaHeader({sopClassUid: options.metaClass || CT, sopInstanceUid: options.instance ?? '1.2.3.4', transferSyntaxUid})
  if (options.metaClass !== null && options.metaClass !== '') return Buffer.concat([built, dataset])
  // Rebuild the group without (or with an empty) MediaStorageSOPClassUID.
  const whole = Buffer.concat([built, dataset])
  const emptyClass = Buffer.from([0x02, 0x00, 0x02, 0x00, 0x55, 0x49, 0x00, 0x00])
  const parts = readMetaHeader(whole)
    .elements.filter((e) => e.tag !== Tag.FileMetaInformationGroupLength)
    .map((e) => (e.tag !== Tag.MediaStorageSOPClassUID ? whole.subarray(e.offset, e.value.byteOffset - whole.byteOffset + e.value.length) : options.metaClass === '' ? emptyClass : Buffer.alloc(0)))
  const group = Buffer.concat(parts)
  const length = Buffer.from([0x02, 0x00, 0x00, 0x00, 0x55, 0x4c, 0x04, 0x00, 0, 0, 0, 0])
  length.writeUInt32LE(group.length, 8)
  return Buffer.concat([built.subarray(0, 132), length, group, dataset])
}

function ctDataset(encoding: TestEncoding, options: {sopClass?: string; modality?: string; groupLength?: boolean; extra?: TestElement[]} = {}): Buffer {
  const elements: TestElement[] = [
    {tag: Tag.SpecificCharacterSet, vr: 'CS', value: 'ISO_IR 100'},
    {tag: Tag.ImageType, vr: 'CS', value: 'ORIGINAL\\PRIMARY'},
    ...(options.sopClass ? [{tag: Tag.SOPClassUID, vr: 'UI', value: options.sopClass}] : []),
    {tag: Tag.SOPInstanceUID, vr: 'UI', value: '1.2.3.4'},
    {tag: Tag.Modality, vr: 'CS', value: options.modality ?? 'CT'},
    {tag: Tag.ReferencedImageSequence, vr: 'SQ', undefinedLength: true, items: [[{tag: Tag.ReferencedSOPClassUID, vr: 'UI', value: MR}]]},
    {tag: 0x00090010, vr: 'LO', value: 'PRIVATE'},
    {tag: 0x00091001, vr: 'UN', value: Buffer.from([1, 2, 3, 4])},
    {tag: Tag.PatientName, vr: 'PN', value: Buffer.from('M\xfcller', 'latin1')},
    {tag: Tag.StudyInstanceUID, vr: 'UI', value: '1.2.3'},
    {tag: Tag.SeriesInstanceUID, vr: 'UI', value: '1.2.3.1'},
    ...(options.extra ?? []),
    {tag: Tag.PixelData, vr: 'OW', value: Buffer.from([1, 2, 3, 4, 5, 6])},
  ]
  if (options.groupLength) {
    const group8 = encodeDataset(elements.filter((e) => e.tag >>> 16 === 0x0008), encoding).length
    const value = Buffer.alloc(4)
    if (encoding.littleEndian) value.writeUInt32LE(group8)
    else value.writeUInt32BE(group8)
    elements.unshift({tag: 0x00080000, vr: 'UL', value})
  }
  return encodeDataset(elements, encoding)
}

/** The dataset bytes of a Part 10 file (inflated when deflated). */
function datasetOf(file: Buffer): Buffer {
  return openPart10(file).dataset
}

/**
 * The byte comparison the issue asks for: the preamble, every meta element and every top-level
 * dataset element (with all it contains) except the changed ones are byte-identical and in the
 * same order.
 */
function expectOnlyChanged(original: Buffer, repaired: Buffer, changedTags: number[]): void {
  expect(repaired.subarray(0, 132).equals(original.subarray(0, 132))).toBe(true)
  const raw = (file: Buffer) =>
    readMetaHeader(file)
      .elements.filter((e) => e.tag !== Tag.FileMetaInformationGroupLength && !changedTags.includes(e.tag))
      .map((e) => file.subarray(e.offset, e.value.byteOffset - file.byteOffset + e.value.length).toString('hex'))
  expect(raw(repaired)).toEqual(raw(original))
  const kept = (file: Buffer) => {
    const opened = openPart10(file)
    const groups = new Set(changedTags.map((tag) => tag >>> 16))
    return walkPart10(opened, {deep: false})
      .filter((e) => !changedTags.includes(e.tag) && !((e.tag & 0xffff) === 0 && groups.has(e.tag >>> 16)))
      .map((e) => opened.dataset.subarray(e.offset, e.end).toString('hex'))
  }
  expect(kept(repaired)).toEqual(kept(original))
}

function topLevelValue(file: Buffer, tag: number): string | undefined {
  const opened = openPart10(file)
  const element = walkPart10(opened, {deep: false}).find((e) => e.tag === tag)
  return element?.value?.toString('latin1').replace(/\0+$/, '')
}

describe('inferSopClass and modalityAllows', () => {
  it.each([
    ['CT', {}, CT],
    ['ct ', {}, CT],
    ['CT', {enhanced: true}, '1.2.840.10008.5.1.4.1.1.2.1'],
    ['MR', {}, MR],
    ['US', {}, SopClass.UltrasoundImageStorage],
    ['US', {numberOfFrames: 6}, '1.2.840.10008.5.1.4.1.1.3.1'],
    ['CR', {}, SopClass.ComputedRadiographyImageStorage],
    ['DX', {}, SopClass.DigitalXRayImageStorageForPresentation],
    ['DX', {presentationIntentType: 'FOR PROCESSING'}, '1.2.840.10008.5.1.4.1.1.1.1.1'],
    ['MG', {}, SopClass.DigitalMammographyXRayImageStorageForPresentation],
    ['NM', {numberOfFrames: 10}, SopClass.NuclearMedicineImageStorage],
    ['PT', {}, SopClass.PositronEmissionTomographyImageStorage],
    ['XA', {numberOfFrames: 8}, SopClass.XRayAngiographicImageStorage],
    ['OT', {}, SopClass.SecondaryCaptureImageStorage],
    ['OT', {numberOfFrames: 2, bitsAllocated: 1}, '1.2.840.10008.5.1.4.1.1.7.1'],
    ['OT', {numberOfFrames: 2, bitsAllocated: 8}, '1.2.840.10008.5.1.4.1.1.7.2'],
    ['OT', {numberOfFrames: 2, bitsAllocated: 16}, '1.2.840.10008.5.1.4.1.1.7.3'],
    ['OT', {numberOfFrames: 2, bitsAllocated: 8, samplesPerPixel: 3}, '1.2.840.10008.5.1.4.1.1.7.4'],
    ['RTSTRUCT', {}, SopClass.RTStructureSetStorage],
  ])('%s %j → %s', (modality, attributes, expected) => {
    expect(inferSopClass(modality, attributes)).toBe(expected)
  })

  it('infers nothing where the modality alone is ambiguous or unknown', () => {
    expect(inferSopClass('SR')).toBeUndefined()
    expect(inferSopClass('ECG')).toBeUndefined()
    expect(inferSopClass('XYZ')).toBeUndefined()
    expect(inferSopClass(undefined)).toBeUndefined()
  })

  it('knows which classes fit a modality', () => {
    expect(modalityAllows('CT', CT)).toBe(true)
    expect(modalityAllows('CT', MR)).toBe(false)
    expect(modalityAllows('SR', SopClass.BasicTextSRStorage)).toBe(true)
    expect(modalityAllows('XYZ', CT)).toBeUndefined()
  })
})

describe('decideSopClass', () => {
  const attributes = {}
  it('takes the class the dataset and meta header agree on', () => {
    expect(decideSopClass({datasetClass: CT, metaClass: CT, modality: 'MR', attributes})).toEqual({uid: CT, source: 'dataset'})
  })
  it('takes whichever one is present', () => {
    expect(decideSopClass({metaClass: CT, modality: 'MR', attributes})).toEqual({uid: CT, source: 'meta'})
    expect(decideSopClass({datasetClass: MR, attributes})).toEqual({uid: MR, source: 'dataset'})
  })
  it('treats a value that is not a UID as missing', () => {
    expect(decideSopClass({datasetClass: 'CT IMAGE', metaClass: '01.2', modality: 'CT', attributes})).toEqual({uid: CT, source: 'modality'})
  })
  it('infers from Modality, then falls back to the user class, else says why', () => {
    expect(decideSopClass({modality: 'MR', attributes, fallback: CT})).toEqual({uid: MR, source: 'modality'})
    expect(decideSopClass({modality: 'SR', attributes, fallback: SopClass.BasicTextSRStorage})).toEqual({uid: SopClass.BasicTextSRStorage, source: 'user'})
    expect(decideSopClass({modality: 'SR', attributes}).reason).toMatch(/^cannot infer the SOP class: .*Modality SR does not tell the class.*--sop-class UID$/)
    expect(decideSopClass({attributes}).reason).toMatch(/no Modality \(0008,0060\) either/)
  })
  it('on disagreement keeps the meta header, unless Modality fits only the dataset', () => {
    expect(decideSopClass({datasetClass: CT, metaClass: MR, modality: 'CT', attributes})).toEqual({uid: CT, source: 'dataset'})
    expect(decideSopClass({datasetClass: CT, metaClass: MR, modality: 'MR', attributes})).toEqual({uid: MR, source: 'meta'})
    expect(decideSopClass({datasetClass: CT, metaClass: MR, attributes})).toEqual({uid: MR, source: 'meta'})
  })
})

describe('spliceDataset', () => {
  const ui = (tag: number, value: string): TestElement => ({tag, vr: 'UI', value})

  it.each([
    ['explicit VR little endian', explicitLittle],
    ['implicit VR little endian', implicitLittle],
    ['explicit VR big endian', explicitBig],
  ])('inserts in tag order and replaces in place, in %s, keeping every other byte', (_name, encoding) => {
    const before = encodeDataset([ui(Tag.SOPInstanceUID, '1.2'), {tag: Tag.PatientID, vr: 'LO', value: 'P1'}], encoding)
    const {bytes} = spliceDataset(before, walkDataset(before, encoding), encoding, new Map([[Tag.SOPClassUID, CT], [Tag.StudyInstanceUID, '1.2.3'], [Tag.SOPInstanceUID, '1.2.345']]))
    expect(bytes.equals(encodeDataset([ui(Tag.SOPClassUID, CT), ui(Tag.SOPInstanceUID, '1.2.345'), {tag: Tag.PatientID, vr: 'LO', value: 'P1'}, ui(Tag.StudyInstanceUID, '1.2.3')], encoding))).toBe(true)
  })

  it('encodes a UI element as the syntax wants, padded with NUL to an even length', () => {
    expect(encodeUidElement(Tag.SOPClassUID, '1.2.3', explicitLittle).toString('hex')).toBe('0800160055490600312e322e3300')
    expect(encodeUidElement(Tag.SOPClassUID, '1.2.3', implicitLittle).toString('hex')).toBe('0800160006000000312e322e3300')
    expect(encodeUidElement(Tag.SOPClassUID, '1.2.3', explicitBig).toString('hex')).toBe('0008001655490006312e322e3300')
  })
})

describe('repairPart10 on the broken fixtures', () => {
  it('adds SOPClassUID from the meta header: the file is the original plus one element, byte for byte', () => {
    const original = readFixture(brokenFixture('missing-sop-class-meta-ok.dcm'))
    const outcome = repairPart10(original)
    expect(outcome).toMatchObject({status: 'changed', sopClassUid: CT, sopClassSource: 'meta', changes: [{where: 'dataset', tag: '(0008,0016)', name: 'SOPClassUID', to: CT}]})
    expect(outcome.changes[0]).not.toHaveProperty('from')
    const opened = openPart10(original)
    const at = opened.meta.datasetOffset + (walkPart10(opened).find((e) => e.tag > Tag.SOPClassUID)?.offset ?? 0)
    const expected = Buffer.concat([original.subarray(0, at), encodeUidElement(Tag.SOPClassUID, CT, explicitLittle), original.subarray(at)])
    expect(outcome.bytes?.equals(expected)).toBe(true)
  })

  it('infers MR from Modality when the meta class is empty, and writes it into both places', () => {
    const original = readFixture(brokenFixture('missing-sop-class-no-meta-class.dcm'))
    const outcome = repairPart10(original)
    expect(outcome).toMatchObject({status: 'changed', sopClassUid: MR, sopClassSource: 'modality'})
    expect(outcome.changes.map((c) => [c.where, c.name, c.to])).toEqual([
      ['dataset', 'SOPClassUID', MR],
      ['meta', 'MediaStorageSOPClassUID', MR],
    ])
    const repaired = outcome.bytes as Buffer
    expect(readMetaHeader(repaired).mediaStorageSopClassUid).toBe(MR)
    expect(readMetaHeader(repaired).groupLength).toBe(readMetaHeader(repaired).datasetOffset - 144)
    expect(topLevelValue(repaired, Tag.SOPClassUID)).toBe(MR)
    expectOnlyChanged(original, repaired, [Tag.SOPClassUID, Tag.MediaStorageSOPClassUID])
  })

  it('fixes the meta header of the CT file whose meta header says MR, leaving the dataset alone', () => {
    const original = readFixture(brokenFixture('sop-class-mismatch.dcm'))
    const outcome = repairPart10(original)
    expect(outcome).toMatchObject({status: 'changed', sopClassUid: CT, sopClassSource: 'dataset', changes: [{where: 'meta', name: 'MediaStorageSOPClassUID', from: MR, to: CT}]})
    const repaired = outcome.bytes as Buffer
    expect(datasetOf(repaired).equals(datasetOf(original))).toBe(true)
    expectOnlyChanged(original, repaired, [Tag.MediaStorageSOPClassUID])
  })

  it.each([
    ['truncated-pixel-data.dcm', /^truncated: the data ends at byte 6282, inside the value of PixelData \(7FE0,0010\)/],
    ['truncated-meta.dcm', /^truncated file meta information/],
    ['not-dicom.dcm', /^not a DICOM Part 10 file/],
  ])('cannot fix %s, and says why', (name, reason) => {
    const outcome = repairPart10(readFixture(brokenFixture(name)))
    expect(outcome.status).toBe('cannot-fix')
    expect(outcome.reason).toMatch(reason)
    expect(outcome.bytes).toBeUndefined()
  })
})

describe('repairPart10 on good files', () => {
  it('leaves all 30 good fixtures alone', () => {
    for (const entry of goodFixtures) {
      const outcome = repairPart10(readFixture(entry))
      expect([entry.path, outcome.status, outcome.sopClassUid]).toEqual([entry.path, 'unchanged', entry.sopClassUid])
    }
  })

  it('gives every good fixture a valid new SOPInstanceUID, in the meta header too, changing nothing else', () => {
    const seen = new Set<string>()
    for (const entry of goodFixtures) {
      const original = readFixture(entry)
      const outcome = repairPart10(original, {newUids: {sopInstanceUid: generateUid}})
      expect([entry.path, outcome.status]).toEqual([entry.path, 'changed'])
      const repaired = outcome.bytes as Buffer
      const uid = topLevelValue(repaired, Tag.SOPInstanceUID) as string
      expect([entry.path, uid, isPs35Uid(uid), uid.startsWith('2.25.'), BigInt(uid.slice(5)) < 2n ** 128n]).toEqual([entry.path, uid, true, true, true])
      expect(readMetaHeader(repaired).mediaStorageSopInstanceUid).toBe(uid)
      expect(seen.has(uid)).toBe(false)
      seen.add(uid)
      expectOnlyChanged(original, repaired, [Tag.SOPInstanceUID, Tag.MediaStorageSOPInstanceUID])
      expect(repairPart10(repaired).status).toBe('unchanged')
    }
  })

  it('maps study and series UIDs through the given functions', () => {
    const original = readFixture('studies/1/ct-implicit-le.dcm')
    const outcome = repairPart10(original, {newUids: {sopInstanceUid: () => '2.25.1', studyInstanceUid: (old) => `2.25.2${old === undefined ? '0' : ''}`, seriesInstanceUid: () => '2.25.3'}})
    const repaired = outcome.bytes as Buffer
    expect([Tag.SOPInstanceUID, Tag.StudyInstanceUID, Tag.SeriesInstanceUID].map((tag) => topLevelValue(repaired, tag))).toEqual(['2.25.1', '2.25.2', '2.25.3'])
    expectOnlyChanged(original, repaired, [Tag.SOPInstanceUID, Tag.StudyInstanceUID, Tag.SeriesInstanceUID, Tag.MediaStorageSOPInstanceUID])
  })
})

describe('repairPart10 on synthetic files', () => {
  it.each([
    ['implicit VR little endian', implicitLittle, TransferSyntax.ImplicitVRLittleEndian],
    ['explicit VR big endian', explicitBig, TransferSyntax.ExplicitVRBigEndian],
  ])('inserts SOPClassUID in %s encoding', (_name, encoding, transferSyntax) => {
    const original = part10(ctDataset(encoding), {metaClass: CT, transferSyntax})
    const outcome = repairPart10(original)
    expect(outcome.status).toBe('changed')
    const repaired = outcome.bytes as Buffer
    expect(datasetOf(repaired).equals(ctDataset(encoding, {sopClass: CT}))).toBe(true)
    expect(repaired.subarray(0, readMetaHeader(original).datasetOffset).equals(original.subarray(0, readMetaHeader(original).datasetOffset))).toBe(true)
  })

  it('inflates, edits and deflates again a deflated dataset', () => {
    const original = part10(deflate(ctDataset(explicitLittle)), {metaClass: CT, transferSyntax: TransferSyntax.DeflatedExplicitVRLittleEndian})
    const outcome = repairPart10(original)
    expect(outcome.status).toBe('changed')
    const repaired = outcome.bytes as Buffer
    expect(inflateRawSync(repaired.subarray(readMetaHeader(repaired).datasetOffset)).equals(ctDataset(explicitLittle, {sopClass: CT}))).toBe(true)
    expectOnlyChanged(original, repaired, [Tag.SOPClassUID])
  })

  it('adds MediaStorageSOPClassUID to a meta header that has none', () => {
    const original = part10(ctDataset(explicitLittle, {sopClass: CT}), {metaClass: null})
    expect(readMetaHeader(original).elements.some((e) => e.tag === Tag.MediaStorageSOPClassUID)).toBe(false)
    const outcome = repairPart10(original)
    expect(outcome).toMatchObject({status: 'changed', sopClassSource: 'dataset', changes: [{where: 'meta', name: 'MediaStorageSOPClassUID', to: CT}]})
    const meta = readMetaHeader(outcome.bytes as Buffer)
    expect(meta.elements.map((e) => e.tag)).toEqual([0x00020000, 0x00020001, 0x00020002, 0x00020003, 0x00020010, 0x00020012, 0x00020013])
    expect(meta.mediaStorageSopClassUid).toBe(CT)
  })

  it.each([
    ['explicit VR little endian', explicitLittle, TransferSyntax.ExplicitVRLittleEndian],
    ['implicit VR little endian', implicitLittle, TransferSyntax.ImplicitVRLittleEndian],
    ['explicit VR big endian', explicitBig, TransferSyntax.ExplicitVRBigEndian],
  ])('updates a group length (0008,0000) the insertion makes wrong, in %s', (_name, encoding, transferSyntax) => {
    const original = part10(ctDataset(encoding, {groupLength: true}), {metaClass: CT, transferSyntax})
    const outcome = repairPart10(original)
    const repaired = outcome.bytes as Buffer
    const elements = walkPart10(openPart10(repaired))
    const groupLength = elements.find((e) => e.tag === 0x00080000)?.value as Buffer
    const actual = elements.filter((e) => e.tag >>> 16 === 0x0008 && e.tag !== 0x00080000).reduce((sum, e) => sum + e.end - e.offset, 0)
    expect(encoding.littleEndian ? groupLength.readUInt32LE(0) : groupLength.readUInt32BE(0)).toBe(actual)
    expect(outcome.changes.find((c) => c.tag === '(0008,0000)')).toEqual({where: 'dataset', tag: '(0008,0000)', name: '(0008,0000)', from: String(actual - 34), to: String(actual)})
    expectOnlyChanged(original, repaired, [Tag.SOPClassUID])
  })

  it('uses the fallback class only when nothing else tells the class', () => {
    const sr = part10(ctDataset(explicitLittle, {modality: 'SR'}), {metaClass: ''})
    expect(repairPart10(sr)).toMatchObject({status: 'cannot-fix', reason: expect.stringMatching(/Modality SR does not tell the class/)})
    expect(repairPart10(sr, {fallbackSopClassUid: SopClass.BasicTextSRStorage})).toMatchObject({status: 'changed', sopClassUid: SopClass.BasicTextSRStorage, sopClassSource: 'user'})
    const mr = part10(ctDataset(explicitLittle, {modality: 'MR'}), {metaClass: ''})
    expect(repairPart10(mr, {fallbackSopClassUid: SopClass.BasicTextSRStorage})).toMatchObject({status: 'changed', sopClassUid: MR, sopClassSource: 'modality'})
  })

  it('puts the meta header instance UID back in step with the dataset', () => {
    const original = part10(ctDataset(explicitLittle, {sopClass: CT}), {metaClass: CT, instance: '9.9.9'})
    expect(repairPart10(original)).toMatchObject({status: 'changed', changes: [{where: 'meta', name: 'MediaStorageSOPInstanceUID', from: '9.9.9', to: '1.2.3.4'}]})
  })

  it('skips a DICOMDIR', () => {
    const dicomdir = part10(encodeDataset([{tag: 0x00041130, vr: 'CS', value: 'ID'}], explicitLittle), {metaClass: '1.2.840.10008.1.3.10'})
    expect(repairPart10(dicomdir)).toMatchObject({status: 'skipped', reason: expect.stringMatching(/DICOMDIR/)})
  })
})
