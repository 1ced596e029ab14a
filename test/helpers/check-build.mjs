// Jest globalSetup of the integration project (plain JavaScript: Jest loads a globalSetup with
// Node's own loader, which cannot resolve the .js imports of our TypeScript helpers).
//
// The integration tests run the compiled CLI (bin/run.js loads dist/), which `npm test` does not
// rebuild, so a stale dist/ would test old code while the in-process tests run the new. This stops
// the run at once and names what is stale. It does not rebuild: `npm run build` deletes dist/ under
// any test run in progress, and CI (.ci/run) and `npm start` build before testing anyway.
import {existsSync, readdirSync, statSync} from 'node:fs'
import path from 'node:path'
import {fileURLToPath} from 'node:url'

const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..')

/** Every file under `dir` (relative, `/`-separated) whose name ends with `suffix`. */
function filesUnder(dir, suffix) {
  if (!existsSync(dir)) return []
  return readdirSync(dir, {recursive: true})
    .map((name) => String(name).split(path.sep).join('/'))
    .filter((name) => name.endsWith(suffix))
}

const mtime = (file) => statSync(file).mtimeMs

/**
 * Why `root`/dist cannot be trusted to be the code in `root`/src, or undefined when it can: dist/
 * missing, a source file without its compiled file or newer than it, a compiled file whose source is
 * gone, or oclif.manifest.json (the commands' flags) older than a command. Judged by modification
 * times, so a file touched without a change also counts: a rebuild settles it.
 * @param {string} root
 * @returns {string | undefined}
 */
export function staleBuild(root) {
  const src = path.join(root, 'src')
  const dist = path.join(root, 'dist')
  if (!existsSync(dist)) return 'dist/ does not exist (nothing built yet)'
  const problems = []
  const sources = filesUnder(src, '.ts').filter((name) => !name.endsWith('.d.ts'))
  for (const source of sources) {
    const compiled = source.replace(/\.ts$/, '.js')
    if (!existsSync(path.join(dist, compiled))) problems.push(`src/${source} has no dist/${compiled}`)
    else if (mtime(path.join(src, source)) > mtime(path.join(dist, compiled))) problems.push(`src/${source} is newer than dist/${compiled}`)
  }

  const sourceSet = new Set(sources)
  for (const compiled of filesUnder(dist, '.js')) {
    if (sourceSet.has(compiled.replace(/\.js$/, '.ts'))) continue
    // Copied, not compiled: the console's own files (same path under src/) and its vendored ones
    // (from node_modules, by scripts/build-console.mjs).
    if (compiled.startsWith('lib/console/ui/vendor/')) continue
    const copied = path.join(src, compiled)
    if (existsSync(copied)) {
      if (mtime(copied) > mtime(path.join(dist, compiled))) problems.push(`src/${compiled} is newer than dist/${compiled}`)
      continue
    }

    problems.push(`dist/${compiled} has no source in src/ (removed or renamed)`)
  }

  const manifest = path.join(root, 'oclif.manifest.json')
  const commands = sources.filter((name) => name.startsWith('commands/'))
  const newestCommand = commands.sort((a, b) => mtime(path.join(src, b)) - mtime(path.join(src, a)))[0]
  if (!existsSync(manifest)) problems.push('oclif.manifest.json does not exist')
  else if (newestCommand !== undefined && mtime(path.join(src, newestCommand)) > mtime(manifest)) problems.push(`src/${newestCommand} is newer than oclif.manifest.json`)
  if (problems.length === 0) return undefined
  return `${problems.slice(0, 5).join('; ')}${problems.length > 5 ? ` (and ${problems.length - 5} more)` : ''}`
}

export default function checkBuild() {
  const stale = staleBuild(repoRoot)
  if (stale === undefined) return
  throw new Error(`the integration tests run the compiled CLI (dist/), and dist/ is not the code in src/: ${stale}. Run npm run build (npm start also builds), then npm test again.`)
}
