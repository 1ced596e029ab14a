import {describeBackendAddress, hasOrthancStatistics} from '../backends/factory.js'
import type {DdrConfig} from '../config/schema.js'
import {type OrthancClient, orthancClientFor} from '../orthanc/client.js'
import type {Logger} from '../output/logger.js'
import type {BackendState} from './backend-state.js'

/**
 * Checks every backend in the background: C-ECHO (or the REST API for REST backends) and
 * Orthanc's /statistics, which also feed the load scores. Never on the per-instance path.
 */
export class HealthMonitor {
  private timer?: NodeJS.Timeout
  private running?: Promise<void>
  /** One REST client per Orthanc backend, kept alive between rounds (and with the backend's HTTPS trust). */
  private readonly clients = new Map<string, OrthancClient>()

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
    for (const client of this.clients.values()) client.close()
    this.clients.clear()
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
      const overHttp = config.type === 'dicomweb' || ((config.type ?? 'orthanc') === 'orthanc' && config.transport === 'rest')
      // HTTP backends' errors already name the request and URL (and a TLS refusal's reason).
      if (overHttp) problems.push((error as Error).message)
      else problems.push(`${config.type === 'folder' ? 'health check of' : 'C-ECHO to'} ${describeBackendAddress(config)} failed: ${(error as Error).message}`)
    }

    // Only Orthanc has /statistics; other backends' load comes from the router's own counters.
    if (hasOrthancStatistics(config)) {
      try {
        let client = this.clients.get(state.name)
        if (client === undefined) {
          client = orthancClientFor(config, {timeoutMs})
          this.clients.set(state.name, client)
        }

        const started = performance.now()
        const stats = await client.statistics()
        state.restMs = performance.now() - started
        state.storedInstances = stats.CountInstances
        state.storedStudies = stats.CountStudies
        state.diskSizeMb = stats.TotalDiskSizeMB
      } catch (error) {
        state.restMs = undefined
        // The client's message names the URL (without credentials) and, for TLS, the reason.
        problems.push(`REST statistics: ${(error as Error).message}`)
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
