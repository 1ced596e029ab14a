import {randomBytes} from 'node:crypto'
import {mkdir, readdir, readFile, stat} from 'node:fs/promises'
import path from 'node:path'

import {DdrError} from '../errors.js'
import {writeFileAtomic as writeDurably} from '../fs/durable.js'
import {type Column, formatTable, painter} from '../output/table.js'
import {hasPart10Prefix} from './part10.js'
import {type NewUidOptions, type RepairChange, repairPart10, type SopClassSource} from './repair.js'
import {generateUid, isValidUid, sopClassName} from './uids.js'

/** fixed / would-fix (dry run) / already-fine / cannot-fix (see reason) / skipped (not an instance). */
export type FixSopStatus = 'fixed' | 'would-fix' | 'already-fine' | 'cannot-fix' | 'skipped'

/** What fix-sop did with one file. */
export interface FixSopFileResult {
  path: string
  status: FixSopStatus
  /** Where the file was written: the path itself (in place) or its copy under --out. */
  output?: string
  reason?: string
  sopClassUid?: string
  sopClassName?: string
  /** Where the SOP class came from: the dataset, the meta header, Modality, or --sop-class. */
  sopClassSource?: SopClassSource
  /** The elements changed (or, in a dry run, that would change). */
  changes: RepairChange[]
}

/** What `ddr fix-sop --json` prints. */
export interface FixSopResult {
  dryRun: boolean
  outDir?: string
  files: FixSopFileResult[]
  summary: {files: number; fixed: number; wouldFix: number; alreadyFine: number; cannotFix: number; skipped: number}
}

/** Options for fixSopFiles. */
export interface FixSopOptions {
  /** The class for files whose class neither the meta header nor Modality tells. */
  sopClassUid?: string
  /** A new SOPInstanceUID for every file. */
  newUids?: boolean
  /** A new StudyInstanceUID per original study (and SeriesInstanceUID per series); implies newUids. */
  newStudyUids?: boolean
  /** Write copies here (keeping the paths below each folder argument) instead of in place. */
  outDir?: string
  dryRun?: boolean
  signal?: AbortSignal
  /** Called after each file, for progress. */
  onFile?: (result: FixSopFileResult) => void
}

interface Input {
  path: string
  /** Path of the output copy relative to --out. */
  relative: string
  /** Found by walking a folder (a non-DICOM file there is skipped, not an error). */
  fromFolder: boolean
}

const TEMP_MARK = '.ddr-tmp-'

async function collect(paths: string[], outDir: string | undefined): Promise<Input[]> {
  const inputs: Input[] = []
  const walk = async (dir: string, root: string): Promise<void> => {
    if (outDir !== undefined && path.resolve(dir) === outDir) return
    const entries = (await readdir(dir, {withFileTypes: true})).sort((a, b) => a.name.localeCompare(b.name))
    for (const entry of entries) {
      const full = path.join(dir, entry.name)
      if (entry.name.includes(TEMP_MARK)) continue
      if (entry.isDirectory()) await walk(full, root)
      else if (entry.isFile() || (entry.isSymbolicLink() && (await stat(full).catch(() => undefined))?.isFile())) {
        inputs.push({path: full, relative: path.relative(root, full), fromFolder: true})
      }
    }
  }
  for (const given of paths) {
    const info = await stat(given).catch(() => undefined)
    if (!info) throw new DdrError('USAGE', `${given}: no such file or folder`, {hint: 'check the path; nothing was changed'})
    if (info.isDirectory()) await walk(given, given)
    else inputs.push({path: given, relative: path.basename(given), fromFolder: false})
  }
  // A file named on its own and found in a folder too is done once, as named.
  const named = new Set(inputs.filter((input) => !input.fromFolder).map((input) => path.resolve(input.path)))
  const seen = new Set<string>()
  return inputs.filter((input) => {
    const key = path.resolve(input.path)
    if (seen.has(key) || (input.fromFolder && named.has(key))) return false
    seen.add(key)
    return true
  })
}

/** Writes through a temp file in the target's folder and a rename: the target is never half written. */
export async function writeFileAtomic(target: string, bytes: Buffer, mode = 0o644): Promise<void> {
  const temp = path.join(path.dirname(target), `.${path.basename(target)}${TEMP_MARK}${process.pid}-${randomBytes(4).toString('hex')}`)
  await writeDurably(target, bytes, {temp, mode, fullSync: true})
}

function uidMapper(): (original: string | undefined) => string {
  const map = new Map<string, string>()
  return (original) => {
    const key = original ?? ''
    let uid = map.get(key)
    if (uid === undefined) {
      uid = generateUid()
      map.set(key, uid)
    }
    return uid
  }
}

/**
 * Repairs SOPClassUID in files and folders (recursive): see repairPart10 for the rules. Writes
 * each repaired file atomically, in place or under `outDir` (where files already fine are copied
 * too, so the folder holds the complete set); `dryRun` writes nothing. Never throws for a bad
 * file: each file gets a status and a reason. Throws DdrError USAGE for a path that does not
 * exist or an invalid --sop-class, before anything is touched.
 */
export async function fixSopFiles(paths: string[], options: FixSopOptions = {}): Promise<FixSopResult> {
  if (options.sopClassUid !== undefined && !isValidUid(options.sopClassUid)) {
    throw new DdrError('USAGE', `--sop-class ${JSON.stringify(options.sopClassUid)} is not a valid UID (digits and dots, no leading zeros, at most 64 characters)`, {
      hint: 'e.g. --sop-class 1.2.840.10008.5.1.4.1.1.7 (Secondary Capture Image Storage)',
    })
  }
  const outDir = options.outDir === undefined ? undefined : path.resolve(options.outDir)
  const inputs = await collect(paths, outDir)
  const newUids: NewUidOptions | undefined =
    options.newUids || options.newStudyUids
      ? {sopInstanceUid: generateUid, ...(options.newStudyUids ? {studyInstanceUid: uidMapper(), seriesInstanceUid: uidMapper()} : {})}
      : undefined
  const outputs = new Map<string, string>()
  const files: FixSopFileResult[] = []

  for (const input of inputs) {
    if (options.signal?.aborted) break
    const result = await fixOne(input, {sopClassUid: options.sopClassUid, dryRun: options.dryRun, outDir, newUids, outputs})
    files.push(result)
    options.onFile?.(result)
  }

  const count = (status: FixSopStatus) => files.filter((file) => file.status === status).length
  return {
    dryRun: options.dryRun ?? false,
    ...(outDir === undefined ? {} : {outDir}),
    files,
    summary: {files: files.length, fixed: count('fixed'), wouldFix: count('would-fix'), alreadyFine: count('already-fine'), cannotFix: count('cannot-fix'), skipped: count('skipped')},
  }
}

interface FixOneOptions {
  sopClassUid?: string
  outDir?: string
  dryRun?: boolean
  newUids?: NewUidOptions
  outputs: Map<string, string>
}

async function fixOne(input: Input, options: FixOneOptions): Promise<FixSopFileResult> {
  const base = {path: input.path, changes: [] as RepairChange[]}
  let bytes: Buffer
  let mode: number
  try {
    bytes = await readFile(input.path)
    mode = (await stat(input.path)).mode & 0o777
  } catch (error) {
    return {...base, status: 'cannot-fix', reason: `cannot read it: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`}
  }
  if (input.fromFolder && !hasPart10Prefix(bytes)) return {...base, status: 'skipped', reason: 'not a DICOM Part 10 file'}

  const outcome = repairPart10(bytes, {fallbackSopClassUid: options.sopClassUid, newUids: options.newUids})
  const result: FixSopFileResult = {...base, status: 'cannot-fix', changes: outcome.changes}
  if (outcome.reason !== undefined) result.reason = outcome.reason
  if (outcome.sopClassUid !== undefined) {
    result.sopClassUid = outcome.sopClassUid
    const name = sopClassName(outcome.sopClassUid)
    if (name !== undefined) result.sopClassName = name
    result.sopClassSource = outcome.sopClassSource
  }
  if (outcome.status === 'cannot-fix' || outcome.status === 'skipped') return {...result, status: outcome.status}

  const changed = outcome.status === 'changed'
  const target = options.outDir === undefined ? input.path : path.join(options.outDir, input.relative)
  const claimedBy = options.outputs.get(target)
  if (claimedBy !== undefined && options.outDir !== undefined) {
    return {...result, status: 'cannot-fix', reason: `its copy ${target} would overwrite the copy of ${claimedBy}`}
  }
  options.outputs.set(target, input.path)
  if (options.dryRun) return {...result, status: changed ? 'would-fix' : 'already-fine'}
  if (!changed && options.outDir === undefined) return {...result, status: 'already-fine'}
  try {
    if (options.outDir !== undefined) await mkdir(path.dirname(target), {recursive: true})
    await writeFileAtomic(target, outcome.bytes ?? bytes, mode)
  } catch (error) {
    return {...result, status: 'cannot-fix', reason: `cannot write ${target}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message}`}
  }
  return {...result, status: changed ? 'fixed' : 'already-fine', output: target}
}

const statusText: Record<FixSopStatus, string> = {
  fixed: 'fixed',
  'would-fix': 'would fix',
  'already-fine': 'already fine',
  'cannot-fix': 'cannot fix',
  skipped: 'skipped',
}

const NEW_UID_NAMES = new Set(['SOPInstanceUID', 'StudyInstanceUID', 'SeriesInstanceUID'])

function describeChanges(file: FixSopFileResult): string {
  if (file.changes.length === 0) return file.reason ?? ''
  const shown = (change: RepairChange, value: string) => (change.name.endsWith('ClassUID') ? (sopClassName(value) ?? value) : value)
  const sources: Record<SopClassSource, string> = {dataset: 'from the dataset', meta: 'from the meta header', modality: 'inferred from Modality', user: 'from --sop-class'}
  const newInstanceUid = file.changes.some((change) => change.where === 'dataset' && change.name === 'SOPInstanceUID')
  return file.changes
    .filter((change) => !(newInstanceUid && change.name === 'MediaStorageSOPInstanceUID'))
    .map((change) => {
      // New UIDs are long and random: the table says which, --json has the values.
      if (change.where === 'dataset' && NEW_UID_NAMES.has(change.name) && change.from !== undefined) return `new ${change.name}`
      const source = change.name === 'SOPClassUID' && file.sopClassSource ? ` (${sources[file.sopClassSource]})` : ''
      const from = change.from === undefined ? 'added:' : `${shown(change, change.from)} ->`
      return `${change.where === 'meta' ? 'meta ' : ''}${change.name} ${from} ${shown(change, change.to)}${source}`
    })
    .join('; ')
}

/** The human report: one row per file, then a summary line. */
export function formatFixSopReport(result: FixSopResult, options: {color?: boolean} = {}): string {
  const paint = painter(options.color ?? false)
  const colours: Record<FixSopStatus, (text: string) => string> = {
    fixed: paint.green,
    'would-fix': paint.cyan,
    'already-fine': paint.dim,
    'cannot-fix': paint.red,
    skipped: paint.yellow,
  }
  const columns: Array<Column<FixSopFileResult>> = [
    {header: 'FILE', value: (file) => file.path},
    {header: 'STATUS', value: (file) => statusText[file.status], paint: (file, text) => colours[file.status](text)},
    {header: 'DETAIL', value: describeChanges},
  ]
  const {summary} = result
  const parts = [
    result.dryRun ? `${summary.wouldFix} would be fixed` : `${summary.fixed} fixed`,
    `${summary.alreadyFine} already fine`,
    `${summary.cannotFix} cannot be fixed`,
    ...(summary.skipped > 0 ? [`${summary.skipped} skipped`] : []),
  ]
  const where = result.dryRun ? ' (dry run: nothing written)' : result.outDir ? ` (copies in ${result.outDir})` : ''
  const table = result.files.length === 0 ? 'no files found' : formatTable(result.files, columns, options)
  return `${table}\n\n${summary.files} file${summary.files === 1 ? '' : 's'}: ${parts.join(', ')}${where}`
}
