import {readdirSync, realpathSync, statSync, type Stats} from 'node:fs'
import path from 'node:path'

import {DdrError} from '../errors.js'
import {expandGlob, isGlobPattern} from './glob.js'
import {looksLikeZip, ZipArchive, type ZipEntry} from './zip.js'

/** Where an input's bytes are. */
export type InputSource = {kind: 'file'; path: string} | {kind: 'zip-entry'; archive: ZipArchive; entry: ZipEntry}

/** One candidate file to send: a file on disk or an entry of a ZIP archive. */
export interface InputItem {
  /** How it is named in progress, results and errors: the path as given, or "archive.zip!entry/name". */
  name: string
  /** Bytes (uncompressed, for ZIP entries). */
  size: number
  source: InputSource
}

/** An input that could not be listed (an unreadable ZIP archive): it counts as failed. */
export interface InputProblem {
  name: string
  error: DdrError
}

/** Everything the arguments named, in order; close() releases the open ZIP archives. */
export interface DiscoveredInputs {
  items: InputItem[]
  problems: InputProblem[]
  close(): void
}

export interface DiscoverOptions {
  /** Folder relative paths and globs are resolved from (default: the working directory). */
  cwd?: string
}

const ZIP_EXTENSION = /\.zip$/i

/** The file's status, or undefined when it cannot be had (missing, a broken link, no permission). */
function statOf(absolute: string): Stats | undefined {
  try {
    return statSync(absolute)
  } catch {
    return undefined
  }
}

function realPathOf(absolute: string): string {
  try {
    return realpathSync.native(absolute)
  } catch {
    return absolute
  }
}

/** Names an entry of an archive the way results and messages show it. */
export function zipEntryName(archive: string, entry: string): string {
  return `${archive}!${entry}`
}

/**
 * Expands command-line arguments into the files to send: plain files, folders (recursively,
 * sorted), glob patterns (`*`, `?`, `[...]`, `{a,b}`, `**`; quote them so ddr expands them) and
 * ZIP archives (their entries, read in place; archives found in folders are recognised by the
 * .zip extension, archives named on the command line also by their signature). The same file
 * named twice (also through a symbolic link: files are compared by real path) is listed once,
 * under the first name given. Whether an item is DICOM is decided later, by reading it.
 *
 * Throws DdrError USAGE for an argument that names nothing (a missing path, a glob without match).
 */
export async function discoverInputs(args: string[], options: DiscoverOptions = {}): Promise<DiscoveredInputs> {
  const cwd = options.cwd ?? process.cwd()
  const items: InputItem[] = []
  const problems: InputProblem[] = []
  const archives: ZipArchive[] = []
  const seenFiles = new Set<string>()
  const seenFolders = new Set<string>()

  const addArchive = async (name: string, absolute: string) => {
    try {
      const archive = await ZipArchive.open(absolute)
      archives.push(archive)
      for (const entry of archive.entries) items.push({name: zipEntryName(name, entry.name), size: entry.size, source: {kind: 'zip-entry', archive, entry}})
    } catch (error) {
      if (!(error instanceof DdrError)) throw error
      problems.push({name, error: new DdrError(error.code, error.message.replace(absolute, name), {hint: error.hint, cause: error.cause})})
    }
  }

  // Listing uses the synchronous calls: a folder of thousands of files costs a stat each, and a
  // thread-pool round trip per stat took longer than the stat itself (30-50 ms per 600 files).
  const addFile = async (name: string, absolute: string, size: number, checkSignature: boolean, knownReal?: string) => {
    // By real path: a file named through a symbolic link and by its own path is sent once.
    const real = knownReal ?? realPathOf(absolute)
    if (seenFiles.has(real)) return
    seenFiles.add(real)
    const isZip = ZIP_EXTENSION.test(name) || (checkSignature && size >= 4 && (await looksLikeZip(absolute)))
    if (isZip) await addArchive(name, absolute)
    else items.push({name, size, source: {kind: 'file', path: absolute}})
  }

  const addFolder = async (name: string, absolute: string, knownReal?: string) => {
    const real = knownReal ?? realpathSync.native(absolute)
    if (seenFolders.has(real)) return // a symbolic link back up the tree, or the same folder twice
    seenFolders.add(real)
    const entries = readdirSync(absolute, {withFileTypes: true})
    entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    for (const entry of entries) {
      const childName = path.join(name, entry.name)
      const childPath = path.join(absolute, entry.name)
      // Entries that are not links sit at their real place inside the folder's real path.
      if (entry.isDirectory()) {
        await addFolder(childName, childPath, path.join(real, entry.name))
      } else if (entry.isFile()) {
        await addFile(childName, childPath, statSync(childPath).size, false, path.join(real, entry.name))
      } else if (entry.isSymbolicLink()) {
        const target = statOf(childPath)
        if (target?.isDirectory()) await addFolder(childName, childPath)
        else if (target?.isFile()) await addFile(childName, childPath, target.size, false)
      }
    }
  }

  const addPath = async (name: string, checkSignature: boolean): Promise<boolean> => {
    const absolute = path.resolve(cwd, name)
    const info = statOf(absolute)
    if (info === undefined) return false
    if (info.isDirectory()) await addFolder(name, absolute)
    else await addFile(name, absolute, info.size, checkSignature)
    return true
  }

  try {
    for (const arg of args) {
      if (await addPath(arg, true)) continue
      if (!isGlobPattern(arg)) {
        throw new DdrError('USAGE', `${arg}: no such file or folder`, {hint: 'check the path; folders are sent recursively, quote glob patterns ("studies/**/*.dcm")'})
      }
      const matches = await expandGlob(arg, cwd)
      if (matches.length === 0) throw new DdrError('USAGE', `no file matches ${arg}`, {hint: 'glob patterns support *, ?, [abc], {a,b} and ** (any folders)'})
      for (const match of matches) await addPath(match, true)
    }
  } catch (error) {
    for (const archive of archives) archive.close()
    throw error
  }

  return {
    items,
    problems,
    close() {
      for (const archive of archives) archive.close()
    },
  }
}
