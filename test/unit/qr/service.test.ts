import type {SubOperations} from '../../../src/lib/dimse/scp.js'
import {PROGRESS_INTERVAL_MS, pacedProgress} from '../../../src/lib/qr/service.js'

const counts = (done: number): SubOperations => ({remaining: 500 - done, completed: done, failed: 0, warning: 0})

describe('pacedProgress: Pending C-MOVE/C-GET responses', () => {
  it('sends the first at once, then at most one per interval with the latest counts', () => {
    let clock = 0
    const sent: SubOperations[] = []
    const progress = pacedProgress((c) => sent.push(c), PROGRESS_INTERVAL_MS, () => clock)
    // 500 sub-operations, one each millisecond.
    for (let done = 1; done <= 500; done++) {
      progress(counts(done))
      clock++
    }

    expect(sent.map((c) => c.completed)).toEqual([1, 101, 201, 301, 401])
    expect(sent[1]).toEqual({remaining: 399, completed: 101, failed: 0, warning: 0})
  })

  it('sends each one when sub-operations are further apart than the interval', () => {
    let clock = 0
    const sent: number[] = []
    const progress = pacedProgress((c) => sent.push(c.completed), 100, () => clock)
    for (let done = 1; done <= 3; done++) {
      progress(counts(done))
      clock += 250
    }

    expect(sent).toEqual([1, 2, 3])
  })
})
