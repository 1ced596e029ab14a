import {Args, Flags} from '@oclif/core'

import {DdrError} from '../lib/errors.js'
import {type ProcessResult, formatProcessResult, processStudy} from '../lib/processing/manual.js'
import {BaseCommand} from './base-command.js'

export type {ProcessResult} from '../lib/processing/manual.js'

export default class Process extends BaseCommand<typeof Process> {
  static override description = `run a processing module on a study by hand

Runs the named module (or every configured module; those that do not match the study are skipped) on a study the ledger knows, now: a new run, one attempt. The running router does it (through its status server), so the SR and any DICOM the module writes are stored like any instance, to the backend that holds the study; exit 4 when a module failed. --dry-run runs the module here instead and shows the SR it would write, storing nothing (--json: its whole dataset). See docs/processing.md.`

  static override enableJsonFlag = true
  static override examples = [
    '<%= config.bin %> process 1.2.840.113619.2.55.3.1234',
    '<%= config.bin %> process 1.2.840.113619.2.55.3.1234 --module image-quality',
    '<%= config.bin %> process 1.2.840.113619.2.55.3.1234 --module image-quality --dry-run --json',
  ]

  static override args = {uid: Args.string({description: 'the StudyInstanceUID'})}
  static override flags = {
    module: Flags.string({description: 'only this module (by name)'}),
    'dry-run': Flags.boolean({description: 'run the module here and show the SR it would write; store nothing'}),
  }

  async run(): Promise<ProcessResult> {
    const uid = this.args.uid
    if (uid === undefined) throw new DdrError('USAGE', 'give the StudyInstanceUID', {hint: '`ddr studies` lists them'})
    const result = await processStudy(this.ddrConfig, uid, {module: this.flags.module, dryRun: this.flags['dry-run']})
    if (!this.jsonEnabled()) this.log(formatProcessResult(result))
    if (result.runs.some((r) => r.state === 'failed')) this.setPartialFailure()
    return result
  }
}
