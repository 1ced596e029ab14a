import {execFileSync, spawnSync} from 'node:child_process'
import {mkdtempSync, rmSync, writeFileSync} from 'node:fs'
import {tmpdir} from 'node:os'
import {join} from 'node:path'
import {DdrError, isDdrError} from '../../../src/lib/errors.js'
import {
  buildMetaHeader,
  DDR_IMPLEMENTATION_CLASS_UID,
  DDR_IMPLEMENTATION_VERSION_NAME,
  hasPart10Prefix,
  META_START,
  readMetaHeader,
  tryReadMetaHeader,
} from '../../../src/lib/dicom/part10.js'
import {Tag} from '../../../src/lib/dicom/tags.js'
import {isValidUid, SopClass, TransferSyntax} from '../../../src/lib/dicom/uids.js'
import {brokenFixture, fixturePath, goodFixtures, readFixture} from './helpers.js'

function thrown(run: () => unknown): DdrError {
  try {
    run()
  } catch (error) {
    if (isDdrError(error)) return error
    throw error
  }
  throw new Error('expected a DdrError, nothing was thrown')
}

describe('readMetaHeader', () => {
  it.each(goodFixtures.map((entry) => [entry.path, entry] as const))('reads the meta header of %s', (_path, entry) => {
    const file = readFixture(entry)
    const meta = readMetaHeader(file)
    expect(meta.transferSyntaxUid).toBe(entry.transferSyntaxUid)
    expect(meta.mediaStorageSopClassUid).toBe(entry.sopClassUid)
    expect(meta.mediaStorageSopInstanceUid).toBe(entry.sopInstanceUid)
    expect(meta.implementationClassUid && isValidUid(meta.implementationClassUid)).toBe(true)
    expect(meta.groupLength).toBe(meta.datasetOffset - META_START - 12)
    // The dataset starts right after group 0002.
    expect(file.readUInt16LE(meta.datasetOffset)).not.toBe(0x0002)
    expect(meta.elements.map((e) => e.tag)).toEqual(expect.arrayContaining([Tag.FileMetaInformationGroupLength, Tag.TransferSyntaxUID]))
  })

  it('returns undefined for every prefix too short to hold the meta header, then the header', () => {
    for (const entry of goodFixtures.slice(0, 6)) {
      const file = readFixture(entry)
      const full = readMetaHeader(file)
      // The end of group 0002 shows only once the next tag is in the buffer.
      for (let length = 0; length < full.datasetOffset + 4; length++) {
        expect([entry.path, length, tryReadMetaHeader(file.subarray(0, length))]).toEqual([entry.path, length, undefined])
      }
      expect(tryReadMetaHeader(file.subarray(0, full.datasetOffset + 4))).toEqual(full)
    }
  })

  it('tells a file with nothing after the meta header from a truncated one', () => {
    const header = buildMetaHeader({sopClassUid: SopClass.CTImageStorage, sopInstanceUid: '1.2.3', transferSyntaxUid: TransferSyntax.ExplicitVRLittleEndian})
    expect(readMetaHeader(header).datasetOffset).toBe(header.length)
    expect(tryReadMetaHeader(header)).toBeUndefined()
    const error = thrown(() => readMetaHeader(header.subarray(0, header.length - 5)))
    expect(error.message).toMatch(/truncated file meta information/)
  })

  it('rejects a text file named .dcm', () => {
    const error = thrown(() => readMetaHeader(readFixture(brokenFixture('not-dicom.dcm')), {source: 'broken/not-dicom.dcm'}))
    expect(error.code).toBe('INVALID_DICOM')
    expect(error.message).toBe('broken/not-dicom.dcm: not a DICOM Part 10 file: no "DICM" prefix at byte 128')
    expect(error.hint).toMatch(/dcmdump/)
    // A streaming reader learns it as soon as byte 132 is in.
    expect(() => tryReadMetaHeader(readFixture(brokenFixture('not-dicom.dcm')).subarray(0, 132))).toThrow(/no "DICM" prefix/)
    expect(tryReadMetaHeader(readFixture(brokenFixture('not-dicom.dcm')).subarray(0, 131))).toBeUndefined()
  })

  it('rejects a file too short for the preamble', () => {
    const error = thrown(() => readMetaHeader(Buffer.from('DICM')))
    expect(error.code).toBe('INVALID_DICOM')
    expect(error.message).toMatch(/4 bytes, too short/)
  })

  it('rejects a file cut inside the meta header, naming the element', () => {
    const error = thrown(() => readMetaHeader(readFixture(brokenFixture('truncated-meta.dcm'))))
    expect(error.code).toBe('INVALID_DICOM')
    expect(error.message).toMatch(/^truncated file meta information: the data ends inside the value of MediaStorageSOPClassUID \(0002,0002\) at byte 158 \(170 bytes available\)$/)
  })

  it('rejects a meta header without a transfer syntax', () => {
    const file = readFixture(goodFixtures[0])
    const meta = readMetaHeader(file)
    const ts = meta.elements.find((e) => e.tag === Tag.TransferSyntaxUID)!
    const copy = Buffer.from(file)
    copy.writeUInt16LE(0x0011, ts.offset + 2) // (0002,0011): not a transfer syntax
    expect(() => readMetaHeader(copy)).toThrow(/no TransferSyntaxUID \(0002,0010\)/)
  })

  it('reads the meta class of the broken SOP class fixtures', () => {
    expect(readMetaHeader(readFixture(brokenFixture('missing-sop-class-meta-ok.dcm'))).mediaStorageSopClassUid).toBe(SopClass.CTImageStorage)
    expect(readMetaHeader(readFixture(brokenFixture('missing-sop-class-no-meta-class.dcm'))).mediaStorageSopClassUid).toBeUndefined()
    expect(readMetaHeader(readFixture(brokenFixture('sop-class-mismatch.dcm'))).mediaStorageSopClassUid).toBe(SopClass.MRImageStorage)
  })

  it('checks the prefix', () => {
    expect(hasPart10Prefix(readFixture(goodFixtures[0]))).toBe(true)
    expect(hasPart10Prefix(readFixture(brokenFixture('not-dicom.dcm')))).toBe(false)
    expect(hasPart10Prefix(Buffer.alloc(10))).toBe(false)
  })
})

describe('buildMetaHeader', () => {
  it('writes group 0002 that reads back, with even lengths and NUL-padded UIDs', () => {
    const header = buildMetaHeader({sopClassUid: SopClass.CTImageStorage, sopInstanceUid: '1.2.3.4', transferSyntaxUid: TransferSyntax.ImplicitVRLittleEndian, sourceAeTitle: 'MODALITY1'})
    expect(header.subarray(0, 128).every((b) => b === 0)).toBe(true)
    expect(header.toString('latin1', 128, 132)).toBe('DICM')
    const meta = readMetaHeader(header)
    expect(meta).toMatchObject({
      datasetOffset: header.length,
      groupLength: header.length - META_START - 12,
      transferSyntaxUid: TransferSyntax.ImplicitVRLittleEndian,
      mediaStorageSopClassUid: SopClass.CTImageStorage,
      mediaStorageSopInstanceUid: '1.2.3.4',
      implementationClassUid: DDR_IMPLEMENTATION_CLASS_UID,
      implementationVersionName: DDR_IMPLEMENTATION_VERSION_NAME,
      sourceApplicationEntityTitle: 'MODALITY1',
    })
    for (const element of meta.elements) expect(element.value.length % 2).toBe(0)
    // "1.2.840.10008.5.1.4.1.1.2" has 25 characters: one NUL pads it.
    const sopClass = meta.elements.find((e) => e.tag === Tag.MediaStorageSOPClassUID)!
    expect(sopClass.value.length).toBe(26)
    expect(sopClass.value[25]).toBe(0)
    expect(meta.elements.find((e) => e.tag === Tag.FileMetaInformationVersion)!.value).toEqual(Buffer.from([0, 1]))
    expect(isValidUid(DDR_IMPLEMENTATION_CLASS_UID)).toBe(true)
    expect(DDR_IMPLEMENTATION_VERSION_NAME.length).toBeLessThanOrEqual(16)
  })

  it('leaves SourceApplicationEntityTitle out unless given', () => {
    const meta = readMetaHeader(buildMetaHeader({sopClassUid: '1.2', sopInstanceUid: '1.2.3', transferSyntaxUid: TransferSyntax.ExplicitVRLittleEndian}))
    expect(meta.sourceApplicationEntityTitle).toBeUndefined()
    expect(meta.elements.some((e) => e.tag === Tag.SourceApplicationEntityTitle)).toBe(false)
  })

  it('refuses what cannot be written', () => {
    const base = {sopClassUid: SopClass.CTImageStorage, sopInstanceUid: '1.2.3', transferSyntaxUid: TransferSyntax.ExplicitVRLittleEndian}
    expect(thrown(() => buildMetaHeader({...base, sopInstanceUid: ''})).message).toMatch(/SOP instance UID as MediaStorageSOPInstanceUID \(0002,0003\)/)
    expect(thrown(() => buildMetaHeader({...base, sopClassUid: `1.${'2'.repeat(70)}`})).code).toBe('INVALID_DICOM')
    expect(() => buildMetaHeader({...base, transferSyntaxUid: '1.2\\3'})).toThrow(/transfer syntax UID/)
    expect(() => buildMetaHeader({...base, sourceAeTitle: 'A_VERY_LONG_AE_TITLE'})).toThrow(/not an AE title/)
    expect(() => buildMetaHeader({...base, sourceAeTitle: '   '})).toThrow(/not an AE title/)
    // Trailing padding in a UID read from a dataset is not part of it.
    expect(readMetaHeader(buildMetaHeader({...base, sopInstanceUid: '1.2.3\0'})).mediaStorageSopInstanceUid).toBe('1.2.3')
  })

  describe('with a received dataset', () => {
    let dir: string
    beforeAll(() => {
      dir = mkdtempSync(join(tmpdir(), 'ddr-part10-'))
    })
    afterAll(() => {
      rmSync(dir, {recursive: true, force: true})
    })

    it.each(goodFixtures.map((entry) => [entry.path, entry] as const))('makes a file dcmdump reads cleanly from %s', (_path, entry) => {
      const original = readFixture(entry)
      const dataset = original.subarray(readMetaHeader(original).datasetOffset)
      const file = Buffer.concat([
        buildMetaHeader({sopClassUid: entry.sopClassUid, sopInstanceUid: entry.sopInstanceUid, transferSyntaxUid: entry.transferSyntaxUid, sourceAeTitle: 'STORESCU'}),
        dataset,
      ])
      // The dataset bytes are kept exactly.
      expect(file.subarray(readMetaHeader(file).datasetOffset).equals(dataset)).toBe(true)
      const path = join(dir, entry.path.replaceAll('/', '_'))
      writeFileSync(path, file)
      const result = spawnSync('dcmdump', ['-dc', '-Un', path], {encoding: 'latin1'})
      expect(result.status).toBe(0)
      const warnings = result.stderr.split('\n').filter((line) => line.trim() !== '' && !/with VR UN and undefined length/.test(line))
      expect(warnings).toEqual([])
      expect(result.stdout).toContain(`(0002,0016) AE [STORESCU]`)
      // dcmdump prints the NUL padding of odd-length UIDs inside the brackets.
      expect(result.stdout).toContain(`(0002,0010) UI [${entry.transferSyntaxUid}${entry.transferSyntaxUid.length % 2 === 1 ? '\0' : ''}]`)
      expect(result.stdout).toContain(`(0002,0012) UI [${DDR_IMPLEMENTATION_CLASS_UID}]`)
    })

    it('is accepted by dcmdump the same way as the original file', () => {
      const entry = goodFixtures.find((e) => e.path.endsWith('ct-deflated.dcm'))!
      const original = readFixture(entry)
      const path = join(dir, 'deflated-rewrapped.dcm')
      writeFileSync(path, Buffer.concat([buildMetaHeader(entry), original.subarray(readMetaHeader(original).datasetOffset)]))
      const dataset = (file: string): string => execFileSync('dcmdump', ['-Un', '+L', file], {encoding: 'latin1'}).split('# Dicom-Data-Set')[1]
      expect(dataset(path)).toBe(dataset(fixturePath(entry)))
    })
  })
})
