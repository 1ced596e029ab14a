#!/usr/bin/env node
// Writes docs/benchmarks.md from the newest results file in bench/results/ (npm run bench:docs;
// npm run bench runs it after a recorded run).
//   --from FILE   show this results file instead (e.g. bench/out/latest.json after a quick run)
//   --out FILE    write there instead of docs/benchmarks.md
//   --check       write nothing; exit 1 when the page differs from what it would write
import {readFileSync, writeFileSync} from 'node:fs'
import path from 'node:path'
import {fileURLToPath} from 'node:url'

import {BENCHMARKS_DOC, benchmarksDocFromFiles} from '../bench/lib/docs.mjs'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const args = process.argv.slice(2)
const value = (flag) => {
  const index = args.indexOf(flag)
  if (index < 0) return undefined
  if (args[index + 1] === undefined) throw new Error(`${flag} needs a file`)
  return args[index + 1]
}

for (const [index, arg] of args.entries()) {
  const isValue = index > 0 && ['--from', '--out'].includes(args[index - 1])
  if (!isValue && !['--from', '--out', '--check'].includes(arg)) {
    process.stderr.write(`unknown option ${arg}; options: --from FILE, --out FILE, --check\n`)
    process.exit(2)
  }
}

const out = value('--out') ?? BENCHMARKS_DOC
const {text, latest} = benchmarksDocFromFiles({root, from: value('--from'), out})
const target = path.resolve(root, out)
if (args.includes('--check')) {
  let current = ''
  try {
    current = readFileSync(target, 'utf8')
  } catch {
    // a missing page differs like any other
  }

  if (current !== text) {
    process.stderr.write(`${out} is not what ${latest} makes: run npm run bench:docs (edit bench/docs-template.md or bench/lib/figures.mjs, not the page)\n`)
    process.exit(1)
  }

  process.stderr.write(`${out} matches ${latest}\n`)
} else {
  writeFileSync(target, text)
  process.stderr.write(`wrote ${out} from ${latest}\n`)
}
