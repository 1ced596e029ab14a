#!/usr/bin/env node
// Regenerates fixtures/: small, synthetic DICOM files for unit and integration tests, and
// fixtures/manifest.json describing each one.
//
//   node scripts/make-fixtures.mjs
//
// How the files are made: the script encodes each dataset itself in explicit VR little endian
// (so it controls every byte: private tags, Latin-1 text, undefined-length sequences, broken
// files), then dcmtk turns it into the other transfer syntaxes (dcmconv, dcmcjpeg, dcmcjpls,
// dcmcrle). JPEG 2000 comes from the OpenJPEG WebAssembly build in dcmjs-codecs (a devDependency:
// dcmtk has no JPEG 2000 encoder), re-wrapped by this script. Every good file is checked with
// dcmdump, and every lossless one is decoded again and compared with the original pixels.
//
// UIDs are UUID v5 (name-based) under the 2.25 root, so regenerating gives the same UIDs and,
// since every tool used is deterministic, the same bytes.

import {execFileSync} from 'node:child_process'
import {createHash} from 'node:crypto'
import {mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync} from 'node:fs'
import {createRequire} from 'node:module'
import {tmpdir} from 'node:os'
import {dirname, join, relative, resolve} from 'node:path'
import {fileURLToPath} from 'node:url'

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..')
const fixturesDir = join(root, 'fixtures')
const work = mkdtempSync(join(tmpdir(), 'ddr-fixtures-'))

// ---------------------------------------------------------------------------------------------
// UIDs

const UID_NAMESPACE = Buffer.from('5f0c6d3e8a2b4f1c9d7e2a4b6c8d0e1f', 'hex')

/** A stable UID for a name: UUID v5 (SHA-1, RFC 4122) written as 2.25.<decimal>. */
function uid(name) {
  const hash = createHash('sha1').update(UID_NAMESPACE).update(`ddr-fixtures/${name}`).digest().subarray(0, 16)
  hash[6] = (hash[6] & 0x0f) | 0x50
  hash[8] = (hash[8] & 0x3f) | 0x80
  return `2.25.${BigInt(`0x${hash.toString('hex')}`).toString(10)}`
}

const SOP = {
  cr: '1.2.840.10008.5.1.4.1.1.1',
  dx: '1.2.840.10008.5.1.4.1.1.1.1',
  mg: '1.2.840.10008.5.1.4.1.1.1.2',
  ct: '1.2.840.10008.5.1.4.1.1.2',
  mr: '1.2.840.10008.5.1.4.1.1.4',
  us: '1.2.840.10008.5.1.4.1.1.6.1',
  usMultiframe: '1.2.840.10008.5.1.4.1.1.3.1',
  sc: '1.2.840.10008.5.1.4.1.1.7',
  ecg12: '1.2.840.10008.5.1.4.1.1.9.1.1',
  xa: '1.2.840.10008.5.1.4.1.1.12.1',
  nm: '1.2.840.10008.5.1.4.1.1.20',
  basicTextSr: '1.2.840.10008.5.1.4.1.1.88.11',
  pt: '1.2.840.10008.5.1.4.1.1.128',
  rtDose: '1.2.840.10008.5.1.4.1.1.481.2',
  rtStruct: '1.2.840.10008.5.1.4.1.1.481.3',
  rtPlan: '1.2.840.10008.5.1.4.1.1.481.5',
}

const TS = {
  implicitLe: '1.2.840.10008.1.2',
  explicitLe: '1.2.840.10008.1.2.1',
  deflated: '1.2.840.10008.1.2.1.99',
  explicitBe: '1.2.840.10008.1.2.2',
  jpegBaseline: '1.2.840.10008.1.2.4.50',
  jpegLosslessSv1: '1.2.840.10008.1.2.4.70',
  jpegLsLossless: '1.2.840.10008.1.2.4.80',
  j2kLossless: '1.2.840.10008.1.2.4.90',
  rle: '1.2.840.10008.1.2.5',
}

const IMPLEMENTATION_CLASS_UID = uid('implementation-class')
const IMPLEMENTATION_VERSION_NAME = 'DDR_FIXTURES_1'

// ---------------------------------------------------------------------------------------------
// A small explicit VR little endian encoder

const LONG_VRS = new Set(['OB', 'OD', 'OF', 'OL', 'OV', 'OW', 'SQ', 'SV', 'UC', 'UN', 'UR', 'UT', 'UV'])
const UNDEFINED = 0xffffffff

/** One element: tag as 0xGGGGEEEE, VR, value (string | string[] | number | number[] | Buffer | items). */
function el(tag, vr, value, options = {}) {
  return {tag, vr, value, ...options}
}

/** A sequence: items are arrays of elements. */
function sq(tag, items, options = {}) {
  return {tag, vr: 'SQ', value: items, ...options}
}

function numbers(vr, value) {
  const list = Array.isArray(value) ? value : [value]
  const size = {US: 2, SS: 2, UL: 4, SL: 4, FL: 4, FD: 8, AT: 4}[vr]
  const out = Buffer.alloc(list.length * size)
  list.forEach((v, i) => {
    const at = i * size
    if (vr === 'US') out.writeUInt16LE(v, at)
    else if (vr === 'SS') out.writeInt16LE(v, at)
    else if (vr === 'UL') out.writeUInt32LE(v, at)
    else if (vr === 'SL') out.writeInt32LE(v, at)
    else if (vr === 'FL') out.writeFloatLE(v, at)
    else if (vr === 'FD') out.writeDoubleLE(v, at)
    else {
      out.writeUInt16LE(v >>> 16, at)
      out.writeUInt16LE(v & 0xffff, at + 2)
    }
  })
  return out
}

function valueBytes(vr, value) {
  let bytes
  if (Buffer.isBuffer(value)) bytes = value
  else if (['US', 'SS', 'UL', 'SL', 'FL', 'FD', 'AT'].includes(vr)) bytes = numbers(vr, value)
  else bytes = Buffer.from(Array.isArray(value) ? value.join('\\') : String(value), 'latin1')
  if (bytes.length % 2 === 0) return bytes
  const pad = vr === 'UI' || vr === 'OB' || vr === 'UN' ? 0x00 : 0x20
  return Buffer.concat([bytes, Buffer.from([pad])])
}

function tagBytes(tag) {
  const b = Buffer.alloc(4)
  b.writeUInt16LE(tag >>> 16, 0)
  b.writeUInt16LE(tag & 0xffff, 2)
  return b
}

function itemHeader(tag, length) {
  const b = Buffer.alloc(8)
  b.writeUInt16LE(0xfffe, 0)
  b.writeUInt16LE(tag, 2)
  b.writeUInt32LE(length, 4)
  return b
}

/** Items of a sequence; undefined lengths where asked. `implicit` encodes the item contents in implicit VR (CP-246 UN). */
function encodeItems(items, {undefinedItemLength = false, implicit = false} = {}) {
  return Buffer.concat(items.map((item) => {
    const body = encodeDataset(item, {implicit})
    return undefinedItemLength
      ? Buffer.concat([itemHeader(0xe000, UNDEFINED), body, itemHeader(0xe00d, 0)])
      : Buffer.concat([itemHeader(0xe000, body.length), body])
  }))
}

function encodeElement(element, {implicit = false} = {}) {
  const {tag, vr, value} = element
  let body
  let length
  if (vr === 'SQ' || (vr === 'UN' && element.items)) {
    const items = vr === 'SQ' ? value : element.items
    body = encodeItems(items, {undefinedItemLength: element.undefinedItemLength, implicit: implicit || vr === 'UN'})
    if (element.undefinedLength) {
      body = Buffer.concat([body, itemHeader(0xe0dd, 0)])
      length = UNDEFINED
    } else length = body.length
  } else if (element.fragments) {
    // Encapsulated pixel data: empty basic offset table, one item per fragment, delimiter.
    const parts = [itemHeader(0xe000, 0)]
    for (const fragment of element.fragments) {
      const even = fragment.length % 2 === 0 ? fragment : Buffer.concat([fragment, Buffer.from([0])])
      parts.push(itemHeader(0xe000, even.length), even)
    }
    parts.push(itemHeader(0xe0dd, 0))
    body = Buffer.concat(parts)
    length = UNDEFINED
  } else {
    body = valueBytes(vr, value)
    length = body.length
  }
  let header
  if (implicit) {
    header = Buffer.concat([tagBytes(tag), Buffer.alloc(4)])
    header.writeUInt32LE(length >>> 0, 4)
  } else if (LONG_VRS.has(vr)) {
    header = Buffer.concat([tagBytes(tag), Buffer.from(vr, 'latin1'), Buffer.alloc(6)])
    header.writeUInt32LE(length >>> 0, 8)
  } else {
    if (length > 0xffff) throw new Error(`value too long for ${vr} in ${tag.toString(16)}`)
    header = Buffer.concat([tagBytes(tag), Buffer.from(vr, 'latin1'), Buffer.alloc(2)])
    header.writeUInt16LE(length, 6)
  }
  return Buffer.concat([header, body])
}

function encodeDataset(elements, options = {}) {
  const sorted = [...elements].filter(Boolean).sort((a, b) => (a.tag >>> 0) - (b.tag >>> 0))
  for (let i = 1; i < sorted.length; i++) {
    if (sorted[i].tag === sorted[i - 1].tag) throw new Error(`duplicate tag ${sorted[i].tag.toString(16)}`)
  }
  return Buffer.concat(sorted.map((e) => encodeElement(e, options)))
}

/** Preamble, DICM and group 0002. `mediaStorageSopClassUid: ''` writes an empty value. */
function metaHeader({mediaStorageSopClassUid, mediaStorageSopInstanceUid, transferSyntaxUid}) {
  const group = encodeDataset([
    el(0x00020001, 'OB', Buffer.from([0, 1])),
    mediaStorageSopClassUid === undefined ? undefined : el(0x00020002, 'UI', mediaStorageSopClassUid),
    el(0x00020003, 'UI', mediaStorageSopInstanceUid),
    el(0x00020010, 'UI', transferSyntaxUid),
    el(0x00020012, 'UI', IMPLEMENTATION_CLASS_UID),
    el(0x00020013, 'SH', IMPLEMENTATION_VERSION_NAME),
  ])
  const length = encodeElement(el(0x00020000, 'UL', group.length))
  return Buffer.concat([Buffer.alloc(128), Buffer.from('DICM', 'latin1'), length, group])
}

// ---------------------------------------------------------------------------------------------
// Pixels: smooth gradients with a disc, different per frame, so codecs have something to do.

function grayPixels({rows, columns, frames = 1, bits = 16, maxValue = 4095, seed = 0}) {
  const bytesPer = bits / 8
  const out = Buffer.alloc(rows * columns * frames * bytesPer)
  let at = 0
  for (let f = 0; f < frames; f++) {
    for (let y = 0; y < rows; y++) {
      for (let x = 0; x < columns; x++) {
        const dx = x - columns / 2 - f * 2
        const dy = y - rows / 2 + seed
        const disc = dx * dx + dy * dy < (rows / 4) * (rows / 4) ? 0.35 : 0
        const v = Math.round(maxValue * Math.min(1, 0.1 + (0.4 * x) / columns + (0.2 * y) / rows + disc + ((x * 7 + y * 3 + f * 11 + seed) % 13) / 200))
        if (bytesPer === 2) out.writeUInt16LE(v, at)
        else out[at] = v
        at += bytesPer
      }
    }
  }
  return out
}

function rgbPixels({rows, columns, seed = 0}) {
  const out = Buffer.alloc(rows * columns * 3)
  let at = 0
  for (let y = 0; y < rows; y++) {
    for (let x = 0; x < columns; x++) {
      const dx = x - columns / 2
      const dy = y - rows / 2
      const inside = dx * dx + dy * dy < (rows / 3) * (rows / 3)
      out[at++] = inside ? 200 : (x * 4 + seed) % 256
      out[at++] = inside ? 60 + y : (y * 4) % 256
      out[at++] = inside ? 40 : 128
    }
  }
  return out
}

// ---------------------------------------------------------------------------------------------
// Modules

const STUDY_DATE = '20240115'

const patients = {
  p1: {id: 'DDR-P001', name: 'DOE^JOHN', birthDate: '19600101', sex: 'M'},
  p2: {id: 'DDR-P002', name: 'MÜLLER^JÜRGEN', birthDate: '19721224', sex: 'M'},
  p3: {id: 'DDR-P003', name: 'ROE^JANE', birthDate: '19850505', sex: 'F'},
  p4: {id: 'DDR-P004', name: 'SMITH^ALEX', birthDate: '19501111', sex: 'O'},
  p5: {id: 'DDR-P005', name: 'NGUYEN^AN', birthDate: '19900303', sex: 'F'},
  p9: {id: 'DDR-P009', name: 'BROKEN^FILES', birthDate: '19990909', sex: 'O'},
}

const studies = {
  1: {patient: patients.p1, dir: 'studies/1', description: 'CT THORAX RT PLANNING', accession: 'ACC0001', time: '083000'},
  2: {patient: patients.p2, dir: 'studies/2', description: 'MRT SCHÄDEL NATIV', accession: 'ACC0002', time: '091500', charset: 'ISO_IR 100'},
  3: {patient: patients.p3, dir: 'studies/3', description: 'US ABDOMEN', accession: 'ACC0003', time: '101000'},
  4: {patient: patients.p4, dir: 'studies/4', description: 'CARDIAC CATH', accession: 'ACC0004', time: '111111'},
  5: {patient: patients.p5, dir: 'studies/5', description: 'RADIOGRAPHY', accession: 'ACC0005', time: '121212'},
  6: {patient: patients.p5, dir: 'studies/6', description: 'PET NM', accession: 'ACC0006', time: '131313'},
  9: {patient: patients.p9, dir: 'broken', description: 'BROKEN', accession: 'ACC0009', time: '000000'},
}
for (const [n, study] of Object.entries(studies)) study.uid = uid(`study/${n}`)

function commonElements({study, series, sopClassUid, sopInstanceUid, instanceNumber}) {
  const {patient} = study
  return [
    study.charset ? el(0x00080005, 'CS', study.charset) : undefined,
    el(0x00080016, 'UI', sopClassUid),
    el(0x00080018, 'UI', sopInstanceUid),
    el(0x00080020, 'DA', STUDY_DATE),
    el(0x00080021, 'DA', STUDY_DATE),
    el(0x00080030, 'TM', study.time),
    el(0x00080050, 'SH', study.accession),
    el(0x00080060, 'CS', series.modality),
    el(0x00080070, 'LO', 'DDR Synthetic'),
    el(0x00080080, 'LO', study.charset ? 'Universitätsklinikum Köln' : 'DDR Test Hospital'),
    el(0x00080090, 'PN', ''),
    el(0x00081030, 'LO', study.description),
    el(0x0008103e, 'LO', series.description),
    el(0x00100010, 'PN', patient.name),
    el(0x00100020, 'LO', patient.id),
    el(0x00100030, 'DA', patient.birthDate),
    el(0x00100040, 'CS', patient.sex),
    el(0x0020000d, 'UI', study.uid),
    el(0x0020000e, 'UI', series.uid),
    el(0x00200010, 'SH', study.accession.slice(3)),
    el(0x00200011, 'IS', String(series.number)),
    el(0x00200013, 'IS', String(instanceNumber)),
  ]
}

function imagePixelElements({rows, columns, bits, frames, photometric = 'MONOCHROME2', samples = 1, pixels, signed = false, bitsStored}) {
  return [
    el(0x00280002, 'US', samples),
    el(0x00280004, 'CS', photometric),
    samples > 1 ? el(0x00280006, 'US', 0) : undefined,
    frames ? el(0x00280008, 'IS', String(frames)) : undefined,
    el(0x00280010, 'US', rows),
    el(0x00280011, 'US', columns),
    el(0x00280100, 'US', bits),
    el(0x00280101, 'US', bitsStored ?? bits),
    el(0x00280102, 'US', (bitsStored ?? bits) - 1),
    el(0x00280103, 'US', signed ? 1 : 0),
    el(0x7fe00010, bits > 8 ? 'OW' : 'OB', pixels),
  ]
}

function code(value, scheme, meaning) {
  return [el(0x00080100, 'SH', value), el(0x00080102, 'SH', scheme), el(0x00080104, 'LO', meaning)]
}

function frameOfReference(study) {
  return [el(0x00200052, 'UI', uid(`frame-of-reference/${study.accession}`)), el(0x00201040, 'LO', '')]
}

// ---------------------------------------------------------------------------------------------
// Fixture definitions

/** Good fixtures: name, study, series, SOP class, the element list and how to get the target transfer syntax. */
const fixtures = []
const seriesCache = new Map()

function series(studyKey, key, modality, number, description) {
  const id = `${studyKey}/${key}`
  if (!seriesCache.has(id)) seriesCache.set(id, {uid: uid(`series/${id}`), modality, number, description})
  return seriesCache.get(id)
}

function add(definition) {
  fixtures.push(definition)
}

function ctElements({study, seriesInfo, sopInstanceUid, instanceNumber, withReferences = true}) {
  const referenced = []
  for (let i = 0; i < 40; i++) {
    referenced.push([
      el(0x00081150, 'UI', SOP.ct),
      el(0x00081155, 'UI', uid(`referenced-image/${i}`)),
      sq(0x0040a170, [code('121311', 'DCM', 'Localizer')]),
    ])
  }
  return [
    ...commonElements({study, series: seriesInfo, sopClassUid: SOP.ct, sopInstanceUid, instanceNumber}),
    el(0x00080008, 'CS', ['ORIGINAL', 'PRIMARY', 'AXIAL']),
    // A long sequence (undefined length, items of defined length, nested codes) before
    // StudyInstanceUID: readers looking for the study must skip it correctly.
    withReferences ? sq(0x00081140, referenced, {undefinedLength: true}) : undefined,
    el(0x00180050, 'DS', '2.5'),
    el(0x00180060, 'DS', '120'),
    el(0x00200032, 'DS', ['-160', '-160', String(-instanceNumber * 2.5)]),
    el(0x00200037, 'DS', ['1', '0', '0', '0', '1', '0']),
    ...frameOfReference(study),
    el(0x00281050, 'DS', '40'),
    el(0x00281051, 'DS', '400'),
    el(0x00281052, 'DS', '-1024'),
    el(0x00281053, 'DS', '1'),
    ...imagePixelElements({rows: 64, columns: 64, bits: 16, bitsStored: 12, pixels: grayPixels({rows: 64, columns: 64, seed: instanceNumber})}),
  ]
}

// Study 1: CT in every transfer syntax, plus an RT structure set, plan and dose.
{
  const study = studies[1]
  const ctSeries = series(1, 'ct', 'CT', 1, 'CT THORAX 2.5mm')
  const variants = [
    ['ct-explicit-le', TS.explicitLe],
    ['ct-implicit-le', TS.implicitLe],
    ['ct-explicit-be', TS.explicitBe],
    ['ct-deflated', TS.deflated],
    ['ct-jpeg-lossless-sv1', TS.jpegLosslessSv1],
    ['ct-jpegls-lossless', TS.jpegLsLossless],
    ['ct-j2k-lossless', TS.j2kLossless],
    ['ct-rle', TS.rle],
  ]
  variants.forEach(([name, ts], i) => {
    const sopInstanceUid = uid(`instance/${name}`)
    add({
      path: `${study.dir}/${name}.dcm`,
      study,
      series: ctSeries,
      sopClassUid: SOP.ct,
      sopInstanceUid,
      transferSyntaxUid: ts,
      description: `CT 64x64 12-bit, ${name.slice(3)}; 40-item ReferencedImageSequence before the study UID`,
      elements: ctElements({study, seriesInfo: ctSeries, sopInstanceUid, instanceNumber: i + 1}),
    })
  })

  const structSeries = series(1, 'rtstruct', 'RTSTRUCT', 2, 'RT STRUCTURES')
  const structUid = uid('instance/rtstruct')
  const frameUid = uid(`frame-of-reference/${study.accession}`)
  const contour = (z) => {
    const points = []
    for (let a = 0; a < 8; a++) points.push((50 * Math.cos((a * Math.PI) / 4)).toFixed(2), (50 * Math.sin((a * Math.PI) / 4)).toFixed(2), String(z))
    return [el(0x30060042, 'CS', 'CLOSED_PLANAR'), el(0x30060046, 'IS', '8'), el(0x30060050, 'DS', points)]
  }
  add({
    path: `${study.dir}/rtstruct.dcm`,
    study,
    series: structSeries,
    sopClassUid: SOP.rtStruct,
    sopInstanceUid: structUid,
    transferSyntaxUid: TS.explicitLe,
    description: 'RT Structure Set, one ROI with 3 contours (undefined-length nested sequences)',
    elements: [
      ...commonElements({study, series: structSeries, sopClassUid: SOP.rtStruct, sopInstanceUid: structUid, instanceNumber: 1}),
      el(0x30060002, 'SH', 'DDR-RS'),
      el(0x30060008, 'DA', STUDY_DATE),
      el(0x30060009, 'TM', '090000'),
      sq(0x30060010, [[el(0x00200052, 'UI', frameUid)]]),
      sq(0x30060020, [[el(0x30060022, 'IS', '1'), el(0x30060024, 'UI', frameUid), el(0x30060026, 'LO', 'BODY'), el(0x30060036, 'CS', 'MANUAL')]]),
      sq(0x30060039, [[
        el(0x3006002a, 'IS', ['255', '0', '0']),
        sq(0x30060040, [contour(-2.5), contour(-5), contour(-7.5)], {undefinedLength: true, undefinedItemLength: true}),
        el(0x30060084, 'IS', '1'),
      ]], {undefinedLength: true, undefinedItemLength: true}),
      sq(0x30060080, [[el(0x30060082, 'IS', '1'), el(0x30060084, 'IS', '1'), el(0x300600a4, 'CS', 'EXTERNAL'), el(0x300600a6, 'PN', '')]]),
    ],
  })

  const planSeries = series(1, 'rtplan', 'RTPLAN', 3, 'RT PLAN')
  const planUid = uid('instance/rtplan')
  add({
    path: `${study.dir}/rtplan.dcm`,
    study,
    series: planSeries,
    sopClassUid: SOP.rtPlan,
    sopInstanceUid: planUid,
    transferSyntaxUid: TS.explicitLe,
    description: 'RT Plan, one fraction group and one beam',
    elements: [
      ...commonElements({study, series: planSeries, sopClassUid: SOP.rtPlan, sopInstanceUid: planUid, instanceNumber: 1}),
      el(0x300a0002, 'SH', 'DDR-PLAN'),
      el(0x300a0006, 'DA', STUDY_DATE),
      el(0x300a0007, 'TM', '100000'),
      el(0x300a000c, 'CS', 'PATIENT'),
      sq(0x300a0070, [[
        el(0x300a0071, 'IS', '1'),
        el(0x300a0078, 'IS', '30'),
        el(0x300a0080, 'IS', '1'),
        el(0x300a00a0, 'IS', '0'),
        sq(0x300c0004, [[el(0x300a0086, 'DS', '100'), el(0x300c0006, 'IS', '1')]]),
      ]]),
      sq(0x300a00b0, [[
        el(0x300a00b2, 'SH', 'LINAC1'),
        el(0x300a00b3, 'CS', 'MU'),
        el(0x300a00c0, 'IS', '1'),
        el(0x300a00c2, 'LO', 'AP'),
        el(0x300a00c4, 'CS', 'STATIC'),
        el(0x300a00c6, 'CS', 'PHOTON'),
        el(0x300a00ce, 'CS', 'TREATMENT'),
        el(0x300a00d0, 'IS', '0'),
        el(0x300a00e0, 'IS', '0'),
        el(0x300a00ed, 'IS', '0'),
        el(0x300a00f0, 'IS', '0'),
        el(0x300a010e, 'DS', '1'),
        el(0x300a0110, 'IS', '2'),
        sq(0x300a0111, [
          [el(0x300a0112, 'IS', '0'), el(0x300a0114, 'DS', '6'), el(0x300a011e, 'DS', '0'), el(0x300a0134, 'DS', '0')],
          [el(0x300a0112, 'IS', '1'), el(0x300a0134, 'DS', '1')],
        ]),
      ]]),
      sq(0x300c0060, [[el(0x00081150, 'UI', SOP.rtStruct), el(0x00081155, 'UI', structUid)]]),
      el(0x300e0002, 'CS', 'UNAPPROVED'),
    ],
  })

  const doseSeries = series(1, 'rtdose', 'RTDOSE', 4, 'RT DOSE')
  const doseUid = uid('instance/rtdose')
  add({
    path: `${study.dir}/rtdose.dcm`,
    study,
    series: doseSeries,
    sopClassUid: SOP.rtDose,
    sopInstanceUid: doseUid,
    transferSyntaxUid: TS.explicitLe,
    description: 'RT Dose grid, 4 frames of 32x32 16-bit',
    elements: [
      ...commonElements({study, series: doseSeries, sopClassUid: SOP.rtDose, sopInstanceUid: doseUid, instanceNumber: 1}),
      el(0x00200032, 'DS', ['-80', '-80', '0']),
      el(0x00200037, 'DS', ['1', '0', '0', '0', '1', '0']),
      ...frameOfReference(study),
      el(0x00280009, 'AT', 0x3004000c),
      el(0x00280030, 'DS', ['5', '5']),
      el(0x30040002, 'CS', 'GY'),
      el(0x30040004, 'CS', 'PHYSICAL'),
      el(0x3004000a, 'CS', 'PLAN'),
      el(0x3004000c, 'DS', ['0', '-5', '-10', '-15']),
      el(0x3004000e, 'DS', '0.0001'),
      sq(0x300c0002, [[el(0x00081150, 'UI', SOP.rtPlan), el(0x00081155, 'UI', planUid)]]),
      ...imagePixelElements({rows: 32, columns: 32, bits: 16, frames: 4, pixels: grayPixels({rows: 32, columns: 32, frames: 4, maxValue: 60000})}),
    ],
  })
}

// Study 2: MR in Latin-1 (ISO_IR 100), one with private elements, and a Basic Text SR.
{
  const study = studies[2]
  const mrSeries = series(2, 'mr', 'MR', 1, 'T1 SE TRA Kopf')
  const mr = (name, instanceNumber, ts, extra = []) => {
    const sopInstanceUid = uid(`instance/${name}`)
    add({
      path: `${study.dir}/${name}.dcm`,
      study,
      series: mrSeries,
      sopClassUid: SOP.mr,
      sopInstanceUid,
      transferSyntaxUid: ts,
      allowedWarning: extra.length > 0 ? /^W: Found element \(0009,1001\) with VR UN and undefined length/ : undefined,
      description: extra.length > 0
        ? 'MR with private elements (LO, US, OB, UN, a CP-246 UN sequence before the study UID) and Latin-1 text'
        : `MR 64x64 16-bit, Latin-1 patient name, ${ts}`,
      elements: [
        ...commonElements({study, series: mrSeries, sopClassUid: SOP.mr, sopInstanceUid, instanceNumber}),
        el(0x00080008, 'CS', ['ORIGINAL', 'PRIMARY', 'M', 'ND']),
        el(0x00180020, 'CS', 'SE'),
        el(0x00180021, 'CS', 'NONE'),
        el(0x00180022, 'CS', ''),
        el(0x00180023, 'CS', '2D'),
        el(0x00180080, 'DS', '500'),
        el(0x00180081, 'DS', '15'),
        el(0x00180091, 'IS', '1'),
        el(0x00180087, 'DS', '1.5'),
        el(0x00200032, 'DS', ['-120', '-120', String(instanceNumber * 5)]),
        el(0x00200037, 'DS', ['1', '0', '0', '0', '1', '0']),
        ...frameOfReference(study),
        ...extra,
        ...imagePixelElements({rows: 64, columns: 64, bits: 16, pixels: grayPixels({rows: 64, columns: 64, seed: instanceNumber * 3, maxValue: 2000})}),
      ],
    })
  }
  mr('mr-1', 1, TS.explicitLe)
  mr('mr-2', 2, TS.implicitLe)
  mr('mr-3', 3, TS.explicitBe)
  mr('mr-private-latin1', 4, TS.explicitLe, [
    // dcmdump notes the CP-246 sequence with "W: Found element (0009,1001) with VR UN and undefined length".
    el(0x00090010, 'LO', 'DDR PRIVATE SEQ'),
    // Private sequence sent as UN with undefined length: its items are implicit VR (CP-246).
    el(0x00091001, 'UN', undefined, {
      undefinedLength: true,
      undefinedItemLength: true,
      items: [
        [el(0x00100020, 'LO', 'NOT-THE-PATIENT'), el(0x0020000d, 'UI', uid('decoy-study'))],
        [el(0x00081030, 'LO', 'nested'), el(0x00091002, 'LO', 'x')],
      ],
    }),
    el(0x00290010, 'LO', 'DDR TEST PRIVATE'),
    el(0x00290011, 'LO', 'DDR SECOND CREATOR'),
    el(0x00291010, 'LO', 'Privat: Größe'),
    el(0x00291011, 'US', 42),
    el(0x00291020, 'OB', Buffer.from('000102030405060708090a0b0c0d0e0f', 'hex')),
    el(0x00291030, 'UN', Buffer.from('unknown-value-bytes\0', 'latin1')),
    el(0x00291101, 'SH', 'second'),
  ])

  const srSeries = series(2, 'sr', 'SR', 99, 'Befund')
  const srUid = uid('instance/sr-basic-text')
  add({
    path: `${study.dir}/sr-basic-text.dcm`,
    study,
    series: srSeries,
    sopClassUid: SOP.basicTextSr,
    sopInstanceUid: srUid,
    transferSyntaxUid: TS.explicitLe,
    description: 'Basic Text SR with a Latin-1 finding',
    elements: [
      ...commonElements({study, series: srSeries, sopClassUid: SOP.basicTextSr, sopInstanceUid: srUid, instanceNumber: 1}),
      el(0x00080023, 'DA', STUDY_DATE),
      el(0x00080033, 'TM', '120000'),
      sq(0x00081111, []),
      el(0x0040a040, 'CS', 'CONTAINER'),
      sq(0x0040a043, [code('11528-7', 'LN', 'Radiology Report')]),
      el(0x0040a050, 'CS', 'SEPARATE'),
      el(0x0040a491, 'CS', 'COMPLETE'),
      el(0x0040a493, 'CS', 'UNVERIFIED'),
      sq(0x0040a375, [[
        el(0x0020000d, 'UI', study.uid),
        sq(0x00081115, [[
          el(0x0020000e, 'UI', mrSeries.uid),
          sq(0x00081199, [[el(0x00081150, 'UI', SOP.mr), el(0x00081155, 'UI', uid('instance/mr-1'))]]),
        ]]),
      ]]),
      sq(0x0040a730, [
        [el(0x0040a010, 'CS', 'CONTAINS'), el(0x0040a040, 'CS', 'TEXT'), sq(0x0040a043, [code('121071', 'DCM', 'Finding')]), el(0x0040a160, 'UT', 'Kein Nachweis einer akuten Blutung. Ventrikel normal weit, Mittellinie nicht verlagert.')],
        [el(0x0040a010, 'CS', 'CONTAINS'), el(0x0040a040, 'CS', 'TEXT'), sq(0x0040a043, [code('121076', 'DCM', 'Conclusion')]), el(0x0040a160, 'UT', 'Unauffälliger Befund.')],
      ], {undefinedLength: true}),
    ],
  })
}

// Study 3: ultrasound and secondary capture, JPEG baseline among them.
{
  const study = studies[3]
  const usSeries = series(3, 'us', 'US', 1, 'ABDOMEN')
  const us = (name, ts, instanceNumber) => {
    const sopInstanceUid = uid(`instance/${name}`)
    add({
      path: `${study.dir}/${name}.dcm`,
      study,
      series: usSeries,
      sopClassUid: SOP.us,
      sopInstanceUid,
      transferSyntaxUid: ts,
      description: `US 64x64 RGB, ${ts === TS.jpegBaseline ? 'JPEG baseline (lossy, YBR_FULL_422)' : 'uncompressed'}`,
      elements: [
        ...commonElements({study, series: usSeries, sopClassUid: SOP.us, sopInstanceUid, instanceNumber}),
        el(0x00080008, 'CS', ['ORIGINAL', 'PRIMARY', 'ABDOMINAL']),
        ...imagePixelElements({rows: 64, columns: 64, bits: 8, samples: 3, photometric: 'RGB', pixels: rgbPixels({rows: 64, columns: 64, seed: instanceNumber * 40})}),
      ],
    })
  }
  us('us-jpeg-baseline', TS.jpegBaseline, 1)
  us('us-explicit-le', TS.explicitLe, 2)

  const usMultiSeries = series(3, 'us-cine', 'US', 2, 'CINE')
  const cineUid = uid('instance/us-multiframe-rle')
  add({
    path: `${study.dir}/us-multiframe-rle.dcm`,
    study,
    series: usMultiSeries,
    sopClassUid: SOP.usMultiframe,
    sopInstanceUid: cineUid,
    transferSyntaxUid: TS.rle,
    description: 'US multi-frame, 6 frames of 64x64 8-bit, RLE (one fragment per frame)',
    elements: [
      ...commonElements({study, series: usMultiSeries, sopClassUid: SOP.usMultiframe, sopInstanceUid: cineUid, instanceNumber: 1}),
      el(0x00080008, 'CS', ['ORIGINAL', 'PRIMARY', 'ABDOMINAL']),
      el(0x00181063, 'DS', '33.3'),
      el(0x00280009, 'AT', 0x00181063),
      ...imagePixelElements({rows: 64, columns: 64, bits: 8, frames: 6, pixels: grayPixels({rows: 64, columns: 64, frames: 6, bits: 8, maxValue: 255})}),
    ],
  })

  const scSeries = series(3, 'sc', 'OT', 3, 'SCREENSHOTS')
  const sc = (name, ts, instanceNumber) => {
    const sopInstanceUid = uid(`instance/${name}`)
    add({
      path: `${study.dir}/${name}.dcm`,
      study,
      series: scSeries,
      sopClassUid: SOP.sc,
      sopInstanceUid,
      transferSyntaxUid: ts,
      description: `Secondary Capture 64x64 8-bit, ${ts === TS.jpegBaseline ? 'JPEG baseline' : 'uncompressed'}`,
      elements: [
        ...commonElements({study, series: scSeries, sopClassUid: SOP.sc, sopInstanceUid, instanceNumber}),
        el(0x00080064, 'CS', 'WSD'),
        ...imagePixelElements({rows: 64, columns: 64, bits: 8, pixels: grayPixels({rows: 64, columns: 64, bits: 8, maxValue: 255, seed: instanceNumber})}),
      ],
    })
  }
  sc('sc-jpeg-baseline', TS.jpegBaseline, 1)
  sc('sc-deflated', TS.deflated, 2)
}

// Study 4: cath lab, XA multi-frame and a 12-lead ECG.
{
  const study = studies[4]
  const xaSeries = series(4, 'xa', 'XA', 1, 'LCA')
  const xa = (name, ts, instanceNumber) => {
    const sopInstanceUid = uid(`instance/${name}`)
    add({
      path: `${study.dir}/${name}.dcm`,
      study,
      series: xaSeries,
      sopClassUid: SOP.xa,
      sopInstanceUid,
      transferSyntaxUid: ts,
      description: `XA multi-frame, 4 frames of 64x64 8-bit, ${ts}`,
      elements: [
        ...commonElements({study, series: xaSeries, sopClassUid: SOP.xa, sopInstanceUid, instanceNumber}),
        el(0x00080008, 'CS', ['ORIGINAL', 'PRIMARY', 'SINGLE PLANE']),
        el(0x00181063, 'DS', '66.7'),
        el(0x00280009, 'AT', 0x00181063),
        el(0x00281040, 'CS', 'LIN'),
        ...imagePixelElements({rows: 64, columns: 64, bits: 8, frames: 4, pixels: grayPixels({rows: 64, columns: 64, frames: 4, bits: 8, maxValue: 255, seed: instanceNumber})}),
      ],
    })
  }
  xa('xa-multiframe-jpegls', TS.jpegLsLossless, 1)
  xa('xa-multiframe-jpeg-lossless', TS.jpegLosslessSv1, 2)

  const ecgSeries = series(4, 'ecg', 'ECG', 2, 'RESTING ECG')
  const ecgUid = uid('instance/ecg-12lead')
  const leads = [
    ['2:1', 'Lead I'], ['2:2', 'Lead II'], ['2:61', 'Lead III'], ['2:62', 'Lead aVR'], ['2:63', 'Lead aVL'], ['2:64', 'Lead aVF'],
    ['2:3', 'Lead V1'], ['2:4', 'Lead V2'], ['2:5', 'Lead V3'], ['2:6', 'Lead V4'], ['2:7', 'Lead V5'], ['2:8', 'Lead V6'],
  ]
  const samples = 500
  const waveform = Buffer.alloc(leads.length * samples * 2)
  for (let s = 0; s < samples; s++) {
    for (let c = 0; c < leads.length; c++) {
      const t = s / 500
      const beat = (t * 1.2) % 1
      const qrs = Math.exp(-(((beat - 0.3) / 0.012) ** 2)) * 1000
      const p = Math.exp(-(((beat - 0.15) / 0.03) ** 2)) * 120
      const tw = Math.exp(-(((beat - 0.6) / 0.05) ** 2)) * 250
      waveform.writeInt16LE(Math.round((qrs + p + tw) * (1 - c / 24)), (s * leads.length + c) * 2)
    }
  }
  add({
    path: `${study.dir}/ecg-12lead.dcm`,
    study,
    series: ecgSeries,
    sopClassUid: SOP.ecg12,
    sopInstanceUid: ecgUid,
    transferSyntaxUid: TS.explicitLe,
    description: '12-lead ECG, 1 s at 500 Hz, 16-bit signed samples (undefined-length waveform sequence)',
    elements: [
      ...commonElements({study, series: ecgSeries, sopClassUid: SOP.ecg12, sopInstanceUid: ecgUid, instanceNumber: 1}),
      el(0x00080023, 'DA', STUDY_DATE),
      el(0x0008002a, 'DT', `${STUDY_DATE}111500`),
      el(0x00080033, 'TM', '111500'),
      sq(0x54000100, [[
        el(0x003a0004, 'CS', 'ORIGINAL'),
        el(0x003a0005, 'US', leads.length),
        el(0x003a0010, 'UL', samples),
        el(0x003a001a, 'DS', '500'),
        sq(0x003a0200, leads.map(([value, meaning], i) => [
          sq(0x003a0208, [[...code(value, 'SCPECG', meaning), el(0x00080103, 'SH', '1.3')]]),
          el(0x003a0210, 'DS', '1'),
          sq(0x003a0211, [code('uV', 'UCUM', 'microvolt')]),
          el(0x003a0212, 'DS', '1'),
          el(0x003a0213, 'DS', '0'),
          el(0x003a0214, 'DS', '0'),
          el(0x003a021a, 'US', 16),
          el(0x003a0220, 'DS', '0.05'),
          el(0x003a0221, 'DS', '150'),
          el(0x003a0222, 'DS', '60'),
          el(0x003a0203, 'SH', String(i + 1)),
        ]), {undefinedLength: true}),
        el(0x54001004, 'US', 16),
        el(0x54001006, 'CS', 'SS'),
        el(0x54001010, 'OW', waveform),
      ]], {undefinedLength: true, undefinedItemLength: true}),
    ],
  })
}

// Study 5: projection radiography.
{
  const study = studies[5]
  const projection = (name, sopClassUid, modality, ts, number, extra) => {
    const seriesInfo = series(5, name, modality, number, `${modality} CHEST`)
    const sopInstanceUid = uid(`instance/${name}`)
    add({
      path: `${study.dir}/${name}.dcm`,
      study,
      series: seriesInfo,
      sopClassUid,
      sopInstanceUid,
      transferSyntaxUid: ts,
      description: `${modality} 64x64 12-bit, ${ts}`,
      elements: [
        ...commonElements({study, series: seriesInfo, sopClassUid, sopInstanceUid, instanceNumber: 1}),
        ...extra,
        el(0x00280030, 'DS', ['0.2', '0.2']),
        el(0x00281040, 'CS', 'LIN'),
        ...imagePixelElements({rows: 64, columns: 64, bits: 16, bitsStored: 12, photometric: modality === 'CR' ? 'MONOCHROME1' : 'MONOCHROME2', pixels: grayPixels({rows: 64, columns: 64, seed: number})}),
      ],
    })
  }
  projection('cr', SOP.cr, 'CR', TS.jpegLosslessSv1, 1, [el(0x00180015, 'CS', 'CHEST'), el(0x00185101, 'CS', 'PA')])
  projection('dx', SOP.dx, 'DX', TS.explicitLe, 2, [
    el(0x00080008, 'CS', ['ORIGINAL', 'PRIMARY']),
    el(0x00080068, 'CS', 'FOR PRESENTATION'),
    el(0x00185101, 'CS', 'AP'),
    el(0x00281052, 'DS', '0'),
    el(0x00281053, 'DS', '1'),
    el(0x00281054, 'LO', 'US'),
    el(0x20500020, 'CS', 'IDENTITY'),
  ])
  projection('mg', SOP.mg, 'MG', TS.rle, 3, [
    el(0x00080008, 'CS', ['ORIGINAL', 'PRIMARY']),
    el(0x00080068, 'CS', 'FOR PRESENTATION'),
    el(0x00185101, 'CS', 'CC'),
    el(0x00200062, 'CS', 'L'),
    el(0x00281052, 'DS', '0'),
    el(0x00281053, 'DS', '1'),
    el(0x00281054, 'LO', 'US'),
    el(0x20500020, 'CS', 'IDENTITY'),
  ])
}

// Study 6 (same patient as study 5): PET and a multi-frame NM.
{
  const study = studies[6]
  const ptSeries = series(6, 'pt', 'PT', 1, 'PET WB')
  const pt = (name, ts, instanceNumber) => {
    const sopInstanceUid = uid(`instance/${name}`)
    add({
      path: `${study.dir}/${name}.dcm`,
      study,
      series: ptSeries,
      sopClassUid: SOP.pt,
      sopInstanceUid,
      transferSyntaxUid: ts,
      description: `PET 64x64 16-bit, ${ts}`,
      elements: [
        ...commonElements({study, series: ptSeries, sopClassUid: SOP.pt, sopInstanceUid, instanceNumber}),
        el(0x00080008, 'CS', ['ORIGINAL', 'PRIMARY']),
        el(0x00200032, 'DS', ['-300', '-300', String(instanceNumber * 4)]),
        el(0x00200037, 'DS', ['1', '0', '0', '0', '1', '0']),
        ...frameOfReference(study),
        el(0x00281052, 'DS', '0'),
        el(0x00281053, 'DS', '0.5'),
        el(0x00540081, 'US', 2),
        el(0x00541001, 'CS', 'BQML'),
        el(0x00541002, 'CS', 'EMISSION'),
        el(0x00541330, 'US', instanceNumber),
        ...imagePixelElements({rows: 64, columns: 64, bits: 16, pixels: grayPixels({rows: 64, columns: 64, seed: instanceNumber * 5, maxValue: 30000})}),
      ],
    })
  }
  pt('pt-1', TS.implicitLe, 1)
  pt('pt-2', TS.deflated, 2)

  const nmSeries = series(6, 'nm', 'NM', 2, 'BONE SPECT')
  const nmUid = uid('instance/nm-multiframe')
  add({
    path: `${study.dir}/nm-multiframe.dcm`,
    study,
    series: nmSeries,
    sopClassUid: SOP.nm,
    sopInstanceUid: nmUid,
    transferSyntaxUid: TS.explicitLe,
    description: 'NM multi-frame, 4 frames of 64x64 16-bit',
    elements: [
      ...commonElements({study, series: nmSeries, sopClassUid: SOP.nm, sopInstanceUid: nmUid, instanceNumber: 1}),
      el(0x00080008, 'CS', ['ORIGINAL', 'PRIMARY', 'STATIC', 'EMISSION']),
      el(0x00280009, 'AT', [0x00540010, 0x00540020]),
      el(0x00540010, 'US', [1, 1, 2, 2]),
      el(0x00540011, 'US', 2),
      sq(0x00540012, [[el(0x00540013, 'SQ', [[el(0x00540014, 'DS', '126'), el(0x00540015, 'DS', '154')]]), el(0x00540018, 'SH', 'TC99M')], [el(0x00540018, 'SH', 'SCATTER')]]),
      el(0x00540020, 'US', [1, 2, 1, 2]),
      el(0x00540021, 'US', 2),
      sq(0x00540022, [[el(0x00181145, 'DS', '0')], [el(0x00181145, 'DS', '0')]]),
      ...imagePixelElements({rows: 64, columns: 64, bits: 16, frames: 4, pixels: grayPixels({rows: 64, columns: 64, frames: 4, maxValue: 1000})}),
    ],
  })
}

// ---------------------------------------------------------------------------------------------
// Writing, transcoding and checking

function run(command, args) {
  try {
    return execFileSync(command, args, {encoding: 'latin1', stdio: ['ignore', 'pipe', 'pipe']})
  } catch (error) {
    throw new Error(`${command} ${args.join(' ')} failed: ${error.stderr || error.message}`)
  }
}

let j2kCodecs
async function encodeJ2k(sourcePath) {
  if (!j2kCodecs) {
    const require = createRequire(join(root, 'package.json'))
    j2kCodecs = require('dcmjs-codecs')
    await j2kCodecs.NativeCodecs.initializeAsync()
  }
  const input = readFileSync(sourcePath)
  const transcoder = new j2kCodecs.Transcoder(input.buffer.slice(input.byteOffset, input.byteOffset + input.length))
  transcoder.transcode(TS.j2kLossless)
  return Buffer.from(transcoder.getDicomPart10())
}

/** The fragments of encapsulated pixel data in an explicit VR LE Part 10 file (enough for our own files). */
function encapsulatedFragments(file) {
  // dcmjs writes the element as OW; either VR will do here, the fixture gets OB.
  const markers = ['OB', 'OW'].map((vr) => Buffer.concat([Buffer.from([0xe0, 0x7f, 0x10, 0x00]), Buffer.from(vr, 'latin1'), Buffer.from([0, 0, 0xff, 0xff, 0xff, 0xff])]))
  let at = Math.max(...markers.map((marker) => file.lastIndexOf(marker)))
  if (at < 0) throw new Error('no encapsulated pixel data')
  at += markers[0].length
  const fragments = []
  let first = true
  for (;;) {
    const element = file.readUInt16LE(at + 2)
    const length = file.readUInt32LE(at + 4)
    at += 8
    if (element === 0xe0dd) break
    if (!first) fragments.push(file.subarray(at, at + length))
    first = false
    at += length
  }
  return fragments
}

function writeBase(fixture, elements, tsForMeta = TS.explicitLe, suffix = 'base') {
  const file = Buffer.concat([
    metaHeader({mediaStorageSopClassUid: fixture.sopClassUid, mediaStorageSopInstanceUid: fixture.sopInstanceUid, transferSyntaxUid: tsForMeta}),
    encodeDataset(elements),
  ])
  const path = join(work, `${fixture.path.replaceAll('/', '_')}.${suffix}.dcm`)
  writeFileSync(path, file)
  return path
}

async function produce(fixture) {
  const target = join(fixturesDir, fixture.path)
  mkdirSync(dirname(target), {recursive: true})
  const base = writeBase(fixture, fixture.elements)
  switch (fixture.transferSyntaxUid) {
    case TS.explicitLe:
      writeFileSync(target, readFileSync(base))
      break
    case TS.implicitLe:
      // Undefined lengths everywhere: the hard case for implicit VR readers.
      run('dcmconv', ['+ti', '-e', base, target])
      break
    case TS.explicitBe:
      run('dcmconv', ['+tb', base, target])
      break
    case TS.deflated:
      run('dcmconv', ['+td', base, target])
      break
    case TS.jpegBaseline:
      run('dcmcjpeg', ['+eb', '+un', '+q', '90', base, target])
      break
    case TS.jpegLosslessSv1:
      run('dcmcjpeg', ['+e1', base, target])
      break
    case TS.jpegLsLossless:
      run('dcmcjpls', ['+el', base, target])
      break
    case TS.rle:
      run('dcmcrle', [base, target])
      break
    case TS.j2kLossless: {
      const fragments = encapsulatedFragments(await encodeJ2k(base))
      const elements = fixture.elements.map((e) => (e && e.tag === 0x7fe00010 ? {tag: e.tag, vr: 'OB', fragments} : e))
      writeFileSync(target, readFileSync(writeBase(fixture, elements, TS.j2kLossless, 'j2k')))
      break
    }
    default:
      throw new Error(`no recipe for ${fixture.transferSyntaxUid}`)
  }
  return {base, target}
}

/** Values of top-level elements as dcmdump prints them (UIDs as numbers; nested lines are indented). */
function dumpValues(path) {
  const out = run('dcmdump', ['-dc', '-Un', path])
  const values = {}
  for (const line of out.split('\n')) {
    const match = /^\(([0-9a-f]{4}),([0-9a-f]{4})\) \w\w \[(.*)\] *#/.exec(line)
    if (match) values[`${match[1]},${match[2]}`] = match[3].replace(/[\0 ]+$/, '')
  }
  return values
}

/** dcmdump must read the whole file without a warning or error. */
function dcmdumpClean(path, allowedWarning) {
  try {
    execFileSync('dcmdump', ['-dc', path], {stdio: ['ignore', 'ignore', 'pipe']})
  } catch (error) {
    throw new Error(`dcmdump rejects ${path}: ${error.stderr}`)
  }
  const stderr = execFileSync('sh', ['-c', 'dcmdump -dc "$1" 2>&1 >/dev/null', 'sh', path], {encoding: 'latin1'})
  const unexpected = stderr.split('\n').filter((line) => line.trim() !== '' && !(allowedWarning && allowedWarning.test(line)))
  if (unexpected.length > 0) throw new Error(`dcmdump warns about ${path}: ${stderr}`)
}

/** Pixel data of a file as dcmtk decodes it (dcmdump +W writes it raw). */
function decodedPixels(path, decoder) {
  const plain = join(work, `${Math.random().toString(36).slice(2)}.dcm`)
  if (decoder) run(decoder, ['+te', path, plain])
  const dir = mkdtempSync(join(work, 'pixels-'))
  run('dcmdump', ['+W', dir, decoder ? plain : path])
  const files = readdirSync(dir).filter((f) => f.endsWith('.raw'))
  if (files.length !== 1) throw new Error(`expected one pixel data file for ${path}, got ${files.length}`)
  return readFileSync(join(dir, files[0]))
}

async function j2kPixels(path) {
  const input = readFileSync(path)
  const transcoder = new j2kCodecs.Transcoder(input.buffer.slice(input.byteOffset, input.byteOffset + input.length))
  transcoder.transcode(TS.explicitLe)
  const plain = join(work, 'j2k-decoded.dcm')
  writeFileSync(plain, Buffer.from(transcoder.getDicomPart10()))
  return decodedPixels(plain)
}

const LOSSLESS_DECODER = {
  [TS.jpegLosslessSv1]: 'dcmdjpeg',
  [TS.jpegLsLossless]: 'dcmdjpls',
  [TS.rle]: 'dcmdrle',
}

function sha256(buffer) {
  return createHash('sha256').update(buffer).digest('hex')
}

function manifestEntry(fixture, extra = {}) {
  const file = readFileSync(join(fixturesDir, fixture.path))
  return {
    path: fixture.path,
    description: fixture.description,
    sopClassUid: fixture.sopClassUid,
    sopInstanceUid: fixture.sopInstanceUid,
    studyInstanceUid: fixture.study.uid,
    seriesInstanceUid: fixture.series.uid,
    patientId: fixture.study.patient.id,
    patientName: fixture.study.patient.name,
    modality: fixture.series.modality,
    transferSyntaxUid: fixture.transferSyntaxUid,
    ...(fixture.numberOfFrames ? {numberOfFrames: fixture.numberOfFrames} : {}),
    size: file.length,
    sha256: sha256(file),
    ...extra,
  }
}

// ---------------------------------------------------------------------------------------------
// Broken files

function brokenFixtures() {
  const study = studies[9]
  const seriesInfo = series(9, 'broken', 'CT', 1, 'BROKEN')
  const list = []
  const ct = (name, {sopClassUid = SOP.ct, withSopClass = true, modality = 'CT'} = {}) => {
    const sopInstanceUid = uid(`instance/broken/${name}`)
    const elements = ctElements({study, seriesInfo: {...seriesInfo, modality}, sopInstanceUid, instanceNumber: list.length + 1, withReferences: false})
      .filter((e) => e && (withSopClass || e.tag !== 0x00080016))
      .map((e) => (e.tag === 0x00080016 ? el(0x00080016, 'UI', sopClassUid) : e))
    return {sopInstanceUid, dataset: encodeDataset(elements)}
  }
  const entry = (name, fields) => ({
    path: `broken/${name}`,
    study,
    series: seriesInfo,
    transferSyntaxUid: TS.explicitLe,
    ...fields,
  })

  {
    const {sopInstanceUid, dataset} = ct('truncated-pixel-data')
    const full = Buffer.concat([metaHeader({mediaStorageSopClassUid: SOP.ct, mediaStorageSopInstanceUid: sopInstanceUid, transferSyntaxUid: TS.explicitLe}), dataset])
    const cut = full.subarray(0, full.length - 3000)
    list.push({fixture: entry('truncated-pixel-data.dcm', {sopClassUid: SOP.ct, sopInstanceUid, description: 'CT cut 3000 bytes before the end, inside PixelData'}), bytes: cut, broken: 'truncated: the file ends inside PixelData (7FE0,0010)'})
  }
  {
    const {sopInstanceUid, dataset} = ct('truncated-meta')
    const full = Buffer.concat([metaHeader({mediaStorageSopClassUid: SOP.ct, mediaStorageSopInstanceUid: sopInstanceUid, transferSyntaxUid: TS.explicitLe}), dataset])
    list.push({fixture: entry('truncated-meta.dcm', {sopClassUid: SOP.ct, sopInstanceUid, description: 'Part 10 file cut inside the meta header (after 170 bytes)'}), bytes: full.subarray(0, 170), broken: 'truncated: the file ends inside the file meta information (group 0002)'})
  }
  {
    const bytes = Buffer.from('This is not a DICOM file.\nIt only has a .dcm name.\n'.repeat(8), 'latin1')
    list.push({fixture: entry('not-dicom.dcm', {sopClassUid: '', sopInstanceUid: '', description: 'plain text named .dcm', noUids: true}), bytes, broken: 'not DICOM: no DICM prefix at offset 128 (plain text)'})
  }
  {
    const {sopInstanceUid, dataset} = ct('missing-sop-class-meta-ok', {withSopClass: false})
    const bytes = Buffer.concat([metaHeader({mediaStorageSopClassUid: SOP.ct, mediaStorageSopInstanceUid: sopInstanceUid, transferSyntaxUid: TS.explicitLe}), dataset])
    list.push({fixture: entry('missing-sop-class-meta-ok.dcm', {sopClassUid: '', metaSopClassUid: SOP.ct, sopInstanceUid, description: 'CT without SOPClassUID; the meta header has MediaStorageSOPClassUID = CT'}), bytes, broken: 'missing SOPClassUID (0008,0016); MediaStorageSOPClassUID (0002,0002) says CT Image Storage'})
  }
  {
    const {sopInstanceUid, dataset} = ct('missing-sop-class-no-meta-class', {withSopClass: false, modality: 'MR'})
    const bytes = Buffer.concat([metaHeader({mediaStorageSopClassUid: '', mediaStorageSopInstanceUid: sopInstanceUid, transferSyntaxUid: TS.explicitLe}), dataset])
    list.push({fixture: entry('missing-sop-class-no-meta-class.dcm', {sopClassUid: '', metaSopClassUid: '', sopInstanceUid, modality: 'MR', description: 'no SOPClassUID and an empty MediaStorageSOPClassUID; Modality is MR'}), bytes, broken: 'missing SOPClassUID (0008,0016) and MediaStorageSOPClassUID (0002,0002) is empty; only Modality (MR) hints at the class'})
  }
  {
    const {sopInstanceUid, dataset} = ct('sop-class-mismatch')
    const bytes = Buffer.concat([metaHeader({mediaStorageSopClassUid: SOP.mr, mediaStorageSopInstanceUid: sopInstanceUid, transferSyntaxUid: TS.explicitLe}), dataset])
    list.push({fixture: entry('sop-class-mismatch.dcm', {sopClassUid: SOP.ct, metaSopClassUid: SOP.mr, sopInstanceUid, description: 'meta header says MR Image Storage, the dataset says CT Image Storage'}), bytes, broken: 'SOP class disagreement: MediaStorageSOPClassUID (0002,0002) is MR Image Storage, SOPClassUID (0008,0016) is CT Image Storage'})
  }
  return list
}

// ---------------------------------------------------------------------------------------------

async function main() {
  rmSync(join(fixturesDir, 'studies'), {recursive: true, force: true})
  rmSync(join(fixturesDir, 'broken'), {recursive: true, force: true})
  mkdirSync(fixturesDir, {recursive: true})

  const entries = []
  for (const fixture of fixtures) {
    const frames = fixture.elements.find((e) => e && e.tag === 0x00280008)
    if (frames) fixture.numberOfFrames = Number(frames.value)
    const {base, target} = await produce(fixture)
    dcmdumpClean(target, fixture.allowedWarning)

    // dcmdump is the independent judge of what the file says.
    const dumped = dumpValues(target)
    const expect = {
      '0002,0002': fixture.sopClassUid,
      '0002,0003': fixture.sopInstanceUid,
      '0002,0010': fixture.transferSyntaxUid,
      '0008,0016': fixture.sopClassUid,
      '0008,0018': fixture.sopInstanceUid,
      '0008,0060': fixture.series.modality,
      '0010,0020': fixture.study.patient.id,
      '0020,000d': fixture.study.uid,
      '0020,000e': fixture.series.uid,
    }
    for (const [tag, value] of Object.entries(expect)) {
      if (dumped[tag] !== value) throw new Error(`${fixture.path}: dcmdump shows (${tag}) = ${dumped[tag]}, expected ${value}`)
    }

    if (fixture.transferSyntaxUid !== TS.jpegBaseline && fixture.transferSyntaxUid !== TS.explicitLe) {
      const original = decodedPixels(base)
      const decoded = fixture.transferSyntaxUid === TS.j2kLossless ? await j2kPixels(target) : decodedPixels(target, LOSSLESS_DECODER[fixture.transferSyntaxUid])
      if (!original.equals(decoded)) throw new Error(`${fixture.path}: pixels differ after decoding`)
    }
    entries.push(manifestEntry(fixture))
  }

  for (const {fixture, bytes, broken} of brokenFixtures()) {
    const target = join(fixturesDir, fixture.path)
    mkdirSync(dirname(target), {recursive: true})
    writeFileSync(target, bytes)
    const entry = manifestEntry(fixture, {broken})
    if (fixture.noUids) {
      for (const key of ['sopClassUid', 'sopInstanceUid', 'studyInstanceUid', 'seriesInstanceUid', 'patientId', 'patientName', 'modality', 'transferSyntaxUid']) entry[key] = ''
    }
    if (fixture.metaSopClassUid !== undefined) entry.metaSopClassUid = fixture.metaSopClassUid
    if (fixture.modality) entry.modality = fixture.modality
    entries.push(entry)
  }

  const totalSize = entries.reduce((sum, e) => sum + e.size, 0)
  const manifest = {
    description: 'Synthetic DICOM fixtures made by scripts/make-fixtures.mjs; do not edit by hand, regenerate.',
    implementationClassUid: IMPLEMENTATION_CLASS_UID,
    count: entries.length,
    totalSize,
    files: entries,
  }
  writeFileSync(join(fixturesDir, 'manifest.json'), `${JSON.stringify(manifest, null, 2)}\n`)
  rmSync(work, {recursive: true, force: true})

  const good = entries.filter((e) => !e.broken)
  console.error(`fixtures: ${good.length} good, ${entries.length - good.length} broken, ${totalSize} bytes in ${relative(root, fixturesDir)}/`)
}

main().catch((error) => {
  rmSync(work, {recursive: true, force: true})
  console.error(error)
  process.exitCode = 1
})
