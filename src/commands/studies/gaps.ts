import {Flags} from '@oclif/core'

import {type GapsResult, arrivalGaps, formatGaps, parseSince} from '../../lib/ledger/query.js'
import {BaseCommand} from '../base-command.js'

export type {GapsResult} from '../../lib/ledger/query.js'

export default class StudiesGaps extends BaseCommand<typeof StudiesGaps> {
  static override description = `how long each sender pauses inside a study, to tune studies.stableSeconds

Per calling AE title and modality, from the study ledger: the pauses between consecutive instances of one study (median, 95th percentile, longest), the late instances that re-opened a stable study, and a stable timer that would have waited out every pause seen.`

  static override enableJsonFlag = true
  static override examples = ['<%= config.bin %> studies gaps', '<%= config.bin %> studies gaps --since 7d --json']

  static override flags = {
    since: Flags.string({default: '7d', description: 'studies with an instance received since then: 90s, 15m, 2h, 3d or a date'}),
  }

  async run(): Promise<GapsResult> {
    const result = await arrivalGaps(this.ddrConfig, parseSince(this.flags.since))
    if (!this.jsonEnabled()) this.log(formatGaps(result))
    return result
  }
}
