import {Flags} from '@oclif/core'

import {type DeadLettersResult, deadLetters, formatDeadLetters} from '../../lib/console/dead-letters.js'
import {BaseCommand} from '../base-command.js'
import {deadLetterFilter} from './retry.js'

export type {DeadLettersResult} from '../../lib/console/dead-letters.js'

export default class DeadLetters extends BaseCommand<typeof DeadLetters> {
  static override description = `list the instances in dead-letter (spool.dir/dead-letter) with why they are there

Asks the running router (its status port) when one answers, else reads the spool folder. \`ddr dead-letters retry\` and \`ddr dead-letters discard\` act on them.`

  static override enableJsonFlag = true
  static override examples = ['<%= config.bin %> dead-letters', "<%= config.bin %> dead-letters --reason-contains 'A700' --since 2h --json"]
  static override flags = {
    'reason-contains': Flags.string({description: 'only those whose reason contains this text (case-insensitive)'}),
    since: Flags.string({description: 'only those that went to dead-letter in this last while: 30m, 2h, 1d'}),
    study: Flags.string({description: 'only those of this StudyInstanceUID'}),
  }

  async run(): Promise<DeadLettersResult> {
    const result = await deadLetters(this.ddrConfig, {action: 'list', filter: deadLetterFilter(this.flags)})
    if (!this.jsonEnabled()) this.log(formatDeadLetters(result))
    return result
  }
}
