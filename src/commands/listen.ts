import {Flags} from '@oclif/core'

import {BaseCommand} from './base-command.js'
import {runListen} from '../lib/listen/run.js'
import {requestDrain} from '../lib/listen/service.js'

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
    'proxy-protocol': Flags.boolean({description: 'every connection starts with a PROXY protocol header (HAProxy send-proxy-v2) naming the sender [default: listen.proxyProtocol, off]', allowNo: true}),
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
    if (flags['proxy-protocol'] !== undefined) config.listen.proxyProtocol = flags['proxy-protocol']
    if (flags['ae-title'] !== undefined) config.listen.aeTitle = flags['ae-title']
    if (flags['status-port'] !== undefined) config.status.port = flags['status-port']
    if (flags.policy !== undefined) config.routing.policy = flags.policy as typeof config.routing.policy
    if (flags.affinity !== undefined) config.routing.affinity = flags.affinity
    if (flags.spool !== undefined) config.spool.enabled = flags.spool
    if (flags.workers !== undefined) config.listen.workers = flags.workers

    await runListen(config, {debug: flags.debug, logFormat: flags['log-format'] as 'text' | 'json', version: this.config.version, drainTimeoutMs: flags['drain-timeout'] * 1000})
  }
}
