// Part of `npm run build`: the console's files (src/lib/console/ui) and the third-party files it
// serves (Preact, htm, uPlot, from node_modules) go to dist/lib/console/ui, so the package serves
// them offline, without those packages installed and without any CDN.
import {copyFileSync, mkdirSync, readdirSync, readFileSync} from 'node:fs'
import path from 'node:path'
import {fileURLToPath} from 'node:url'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const source = path.join(root, 'src/lib/console/ui')
const target = path.join(root, 'dist/lib/console/ui')
mkdirSync(path.join(target, 'vendor'), {recursive: true})
for (const name of readdirSync(source)) copyFileSync(path.join(source, name), path.join(target, name))

// The list lives in src/lib/console/assets.ts (VENDOR_FILES): read it from there, so there is one.
const assets = readFileSync(path.join(root, 'src/lib/console/assets.ts'), 'utf8')
const block = /VENDOR_FILES[^{]*\{([^}]*)\}/.exec(assets)
if (block === null) throw new Error('build-console: VENDOR_FILES not found in src/lib/console/assets.ts')
const vendor = [...block[1].matchAll(/'([^']+)':\s*'([^']+)'/g)]
if (vendor.length === 0) throw new Error('build-console: VENDOR_FILES is empty')
for (const [, name, from] of vendor) copyFileSync(path.join(root, 'node_modules', from), path.join(target, 'vendor', name))
console.error(`console: ${readdirSync(source).length} files and ${vendor.length} vendor files in ${path.relative(root, target)}`)
