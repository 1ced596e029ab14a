import {readdir} from 'node:fs/promises'
import path from 'node:path'

const MAGIC = /[*?[{]/

/** Whether a command-line argument is a glob pattern rather than a plain path. */
export function isGlobPattern(text: string): boolean {
  return MAGIC.test(text)
}

function escapeRegExp(text: string): string {
  return text.replace(/[.+^$()|\\/\]]/g, '\\$&')
}

/** Translates one path segment of a glob (no "/") into a regular expression source. */
function segmentSource(segment: string): string {
  let source = ''
  let braces = 0
  for (let index = 0; index < segment.length; index++) {
    const char = segment[index]
    if (char === '\\' && index + 1 < segment.length) {
      source += escapeRegExp(segment[++index])
    } else if (char === '*') {
      source += '[^/]*'
    } else if (char === '?') {
      source += '[^/]'
    } else if (char === '[') {
      const close = segment.indexOf(']', index + 2)
      if (close < 0) {
        source += '\\['
        continue
      }
      let body = segment.slice(index + 1, close).replace(/\\/g, '\\\\')
      if (body.startsWith('!')) body = `^${body.slice(1)}`
      source += `[${body}]`
      index = close
    } else if (char === '{') {
      braces++
      source += '(?:'
    } else if (char === '}' && braces > 0) {
      braces--
      source += ')'
    } else if (char === ',' && braces > 0) {
      source += '|'
    } else {
      source += escapeRegExp(char)
    }
  }
  return source + ')'.repeat(braces)
}

/**
 * A regular expression for a glob, matched against "/"-separated paths relative to where the
 * pattern's first magic segment starts. Supports `*`, `?`, `[abc]`, `[!abc]`, `{a,b}` and `**`
 * (any number of folders). Like a shell, `*` and `?` do not match a leading dot.
 */
export function globToRegExp(pattern: string): RegExp {
  const segments = pattern.split('/').filter((segment) => segment !== '')
  let source = ''
  segments.forEach((segment, index) => {
    const last = index === segments.length - 1
    if (segment === '**') {
      source += last ? '(?:(?!\\.)[^/]*(?:/(?!\\.)[^/]*)*)?' : '(?:(?!\\.)[^/]*/)*'
      return
    }
    const noLeadingDot = segment.startsWith('.') ? '' : '(?!\\.)'
    source += `${noLeadingDot}${segmentSource(segment)}${last ? '' : '/'}`
  })
  return new RegExp(`^${source}$`)
}

/**
 * What a glob pattern matches, sorted: files, and folders whose whole path matches (the caller
 * walks those). The folder part before the first magic segment is taken literally; below it the
 * tree is walked as deep as the pattern reaches, without following symbolic links to folders.
 */
export async function expandGlob(pattern: string, cwd: string = process.cwd()): Promise<string[]> {
  const normalized = pattern.split(path.sep).join('/')
  const segments = normalized.split('/')
  const firstMagic = segments.findIndex((segment) => isGlobPattern(segment))
  if (firstMagic < 0) return []
  const baseText = segments.slice(0, firstMagic).join('/')
  const base = baseText === '' ? (normalized.startsWith('/') ? '/' : '.') : baseText
  const restSegments = segments.slice(firstMagic).filter((segment) => segment !== '')
  const matcher = globToRegExp(restSegments.join('/'))
  const maxDepth = restSegments.includes('**') ? Number.POSITIVE_INFINITY : restSegments.length
  const found: string[] = []

  const walk = async (relative: string, depth: number): Promise<void> => {
    let entries
    try {
      entries = await readdir(path.resolve(cwd, base, relative), {withFileTypes: true})
    } catch {
      return // unreadable or vanished folders simply match nothing
    }
    for (const entry of entries.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))) {
      const child = relative === '' ? entry.name : `${relative}/${entry.name}`
      if (matcher.test(child)) {
        found.push(baseText === '' && base === '.' ? child : `${base.replace(/\/$/, '')}/${child}`)
      } else if (entry.isDirectory() && depth < maxDepth) {
        await walk(child, depth + 1)
      }
    }
  }

  await walk('', 1)
  return found.map((file) => file.split('/').join(path.sep))
}
