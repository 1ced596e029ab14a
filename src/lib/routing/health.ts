import {checkBackend, hasOrthancStatistics} from '../backends/check.js'
import type {DdrConfig} from '../config/schema.js'
import type {Logger} from '../output/logger.js'
import type {BackendState} from './backend-state.js'

/**
 * Checks every backend in the background with the backends' own check (C-ECHO, Orthanc's REST
 * API, QIDO-RS, the folder; the same check balance-status makes) and Orthanc's /statistics, which
 * also feed the load scores. Never on the per-instance path.
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
    // A store that succeeded since the last round proves the backend works (passive check): no
    // extra association then, which matters for SCPs that serve one association at a time.
    const passive = Date.now() - state.lastStoredAt < this.settings.intervalMs
    const check = await checkBackend(state.backend, {timeoutMs, passive})
    if (!passive) state.echoMs = check.echoMs ?? undefined
    // Only Orthanc has /statistics; other backends' load comes from the router's own counters.
    if (hasOrthancStatistics(state.backend.config)) {
      state.restMs = check.statisticsMs ?? undefined
      if (check.statisticsMs !== null) {
        state.storedInstances = check.instances ?? undefined
        state.storedStudies = check.studies ?? undefined
        state.diskSizeMb = check.diskSizeMb ?? undefined
      }
    }

    const {problems} = check
    if (problems.length === 0) {
      if (state.markSuccess(recoverThreshold)) this.logger.info('backend-up', {backend: state.name}, 'health checks pass again')
    } else if (state.markFailure(problems.join('; '), failThreshold)) {
      this.logger.warn('backend-down', {backend: state.name}, problems.join('; '))
    } else {
      this.logger.debug('health-check-failed', {backend: state.name, failures: state.consecutiveFailures}, problems.join('; '))
    }
  }
}
