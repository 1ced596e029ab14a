import {Args} from '@oclif/core'

import {DdrError} from '../lib/errors.js'
import {formatStudy, showStudy} from '../lib/ledger/query.js'
import type {StudyDetail} from '../lib/ledger/types.js'
import {BaseCommand} from './base-command.js'

export type {StudyDetail} from '../lib/ledger/types.js'

export default class Study extends BaseCommand<typeof Study> {
  static override description = `show one study from the study ledger: its series and every instance, with where it went and when

Reads the ledger file read-only, so it works while the router runs.`

  static override enableJsonFlag = true
  static override examples = ['<%= config.bin %> study 1.2.840.113619.2.55.3.1234', '<%= config.bin %> study 1.2.840.113619.2.55.3.1234 --json']

  static override args = {uid: Args.string({description: 'the StudyInstanceUID'})}

  async run(): Promise<StudyDetail> {
    const uid = this.args.uid
    if (uid === undefined) throw new DdrError('USAGE', 'give the StudyInstanceUID', {hint: '`ddr studies` lists them'})
    const study = showStudy(this.ddrConfig, uid)
    if (!this.jsonEnabled()) this.log(formatStudy(study))
    return study
  }
}
