import {Flags} from '@oclif/core'

import {BaseCommand} from './base-command.js'
import {selectBackends} from '../lib/config/load.js'
import {colorEnabled} from '../lib/output/table.js'
import {
  type PurgeResult,
  confirmPurge,
  confirmationRequiredError,
  formatPurgeResult,
  planPurge,
  planResult,
  purgeBackends,
  purgeExitCode,
} from '../lib/orthanc/purge.js'

export type {PurgeBackendResult, PurgeResult} from '../lib/orthanc/purge.js'

export default class Purge extends BaseCommand<typeof Purge> {
  static override description = `delete every instance from the configured Orthanc backends

Shows what will be deleted (counts per backend) and asks for "yes" on a terminal; --yes skips the question (scripts).
Without --yes and with stdin not a terminal, ddr refuses (exit 2) and deletes nothing.
Deletes patient by patient, in batches (POST /tools/bulk-delete), never instance by instance.
Exit codes: 3 when a backend is unreachable (the reachable ones are still purged), 4 when something could not be deleted or instances remain.`

  static override enableJsonFlag = true
  static override examples = [
    '<%= config.bin %> purge',
    '<%= config.bin %> purge --yes',
    '<%= config.bin %> purge --backend orthanc2 --dry-run',
    '<%= config.bin %> purge --yes --json',
  ]

  static override flags = {
    backend: Flags.string({multiple: true, description: 'only these backends (by name)'}),
    'dry-run': Flags.boolean({description: 'count what would be deleted, delete nothing'}),
    yes: Flags.boolean({char: 'y', description: 'do not ask for confirmation'}),
  }

  async run(): Promise<PurgeResult> {
    const {flags} = this
    const backends = selectBackends(this.ddrConfig, flags.backend)
    const ask = !flags.yes && !flags['dry-run']
    if (ask && !process.stdin.isTTY) throw confirmationRequiredError()
    const plan = await planPurge(backends, {timeoutMs: this.ddrConfig.health.timeoutMs})
    let result: PurgeResult
    if (flags['dry-run']) result = planResult(plan, 'dry-run')
    else if (ask && !(await confirmPurge(plan, {color: colorEnabled(process.stderr)}))) result = planResult(plan, 'cancelled')
    else result = await purgeBackends(plan, {progress: this.jsonEnabled() ? 'none' : process.stderr.isTTY ? 'tty' : 'lines'})

    process.exitCode = purgeExitCode(result)
    if (!this.jsonEnabled()) this.log(formatPurgeResult(result, {color: colorEnabled()}))
    return result
  }
}
