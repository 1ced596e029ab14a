import {createHash} from 'node:crypto'
import {readdirSync, statSync} from 'node:fs'
import {join, relative} from 'node:path'
import {isValidUid, SopClass, TransferSyntax} from '../../../src/lib/dicom/uids.js'
import {brokenFixtures, fixturesDir, goodFixtures, manifest, readFixture} from './helpers.js'

function filesUnder(dir: string): string[] {
  return readdirSync(dir, {withFileTypes: true}).flatMap((entry) => (entry.isDirectory() ? filesUnder(join(dir, entry.name)) : [join(dir, entry.name)]))
}

describe('fixtures/manifest.json', () => {
  it('lists every .dcm file under fixtures/, with its size and hash', () => {
    const onDisk = filesUnder(fixturesDir).filter((path) => path.endsWith('.dcm')).map((path) => relative(fixturesDir, path)).sort()
    expect(manifest.files.map((entry) => entry.path).sort()).toEqual(onDisk)
    for (const entry of manifest.files) {
      const bytes = readFixture(entry)
      expect([entry.path, bytes.length, createHash('sha256').update(bytes).digest('hex')]).toEqual([entry.path, entry.size, entry.sha256])
    }
  })

  it('keeps the fixtures small', () => {
    const total = filesUnder(fixturesDir).reduce((sum, path) => sum + statSync(path).size, 0)
    expect(total).toBeLessThan(3 * 1024 * 1024)
    for (const entry of manifest.files) expect([entry.path, entry.size < 64 * 1024]).toEqual([entry.path, true])
  })

  it('uses valid, unique UIDs', () => {
    for (const entry of goodFixtures) {
      for (const uid of [entry.sopClassUid, entry.sopInstanceUid, entry.studyInstanceUid, entry.seriesInstanceUid, entry.transferSyntaxUid]) {
        expect([entry.path, uid, isValidUid(uid)]).toEqual([entry.path, uid, true])
      }
    }
    const instances = manifest.files.map((entry) => entry.sopInstanceUid).filter((uid) => uid !== '')
    expect(new Set(instances).size).toBe(instances.length)
  })

  it('covers the transfer syntaxes and SOP classes ddr must route', () => {
    const syntaxes = new Set(goodFixtures.map((entry) => entry.transferSyntaxUid))
    for (const uid of [
      TransferSyntax.ImplicitVRLittleEndian,
      TransferSyntax.ExplicitVRLittleEndian,
      TransferSyntax.ExplicitVRBigEndian,
      TransferSyntax.DeflatedExplicitVRLittleEndian,
      TransferSyntax.JPEGBaseline8Bit,
      TransferSyntax.JPEGLosslessSV1,
      TransferSyntax.JPEGLSLossless,
      TransferSyntax.JPEG2000Lossless,
      TransferSyntax.RLELossless,
    ]) expect([uid, syntaxes.has(uid)]).toEqual([uid, true])

    const classes = new Set(goodFixtures.map((entry) => entry.sopClassUid))
    for (const uid of [
      SopClass.CTImageStorage,
      SopClass.MRImageStorage,
      SopClass.UltrasoundImageStorage,
      SopClass.ComputedRadiographyImageStorage,
      SopClass.DigitalXRayImageStorageForPresentation,
      SopClass.DigitalMammographyXRayImageStorageForPresentation,
      SopClass.NuclearMedicineImageStorage,
      SopClass.PositronEmissionTomographyImageStorage,
      SopClass.XRayAngiographicImageStorage,
      SopClass.SecondaryCaptureImageStorage,
      SopClass.RTPlanStorage,
      SopClass.RTDoseStorage,
      SopClass.RTStructureSetStorage,
      SopClass.BasicTextSRStorage,
      SopClass.TwelveLeadECGWaveformStorage,
    ]) expect([uid, classes.has(uid)]).toEqual([uid, true])
    expect(goodFixtures.some((entry) => (entry.numberOfFrames ?? 1) > 1)).toBe(true)
  })

  it('groups instances by study: one folder, one study, one patient', () => {
    const byFolder = new Map<string, typeof goodFixtures>()
    for (const entry of goodFixtures) {
      const folder = entry.path.split('/').slice(0, 2).join('/')
      byFolder.set(folder, [...(byFolder.get(folder) ?? []), entry])
    }
    expect(byFolder.size).toBeGreaterThanOrEqual(3)
    for (const [folder, entries] of byFolder) {
      expect([folder, entries.length >= 3]).toEqual([folder, true])
      expect([folder, new Set(entries.map((e) => e.studyInstanceUid)).size]).toEqual([folder, 1])
      expect([folder, new Set(entries.map((e) => e.patientId)).size]).toEqual([folder, 1])
    }
    expect(new Set(goodFixtures.map((e) => e.studyInstanceUid)).size).toBe(byFolder.size)
    expect(new Set(goodFixtures.map((e) => e.patientId)).size).toBeGreaterThanOrEqual(3)
  })

  it('says what is wrong with each broken file', () => {
    expect(brokenFixtures.map((entry) => entry.path).sort()).toEqual([
      'broken/missing-sop-class-meta-ok.dcm',
      'broken/missing-sop-class-no-meta-class.dcm',
      'broken/not-dicom.dcm',
      'broken/sop-class-mismatch.dcm',
      'broken/truncated-meta.dcm',
      'broken/truncated-pixel-data.dcm',
    ])
    for (const entry of brokenFixtures) expect((entry.broken ?? '').length).toBeGreaterThan(20)
  })
})
