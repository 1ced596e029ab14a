import {RateHistory} from '../../../src/lib/console/history.js'
import type {RouterStatus} from '../../../src/lib/status/server.js'

describe('RateHistory', () => {
  it('turns counter samples into rates per second, keeping only the window', () => {
    const counters = {received: 0, routed: 0, failed: 0}
    let queueDepth = 0
    const history = new RateHistory(() => ({counters, queueDepth}) as unknown as RouterStatus, 60_000, 3 * 60_000)
    try {
      const start = Date.now()
      for (let minute = 1; minute <= 5; minute++) {
        counters.received += 600
        counters.routed += 540
        counters.failed += 6
        queueDepth = minute
        history.sample(start + minute * 60_000)
      }

      const series = history.series()
      // 3 minutes kept: 4 samples, 3 intervals.
      expect(series.time).toHaveLength(3)
      expect(series.received).toEqual([10, 10, 10])
      expect(series.routed).toEqual([9, 9, 9])
      expect(series.failed).toEqual([0.1, 0.1, 0.1])
      expect(series.queued).toEqual([3, 4, 5])
      expect(series.time.at(-1)).toBe(Math.round((start + 5 * 60_000) / 1000))
    } finally {
      history.close()
    }
  })
})
