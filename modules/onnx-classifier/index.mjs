#!/usr/bin/env node
// onnx-classifier: a ddr processing module (docs/processing.md). Runs an image-classification ONNX
// model on each image of the study in DDR_IN and writes the labels it finds to DDR_OUT/result.json.
import {readFileSync, writeFileSync} from 'node:fs'
import path from 'node:path'
import {fileURLToPath} from 'node:url'

import dcmjs from 'dcmjs'
import ort from 'onnxruntime-node'

import {int, readFrames} from '../lib/pixels.mjs'
import {toInputTensor} from './preprocess.mjs'

dcmjs.log.setLevel('error')
const here = path.dirname(fileURLToPath(import.meta.url))

function fail(message) {
  console.error(message)
  process.exit(1)
}

const inDir = process.env.DDR_IN
const outDir = process.env.DDR_OUT
if (!inDir || !outDir) {
  console.error('DDR_IN and DDR_OUT must name the input and output folders (run by ddr, see docs/processing.md)')
  process.exit(2)
}

const task = JSON.parse(readFileSync(path.join(inDir, 'task.json'), 'utf8'))
const settings = task.settings ?? {}
if (typeof settings.model !== 'string') fail('settings.model must name the ONNX model file (absolute, or relative to the module folder)')
if (!Array.isArray(settings.labels) || settings.labels.length === 0) fail('settings.labels must list the model\'s output classes, in order')
const modelFile = path.resolve(here, settings.model)

let session
try {
  session = await ort.InferenceSession.create(modelFile)
} catch (error) {
  fail(`cannot load the model ${modelFile}: ${error.message}`)
}

const inputName = settings.input ?? session.inputNames[0]
const outputName = settings.output ?? session.outputNames[0]
// Input size and channels from the settings, else from the model's input shape [N, C, H, W].
const shape = session.inputMetadata?.find?.((m) => m.name === inputName)?.shape ?? []
const channels = settings.channels ?? (typeof shape[1] === 'number' ? shape[1] : 1)
const [height, width] = settings.inputSize ?? [typeof shape[2] === 'number' ? shape[2] : 224, typeof shape[3] === 'number' ? shape[3] : 224]
const threshold = settings.threshold ?? 0.5

const softmax = (values) => {
  const max = Math.max(...values)
  const exps = values.map((v) => Math.exp(v - max))
  const sum = exps.reduce((a, b) => a + b, 0)
  return exps.map((e) => e / sum)
}

const findings = []
let classified = 0
let skipped = 0
for (const series of task.series) {
  for (const instance of series.instances) {
    const bytes = readFileSync(path.join(inDir, instance.file))
    let dataset
    try {
      dataset = dcmjs.data.DicomMetaDictionary.naturalizeDataset(dcmjs.data.DicomMessage.readFile(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length)).dict)
    } catch (error) {
      skipped++
      findings.push({label: `Not classified: the module cannot parse this instance (${error.message})`.slice(0, 1024), sopInstanceUid: instance.sopInstanceUid})
      continue
    }

    const read = readFrames(dataset, instance.transferSyntaxUid)
    if (read === undefined) continue // not an image
    if (read.unchecked !== undefined) {
      skipped++
      findings.push({label: `Not classified: ${read.unchecked}`, sopInstanceUid: instance.sopInstanceUid})
      continue
    }

    // The first frame of a multi-frame image.
    const input = toInputTensor(read, 0, {height, width, channels, photometric: String(dataset.PhotometricInterpretation ?? ''), normalisation: settings.normalisation, frames: int(dataset.NumberOfFrames)})
    const output = await session.run({[inputName]: new ort.Tensor('float32', input, [1, channels, height, width])})
    const raw = Array.from(output[outputName].data)
    if (raw.length !== settings.labels.length) fail(`the model gives ${raw.length} outputs, settings.labels names ${settings.labels.length}`)
    const probabilities = settings.applySoftmax ? softmax(raw) : raw
    classified++
    probabilities.forEach((p, i) => {
      if (p < threshold) return
      const label = settings.labels[i]
      const code = settings.codes?.[label]
      findings.push({label, ...(code === undefined ? {} : {code}), probability: Math.round(Math.min(1, Math.max(0, p)) * 10000) / 10000, sopInstanceUid: instance.sopInstanceUid})
    })
  }
}

const summary = `Classified ${classified} image(s) with ${path.basename(modelFile)}: ${findings.length - skipped} label(s) at or above ${threshold}${skipped > 0 ? `; ${skipped} image(s) not classified (compressed pixels the module does not decode, or not parseable)` : ''}.`
writeFileSync(path.join(outDir, 'result.json'), `${JSON.stringify({findings, summary}, null, 2)}\n`)
console.error(summary)
