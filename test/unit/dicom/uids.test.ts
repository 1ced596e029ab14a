import {readdirSync} from 'node:fs'

import {readMetaHeader} from '../../../src/lib/dicom/part10.js'
import {
  describeSopClass,
  generateUid,
  isKnownTransferSyntax,
  isStorageSopClass,
  isValidUid,
  SopClass,
  sopClassName,
  storageSopClasses,
  TransferSyntax,
  transferSyntaxes,
  transferSyntaxInfo,
} from '../../../src/lib/dicom/uids.js'
import {fixturesDir, goodFixtures, manifest, readFixture} from './helpers.js'

describe('describeSopClass', () => {
  it('names a known class beside its UID, and gives an unknown one as it is', () => {
    expect(describeSopClass('1.2.840.10008.5.1.4.1.1.2')).toBe('CT Image Storage (1.2.840.10008.5.1.4.1.1.2)')
    expect(describeSopClass('1.2.3.4')).toBe('1.2.3.4')
  })
})

describe('isValidUid', () => {
  it.each([
    '1.2.840.10008.5.1.4.1.1.2',
    '0',
    '1.0.2',
    '2.25.0',
    '2.25.329800735698586629295641978511506172918',
    `1.${'2'.repeat(62)}`,
  ])('accepts %s', (uid) => {
    expect(isValidUid(uid)).toBe(true)
  })

  it.each([
    ['empty', ''],
    ['leading zero in a component', '1.2.840.010008'],
    ['leading zero in the first component', '01.2.3'],
    ['a component of only zeros', '1.00.3'],
    ['letters', '1.2.abc.4'],
    ['hex', '2.25.ff'],
    ['a trailing dot', '1.2.3.'],
    ['a leading dot', '.1.2.3'],
    ['an empty component', '1..2'],
    ['padding', '1.2.3\0'],
    ['a space', '1.2.3 '],
    ['65 characters', `1.${'2'.repeat(63)}`],
    ['a sign', '1.-2.3'],
  ])('rejects %s', (_what, uid) => {
    expect(isValidUid(uid)).toBe(false)
  })
})

describe('generateUid', () => {
  it('makes valid, distinct 2.25 UIDs', () => {
    const uids = new Set<string>()
    for (let i = 0; i < 5000; i++) {
      const uid = generateUid()
      expect(uid).toMatch(/^2\.25\.[1-9]\d*$/)
      if (!isValidUid(uid)) throw new Error(`invalid generated UID ${uid}`)
      uids.add(uid)
    }
    expect(uids.size).toBe(5000)
  })

  it('encodes a version 4 UUID', () => {
    const hex = BigInt(generateUid().slice(5)).toString(16).padStart(32, '0')
    expect(hex[12]).toBe('4')
    expect(['8', '9', 'a', 'b']).toContain(hex[16])
  })
})

describe('transfer syntaxes', () => {
  it('knows every fixture transfer syntax', () => {
    for (const entry of goodFixtures) expect([entry.path, isKnownTransferSyntax(entry.transferSyntaxUid)]).toEqual([entry.path, true])
    expect(isKnownTransferSyntax('1.2.3.4')).toBe(false)
    expect(isKnownTransferSyntax('')).toBe(false)
  })

  it('describes how each one encodes the dataset', () => {
    expect(transferSyntaxInfo(TransferSyntax.ImplicitVRLittleEndian)).toMatchObject({explicitVr: false, littleEndian: true, encapsulated: false, deflated: false})
    expect(transferSyntaxInfo(TransferSyntax.ExplicitVRLittleEndian)).toMatchObject({explicitVr: true, littleEndian: true, encapsulated: false, deflated: false})
    expect(transferSyntaxInfo(TransferSyntax.ExplicitVRBigEndian)).toMatchObject({explicitVr: true, littleEndian: false, encapsulated: false, deflated: false})
    expect(transferSyntaxInfo(TransferSyntax.DeflatedExplicitVRLittleEndian)).toMatchObject({explicitVr: true, littleEndian: true, encapsulated: false, deflated: true})
    for (const uid of [TransferSyntax.JPEGBaseline8Bit, TransferSyntax.JPEGLosslessSV1, TransferSyntax.JPEGLSLossless, TransferSyntax.JPEG2000Lossless, TransferSyntax.RLELossless]) {
      expect(transferSyntaxInfo(uid)).toMatchObject({explicitVr: true, littleEndian: true, encapsulated: true, deflated: false})
    }
    expect(transferSyntaxInfo(TransferSyntax.JPEGBaseline8Bit)?.name).toBe('JPEG Baseline (Process 1)')
  })

  it('lists only valid UIDs', () => {
    for (const uid of transferSyntaxes.keys()) expect([uid, isValidUid(uid)]).toEqual([uid, true])
  })
})

describe('SOP classes', () => {
  it('names every fixture SOP class', () => {
    for (const entry of goodFixtures) expect([entry.path, sopClassName(entry.sopClassUid)]).toEqual([entry.path, expect.any(String)])
    expect(sopClassName(SopClass.CTImageStorage)).toBe('CT Image Storage')
    expect(sopClassName(SopClass.RTDoseStorage)).toBe('RT Dose Storage')
    expect(sopClassName(SopClass.TwelveLeadECGWaveformStorage)).toBe('12-lead ECG Waveform Storage')
    expect(sopClassName('1.2.840.10008.5.1.4.1.1.66.4')).toBe('Segmentation Storage')
    expect(sopClassName('1.2.840.10008.5.1.4.1.1.11.1')).toBe('Grayscale Softcopy Presentation State Storage')
    expect(sopClassName(SopClass.Verification)).toBe('Verification')
    expect(sopClassName('1.2.3')).toBeUndefined()
  })

  it('tells storage classes by the 1.2.840.10008.5.1.4.1.1 root', () => {
    for (const entry of goodFixtures) expect([entry.path, isStorageSopClass(entry.sopClassUid)]).toEqual([entry.path, true])
    expect(isStorageSopClass('1.2.840.10008.5.1.4.1.1.481.2')).toBe(true)
    expect(isStorageSopClass('1.2.840.10008.5.1.4.1.1.66.4')).toBe(true)
    expect(isStorageSopClass('1.2.840.10008.5.1.4.1.1.11.1')).toBe(true)
    // A class newer than the table still counts.
    expect(isStorageSopClass('1.2.840.10008.5.1.4.1.1.999.1')).toBe(true)
    expect(isStorageSopClass('1.2.840.10008.5.1.4.38.1')).toBe(true)
    expect(isStorageSopClass('1.2.840.10008.5.1.4.1.1')).toBe(false)
    expect(isStorageSopClass('1.2.840.10008.5.1.4.1.1.')).toBe(false)
    expect(isStorageSopClass('1.2.840.10008.5.1.4.1.10')).toBe(false)
    expect(isStorageSopClass('1.2.840.10008.5.1.4.1.2.2.1')).toBe(false)
    expect(isStorageSopClass(SopClass.Verification)).toBe(false)
    expect(isStorageSopClass('')).toBe(false)
  })

  it('lists only valid UIDs, all of them storage classes', () => {
    expect(storageSopClasses.size).toBeGreaterThan(150)
    for (const uid of storageSopClasses.keys()) expect([uid, isValidUid(uid) && isStorageSopClass(uid)]).toEqual([uid, true])
  })

  it('covers the fixture set described by the manifest: every file, with the UIDs its own header carries', () => {
    // The loops above walk the manifest: it must list every fixture file there is, and say of each
    // what the file itself says (read here, not taken from the manifest).
    const onDisk = readdirSync(fixturesDir, {recursive: true})
      .map(String)
      .filter((name) => name.endsWith('.dcm'))
      .sort()
    expect(manifest.files.map((entry) => entry.path).sort()).toEqual(onDisk)
    expect(manifest.count).toBe(onDisk.length)
    for (const entry of goodFixtures) {
      const meta = readMetaHeader(readFixture(entry))
      expect({path: entry.path, sopClassUid: meta.mediaStorageSopClassUid, transferSyntaxUid: meta.transferSyntaxUid}).toEqual({path: entry.path, sopClassUid: entry.sopClassUid, transferSyntaxUid: entry.transferSyntaxUid})
    }
  })
})
