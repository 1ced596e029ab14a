// @ts-check
/**
 * The pure part of the benchmark runner: a figure from its rounds (median, target, arrival
 * checks), the results file (its shape, name, where the newest one is) and the reading of results
 * files written before that shape existed.
 */
import {mkdirSync, readdirSync, readFileSync, writeFileSync} from 'node:fs'
import path from 'node:path'

export const RESULTS_SCHEMA = 'ddr-bench-results/1'

/**
 * What arrived where, counted after a round (outside its timing).
 * @typedef {{where: string, expected: number, arrived: number}} Arrival
 */

/**
 * One round of a figure: `value` is what the figure reports for it (a ratio, ms, MB); the other
 * fields are what it was computed from (`reference` and `ddr` in seconds for ratios).
 * @typedef {{value: number, reference?: number, ddr?: number, arrivals: Arrival[], [key: string]: unknown}} Round
 */

/**
 * A figure as the results file keeps it.
 * status: met / missed (against the target), reported (no target), failed (an instance did not
 * arrive: no value), error (the figure could not be measured: no value).
 * @typedef {{
 *   id: string, title: string, kind: string, unit: string, better: 'higher' | 'lower', target: number | null,
 *   status: 'met' | 'missed' | 'reported' | 'failed' | 'error', value: number | null, medianRound: number | null,
 *   failure?: string, rounds: Round[], [key: string]: unknown
 * }} Figure
 */

/**
 * The median of the values (for an even count, the upper of the two middle values).
 * @param {number[]} values
 */
export function median(values) {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]
}

/**
 * Rounds to two decimals: what the docs show and what is compared with the target, so a figure
 * shown as 0.95 against a target of 0.95 is met.
 * @param {number} value
 */
export function round2(value) {
  return Math.round(value * 100) / 100
}

/**
 * Every arrival check of the rounds that did not count what was expected, as sentences.
 * @param {Round[]} rounds
 */
export function shortfalls(rounds) {
  return rounds.flatMap((round, index) =>
    round.arrivals
      .filter((a) => a.arrived !== a.expected)
      .map((a) => `round ${index + 1}: ${a.arrived} of ${a.expected} instances in ${a.where}`),
  )
}

/**
 * A figure from its rounds: the median round's value against the target. A figure whose rounds
 * lack an arrival check, or where any check counted other than expected, is failed and has no value.
 * @param {{id: string, title: string, kind?: string, unit?: string, better?: 'higher' | 'lower', target?: number | null, rounds: Round[], [key: string]: unknown}} spec
 * @returns {Figure}
 */
export function makeFigure({id, title, kind = 'ratio', unit = 'ratio', better = 'higher', target = null, rounds, ...extra}) {
  const base = {id, title, kind, unit, better, target, ...extra, rounds}
  if (rounds.length === 0) return {...base, status: 'error', value: null, medianRound: null, failure: 'no rounds were measured'}
  const unchecked = rounds.findIndex((r) => r.arrivals.length === 0)
  if (unchecked >= 0) return {...base, status: 'failed', value: null, medianRound: null, failure: `round ${unchecked + 1} has no arrival check`}
  const missing = shortfalls(rounds)
  if (missing.length > 0) return {...base, status: 'failed', value: null, medianRound: null, failure: missing.join('; ')}
  const value = round2(median(rounds.map((r) => r.value)))
  const medianRound = rounds.findIndex((r) => r.value === median(rounds.map((x) => x.value)))
  const status = target === null ? 'reported' : (better === 'higher' ? value >= target : value <= target) ? 'met' : 'missed'
  return {...base, status, value, medianRound}
}

/**
 * A figure that could not be measured (the exception's message says why).
 * @param {{id: string, title: string, kind?: string, unit?: string, better?: 'higher' | 'lower', target?: number | null}} spec
 * @param {string} message
 * @returns {Figure}
 */
export function errorFigure({id, title, kind = 'ratio', unit = 'ratio', better = 'higher', target = null}, message) {
  return {id, title, kind, unit, better, target, status: 'error', value: null, medianRound: null, failure: message, rounds: []}
}

/**
 * A round of a ratio figure: reference time ÷ ddr time.
 * @param {number} reference seconds
 * @param {number} ddr seconds
 * @param {Arrival[]} arrivals
 * @returns {Round}
 */
export function ratioRound(reference, ddr, arrivals) {
  return {value: reference / ddr, reference, ddr, arrivals}
}

/**
 * The file name of a run's results: its UTC date and the short commit it measured.
 * @param {string} startedAt ISO time
 * @param {string} sha
 */
export function resultsFileName(startedAt, sha) {
  if (!/^\d{4}-\d{2}-\d{2}T/.test(startedAt)) throw new Error(`not an ISO time: ${startedAt}`)
  if (!/^[0-9a-f]{4,40}$/.test(sha)) throw new Error(`not a git commit: ${sha}`)
  return `${startedAt.slice(0, 10)}-${sha}.json`
}

/**
 * Writes a run's results as `<dir>/<date>-<sha>.json` (a rerun of the same commit on the same day
 * replaces it); returns the path.
 * @param {string} dir
 * @param {{startedAt: string, versions: {ddr: {sha: string}}}} results
 */
export function writeResultsFile(dir, results) {
  mkdirSync(dir, {recursive: true})
  const file = path.join(dir, resultsFileName(results.startedAt, results.versions.ddr.sha))
  writeFileSync(file, `${JSON.stringify(results, null, 2)}\n`)
  return file
}

/**
 * Reads a results file in today's shape; a file from before it (`{machine, rows}`) is converted,
 * keeping its values and saying what it lacks.
 * @param {string} file
 */
export function readResultsFile(file) {
  return normalizeResults(JSON.parse(readFileSync(file, 'utf8')), path.basename(file))
}

/**
 * Every results file of a folder, oldest first (by the time the run finished; a file from before
 * that was recorded by the date in its name).
 * @param {string} dir
 * @returns {{file: string, results: any}[]}
 */
export function listResultsFiles(dir) {
  let names
  try {
    names = readdirSync(dir).filter((name) => name.endsWith('.json'))
  } catch {
    return []
  }

  const runs = names.map((name) => ({file: path.join(dir, name), results: readResultsFile(path.join(dir, name))}))
  const key = (/** @type {{file: string, results: any}} */ run) => `${run.results.finishedAt}|${path.basename(run.file)}`
  return runs.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0))
}

/**
 * The newest results file of a folder, or undefined when there is none.
 * @param {string} dir
 */
export function newestResultsFile(dir) {
  return listResultsFiles(dir).at(-1)
}

/**
 * Today's shape of a parsed results file. The first results file (2026-12-01) held only a machine
 * line and table rows: it becomes figures with the values it has and `legacy: true` (no versions,
 * no rounds, no arrival counts).
 * @param {any} json
 * @param {string} name the file's name (its date stands in for the run's time in a legacy file)
 */
export function normalizeResults(json, name) {
  if (json.schema === RESULTS_SCHEMA) return json
  if (typeof json.machine !== 'string' || !Array.isArray(json.rows)) throw new Error(`${name}: not a ddr bench results file`)
  const date = /^(\d{4}-\d{2}-\d{2})-([0-9a-f]+)/.exec(name)
  return {
    schema: RESULTS_SCHEMA,
    legacy: true,
    startedAt: null,
    finishedAt: date ? `${date[1]}T00:00:00.000Z` : null,
    durationSeconds: null,
    options: {quick: false, only: null, rounds: 3},
    machine: {description: json.machine},
    versions: {node: /node (v[\d.]+)/.exec(json.machine)?.[1] ?? null, ddr: {sha: date?.[2] ?? null, dirty: null}, orthanc: null, dcmtk: null},
    figures: json.rows.map(legacyFigure),
  }
}

/** @param {any} row */
function legacyFigure(row) {
  const status = row.met === null ? 'reported' : row.met ? 'met' : 'missed'
  const common = {id: row.id, title: row.what, target: row.target, status, medianRound: 0, legacy: true}
  if (row.id === 'P3') {
    return {...common, kind: 'peak-rss', unit: 'MB', better: 'lower', value: row.value, rounds: [{value: row.value, idleMb: row.reference, arrivals: []}]}
  }

  if (String(row.id).startsWith('LAT')) {
    return {...common, kind: 'latency', unit: 'ms', better: 'lower', value: row.reference, rounds: [{value: row.reference, p99: row.value, arrivals: []}]}
  }

  return {...common, kind: 'ratio', unit: 'ratio', better: 'higher', value: row.ratio, rounds: [{value: row.ratio, reference: row.reference, ddr: row.value, arrivals: []}]}
}
