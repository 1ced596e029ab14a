import {formatClusterTable, type StackPartResult} from '../../../src/lib/stack/cluster.js'
import {routerArguments} from '../../../src/lib/stack/router-process.js'

describe('the cluster in ddr stack', () => {
  it('runs each router as ddr listen on loopback with its own ports and the stack\'s config', () => {
    expect(routerArguments({configPath: '/etc/ddr/ddr.config.json', dicomPort: 40001, statusPort: 40002, drainTimeoutSeconds: 30})).toEqual([
      'listen',
      '--config',
      '/etc/ddr/ddr.config.json',
      '--host',
      '127.0.0.1',
      '--port',
      '40001',
      '--status-port',
      '40002',
      '--drain-timeout',
      '30',
      '--proxy-protocol',
    ])
    expect(routerArguments({dicomPort: 1, statusPort: 2})).not.toContain('--config')
  })

  it('prints one row per part, what HAProxy and /healthz say of each router, and the messages below', () => {
    const parts: StackPartResult[] = [
      {kind: 'postgres', name: 'postgresql', state: 'running', dir: '/s/postgres', host: '127.0.0.1', port: 5432, url: 'postgres://ddr@127.0.0.1:5432/ddr', pid: 10, version: '15.14'},
      {kind: 'router', name: 'router-1', state: 'unhealthy', dir: '/s/routers/router-1', host: '127.0.0.1', port: 40001, statusPort: 40002, pid: 11, health: 'unavailable: draining', balancer: 'DOWN', received: 7, message: 'GET /healthz: unavailable: draining'},
      {kind: 'router', name: 'router-2', state: 'failed', dir: '/s/routers/router-2', host: '127.0.0.1', port: 40003, statusPort: 40004, message: 'exited during startup'},
      {kind: 'haproxy', name: 'haproxy', state: 'running', dir: '/s/haproxy', host: '0.0.0.0', port: 11113, pid: 12, balancer: 'router-1 DOWN (Layer7 wrong status), router-2 UP'},
    ]
    const lines = formatClusterTable(parts).split('\n')
    expect(lines[0]).toMatch(/^PART\s+STATE\s+ADDRESS\s+PID\s+DETAILS$/)
    expect(lines[1]).toMatch(/^postgresql\s+running\s+127\.0\.0\.1:5432\s+10\s+postgres:\/\/ddr@127\.0\.0\.1:5432\/ddr, 15\.14$/)
    expect(lines[2]).toMatch(/^router-1\s+unhealthy\s+127\.0\.0\.1:40001\s+11\s+status :40002, unavailable: draining, haproxy DOWN, received 7$/)
    expect(lines[3]).toMatch(/^router-2\s+failed\s+127\.0\.0\.1:40003\s+-\s+status :40004$/)
    expect(lines[4]).toMatch(/^haproxy\s+running\s+0\.0\.0\.0:11113\s+12\s+router-1 DOWN \(Layer7 wrong status\), router-2 UP$/)
    expect(lines.slice(5)).toEqual(['router-1: GET /healthz: unavailable: draining', 'router-2: exited during startup'])
  })
})
