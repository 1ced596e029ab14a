import {execFile} from 'node:child_process'
import {mkdtemp, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {promisify} from 'node:util'

import {readPart10Elements} from '../../../src/lib/dicom/dataset-reader.js'
import {Tag} from '../../../src/lib/dicom/tags.js'
import {isValidUid} from '../../../src/lib/dicom/uids.js'
import {COMPREHENSIVE_SR, type SrRequest, buildSr, readStudyHeader} from '../../../src/lib/processing/sr-writer.js'
import {fixturePath, manifest} from '../../helpers/fixtures.js'

const run = promisify(execFile)

/** dciodvfy's verdict: its error lines (it prints warnings and errors to stderr, exit code 0 either way). */
async function dciodvfy(file: string): Promise<{errors: string[]; output: string}> {
  const result = await run('dciodvfy', [file]).catch((error: {stdout: string; stderr: string}) => error)
  const output = `${result.stdout}${result.stderr}`
  return {errors: output.split('\n').filter((line) => /^Error/.test(line)), output}
}

const CR = manifest.files.find((f) => f.path === 'studies/5/cr.dcm')!
const DX = manifest.files.find((f) => f.path === 'studies/5/dx.dcm')!

function request(overrides: Partial<SrRequest> = {}): SrRequest {
  return {
    module: 'chest-classifier',
    result: {
      findings: [
        {label: 'Cardiomegaly', code: {value: '8186001', scheme: 'SCT', meaning: 'Cardiomegaly'}, probability: 0.87, sopInstanceUid: CR.sopInstanceUid},
        {label: 'Cardiothoracic ratio', value: 0.5512345678901234, unit: '1', seriesInstanceUid: CR.seriesInstanceUid},
        {label: 'no pneumothorax seen', probability: 0.02},
        {label: 'Heart width', code: {value: '81827009', scheme: 'SCT', meaning: 'Diameter'}, value: 12.5, unit: 'mm'},
      ],
      summary: 'One finding above the threshold.',
    },
    header: {PatientName: 'DOE^JOHN', PatientID: CR.patientId, StudyInstanceUID: CR.studyInstanceUid, StudyDate: '20260101', StudyTime: '101010', AccessionNumber: 'ACC1'},
    evidence: [CR, DX].map((f) => ({sopInstanceUid: f.sopInstanceUid, sopClassUid: f.sopClassUid, seriesInstanceUid: f.seriesInstanceUid})),
    seed: `${CR.studyInstanceUid}/chest-classifier/1`,
    ...overrides,
  }
}

describe('the SR writer', () => {
  let dir: string

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'ddr-sr-'))
  })

  afterAll(async () => {
    await rm(dir, {recursive: true, force: true})
  })

  it('writes a Comprehensive SR in the same patient and study, in a series of its own, that dciodvfy passes without errors', async () => {
    const header = await readStudyHeader(fixturePath(CR))
    expect(header).toMatchObject({PatientID: CR.patientId, StudyInstanceUID: CR.studyInstanceUid, PatientName: CR.patientName})
    const sr = buildSr(request({header}))
    const file = path.join(dir, 'sr.dcm')
    await writeFile(file, sr.part10)
    const verdict = await dciodvfy(file)
    expect(verdict.errors).toEqual([])
    expect(verdict.output).toMatch(/ComprehensiveSR/)

    const {meta, values} = readPart10Elements(sr.part10, [Tag.SOPClassUID, Tag.SOPInstanceUID, Tag.StudyInstanceUID, Tag.SeriesInstanceUID, Tag.PatientID, Tag.Modality])
    expect(meta.mediaStorageSopClassUid).toBe(COMPREHENSIVE_SR)
    expect(values.get(Tag.SOPClassUID)).toBe(COMPREHENSIVE_SR)
    expect(values.get(Tag.SOPInstanceUID)).toBe(sr.sopInstanceUid)
    expect(values.get(Tag.StudyInstanceUID)).toBe(CR.studyInstanceUid)
    expect(values.get(Tag.PatientID)).toBe(CR.patientId)
    expect(values.get(Tag.Modality)).toBe('SR')
    expect(values.get(Tag.SeriesInstanceUID)).toBe(sr.seriesInstanceUid)
    expect(sr.seriesInstanceUid).not.toBe(CR.seriesInstanceUid)
  })

  it('names the module as device observer and document title, with the findings, their probability and every instance seen as evidence', () => {
    const sr = buildSr(request())
    const d = sr.dataset as any
    expect(d.ConceptNameCodeSequence[0]).toMatchObject({CodingSchemeDesignator: '99DDR', CodeMeaning: 'chest-classifier findings'})
    const context = d.ContentSequence.filter((i: any) => i.RelationshipType === 'HAS OBS CONTEXT')
    expect(context.map((i: any) => [i.ConceptNameCodeSequence[0].CodeValue, i.TextValue ?? i.UID ?? i.ConceptCodeSequence[0].CodeMeaning])).toEqual([
      ['121005', 'Device'],
      ['121012', expect.stringMatching(/^2\.25\.\d+$/)],
      ['121013', 'chest-classifier'],
      ['121014', 'ddr'],
      ['121015', 'chest-classifier'],
    ])
    const findings = d.ContentSequence.find((i: any) => i.ConceptNameCodeSequence[0].CodeValue === '121070').ContentSequence
    expect(findings.map((f: any) => f.ValueType)).toEqual(['CODE', 'NUM', 'TEXT', 'NUM'])
    expect(findings[0].ConceptCodeSequence[0].CodeMeaning).toBe('Cardiomegaly')
    expect(findings[0].ContentSequence).toEqual([
      expect.objectContaining({ValueType: 'NUM', ConceptNameCodeSequence: [expect.objectContaining({CodeValue: '122157', CodeMeaning: 'Probability'})], MeasuredValueSequence: [expect.objectContaining({NumericValue: '0.87'})]}),
      {RelationshipType: 'INFERRED FROM', ValueType: 'IMAGE', ReferencedSOPSequence: [{ReferencedSOPClassUID: CR.sopClassUid, ReferencedSOPInstanceUID: CR.sopInstanceUid}]},
    ])
    // DS holds at most 16 characters.
    expect(findings[1].MeasuredValueSequence[0].NumericValue.length).toBeLessThanOrEqual(16)
    expect(findings[1].ConceptNameCodeSequence[0]).toMatchObject({CodingSchemeDesignator: '99DDR', CodeMeaning: 'Cardiothoracic ratio'})
    expect(findings[3].MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0]).toMatchObject({CodeValue: 'mm', CodingSchemeDesignator: 'UCUM'})
    const evidence = d.CurrentRequestedProcedureEvidenceSequence
    expect(evidence).toHaveLength(1)
    expect(evidence[0].StudyInstanceUID).toBe(CR.studyInstanceUid)
    const referenced = evidence[0].ReferencedSeriesSequence.flatMap((s: any) => s.ReferencedSOPSequence.map((r: any) => r.ReferencedSOPInstanceUID))
    expect(referenced.sort()).toEqual([CR.sopInstanceUid, DX.sopInstanceUid].sort())
  })

  it('makes valid UIDs, the same ones for the same run, under 2.25 or a configured root', () => {
    const a = buildSr(request())
    const b = buildSr(request())
    const next = buildSr(request({seed: `${CR.studyInstanceUid}/chest-classifier/2`}))
    expect(a.sopInstanceUid).toBe(b.sopInstanceUid)
    expect(next.sopInstanceUid).not.toBe(a.sopInstanceUid)
    const rooted = buildSr(request({uidRoot: '1.2.826.0.1.3680043.10.1999'}))
    for (const uid of [a.sopInstanceUid, a.seriesInstanceUid, rooted.sopInstanceUid, rooted.seriesInstanceUid]) {
      expect(isValidUid(uid)).toBe(true)
      expect(uid.split('.').every((component) => component === '0' || !component.startsWith('0'))).toBe(true)
    }

    expect(a.sopInstanceUid).toMatch(/^2\.25\./)
    expect(rooted.sopInstanceUid).toMatch(/^1\.2\.826\.0\.1\.3680043\.10\.1999\.[1-9]\d*$/)
  })

  it('passes dciodvfy with no findings, non-ASCII text and a non-image reference', async () => {
    const sr = buildSr(request({result: {findings: [], summary: 'Keine Befunde: Größe unauffällig'}, header: {PatientName: 'MÜLLER^JÖRG', PatientID: 'P1', StudyInstanceUID: CR.studyInstanceUid}}))
    const file = path.join(dir, 'empty.dcm')
    await writeFile(file, sr.part10)
    expect((await dciodvfy(file)).errors).toEqual([])
    const srRef = {sopInstanceUid: '2.25.1', sopClassUid: '1.2.840.10008.5.1.4.1.1.88.11', seriesInstanceUid: '2.25.2'}
    const withSr = buildSr(request({evidence: [srRef], result: {findings: [{label: 'text', sopInstanceUid: '2.25.1'}]}}))
    await writeFile(file, withSr.part10)
    expect((await dciodvfy(file)).errors).toEqual([])
    expect(((withSr.dataset as any).ContentSequence.at(-1).ContentSequence[0].ContentSequence[0]).ValueType).toBe('COMPOSITE')
  })
})
