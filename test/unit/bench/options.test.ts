import {GROUPS, groupOf, parseBenchArgs, usage} from '../../../bench/lib/options.mjs'
import {FIGURES} from '../../../bench/lib/figures.mjs'

describe('npm run bench options', () => {
  it('records a full run, and neither a quick nor a partial one unless asked', () => {
    expect(parseBenchArgs([])).toEqual({quick: false, only: null, record: true, help: false})
    expect(parseBenchArgs(['--quick']).record).toBe(false)
    expect(parseBenchArgs(['--only=P1']).record).toBe(false)
    expect(parseBenchArgs(['--quick', '--record']).record).toBe(true)
    expect(parseBenchArgs(['--no-record']).record).toBe(false)
  })

  it('--only takes groups and figure ids, any case, and runs each group once', () => {
    expect(parseBenchArgs(['--only=p1b,P1,LAT-spool,cpu-40k']).only).toEqual(['P1', 'LAT', 'CPU'])
    expect(groupOf('P4-3000')).toBe('P4')
    expect(() => parseBenchArgs(['--only=P9'])).toThrow(/no figure or group P9/)
    expect(() => parseBenchArgs(['--fast'])).toThrow(/unknown option --fast/)
  })

  it('every figure has its place in one group, and every group its figures in the catalog', () => {
    const grouped = Object.values(GROUPS).flat()
    expect([...grouped].sort()).toEqual(FIGURES.map((f) => f.id).sort())
    expect(new Set(grouped).size).toBe(grouped.length)
    expect(usage()).toContain('--only=ID,...')
  })
})
