import path from 'node:path'

import {Flags} from '@oclif/core'

import {BaseCommand} from './base-command.js'
import {Logger} from '../lib/output/logger.js'
import {requestDrain, startRouterService} from '../lib/listen/service.js'
import {listenWorkerIndex, runListenPrimary, runListenWorker} from '../lib/listen/workers.js'

export default class Listen extends BaseCommand<typeof Listen> {
  static override description = 'run the router: receive C-STORE and forward each study to the best Orthanc backend'
  static override examples = [
    '<%= config.bin %> listen',
    '<%= config.bin %> listen --port 11113 --ae-title DYNAMIC_DICOM_MW --policy round-robin',
    'DDR_CONFIG=/etc/ddr/ddr.config.json <%= config.bin %> listen --log-format json',
    '<%= config.bin %> listen --debug   # log loads, health and scores behind every decision',
    '<%= config.bin %> listen --no-spool   # pass-through: the sender waits until a backend stored the instance',
    '<%= config.bin %> listen --drain   # ask the running router to drain and exit (rolling upgrade); or: kill -USR2 <pid>',
    '<%= config.bin %> listen --workers 4   # four router processes on one port, one spool folder each, a shared SQLite ledger',
  ]

  static override flags = {
    port: Flags.integer({char: 'p', description: 'DICOM port to listen on [default: listen.port, 11113]', min: 0, max: 65535}),
    host: Flags.string({description: 'address to bind [default: listen.host, 0.0.0.0]'}),
    'ae-title': Flags.string({char: 'a', description: 'our AE title [default: listen.aeTitle, DYNAMIC_DICOM_MW]'}),
    'status-port': Flags.integer({description: 'HTTP port for /status and /metrics [default: status.port, 11180]', min: 0, max: 65535}),
    policy: Flags.string({description: 'how new studies are placed [default: routing.policy]', options: ['least-loaded', 'round-robin', 'weighted']}),
    affinity: Flags.boolean({description: 'keep every instance of a study on one backend [default: routing.affinity, on]', allowNo: true}),
    spool: Flags.boolean({description: 'store-and-forward: answer Success once the instance is fsynced to the spool [default: spool.enabled, on]; --no-spool answers once a backend stored it', allowNo: true}),
    'log-format': Flags.string({description: 'log line format', options: ['text', 'json'], default: 'text'}),
    drain: Flags.boolean({description: 'do not start a router: ask the one running with this config (its status port) to stop taking associations, finish, and exit'}),
    'drain-timeout': Flags.integer({description: 'seconds a draining router waits for open associations and its queue before it exits anyway', default: 120, min: 1}),
    workers: Flags.integer({description: 'router processes sharing the DICOM port, each with its own spool folder and a shared SQLite ledger [default: listen.workers, 1]', min: 1, max: 64}),
  }

  async run(): Promise<void> {
    const {flags} = this
    const config = structuredClone(this.ddrConfig)
    if (flags['status-port'] !== undefined) config.status.port = flags['status-port']
    if (flags.drain) {
      this.log(await requestDrain(config))
      return
    }

    if (flags.port !== undefined) config.listen.port = flags.port
    if (flags.host !== undefined) config.listen.host = flags.host
    if (flags['ae-title'] !== undefined) config.listen.aeTitle = flags['ae-title']
    if (flags['status-port'] !== undefined) config.status.port = flags['status-port']
    if (flags.policy !== undefined) config.routing.policy = flags.policy as typeof config.routing.policy
    if (flags.affinity !== undefined) config.routing.affinity = flags.affinity
    if (flags.spool !== undefined) config.spool.enabled = flags.spool
    if (flags.workers !== undefined) config.listen.workers = flags.workers

    const worker = listenWorkerIndex()
    const logger = new Logger({debug: flags.debug, format: flags['log-format'] as 'text' | 'json', context: worker === undefined ? undefined : {worker}})
    // Several processes (listen.workers > 1): the primary forks and watches them, each worker is a router.
    const workers = {logger, version: this.config.version, drainTimeoutMs: flags['drain-timeout'] * 1000}
    if (worker !== undefined) await runListenWorker(config, workers)
    if (config.listen.workers > 1) {
      await runListenPrimary(config, workers)
      return
    }

    const service = await startRouterService(config, {logger, version: this.config.version})
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
    if (drain) await service.drain(flags['drain-timeout'] * 1000)
    await service.stop()
    logger.info('stopped', {routed: service.router.counters.routed, failed: service.router.counters.failed})
  }
}
