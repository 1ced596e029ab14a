import got from 'got'

import {describeBackendAddress, hasOrthancStatistics} from '../backends/factory.js'
import type {DdrConfig} from '../config/schema.js'
import type {Logger} from '../output/logger.js'
import type {BackendState} from './backend-state.js'

interface OrthancStatistics {
  CountInstances?: number
  CountStudies?: number
  TotalDiskSizeMB?: number
}

/**
 * Checks every backend in the background: C-ECHO (or the REST API for REST backends) and
 * Orthanc's /statistics, which also feed the load scores. Never on the per-instance path.
 */
export class HealthMonitor {
  private timer?: NodeJS.Timeout
  private running?: Promise<void>

  constructor(private readonly backends: BackendState[], private readonly settings: DdrConfig['health'], private readonly logger: Logger) {}

  /** Runs a first round (so health is known before the first instance), then one every intervalMs. */
  async start(): Promise<void> {
    await this.checkAll()
    this.timer = setInterval(() => {
      this.running ??= this.checkAll().finally(() => {
        this.running = undefined
      })
    }, this.settings.intervalMs)
    this.timer.unref()
  }

  async stop(): Promise<void> {
    clearInterval(this.timer)
    await this.running
  }

  checkAll(): Promise<void> {
    return Promise.all(this.backends.map((b) => this.check(b))).then(() => undefined)
  }

  private async check(state: BackendState): Promise<void> {
    const {timeoutMs, failThreshold, recoverThreshold} = this.settings
    const config = state.backend.config
    const problems: string[] = []
    // A store that succeeded since the last round proves the DICOM side works (passive check):
    // no extra association then, which matters for SCPs that serve one association at a time.
    const storedRecently = Date.now() - state.lastStoredAt < this.settings.intervalMs
    try {
      if (!storedRecently) state.echoMs = await state.backend.echo(timeoutMs)
    } catch (error) {
      state.echoMs = undefined
      const check = config.type === 'folder' || config.type === 'dicomweb' ? 'health check of' : config.transport === 'rest' ? 'REST to' : 'C-ECHO to'
      problems.push(`${check} ${describeBackendAddress(config)} failed: ${(error as Error).message}`)
    }

    // Only Orthanc has /statistics; other backends' load comes from the router's own counters.
    if (hasOrthancStatistics(config)) {
      try {
        const started = performance.now()
      const stats = await got
        .get(`${config.url}/statistics`, {username: config.username, password: config.password, timeout: {request: timeoutMs}, retry: {limit: 0}})
        .json<OrthancStatistics>()
      state.restMs = performance.now() - started
      state.storedInstances = stats.CountInstances
      state.storedStudies = stats.CountStudies
      state.diskSizeMb = stats.TotalDiskSizeMB
    } catch (error) {
      state.restMs = undefined
        problems.push(`REST ${config.url}/statistics failed: ${(error as Error).message}`)
      }
    }

    if (problems.length === 0) {
      if (state.markSuccess(recoverThreshold)) this.logger.info('backend-up', {backend: state.name}, 'health checks pass again')
    } else if (state.markFailure(problems.join('; '), failThreshold)) {
      this.logger.warn('backend-down', {backend: state.name}, problems.join('; '))
    } else {
      this.logger.debug('health-check-failed', {backend: state.name, failures: state.consecutiveFailures}, problems.join('; '))
    }
  }
}
