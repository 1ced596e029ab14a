import {ExitCode} from '../../lib/errors.js'
import {colorEnabled} from '../../lib/output/table.js'
import {formatStackTable, stackDown, type StackDownResult} from '../../lib/stack/stack.js'
import {BaseCommand} from '../base-command.js'

export type {StackDownResult, StackResult} from '../../lib/stack/stack.js'

export default class StackDown extends BaseCommand<typeof StackDown> {
  static override description = `stop what "ddr stack up" started: the local Orthanc backends, and the cluster's routers, HAProxy and PostgreSQL

Each Orthanc is found by its pid file under <stack.dir>/<backend name>/ and stopped; its data, config and log stay.
A cluster goes first: each router drains (no new associations, open ones and its queue finished, then it exits; its spool stays), HAProxy stops once its connections end, then PostgreSQL.
Exit code 3 when a part fails to stop.`

  static override enableJsonFlag = true
  static override examples = ['<%= config.bin %> stack down', '<%= config.bin %> stack down --config ./ddr.config.json --json']

  async run(): Promise<StackDownResult> {
    const result = await stackDown(this.ddrConfig)
    if (!result.ok) process.exitCode = ExitCode.peer
    if (!this.jsonEnabled()) this.log(formatStackTable(result, {color: colorEnabled()}))
    return result
  }
}
