import path from 'node:path'

import type {DdrConfig} from '../config/schema.js'
import {Logger} from '../output/logger.js'
import {startRouterService} from './service.js'
import {listenWorkerIndex, runListenPrimary, runListenWorker} from './workers.js'

/** How `ddr listen` runs: its log and how long a drain may take. */
export interface ListenRunOptions {
  debug?: boolean
  logFormat?: 'text' | 'json'
  version: string
  /** How long a drain waits for open associations and the queue (ms). */
  drainTimeoutMs: number
}

/**
 * `ddr listen` until it is stopped (SIGINT, SIGTERM) or drained (SIGUSR2, POST /drain): one
 * router process (listen.workers 1), or the primary of several (listen/workers.ts), or, in a
 * process the primary forked, one of its workers (which exits instead of returning).
 */
export async function runListen(config: DdrConfig, options: ListenRunOptions): Promise<void> {
  const worker = listenWorkerIndex()
  const logger = new Logger({debug: options.debug, format: options.logFormat, context: worker === undefined ? undefined : {worker}})
  const run = {logger, version: options.version, drainTimeoutMs: options.drainTimeoutMs}
  if (worker !== undefined) await runListenWorker(config, run)
  if (config.listen.workers > 1) {
    await runListenPrimary(config, run)
    return
  }

  const service = await startRouterService(config, {logger, version: options.version})
  const scheme = config.status.tls === undefined ? 'http' : 'https'
  logger.info('listening', {ae: config.listen.aeTitle, port: service.port, status: service.statusPort === undefined ? undefined : `${scheme}://${config.status.host}:${service.statusPort}/status`, console: service.statusPort === undefined || !config.status.console ? undefined : `${scheme}://${config.status.host}:${service.statusPort}/console/`, policy: config.routing.policy, affinity: config.routing.affinity, spool: config.spool.enabled ? path.resolve(config.spool.dir) : 'off (pass-through)', config: config.source})

  const drain = await new Promise<boolean>((resolve) => {
    const stop = (signal: string) => {
      logger.info('stopping', {signal}, 'no new associations; finishing in-flight instances')
      resolve(false)
    }

    process.once('SIGINT', () => stop('SIGINT'))
    process.once('SIGTERM', () => stop('SIGTERM'))
    process.once('SIGUSR2', () => resolve(true))
    void service.drainRequested.then(() => resolve(true))
  })
  if (drain) await service.drain(options.drainTimeoutMs)
  await service.stop()
  logger.info('stopped', {routed: service.router.counters.routed, failed: service.router.counters.failed})
}
