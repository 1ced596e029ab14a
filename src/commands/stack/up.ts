import {Flags} from '@oclif/core'

import {ExitCode} from '../../lib/errors.js'
import {colorEnabled} from '../../lib/output/table.js'
import {formatStackTable, stackUp, type StackUpResult} from '../../lib/stack/stack.js'
import {BaseCommand} from '../base-command.js'

export type {StackResult, StackUpResult} from '../../lib/stack/stack.js'

export default class StackUp extends BaseCommand<typeof StackUp> {
  static override description = `start the local Orthanc backends (one per configured backend), and with --routers a local cluster

Each backend gets its own Orthanc 1.10 process with data, config, pid file and log under <stack.dir>/<backend name>/.
HTTP is localhost-only without authentication. Running ones are left alone; the stack keeps running after ddr exits ("ddr stack down" stops it).
--routers N also starts PostgreSQL (the shared study ledger, <stack.dir>/postgres/), N routers ("ddr listen" with this config, each with its own spool, DICOM and status port under <stack.dir>/routers/<name>/) and HAProxy on listen.port in front of them (<stack.dir>/haproxy/): docs/cluster.md.
Exit code 3 when a part fails to start.`

  static override enableJsonFlag = true
  static override examples = [
    '<%= config.bin %> stack up',
    '<%= config.bin %> stack up --config ./ddr.config.json --start-timeout 60',
    '<%= config.bin %> stack up --routers 3   # PostgreSQL, 3 routers, HAProxy on listen.port',
  ]

  static override flags = {
    'start-timeout': Flags.integer({description: 'seconds to wait for each Orthanc (and each part of a cluster) to answer', default: 20, min: 1}),
    install: Flags.boolean({description: 'apt-get install Orthanc (PostgreSQL, HAProxy) when missing and ddr runs as root', default: true, allowNo: true}),
    routers: Flags.integer({description: 'also run a cluster: PostgreSQL, this many routers, HAProxy on listen.port in front of them', min: 2, max: 64}),
    'postgres-port': Flags.integer({description: "the cluster's PostgreSQL port [default: ledger.url's, else the last one, else 5432 when free]", min: 1, max: 65535, dependsOn: ['routers']}),
  }

  async run(): Promise<StackUpResult> {
    const {flags} = this
    const cluster = flags.routers === undefined ? undefined : {routers: flags.routers, postgresPort: flags['postgres-port']}
    const result = await stackUp(this.ddrConfig, {startTimeoutMs: flags['start-timeout'] * 1000, install: flags.install, cluster})
    if (!result.ok) process.exitCode = ExitCode.peer
    if (!this.jsonEnabled()) {
      this.log(formatStackTable(result, {color: colorEnabled()}))
      if (result.ok) this.note(`stop it with: ${this.config.bin} stack down`)
    }

    return result
  }
}
