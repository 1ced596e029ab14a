import {formatBytes, formatDecimalBytes, formatDuration, formatElapsed} from '../../../src/lib/output/units.js'

describe('formatBytes / formatDuration (sizes on disk, ages)', () => {
  it('read like a person would write them', () => {
    expect([0, 1023, 1536, 10 * 1024 * 1024, 3.5 * 1024 ** 3].map(formatBytes)).toEqual(['0 B', '1023 B', '1.5 KiB', '10 MiB', '3.5 GiB'])
    expect([0, 59, 75, 3725, 90_000].map(formatDuration)).toEqual(['0s', '59s', '1m 15s', '1h 2m', '1d 1h'])
  })

  it('stops at TiB and never shows a negative age', () => {
    expect(formatBytes(2 * 1024 ** 5)).toBe('2048 TiB')
    expect(formatDuration(-5)).toBe('0s')
  })
})

describe('formatDecimalBytes / formatElapsed (amounts sent, rates, run times)', () => {
  it('uses decimal units, one decimal below 100', () => {
    expect([0, 999, 1000, 1500, 99_949, 100_000, 1_500_000, 1e9, 2e15].map(formatDecimalBytes)).toEqual(['0 B', '999 B', '1.0 KB', '1.5 KB', '99.9 KB', '100 KB', '1.5 MB', '1.0 GB', '2000 TB'])
  })

  it('gives tenths of a second under 10 s, then seconds, then minutes and seconds', () => {
    expect([0, 9400, 10_000, 59_499, 60_000, 184_000].map(formatElapsed)).toEqual(['0.0 s', '9.4 s', '10 s', '59 s', '1 min 0 s', '3 min 4 s'])
  })
})
