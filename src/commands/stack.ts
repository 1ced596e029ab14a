import {Args, Flags} from '@oclif/core'

import {BaseCommand} from './base-command.js'
import {ExitCode} from '../lib/errors.js'
import {colorEnabled} from '../lib/output/table.js'
import {type StackResult, formatStackTable, stackDown, stackStatus, stackUp} from '../lib/stack/stack.js'

export type {StackResult} from '../lib/stack/stack.js'

export default class Stack extends BaseCommand<typeof Stack> {
  static override description = `start, stop or show the local Orthanc backends (one per configured backend)

Each backend gets its own Orthanc 1.10 process with data, config, pid file and log under <stack.dir>/<backend name>/.
HTTP is localhost-only without authentication. "up" leaves running ones alone; the stack keeps running after ddr exits.
Exit code 3 when an Orthanc fails to start or stop.`

  static override enableJsonFlag = true
  static override examples = [
    '<%= config.bin %> stack up',
    '<%= config.bin %> stack status --json',
    '<%= config.bin %> stack down',
    '<%= config.bin %> stack up --config ./ddr.config.json --start-timeout 60',
  ]

  static override args = {
    action: Args.string({description: 'what to do', options: ['up', 'down', 'status'], required: true}),
  }

  static override flags = {
    'start-timeout': Flags.integer({description: 'seconds to wait for each Orthanc to answer (up)', default: 20, min: 1}),
    install: Flags.boolean({description: 'apt-get install Orthanc when it is missing and ddr runs as root (up)', default: true, allowNo: true}),
  }

  async run(): Promise<StackResult> {
    const {args, flags} = this
    const config = this.ddrConfig
    const result =
      args.action === 'up'
        ? await stackUp(config, {startTimeoutMs: flags['start-timeout'] * 1000, install: flags.install})
        : args.action === 'down'
          ? await stackDown(config)
          : await stackStatus(config)

    if (!result.ok) process.exitCode = ExitCode.peer
    if (!this.jsonEnabled()) {
      this.log(formatStackTable(result, {color: colorEnabled()}))
      if (args.action === 'up' && result.ok) this.note(`stop it with: ${this.config.bin} stack down`)
    }

    return result
  }
}
