import {readFileSync} from 'node:fs'
import {fileURLToPath} from 'node:url'

import {BENCHMARKS_DOC, benchmarksDocFromFiles, renderBenchmarksDoc} from '../../../bench/lib/docs.mjs'
import {FIGURES} from '../../../bench/lib/figures.mjs'
import {makeFigure, ratioRound, RESULTS_SCHEMA} from '../../../bench/lib/results.mjs'

const root = fileURLToPath(new URL('../../../', import.meta.url))

const all = (where: string, expected: number) => ({where, expected, arrived: expected})

/** A run as run.mjs records it: one figure of each kind, one failed. */
function sampleRun() {
  return {
    schema: RESULTS_SCHEMA,
    startedAt: '2026-12-02T10:00:00.000Z',
    finishedAt: '2026-12-02T10:02:30.000Z',
    durationSeconds: 150,
    options: {quick: false, only: null, rounds: 3},
    groupSeconds: {P1: 50, P2: 25},
    machine: {cpuModel: 'AMD EPYC', cores: 2, memoryGiB: 23.5, os: 'Debian GNU/Linux 12 (bookworm), Linux 6.1 x64', loadAverage: {start: [0.1, 0.2, 0.3], end: [1, 1, 1]}},
    versions: {node: 'v20.20.2', ddr: {version: '0.1.0', sha: 'abc1234', dirty: true, changed: ['src/lib/listen/intake.ts']}, orthanc: '1.10.1', dcmtk: 'v3.6.7 2022-04-22'},
    workloads: [{name: 'small', instances: 600, bytesEach: 41_640}],
    figures: [
      makeFigure({id: 'P1', title: 'end-to-end, spool on, 600 x 40 KB', target: 0.9, rounds: [ratioRound(1.8, 2, [all('the reference Orthanc', 600)]), ratioRound(1.7, 2, [all('the reference Orthanc', 600)]), ratioRound(1.9, 2, [all('the reference Orthanc', 600)])]}),
      makeFigure({id: 'P5', title: '8 senders', target: 1.2, rounds: [ratioRound(2, 1, [{where: "ddr's two Orthancs", expected: 800, arrived: 797}])]}),
      makeFigure({id: 'CPU-40k', title: 'router CPU', kind: 'cpu', unit: 'ms per instance', better: 'lower', target: 0.4, rounds: [{value: 2.04, cpuMs: 1020, instances: 500, megabytes: 19.86, arrivals: [all("ddr's two Orthancs", 500)]}]}),
      makeFigure({id: 'P3', title: 'peak RSS', kind: 'peak-rss', unit: 'MB', better: 'lower', target: 150, rounds: [{value: 127.8, idleMb: 91.8, afterHugeMb: 110.2, afterBigMb: 127.8, arrivals: [all('storescp', 1)]}]}),
      makeFigure({id: 'LAT-spool', title: 'latency', kind: 'latency', unit: 'ms', better: 'lower', rounds: [{value: 4.61, p99: 21.66, arrivals: [all('the Orthanc', 300)]}]}),
    ],
  }
}

const template = '# B\n\n{{generated-note}}\n\n{{options}}\n\n{{run}}\n\n{{table}}\n\n{{figures}}\n\n{{history}}\n'

describe('docs/benchmarks.md', () => {
  it('is what the newest results file makes (run `npm run bench:docs`; edit bench/docs-template.md or bench/lib/figures.mjs, not the page)', () => {
    const committed = readFileSync(new URL(`../../../${BENCHMARKS_DOC}`, import.meta.url), 'utf8')
    const {text, latest} = benchmarksDocFromFiles({root})
    expect(committed).toContain(`[${latest}](../${latest})`)
    expect(committed).toBe(text)
  })

  it('shows each figure of a run with its rounds, target and outcome', () => {
    const page = renderBenchmarksDoc({template, latest: {path: 'bench/results/2026-12-02-abc1234.json', results: sampleRun()}})
    expect(page).toContain('Results file: [bench/results/2026-12-02-abc1234.json](../bench/results/2026-12-02-abc1234.json).')
    expect(page).toContain('| P1 | end-to-end, spool on, 600 x 40 KB | 1.80 s | 2.00 s | **0.90** (rounds 0.90 / 0.85 / 0.95) | ≥ 0.9 | met |')
    expect(page).toContain('| CPU-40k | router CPU | - | 1020 ms CPU for 500 instances (19.86 MB) | **2.04 ms per instance** | ≤ 0.4 ms | **missed** |')
    expect(page).toContain('| P3 | peak RSS | idle 92 MB | 110 MB after the huge instance, 128 MB after the big set | **128 MB** | ≤ 150 MB | met |')
    expect(page).toContain('| LAT-spool | latency | - | p50 4.61 ms, p99 21.66 ms | **4.61 ms** p50 | - | reported |')
    expect(page).toContain('ddr abc1234 with uncommitted changes (`src/lib/listen/intake.ts`); Node.js v20.20.2; Orthanc 1.10.1; dcmtk v3.6.7 2022-04-22.')
    expect(page).toContain('load average 0.1 0.2 0.3 at the start')
    expect(page).toContain('- Run: 2026-12-02 10:00:00 UTC, 150 s (P1 50 s, P2 25 s); full workloads, 3 rounds.')
    expect(page).toContain('- Workloads (files): small 600 × 40.7 KB.')
  })

  it('never shows a ratio for a figure whose instances did not all arrive', () => {
    const page = renderBenchmarksDoc({template, latest: {path: 'r.json', results: sampleRun()}})
    const row = page.split('\n').find((line) => line.startsWith('| P5 |'))
    expect(row).toBe("| P5 | 8 senders | - | - | - | ≥ 1.2 | **failed**: round 1: 797 of 800 instances in ddr's two Orthancs |")
  })

  it('lists every figure of the catalog, with what it measures, its reference and why the comparison is fair', () => {
    const page = renderBenchmarksDoc({template, latest: {path: 'r.json', results: sampleRun()}})
    for (const spec of FIGURES) {
      expect(page).toContain(`**${spec.id}: ${spec.name}.**`)
      expect(page).toContain(`- Reference: ${spec.reference}`)
      expect(page).toContain(`- Fair? ${spec.fair}`)
    }

    expect(page).toContain('| P2 | router overhead, --no-spool | - | - | - | ≥ 0.8 | not in this run |')
    expect(page).toContain('- `--only=ID,...`')
    expect(page).toContain("- Arrival checks, every round: the reference Orthanc.")
  })

  it('keeps the history newest first, and refuses a template with a placeholder it does not know', () => {
    const older = {...sampleRun(), versions: {...sampleRun().versions, ddr: {version: '0.1.0', sha: 'fff0000', dirty: false, changed: []}}}
    const page = renderBenchmarksDoc({template, latest: {path: 'new.json', results: sampleRun()}, history: [{path: 'old.json', results: older}, {path: 'new.json', results: sampleRun()}]})
    expect(page.indexOf('| [new.json](../new.json) | abc1234 (dirty) |')).toBeLessThan(page.indexOf('| [old.json](../old.json) | fff0000 |'))
    expect(() => renderBenchmarksDoc({template: '{{tabel}}', latest: {path: 'r.json', results: sampleRun()}})).toThrow(/unknown placeholder \{\{tabel\}\}/)
  })
})
