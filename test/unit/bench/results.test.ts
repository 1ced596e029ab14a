import {mkdtempSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'

import {
  errorFigure,
  listResultsFiles,
  makeFigure,
  median,
  newestResultsFile,
  normalizeResults,
  ratioRound,
  readResultsFile,
  RESULTS_SCHEMA,
  resultsFileName,
  writeResultsFile,
} from '../../../bench/lib/results.mjs'

const all = (where: string, expected: number) => ({where, expected, arrived: expected})

describe('a figure from its rounds', () => {
  it('is the median round against the target, rounded to what the page shows', () => {
    const rounds = [ratioRound(1.8, 2.0, [all('a', 600)]), ratioRound(1.9, 2.0, [all('a', 600)]), ratioRound(1.7, 2.0, [all('a', 600)])]
    const figure = makeFigure({id: 'P1', title: 't', target: 0.9, rounds})
    expect(figure).toMatchObject({status: 'met', value: 0.9, medianRound: 0})
    // 0.9499 shows as 0.95 and is compared as such
    expect(makeFigure({id: 'P1L', title: 't', target: 0.95, rounds: [ratioRound(0.9499, 1, [all('a', 1)])]}).status).toBe('met')
    expect(makeFigure({id: 'P1', title: 't', target: 0.9, rounds: [ratioRound(0.8, 1, [all('a', 1)])]}).status).toBe('missed')
  })

  it('compares lower-is-better figures the other way, and reports one without a target', () => {
    const cpu = (value: number) => ({value, arrivals: [all('o', 500)]})
    expect(makeFigure({id: 'CPU-40k', title: 't', kind: 'cpu', better: 'lower', target: 0.4, rounds: [cpu(2.1), cpu(1.9), cpu(2.4)]})).toMatchObject({status: 'missed', value: 2.1, medianRound: 0})
    expect(makeFigure({id: 'CPU-40k', title: 't', kind: 'cpu', better: 'lower', target: 0.4, rounds: [cpu(0.35)]}).status).toBe('met')
    expect(makeFigure({id: 'CPU-512k', title: 't', kind: 'cpu', better: 'lower', target: null, rounds: [cpu(20)]}).status).toBe('reported')
  })

  it('fails, with the counts and no value, when an instance did not arrive in any round', () => {
    const rounds = [
      ratioRound(1, 1, [all('the reference Orthanc', 600), all("ddr's two Orthancs", 600)]),
      ratioRound(1, 0.5, [all('the reference Orthanc', 600), {where: "ddr's two Orthancs", expected: 600, arrived: 598}]),
    ]
    const figure = makeFigure({id: 'P1', title: 't', target: 0.9, rounds})
    expect(figure).toMatchObject({status: 'failed', value: null, medianRound: null, failure: "round 2: 598 of 600 instances in ddr's two Orthancs"})
    // the rounds stay in the file for whoever looks into it
    expect(figure.rounds).toHaveLength(2)
  })

  it('fails when an Orthanc holds more than was sent (an instance on two backends)', () => {
    expect(makeFigure({id: 'P5', title: 't', target: 1.2, rounds: [ratioRound(1, 1, [{where: 'two', expected: 800, arrived: 801}])]}).status).toBe('failed')
  })

  it('fails a round that checked nothing, and errs without rounds', () => {
    expect(makeFigure({id: 'P2', title: 't', target: 0.8, rounds: [ratioRound(1, 1, [])]})).toMatchObject({status: 'failed', failure: 'round 1 has no arrival check'})
    expect(makeFigure({id: 'P2', title: 't', target: 0.8, rounds: []}).status).toBe('error')
    expect(errorFigure({id: 'P3', title: 't', kind: 'peak-rss', target: 150}, 'timed out waiting for router p3 to drain')).toMatchObject({status: 'error', value: null, failure: 'timed out waiting for router p3 to drain'})
  })

  it('takes the upper middle of an even count', () => {
    expect(median([3, 1, 2])).toBe(2)
    expect(median([4, 1, 3, 2])).toBe(3)
  })
})

describe('results files', () => {
  let dir: string
  beforeEach(() => (dir = mkdtempSync(path.join(os.tmpdir(), 'ddr-bench-results-'))))
  afterEach(() => rmSync(dir, {recursive: true, force: true}))

  const results = (finishedAt: string, sha: string) => ({
    schema: RESULTS_SCHEMA,
    startedAt: finishedAt,
    finishedAt,
    versions: {node: 'v20', ddr: {sha, dirty: false, changed: []}, orthanc: '1.10.1', dcmtk: 'v3.6.7'},
    figures: [],
  })

  it('are named by the UTC date the run started and the commit it measured', () => {
    expect(resultsFileName('2026-12-02T23:59:00.000Z', 'abc1234')).toBe('2026-12-02-abc1234.json')
    expect(() => resultsFileName('yesterday', 'abc1234')).toThrow(/ISO/)
    expect(() => resultsFileName('2026-12-02T23:59:00.000Z', '')).toThrow(/commit/)
  })

  it('are written as JSON that reads back the same', () => {
    const file = writeResultsFile(path.join(dir, 'nested'), results('2026-12-02T10:00:00.000Z', 'abc1234'))
    expect(path.basename(file)).toBe('2026-12-02-abc1234.json')
    expect(readResultsFile(file)).toEqual(results('2026-12-02T10:00:00.000Z', 'abc1234'))
    expect(readFileSync(file, 'utf8').endsWith('}\n')).toBe(true)
  })

  it('the newest is the one that finished last, whatever its commit', () => {
    writeResultsFile(dir, results('2026-12-02T10:00:00.000Z', 'fff0000'))
    writeResultsFile(dir, results('2026-12-02T11:00:00.000Z', '0000aaa'))
    writeResultsFile(dir, results('2026-11-30T11:00:00.000Z', 'bbbbbbb'))
    writeFileSync(path.join(dir, '2026-11-01-ccccccc.json'), JSON.stringify({machine: '2 x cpu, node v20.1.0', rows: []}))
    expect(path.basename(newestResultsFile(dir)!.file)).toBe('2026-12-02-0000aaa.json')
    expect(listResultsFiles(dir).map((r) => path.basename(r.file))).toEqual(['2026-11-01-ccccccc.json', '2026-11-30-bbbbbbb.json', '2026-12-02-fff0000.json', '2026-12-02-0000aaa.json'])
    expect(newestResultsFile(path.join(dir, 'none'))).toBeUndefined()
  })

  it('from before the recorded shape keep their values and say what they lack', () => {
    const legacy = normalizeResults(
      {
        machine: '2 x AMD EPYC, 24 GiB, node v20.20.2',
        rows: [
          {id: 'P1', what: 'end-to-end', reference: 1.75, value: 2.45, ratio: 0.72, target: 0.9, met: false},
          {id: 'P3', what: 'peak RSS', reference: 91.8, value: 127.8, ratio: null, target: 150, met: true},
          {id: 'LAT-spool', what: 'latency', reference: 4.61, value: 21.66, ratio: null, target: null, met: null},
        ],
      },
      '2026-12-01-7f7e5ae.json',
    )
    expect(legacy).toMatchObject({schema: RESULTS_SCHEMA, legacy: true, finishedAt: '2026-12-01T00:00:00.000Z', versions: {node: 'v20.20.2', ddr: {sha: '7f7e5ae'}}})
    expect(legacy.figures).toEqual([
      expect.objectContaining({id: 'P1', kind: 'ratio', status: 'missed', value: 0.72, rounds: [{value: 0.72, reference: 1.75, ddr: 2.45, arrivals: []}]}),
      expect.objectContaining({id: 'P3', kind: 'peak-rss', status: 'met', value: 127.8}),
      expect.objectContaining({id: 'LAT-spool', kind: 'latency', status: 'reported', value: 4.61, rounds: [{value: 4.61, p99: 21.66, arrivals: []}]}),
    ])
    expect(() => normalizeResults({something: 'else'}, 'x.json')).toThrow(/not a ddr bench results file/)
  })
})
