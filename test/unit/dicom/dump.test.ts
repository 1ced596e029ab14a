import {dictionaryEntry, loadDictionary} from '../../../src/lib/dicom/dictionary.js'
import {dumpDataset, type DumpElement, dumpLines, dumpMetaHeader, elementValue} from '../../../src/lib/dicom/dump.js'
import {buildMetaHeader} from '../../../src/lib/dicom/part10.js'
import {Tag} from '../../../src/lib/dicom/tags.js'
import {TransferSyntax} from '../../../src/lib/dicom/uids.js'
import {openPart10, UNDEFINED_LENGTH, walkDataset, walkPart10} from '../../../src/lib/dicom/walker.js'
import {DdrError} from '../../../src/lib/errors.js'
import {brokenFixture, deflate, encodeDataset, explicitBig, explicitLittle, fixturePath, goodFixtures, implicitLittle, readFixture, type TestElement} from './helpers.js'

const CT = '1.2.840.10008.5.1.4.1.1.2'

function find(elements: DumpElement[], tag: string): DumpElement {
  const element = elements.find((e) => e.tag === tag)
  if (!element) throw new Error(`no ${tag} in the dump`)
  return element
}

function invalid(fn: () => unknown): DdrError {
  try {
    fn()
  } catch (error) {
    expect(error).toBeInstanceOf(DdrError)
    expect((error as DdrError).code).toBe('INVALID_DICOM')
    return error as DdrError
  }
  throw new Error('expected INVALID_DICOM')
}

const nested: TestElement[] = [
  {tag: Tag.SpecificCharacterSet, vr: 'CS', value: 'ISO_IR 100'},
  {tag: Tag.SOPClassUID, vr: 'UI', value: CT},
  {
    tag: Tag.ReferencedImageSequence,
    vr: 'SQ',
    undefinedLength: true,
    undefinedItemLength: true,
    items: [
      [{tag: Tag.ReferencedSOPClassUID, vr: 'UI', value: CT}],
      [
        {tag: Tag.ReferencedSOPInstanceUID, vr: 'UI', value: '1.2.3'},
        {tag: Tag.OtherPatientIDsSequence, vr: 'SQ', items: [[{tag: Tag.PatientID, vr: 'LO', value: 'INNER'}]]},
      ],
    ],
  },
  {tag: Tag.PatientName, vr: 'PN', value: Buffer.from('M\xfcller^J\xfcrgen', 'latin1')},
  {tag: Tag.Rows, vr: 'US', value: Buffer.from([0x00, 0x02])},
  {tag: Tag.PixelData, vr: 'OB', fragments: [Buffer.from([1, 2, 3, 4]), Buffer.from([5, 6])]},
]

describe('walkDataset', () => {
  it.each([
    ['explicit VR little endian', explicitLittle],
    ['implicit VR little endian', implicitLittle],
    ['explicit VR big endian', explicitBig],
  ])('walks nested sequences (defined and undefined lengths) and fragments in %s', (_name, encoding) => {
    const elements = encoding.explicitVr ? nested : nested.filter((e) => e.tag !== Tag.PixelData)
    const bytes = encodeDataset(elements, encoding)
    const walked = walkDataset(bytes, encoding)
    expect(walked.map((e) => e.tag)).toEqual(elements.map((e) => e.tag))
    expect(walked.at(-1)?.end).toBe(bytes.length)
    const sequence = walked[2]
    expect(sequence.length).toBe(UNDEFINED_LENGTH)
    expect(sequence.items?.map((item) => item.elements.map((e) => e.tag))).toEqual([[Tag.ReferencedSOPClassUID], [Tag.ReferencedSOPInstanceUID, Tag.OtherPatientIDsSequence]])
    const inner = sequence.items?.[1].elements[1]
    expect(elementValue(inner?.items?.[0].elements[0] ?? walked[0])).toBe('INNER')
    expect(elementValue(walked[4])).toBe(encoding.littleEndian ? '512' : '2')
    if (encoding.explicitVr) expect(walked[5].fragments?.map((f) => [...f])).toEqual([[], [1, 2, 3, 4], [5, 6]])
  })

  it('reads a CP-246 UN sequence of undefined length as implicit VR little endian items', () => {
    const bytes = encodeDataset(
      [{tag: 0x00091001, vr: 'UN', undefinedLength: true, undefinedItemLength: true, items: [[{tag: Tag.PatientID, vr: 'LO', value: 'DECOY'}]]}, {tag: Tag.PatientID, vr: 'LO', value: 'REAL'}],
      explicitLittle,
    )
    const walked = walkDataset(bytes, explicitLittle)
    expect(walked[0].vr).toBe('UN')
    expect(walked[0].items?.[0].elements[0]).toMatchObject({tag: Tag.PatientID, vr: 'LO', vrInData: false})
    expect(elementValue(walked[1])).toBe('REAL')
  })

  it('says "truncated", the element and the offset when the data ends inside a value', () => {
    const bytes = encodeDataset([{tag: Tag.PatientID, vr: 'LO', value: 'ABCDEFGH'}], explicitLittle)
    const error = invalid(() => walkDataset(bytes.subarray(0, bytes.length - 3), {...explicitLittle, source: 'x.dcm', baseOffset: 100}))
    expect(error.message).toBe('x.dcm: truncated: the data ends at byte 113, inside the value of PatientID (0010,0020) (8 bytes from byte 108)')
  })

  it('says "truncated" inside an undefined-length sequence, naming the path to it', () => {
    const bytes = encodeDataset(nested.slice(0, 3), explicitLittle)
    const error = invalid(() => walkDataset(bytes.subarray(0, bytes.length - 10), explicitLittle))
    expect(error.message).toMatch(/^truncated: .*inside ReferencedImageSequence \(0008,1140\) > item 2/)
  })

  it('says "malformed" for a byte pair that is not a VR in explicit VR', () => {
    const bytes = encodeDataset([{tag: Tag.PatientID, vr: 'LO', value: 'AB'}], explicitLittle)
    bytes[4] = 0x31
    expect(invalid(() => walkDataset(bytes, explicitLittle)).message).toMatch(/^malformed dataset: PatientID \(0010,0020\) has no valid VR/)
  })

  it('walks every good fixture to its last byte, deflated and big endian included', () => {
    for (const entry of goodFixtures) {
      const opened = openPart10(readFixture(entry), entry.path)
      const elements = walkPart10(opened, {source: entry.path})
      expect([entry.path, elements.at(-1)?.end]).toEqual([entry.path, opened.dataset.length])
      expect([entry.path, opened.deflated]).toEqual([entry.path, entry.transferSyntaxUid === TransferSyntax.DeflatedExplicitVRLittleEndian])
    }
  })

  it('reports the broken fixtures by what is wrong with them', () => {
    expect(invalid(() => walkPart10(openPart10(readFixture(brokenFixture('truncated-pixel-data.dcm')), 'cut.dcm'), {source: 'cut.dcm'})).message).toMatch(/^cut\.dcm: truncated: .*PixelData \(7FE0,0010\)/)
    expect(invalid(() => openPart10(readFixture(brokenFixture('truncated-meta.dcm')), 'meta.dcm')).message).toMatch(/^meta\.dcm: truncated file meta information/)
    expect(invalid(() => openPart10(readFixture(brokenFixture('not-dicom.dcm')), 'text.dcm')).message).toMatch(/^text\.dcm: not a DICOM Part 10 file/)
  })

  it('says "truncated" for a deflated dataset cut short', () => {
    const dataset = encodeDataset([{tag: Tag.SOPClassUID, vr: 'UI', value: CT}, {tag: Tag.PixelData, vr: 'OB', value: Buffer.alloc(4000, 7)}], explicitLittle)
    const meta = buildMetaHeader({sopClassUid: CT, sopInstanceUid: '1.2.3', transferSyntaxUid: TransferSyntax.DeflatedExplicitVRLittleEndian})
    const whole = Buffer.concat([meta, deflate(dataset)])
    expect(walkPart10(openPart10(whole)).map((e) => e.tag)).toEqual([Tag.SOPClassUID, Tag.PixelData])
    expect(invalid(() => openPart10(whole.subarray(0, whole.length - 5), 'd.dcm')).message).toMatch(/^d\.dcm: truncated: the deflated dataset ends/)
  })
})

describe('dumpDataset', () => {
  beforeAll(async () => {
    await loadDictionary()
  })

  it('names tags from the full dictionary, repeating groups, group lengths and private creators', () => {
    expect(dictionaryEntry(0x00180050)).toEqual({vr: 'DS', name: 'SliceThickness'})
    expect(dictionaryEntry(0x60023000)?.name).toBe('OverlayData')
    expect(dictionaryEntry(0x00080000)).toEqual({vr: 'UL', name: 'GroupLength'})
    expect(dictionaryEntry(0x00290010)).toEqual({vr: 'LO', name: 'PrivateCreator'})
    expect(dictionaryEntry(0x00291010)).toBeUndefined()
  })

  it('decodes the private Latin-1 fixture: names, private creators, the UN sequence and its decoy', () => {
    const opened = openPart10(readFixture('studies/2/mr-private-latin1.dcm'))
    const dump = dumpDataset(walkPart10(opened))
    expect(find(dump, '(0010,0010)')).toMatchObject({vr: 'PN', name: 'PatientName', value: 'MÜLLER^JÜRGEN'})
    expect(find(dump, '(0010,0020)').value).toBe('DDR-P002')
    const sequence = find(dump, '(0009,1001)')
    expect(sequence).toMatchObject({vr: 'UN', length: null, name: 'Private "DDR PRIVATE SEQ" 01'})
    expect(sequence.items?.[0].elements.map((e) => [e.tag, e.value])).toEqual([
      ['(0010,0020)', 'NOT-THE-PATIENT'],
      ['(0020,000D)', expect.stringMatching(/^2\.25\./)],
    ])
    expect(find(dump, '(0029,1011)')).toMatchObject({vr: 'US', value: '42', name: 'Private "DDR TEST PRIVATE" 11'})
    expect(find(dump, '(0029,1101)')).toMatchObject({vr: 'SH', value: 'second', name: 'Private "DDR SECOND CREATOR" 01'})
    expect(find(dump, '(0008,0016)')).toMatchObject({value: '1.2.840.10008.5.1.4.1.1.4', meaning: 'MR Image Storage'})
  })

  it('shows big endian pixel data as dcmdump does, and fragments by length', () => {
    const be = dumpDataset(walkPart10(openPart10(readFixture('studies/1/ct-explicit-be.dcm'))))
    expect(find(be, '(7FE0,0010)').value).toMatch(/^01d7\\0280\\021f\\.*\\\.\.\. \(4096 values\)$/)
    const rle = dumpDataset(walkPart10(openPart10(readFixture('studies/1/ct-rle.dcm'))))
    expect(find(rle, '(7FE0,0010)')).toMatchObject({vr: 'OB', length: null, fragments: [4, expect.any(Number)]})
    expect(find(rle, '(7FE0,0010)').value).toBeUndefined()
  })

  it('dumps the meta header, and flattens a dump into indented lines with delimiters', () => {
    const opened = openPart10(readFixture('studies/2/mr-private-latin1.dcm'))
    expect(dumpMetaHeader(opened.meta.elements).map((e) => e.name)).toEqual([
      'FileMetaInformationGroupLength',
      'FileMetaInformationVersion',
      'MediaStorageSOPClassUID',
      'MediaStorageSOPInstanceUID',
      'TransferSyntaxUID',
      'ImplementationClassUID',
      'ImplementationVersionName',
    ])
    const lines = dumpLines(dumpDataset(walkPart10(opened)))
    const start = lines.findIndex((line) => line.tag === '(0009,1001)')
    expect(lines.slice(start, start + 11).map((line) => [line.depth, line.tag, line.length])).toEqual([
      [0, '(0009,1001)', 'u/l'],
      [1, '(FFFE,E000)', 'u/l'],
      [2, '(0010,0020)', '16'],
      [2, '(0020,000D)', '44'],
      [1, '(FFFE,E00D)', '0'],
      [1, '(FFFE,E000)', 'u/l'],
      [2, '(0008,1030)', '6'],
      [2, '(0009,1002)', '2'],
      [1, '(FFFE,E00D)', '0'],
      [0, '(FFFE,E0DD)', '0'],
      [0, '(0010,0010)', '14'],
    ])
  })

  it('formats numbers, AT, and previews bulk data', () => {
    const le = {littleEndian: true}
    expect(elementValue({...le, vr: 'US', value: Buffer.from([1, 0, 2, 0])})).toBe('1\\2')
    expect(elementValue({...le, vr: 'SS', value: Buffer.from([0xff, 0xff])})).toBe('-1')
    expect(elementValue({...le, vr: 'FD', value: Buffer.from(new Float64Array([1.5]).buffer)})).toBe('1.5')
    expect(elementValue({...le, vr: 'AT', value: Buffer.from([0x28, 0x00, 0x09, 0x00])})).toBe('(0028,0009)')
    expect(elementValue({...le, vr: 'OB', value: Buffer.from([0, 1, 0xab])})).toBe('00\\01\\ab')
    expect(elementValue({...le, vr: 'OW', value: Buffer.alloc(40)})).toBe(`${Array(10).fill('0000').join('\\')}\\... (20 values)`)
    expect(elementValue({...le, vr: 'LT', value: Buffer.from('  text  ')})).toBe('  text')
    expect(elementValue({...le, vr: 'UI', value: Buffer.from('1.2\0')})).toBe('1.2')
  })

  it('works on every good fixture (the file fixturePath names exist)', () => {
    for (const entry of goodFixtures) {
      const dump = dumpDataset(walkPart10(openPart10(readFixture(entry))))
      expect([entry.path, find(dump, '(0008,0018)').value]).toEqual([entry.path, entry.sopInstanceUid])
      expect(fixturePath(entry)).toContain(entry.path)
    }
  })
})
