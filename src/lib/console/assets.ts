import {existsSync} from 'node:fs'
import {readFile} from 'node:fs/promises'
import type http from 'node:http'
import path from 'node:path'
import {fileURLToPath} from 'node:url'

/** The console's own files (index.html, app.js, style.css): src/lib/console/ui, copied to dist/lib/console/ui by the build. */
const UI_DIR = fileURLToPath(new URL('./ui/', import.meta.url))

/**
 * Third-party files the console serves, under /console/vendor/NAME: copied from node_modules into
 * dist/lib/console/ui/vendor by `npm run build` (scripts/build-console.mjs), so the package works
 * offline and without these packages installed. From a source checkout (tests) they are read from
 * node_modules.
 */
export const VENDOR_FILES: Record<string, string> = {
  'preact.mjs': 'preact/dist/preact.mjs',
  'hooks.mjs': 'preact/hooks/dist/hooks.mjs',
  'htm.mjs': 'htm/dist/htm.mjs',
  'uPlot.iife.min.js': 'uplot/dist/uPlot.iife.min.js',
  'uPlot.min.css': 'uplot/dist/uPlot.min.css',
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
}

/** Where a console file is on disk, or undefined for a name that is not one. */
export function assetPath(name: string): string | undefined {
  if (name === '' || name === 'index.html') return path.join(UI_DIR, 'index.html')
  if (name.startsWith('vendor/')) {
    const vendor = VENDOR_FILES[name.slice('vendor/'.length)]
    if (vendor === undefined) return undefined
    const copied = path.join(UI_DIR, name)
    if (existsSync(copied)) return copied
    // src/lib/console -> the checkout's node_modules
    return path.resolve(UI_DIR, '../../../../node_modules', vendor)
  }

  if (!/^[a-z0-9-]+\.(js|css|svg)$/.test(name)) return undefined
  return path.join(UI_DIR, name)
}

const SECURITY_HEADERS = {
  'x-content-type-options': 'nosniff',
  'x-frame-options': 'DENY',
  'referrer-policy': 'no-referrer',
  // Every script and style is the console's own: nothing from elsewhere, no inline script.
  'content-security-policy': "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
}

/** Answers GET /console/NAME from the console's files; false when there is no such file. */
export async function serveAsset(name: string, response: http.ServerResponse): Promise<boolean> {
  const file = assetPath(name)
  if (file === undefined) return false
  let body: Buffer
  try {
    body = await readFile(file)
  } catch {
    return false
  }

  // preact/hooks imports "preact" by its package name; the browser has no package map (an inline
  // import map would need an unsafe CSP), so the name becomes the file beside it.
  if (name === 'vendor/hooks.mjs') body = Buffer.from(body.toString('utf8').replace(/from\s*(["'])preact\1/g, 'from"./preact.mjs"'))
  response.writeHead(200, {
    'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream',
    'content-length': body.length,
    // Small files, served from this machine: always revalidate, so an upgrade shows at once.
    'cache-control': 'no-cache',
    ...SECURITY_HEADERS,
  })
  response.end(body)
  return true
}
