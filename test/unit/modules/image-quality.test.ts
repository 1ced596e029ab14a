import {execFile} from 'node:child_process'
import {mkdtemp, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {promisify} from 'node:util'

import {generateUid} from '../../../src/lib/dicom/uids.js'
import {buildSr, readStudyHeader} from '../../../src/lib/processing/sr-writer.js'
import {repoRoot} from '../../helpers/compiled-cli.js'
import {fixturePath, manifest} from '../../helpers/fixtures.js'
import {type Made, makeInstance, ramp, runModule as runAnyModule} from '../../helpers/module-run.js'

const run = promisify(execFile)
const MODULE = path.join(repoRoot, 'modules/image-quality/index.mjs')
const runModule = (dir: string, instances: Made[], settings: Record<string, unknown> = {}) => runAnyModule(MODULE, dir, instances, settings)


describe('modules/image-quality', () => {
  let dir: string

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'ddr-image-quality-'))
  })

  afterAll(async () => {
    await rm(dir, {recursive: true, force: true})
  })

  it('finds blank and saturated images from pixel statistics, native and RLE, per frame of a multi-frame instance', async () => {
    const study = generateUid()
    const series = generateUid()
    const good = await makeInstance(dir, 'good.dcm', {study, series, frames: [ramp()]})
    const blank = await makeInstance(dir, 'blank.dcm', {study, series, frames: [new Uint16Array(256).fill(40)]})
    const saturated = await makeInstance(dir, 'saturated.dcm', {study, series, frames: [Uint16Array.from(ramp(), (v, i) => (i < 128 ? 4095 : v))]})
    const blankRle = await makeInstance(dir, 'blank-rle.dcm', {study, series, frames: [new Uint16Array(256)], rle: true})
    const goodRle = await makeInstance(dir, 'good-rle.dcm', {study, series, frames: [ramp()], rle: true})
    const multi = await makeInstance(dir, 'multi.dcm', {study, series, frames: [ramp(), new Uint16Array(256).fill(7), ramp()], numberOfFrames: 3})
    const {result} = await runModule(dir, [good, blank, saturated, blankRle, goodRle, multi])
    expect(result.findings).toEqual([
      {label: 'Blank image: no pixel variation, every value near 40', value: 0, unit: '1', sopInstanceUid: blank.sopInstanceUid},
      {label: 'Saturated image: 50% of pixels at the highest storable value 4095', value: 50, unit: '%', sopInstanceUid: saturated.sopInstanceUid},
      {label: 'Blank image: no pixel variation, every value near 0', value: 0, unit: '1', sopInstanceUid: blankRle.sopInstanceUid},
      {label: 'Blank image: no pixel variation, every value near 7 (frame 2 of 3)', value: 0, unit: '1', sopInstanceUid: multi.sopInstanceUid},
    ])
    expect(result.summary).toBe('Checked 6 instance(s) in 1 series: 4 issue(s).')
  })

  it('counts images against ImagesInAcquisition and frames against NumberOfFrames, and names missing and inconsistent attributes', async () => {
    const study = generateUid()
    const [s1, s2] = [generateUid(), generateUid()]
    const acquisition = {ImagesInAcquisition: 5, AcquisitionNumber: 1}
    const a = await makeInstance(dir, 'a.dcm', {study, series: s1, frames: [ramp()], attributes: acquisition})
    const b = await makeInstance(dir, 'b.dcm', {study, series: s1, frames: [ramp()], attributes: {...acquisition, AccessionNumber: undefined}})
    const c = await makeInstance(dir, 'c.dcm', {study, series: s1, frames: [ramp()], attributes: {...acquisition, PatientName: 'OTHER^NAME'}})
    const whole = await makeInstance(dir, 'whole.dcm', {study, series: s2, frames: [ramp()], attributes: {ImagesInAcquisition: 1}})
    const short = await makeInstance(dir, 'short.dcm', {study, series: s2, frames: [ramp(), ramp()], numberOfFrames: 4})
    const {result} = await runModule(dir, [a, b, c, whole, short])
    expect(result.findings).toEqual([
      {label: 'Images missing from acquisition 1: 3 of 5 (ImagesInAcquisition) arrived', value: 2, unit: '{images}', seriesInstanceUid: s1},
      {label: 'Frames missing: the pixel data holds 2 of 4 (NumberOfFrames)', value: 2, unit: '{frames}', sopInstanceUid: short.sopInstanceUid},
      {label: 'Missing AccessionNumber: 1 of 5 instance(s) have no value', value: 1, unit: '{instances}', sopInstanceUid: b.sopInstanceUid},
      {label: 'Inconsistent PatientName within the study: QUALITY^TEST, OTHER^NAME'},
    ])
  })

  it('reports what it cannot decode, takes its settings from task.json, and its findings make an SR that dciodvfy passes', async () => {
    const study5 = manifest.files.filter((f) => f.path.startsWith('studies/5/'))
    const made: Made[] = study5.map((f) => ({file: fixturePath(f), sopInstanceUid: f.sopInstanceUid, seriesInstanceUid: f.seriesInstanceUid, transferSyntaxUid: f.transferSyntaxUid}))
    const {result} = await runModule(dir, made)
    const cr = study5.find((f) => f.modality === 'CR')!
    expect(result.findings).toEqual([{label: 'Pixels not checked: compressed pixel data (JPEG Lossless SV1) is not decoded by this module', sopInstanceUid: cr.sopInstanceUid}])
    expect(result.summary).toBe('Checked 3 instance(s) in 3 series: no quality issues found; 1 instance(s) not fully checked (compressed pixels the module does not decode, or not parseable).')
    // Settings: an absurd blank threshold calls every decoded image blank; what was not decoded is not reported.
    const strict = await runModule(dir, made, {blankMaxStdDev: 1e9, reportUnchecked: false})
    expect(strict.result.findings.map((f) => [f.label.replace(/near [\d.]+/, 'near N'), f.sopInstanceUid])).toEqual(
      study5.filter((f) => f.modality !== 'CR').map((f) => ['Blank image: no pixel variation, every value near N', f.sopInstanceUid]),
    )

    const sr = buildSr({module: 'image-quality', result, header: await readStudyHeader(fixturePath(cr)), evidence: made.map((m) => ({sopInstanceUid: m.sopInstanceUid, sopClassUid: study5.find((f) => f.sopInstanceUid === m.sopInstanceUid)!.sopClassUid, seriesInstanceUid: m.seriesInstanceUid})), seed: 'iq'})
    const file = path.join(dir, 'sr.dcm')
    await writeFile(file, sr.part10)
    const verdict = await run('dciodvfy', [file]).catch((error: {stdout: string; stderr: string}) => error)
    expect(`${verdict.stdout}${verdict.stderr}`.split('\n').filter((line) => /^Error/.test(line))).toEqual([])
  })
})
