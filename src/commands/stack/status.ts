import {ExitCode} from '../../lib/errors.js'
import {colorEnabled} from '../../lib/output/table.js'
import {formatStackTable, stackStatus, type StackStatusResult} from '../../lib/stack/stack.js'
import {BaseCommand} from '../base-command.js'

export type {StackResult, StackStatusResult} from '../../lib/stack/stack.js'

export default class StackStatus extends BaseCommand<typeof StackStatus> {
  static override description = `show which local Orthanc backends run and answer (one per configured backend), and the cluster's parts

Reads the pid file under <stack.dir>/<backend name>/ and asks that Orthanc for GET /system; also notices an Orthanc that ddr did not start at a backend's URL.
With a cluster (stack up --routers): PostgreSQL, each router (its GET /healthz, what HAProxy says of it, instances received) and HAProxy.`

  static override enableJsonFlag = true
  static override examples = ['<%= config.bin %> stack status', '<%= config.bin %> stack status --json']

  async run(): Promise<StackStatusResult> {
    const result = await stackStatus(this.ddrConfig)
    if (!result.ok) process.exitCode = ExitCode.peer
    if (!this.jsonEnabled()) this.log(formatStackTable(result, {color: colorEnabled()}))
    return result
  }
}
