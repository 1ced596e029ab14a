// @ts-check
/**
 * The options of `npm run bench` (node bench/run.mjs): one list that both the argument parser and
 * the generated header of docs/benchmarks.md read, so the page cannot describe options that the
 * runner does not take.
 */

/** Figure groups in the order they run; `--only` takes a group or any figure id of it. */
export const GROUPS = {
  P1: ['P1', 'P1b', 'P1L'],
  P2: ['P2', 'P2b', 'P2c'],
  P4: ['P4', 'P4c', 'P4b', 'P4-3000'],
  P5: ['P5'],
  CL: ['CL3'],
  W: ['W2'],
  QR: ['QR-move'],
  CPU: ['CPU-40k', 'CPU-512k'],
  P3: ['P3'],
  LAT: ['LAT-spool', 'LAT-pass'],
}

export const BENCH_OPTIONS = [
  {flag: '--quick', description: 'smaller workloads and one round each: checks the machinery in a minute or so; its figures say little.'},
  {flag: '--only=ID,...', description: `only these groups of figures (${Object.keys(GROUPS).join(', ')}); a figure id selects its group (\`--only=P1b\` runs P1, P1b and P1L).`},
  {flag: '--record', description: 'write the results file and docs/benchmarks.md even for a `--quick` or `--only` run (they are not recorded otherwise).'},
  {flag: '--no-record', description: 'a full run that writes bench/out/ only.'},
  {flag: '--help', description: 'print these options.'},
]

export const BENCH_ENVIRONMENT = [
  {name: 'DDR_BENCH_ROUTER_NODE_ARGS', description: 'extra Node.js options for every `ddr listen` the bench starts, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof` to profile the router.'},
]

/**
 * Parses the runner's arguments.
 * @param {string[]} argv
 * @returns {{quick: boolean, only: string[] | null, record: boolean, help: boolean}} `only` lists group names; `record` says whether bench/results/ and docs/benchmarks.md are written
 */
export function parseBenchArgs(argv) {
  let quick = false
  let help = false
  /** @type {string[] | null} */
  let only = null
  /** @type {boolean | undefined} */
  let record
  for (const arg of argv) {
    if (arg === '--quick') quick = true
    else if (arg === '--help' || arg === '-h') help = true
    else if (arg === '--record') record = true
    else if (arg === '--no-record') record = false
    else if (arg.startsWith('--only=')) only = [...new Set(arg.slice(7).split(',').filter(Boolean).map(groupOf))]
    else throw new Error(`unknown option ${arg}; options: ${BENCH_OPTIONS.map((o) => o.flag).join(' ')}`)
  }

  return {quick, only, record: record ?? (!quick && only === null), help}
}

/**
 * The group a figure id or group name belongs to (case-insensitive).
 * @param {string} id
 */
export function groupOf(id) {
  const wanted = id.toLowerCase()
  for (const [group, ids] of Object.entries(GROUPS)) {
    if (group.toLowerCase() === wanted || ids.some((figure) => figure.toLowerCase() === wanted)) return group
  }

  throw new Error(`--only: no figure or group ${id}; groups: ${Object.keys(GROUPS).join(', ')}; figures: ${Object.values(GROUPS).flat().join(', ')}`)
}

/** The options as the text `--help` prints. */
export function usage() {
  return [
    'node bench/run.mjs [options]   (npm run bench -- [options] builds first)',
    '',
    ...BENCH_OPTIONS.map((o) => `  ${o.flag.padEnd(16)} ${o.description}`),
    '',
    ...BENCH_ENVIRONMENT.map((e) => `  ${e.name}  ${e.description}`),
    '',
  ].join('\n')
}
