import {Args, Flags} from '@oclif/core'

import {DdrError} from '../lib/errors.js'
import {type VerifyResult, formatReceipt, formatStudy, showStudy, verifyStudy} from '../lib/ledger/query.js'
import type {StudyDetail} from '../lib/ledger/types.js'
import {BaseCommand} from './base-command.js'

export type {StudyDetail} from '../lib/ledger/types.js'
export type {VerifyResult} from '../lib/ledger/query.js'

export default class Study extends BaseCommand<typeof Study> {
  static override description = `show one study from the study ledger: its series and every instance, with where it went and when

Reads the ledger file read-only, so it works while the router runs. --verify asks the backend now what it holds of the study: with the router running, instances found missing are re-sent from retention (spool.dir/retention) and checked again; exit 0 when every instance is there, 4 when some are still missing (or the backend cannot be asked), 3 when a backend does not answer.`

  static override enableJsonFlag = true
  static override examples = [
    '<%= config.bin %> study 1.2.840.113619.2.55.3.1234',
    '<%= config.bin %> study 1.2.840.113619.2.55.3.1234 --verify',
    '<%= config.bin %> study 1.2.840.113619.2.55.3.1234 --json',
  ]

  static override args = {uid: Args.string({description: 'the StudyInstanceUID'})}
  static override flags = {verify: Flags.boolean({description: 'check what the backend holds now, and repair from retention'})}

  async run(): Promise<StudyDetail | VerifyResult> {
    const uid = this.args.uid
    if (uid === undefined) throw new DdrError('USAGE', 'give the StudyInstanceUID', {hint: '`ddr studies` lists them'})
    if (!this.flags.verify) {
      const study = await showStudy(this.ddrConfig, uid)
      if (!this.jsonEnabled()) this.log(formatStudy(study))
      return study
    }

    const result = await verifyStudy(this.ddrConfig, uid)
    if (!this.jsonEnabled()) this.log(`${formatReceipt(result)}\n${formatStudy(result.study)}`)
    if (result.receipt.state !== 'verified') this.setPartialFailure()
    return result
  }
}
