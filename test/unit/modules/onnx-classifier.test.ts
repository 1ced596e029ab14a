import {execFile} from 'node:child_process'
import {existsSync} from 'node:fs'
import {mkdtemp, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {promisify} from 'node:util'

import {generateUid} from '../../../src/lib/dicom/uids.js'
import {buildSr, readStudyHeader} from '../../../src/lib/processing/sr-writer.js'
import {repoRoot} from '../../helpers/compiled-cli.js'
import {fixturePath, manifest} from '../../helpers/fixtures.js'
import {type Made, makeInstance, runModule} from '../../helpers/module-run.js'

const run = promisify(execFile)
const folder = path.join(repoRoot, 'modules/onnx-classifier')
const MODULE = path.join(folder, 'index.mjs')
// The module carries its own dependencies (onnxruntime-node is large and has an install script of
// its own): `npm ci --ignore-scripts` in its folder, which `npm start` and .ci/run do. Without them
// the tests fail and say so, never skip.
if (!existsSync(path.join(folder, 'node_modules/onnxruntime-node'))) {
  throw new Error('modules/onnx-classifier has no node_modules: run `npm start` once, or `(cd modules/onnx-classifier && npm ci --ignore-scripts)`')
}

describe('modules/onnx-classifier', () => {
  let dir: string
  let model: string

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'ddr-onnx-'))
    model = path.join(dir, 'tiny.onnx')
    await run(process.execPath, [path.join(folder, 'scripts/make-tiny-model.mjs'), model, '--size', '8'])
  })

  afterAll(async () => {
    await rm(dir, {recursive: true, force: true})
  })

  const flat = (value: number) => new Uint16Array(256).fill(value).map((v, i) => v + (i % 7))

  it('classifies each image with the model a site points it to (native and RLE, resized to its input), with labels, codes and probabilities from its settings', async () => {
    const study = generateUid()
    const series = generateUid()
    const dark = await makeInstance(dir, 'dark.dcm', {study, series, frames: [flat(300)]})
    const bright = await makeInstance(dir, 'bright.dcm', {study, series, frames: [flat(3800)], rle: true})
    // MONOCHROME1: low stored values are bright.
    const inverted = await makeInstance(dir, 'inverted.dcm', {study, series, frames: [flat(300)], attributes: {PhotometricInterpretation: 'MONOCHROME1'}})
    const settings = {model, labels: ['dark', 'bright'], codes: {bright: {value: 'BRIGHT', scheme: '99TEST', meaning: 'Bright image'}}, normalisation: {range: 'full'}, threshold: 0.5}
    const {result, stderr} = await runModule(MODULE, dir, [dark, bright, inverted], settings)
    expect(result.findings).toEqual([
      {label: 'dark', probability: expect.any(Number), sopInstanceUid: dark.sopInstanceUid},
      {label: 'bright', code: {value: 'BRIGHT', scheme: '99TEST', meaning: 'Bright image'}, probability: expect.any(Number), sopInstanceUid: bright.sopInstanceUid},
      {label: 'bright', code: {value: 'BRIGHT', scheme: '99TEST', meaning: 'Bright image'}, probability: expect.any(Number), sopInstanceUid: inverted.sopInstanceUid},
    ])
    for (const finding of result.findings) expect(finding.probability).toBeGreaterThan(0.95)
    expect(result.summary).toBe('Classified 3 image(s) with tiny.onnx: 3 label(s) at or above 0.5.')
    expect(stderr).toMatch(/Classified 3 image\(s\)/)
    // A threshold of 0 reports every label of every image.
    const all = await runModule(MODULE, dir, [dark], {...settings, threshold: 0})
    expect(all.result.findings.map((f) => f.label)).toEqual(['dark', 'bright'])
  })

  it('skips and reports images in compressed syntaxes it cannot decode; its result makes an SR that dciodvfy passes', async () => {
    const study5 = manifest.files.filter((f) => f.path.startsWith('studies/5/'))
    const made: Made[] = study5.map((f) => ({file: fixturePath(f), sopInstanceUid: f.sopInstanceUid, seriesInstanceUid: f.seriesInstanceUid, transferSyntaxUid: f.transferSyntaxUid}))
    const {result} = await runModule(MODULE, dir, made, {model, labels: ['dark', 'bright']})
    const cr = study5.find((f) => f.modality === 'CR')!
    expect(result.findings.filter((f) => f.sopInstanceUid === cr.sopInstanceUid)).toEqual([{label: 'Not classified: compressed pixel data (JPEG Lossless SV1) is not decoded by this module', sopInstanceUid: cr.sopInstanceUid}])
    expect(result.findings.filter((f) => f.probability !== undefined)).toHaveLength(2)
    expect(result.summary).toMatch(/^Classified 2 image\(s\) with tiny\.onnx: 2 label\(s\) at or above 0\.5; 1 image\(s\) not classified/)

    const sr = buildSr({module: 'onnx-classifier', result, header: await readStudyHeader(fixturePath(cr)), evidence: study5.map((f) => ({sopInstanceUid: f.sopInstanceUid, sopClassUid: f.sopClassUid, seriesInstanceUid: f.seriesInstanceUid})), seed: 'onnx'})
    const file = path.join(dir, 'sr.dcm')
    await writeFile(file, sr.part10)
    const verdict = await run('dciodvfy', [file]).catch((error: {stdout: string; stderr: string}) => error)
    expect(`${verdict.stdout}${verdict.stderr}`.split('\n').filter((line) => /^Error/.test(line))).toEqual([])
  })

  it('fails the attempt, saying why, when the model cannot be loaded or does not fit the labels', async () => {
    const dark = await makeInstance(dir, 'one.dcm', {study: generateUid(), series: generateUid(), frames: [flat(300)]})
    await expect(runModule(MODULE, dir, [dark], {model: path.join(dir, 'missing.onnx'), labels: ['a', 'b']})).rejects.toMatchObject({code: 1, stderr: expect.stringMatching(/^cannot load the model .*missing\.onnx: /)})
    await expect(runModule(MODULE, dir, [dark], {model, labels: ['a', 'b', 'c']})).rejects.toMatchObject({code: 1, stderr: expect.stringMatching(/the model gives 2 outputs, settings\.labels names 3/)})
  })
})
