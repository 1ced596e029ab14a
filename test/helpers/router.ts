import {mkdtemp, rm} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import type {DdrConfig} from '../../src/lib/config/schema.js'
import {validateConfig} from '../../src/lib/config/validate.js'
import {Logger} from '../../src/lib/output/logger.js'
import {type RouterService, startRouterService} from '../../src/lib/listen/service.js'
import type {TestOrthanc} from './orthanc.js'

export interface TestRouter {
  service: RouterService
  config: DdrConfig
  port: number
  aeTitle: string
  /** Every log line the router wrote. */
  logs: string[]
  /** Resolves once the spool is empty (at once in pass-through mode). */
  drained(): Promise<void>
  stop(): Promise<void>
}

/** A router (in this process) on a free port in front of the given Orthanc servers. */
export async function startTestRouter(backends: Array<Pick<TestOrthanc, 'name' | 'aeTitle' | 'dicomPort'> & {url?: string; maxAssociations?: number; config?: Record<string, unknown>}>, overrides: {routing?: Partial<DdrConfig['routing']>; health?: Partial<DdrConfig['health']>; spool?: Partial<DdrConfig['spool']>; studies?: Partial<DdrConfig['studies']>; retrieve?: Partial<DdrConfig['retrieve']>; listen?: Partial<DdrConfig['listen']>; status?: Partial<DdrConfig['status']>; rules?: unknown[]; processing?: Partial<DdrConfig['processing']>; ledger?: Partial<DdrConfig['ledger']>; transport?: 'dimse' | 'rest'; spoolDir?: string} = {}): Promise<TestRouter> {
  const spoolDir = overrides.spoolDir ?? (await mkdtemp(path.join(os.tmpdir(), 'ddr-spool-')))
  const config = validateConfig(
    {
      listen: {host: '127.0.0.1', port: 0, aeTitle: 'DDR_TEST', ...overrides.listen},
      ...(overrides.retrieve === undefined ? {} : {retrieve: overrides.retrieve}),
      status: {host: '127.0.0.1', port: 0, ...overrides.status},
      ...(overrides.rules === undefined ? {} : {rules: overrides.rules}),
      spool: {dir: spoolDir, retryBaseMs: 100, retryMaxMs: 1000, ...overrides.spool},
      routing: {policy: 'least-loaded', affinity: true, ...overrides.routing},
      ...(overrides.studies === undefined ? {} : {studies: overrides.studies}),
      ...(overrides.processing === undefined ? {} : {processing: overrides.processing}),
      ...(overrides.ledger === undefined ? {} : {ledger: overrides.ledger}),
      health: {intervalMs: 500, timeoutMs: 2000, failThreshold: 1, recoverThreshold: 1, ...overrides.health},
      backends: backends.map((b) => {
        const plainDimse = b.config?.type === 'dimse'
        const backend: Record<string, unknown> = {name: b.name, host: '127.0.0.1', port: b.dicomPort, aeTitle: b.aeTitle, url: b.url, transport: plainDimse ? undefined : (overrides.transport ?? 'dimse'), maxAssociations: b.maxAssociations, ...b.config}
        return Object.fromEntries(Object.entries(backend).filter(([, value]) => value !== undefined))
      }),
    },
    'test',
  )
  const logs: string[] = []
  const service = await startRouterService(config, {logger: new Logger({debug: true, write: (line) => logs.push(line)})})
  return {
    service,
    config,
    port: service.port,
    aeTitle: config.listen.aeTitle,
    logs,
    drained: () => service.forwarder?.idle() ?? Promise.resolve(),
    async stop() {
      await service.stop(5000)
      if (overrides.spoolDir === undefined) await rm(spoolDir, {recursive: true, force: true})
    },
  }
}
