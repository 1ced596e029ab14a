// The checks of the image-quality module, as pure functions over parsed instances (dcmjs's
// naturalized datasets): what a PACS administrator acts on.
import {int, readFrames} from '../lib/pixels.mjs'

export const DEFAULT_SETTINGS = {
  /** An image whose stored values vary less than this (standard deviation) is blank. */
  blankMaxStdDev: 1,
  /** An image with at least this share of its pixels at the highest value it can store is saturated. */
  saturatedFraction: 0.25,
  /** Attributes every instance should carry with a value. */
  requiredAttributes: ['PatientID', 'PatientName', 'PatientBirthDate', 'PatientSex', 'StudyDate', 'AccessionNumber', 'Modality'],
  /** Attributes that must be the same in every instance of the study. */
  consistentAttributes: ['PatientID', 'PatientName', 'PatientBirthDate', 'AccessionNumber'],
  /** Report instances whose pixels could not be checked (compressed in a syntax this module does not decode). */
  reportUnchecked: true,
}

/** An attribute as text: its first value, a person name's alphabetic group, padding trimmed; '' when absent. */
const text = (value) => {
  const v = Array.isArray(value) ? value[0] : value
  if (v === undefined || v === null) return ''
  if (typeof v === 'object') return v.Alphabetic ?? JSON.stringify(v)
  return String(v).trim()
}

/** Minimum, maximum, mean, standard deviation, and how many values equal `top`. */
export function pixelStatistics(values, top) {
  let min = Infinity
  let max = -Infinity
  let sum = 0
  let sumSquares = 0
  let atTop = 0
  for (const v of values) {
    if (v < min) min = v
    if (v > max) max = v
    sum += v
    sumSquares += v * v
    if (v === top) atTop++
  }

  const mean = sum / values.length
  return {min, max, mean, stdDev: Math.sqrt(Math.max(0, sumSquares / values.length - mean * mean)), atTopFraction: atTop / values.length}
}

const round = (n, digits = 1) => Math.round(n * 10 ** digits) / 10 ** digits

/**
 * Looks at every instance of a study: `instances` are `{sopInstanceUid, seriesInstanceUid,
 * transferSyntaxUid, dataset}` (or `unreadable: reason` instead of a dataset). Returns
 * result.json's content: findings and a summary.
 */
export function checkStudy(all, settings = {}) {
  const s = {...DEFAULT_SETTINGS, ...settings}
  const findings = []
  let unchecked = 0
  for (const instance of all.filter((i) => i.dataset === undefined)) {
    unchecked++
    if (s.reportUnchecked) findings.push({label: `Not checked: the module cannot parse this instance (${instance.unreadable})`.slice(0, 1024), sopInstanceUid: instance.sopInstanceUid})
  }

  const instances = all.filter((i) => i.dataset !== undefined)

  // Per series (and acquisition): how many images arrived against ImagesInAcquisition.
  const acquisitions = new Map()
  for (const instance of instances) {
    const expected = int(instance.dataset.ImagesInAcquisition)
    if (expected === undefined) continue
    const key = `${instance.seriesInstanceUid}\u0000${int(instance.dataset.AcquisitionNumber) ?? ''}`
    const entry = acquisitions.get(key) ?? {seriesInstanceUid: instance.seriesInstanceUid, acquisition: int(instance.dataset.AcquisitionNumber), expected, count: 0}
    entry.count++
    entry.expected = Math.max(entry.expected, expected)
    acquisitions.set(key, entry)
  }

  for (const a of acquisitions.values()) {
    if (a.count < a.expected) {
      findings.push({
        label: `Images missing from acquisition${a.acquisition === undefined ? '' : ` ${a.acquisition}`}: ${a.count} of ${a.expected} (ImagesInAcquisition) arrived`,
        value: a.expected - a.count,
        unit: '{images}',
        seriesInstanceUid: a.seriesInstanceUid,
      })
    }
  }

  for (const instance of instances) {
    const read = readFrames(instance.dataset, instance.transferSyntaxUid)
    if (read === undefined) continue
    const expectedFrames = int(instance.dataset.NumberOfFrames) ?? 1
    const present = read.frames?.length ?? read.framesPresent
    // Every frame of encapsulated pixel data has at least one fragment: fewer fragments than frames is a short file.
    if (present !== undefined && present < expectedFrames) {
      findings.push({label: `Frames missing: the pixel data holds ${present} of ${expectedFrames} (NumberOfFrames)`, value: expectedFrames - present, unit: '{frames}', sopInstanceUid: instance.sopInstanceUid})
    }

    if (read.unchecked !== undefined) {
      unchecked++
      if (s.reportUnchecked) findings.push({label: `Pixels not checked: ${read.unchecked}`, sopInstanceUid: instance.sopInstanceUid})
      continue
    }

    const blank = []
    const saturated = []
    read.frames.forEach((values, index) => {
      const stats = pixelStatistics(values, read.maxValue)
      if (stats.stdDev < s.blankMaxStdDev) blank.push({frame: index + 1, stats})
      else if (stats.atTopFraction >= s.saturatedFraction) saturated.push({frame: index + 1, stats})
    })
    const frames = read.frames.length
    const which = (list) => (frames === 1 ? '' : ` (frame${list.length > 1 ? 's' : ''} ${list.map((f) => f.frame).join(', ')} of ${frames})`)
    if (blank.length > 0) {
      findings.push({label: `Blank image: no pixel variation, every value near ${round(blank[0].stats.mean)}${which(blank)}`, value: round(blank[0].stats.stdDev, 3), unit: '1', sopInstanceUid: instance.sopInstanceUid})
    }

    if (saturated.length > 0) {
      findings.push({label: `Saturated image: ${round(saturated[0].stats.atTopFraction * 100)}% of pixels at the highest storable value ${read.maxValue}${which(saturated)}`, value: round(saturated[0].stats.atTopFraction * 100), unit: '%', sopInstanceUid: instance.sopInstanceUid})
    }
  }

  for (const keyword of s.requiredAttributes) {
    const missing = instances.filter((i) => text(i.dataset[keyword]) === '')
    if (missing.length === 0) continue
    findings.push({
      label: `Missing ${keyword}: ${missing.length} of ${instances.length} instance(s) have no value`,
      value: missing.length,
      unit: '{instances}',
      ...(missing.length === 1 ? {sopInstanceUid: missing[0].sopInstanceUid} : {}),
    })
  }

  for (const keyword of s.consistentAttributes) {
    const values = [...new Set(instances.map((i) => text(i.dataset[keyword])).filter((v) => v !== ''))]
    if (values.length > 1) findings.push({label: `Inconsistent ${keyword} within the study: ${values.slice(0, 5).join(', ')}`.slice(0, 1024)})
  }

  const series = new Set(all.map((i) => i.seriesInstanceUid)).size
  const issues = findings.length - (s.reportUnchecked ? unchecked : 0)
  const summary = `Checked ${all.length} instance(s) in ${series} series: ${issues === 0 ? 'no quality issues found' : `${issues} issue(s)`}${unchecked > 0 ? `; ${unchecked} instance(s) not fully checked (compressed pixels the module does not decode, or not parseable)` : ''}.`
  return {findings, summary}
}
