import {aggregateStatus, type WorkerStatusEntry} from '../../../src/lib/listen/status-aggregate.js'
import type {RouterStatus} from '../../../src/lib/status/server.js'

function workerStatus(received: number, depth: number, routedByAlpha: number): RouterStatus {
  return {
    version: '1.0.0',
    startedAt: '2026-12-02T00:00:00.000Z',
    uptimeSeconds: 10,
    listen: {host: '127.0.0.1', port: 11113, aeTitle: 'DDR'},
    policy: 'least-loaded',
    affinity: true,
    associations: 1,
    counters: {received, routed: received - depth, failed: 0, failovers: 0, bytes: received * 100, dropped: 0, mirrored: 0, mirrorFailed: 0, mirrorPending: 0},
    queueDepth: depth,
    mirrors: {durable: true, pending: 0, oldestAgeSeconds: null},
    spool: {depth, bytes: depth * 100, oldestAgeSeconds: depth > 0 ? depth : null, deadLetters: 1, refusing: null, retries: 2},
    studiesRemembered: 3,
    studies: {receiving: 1, stable: 2, receipts: {}},
    processing: null,
    backends: [{name: 'alpha', healthy: true, inFlight: 1, routed: routedByAlpha, failed: 0} as unknown as RouterStatus['backends'][number]],
  }
}

describe('aggregateStatus: the primary\'s /status of ddr listen --workers', () => {
  it('sums counters, queues and spools, keeps each worker\'s own, and sums the backends\' counts', () => {
    const entries: WorkerStatusEntry[] = [
      {worker: 1, pid: 11, statusPort: 1001, healthy: true, status: workerStatus(10, 2, 7)},
      {worker: 2, pid: 12, statusPort: 1002, healthy: true, status: workerStatus(5, 0, 5)},
    ]
    const summed = aggregateStatus(entries, 2, '2.0.0')!
    expect(summed.version).toBe('2.0.0')
    expect(summed.counters).toMatchObject({received: 15, routed: 13, bytes: 1500})
    expect([summed.associations, summed.queueDepth, summed.studiesRemembered]).toEqual([2, 2, 6])
    expect(summed.spool).toEqual({depth: 2, bytes: 200, oldestAgeSeconds: 2, deadLetters: 2, refusing: null, retries: 4})
    expect(summed.backends[0]).toMatchObject({name: 'alpha', inFlight: 2, routed: 12})
    expect(summed.workers.entries.map((e) => [e.worker, e.status?.counters.received])).toEqual([
      [1, 10],
      [2, 5],
    ])
  })

  it('answers nothing while no worker has answered', () => {
    expect(aggregateStatus([{worker: 1, pid: 11, statusPort: 1001, healthy: false, error: 'ECONNREFUSED'}], 2, '2.0.0')).toBeUndefined()
  })
})
