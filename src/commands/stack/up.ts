import {Flags} from '@oclif/core'

import {ExitCode} from '../../lib/errors.js'
import {colorEnabled} from '../../lib/output/table.js'
import {formatStackTable, stackUp, type StackUpResult} from '../../lib/stack/stack.js'
import {BaseCommand} from '../base-command.js'

export type {StackResult, StackUpResult} from '../../lib/stack/stack.js'

export default class StackUp extends BaseCommand<typeof StackUp> {
  static override description = `start the local Orthanc backends (one per configured backend)

Each backend gets its own Orthanc 1.10 process with data, config, pid file and log under <stack.dir>/<backend name>/.
HTTP is localhost-only without authentication. Running ones are left alone; the stack keeps running after ddr exits ("ddr stack down" stops it).
Exit code 3 when an Orthanc fails to start.`

  static override enableJsonFlag = true
  static override examples = ['<%= config.bin %> stack up', '<%= config.bin %> stack up --config ./ddr.config.json --start-timeout 60']

  static override flags = {
    'start-timeout': Flags.integer({description: 'seconds to wait for each Orthanc to answer', default: 20, min: 1}),
    install: Flags.boolean({description: 'apt-get install Orthanc when it is missing and ddr runs as root', default: true, allowNo: true}),
  }

  async run(): Promise<StackUpResult> {
    const {flags} = this
    const result = await stackUp(this.ddrConfig, {startTimeoutMs: flags['start-timeout'] * 1000, install: flags.install})
    if (!result.ok) process.exitCode = ExitCode.peer
    if (!this.jsonEnabled()) {
      this.log(formatStackTable(result, {color: colorEnabled()}))
      if (result.ok) this.note(`stop it with: ${this.config.bin} stack down`)
    }

    return result
  }
}
