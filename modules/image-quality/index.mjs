#!/usr/bin/env node
// image-quality: a ddr processing module (docs/processing.md). Reads the study from DDR_IN
// (task.json and one Part 10 file per instance), writes DDR_OUT/result.json.
import {readFileSync, writeFileSync} from 'node:fs'
import path from 'node:path'

import dcmjs from 'dcmjs'

import {checkStudy} from './checks.mjs'

dcmjs.log.setLevel('error')

const inDir = process.env.DDR_IN
const outDir = process.env.DDR_OUT
if (!inDir || !outDir) {
  console.error('DDR_IN and DDR_OUT must name the input and output folders (run by ddr, see docs/processing.md)')
  process.exit(2)
}

const task = JSON.parse(readFileSync(path.join(inDir, 'task.json'), 'utf8'))
const instances = []
for (const series of task.series) {
  for (const instance of series.instances) {
    const file = path.join(inDir, instance.file)
    const bytes = readFileSync(file)
    const entry = {sopInstanceUid: instance.sopInstanceUid, seriesInstanceUid: series.seriesInstanceUid, transferSyntaxUid: instance.transferSyntaxUid}
    try {
      const dict = dcmjs.data.DicomMessage.readFile(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length))
      instances.push({...entry, dataset: dcmjs.data.DicomMetaDictionary.naturalizeDataset(dict.dict)})
    } catch (error) {
      // ddr stored it, so it is DICOM; what dcmjs cannot parse (some private UN sequences) is reported, not fatal.
      console.error(`${instance.file}: dcmjs cannot parse it: ${error.message}`)
      instances.push({...entry, unreadable: error.message})
    }
  }
}

const result = checkStudy(instances, task.settings ?? {})
writeFileSync(path.join(outDir, 'result.json'), `${JSON.stringify(result, null, 2)}\n`)
console.error(result.summary)
