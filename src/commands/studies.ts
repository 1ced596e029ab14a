import {Flags} from '@oclif/core'

import {type StudiesResult, formatStudies, listStudies, parseSince} from '../lib/ledger/query.js'
import {BaseCommand} from './base-command.js'

export type {StudiesResult} from '../lib/ledger/query.js'

export default class Studies extends BaseCommand<typeof Studies> {
  static override description = `list the studies the router received, newest first

One row per study from the study ledger (spool.dir/ledger.db, or ledger.url): patient, accession, modalities, instances, size, the backend its instances went to, whether it is still receiving or stable, and how many instances a backend confirmed. Reads the ledger file read-only, so it works while the router runs.`

  static override enableJsonFlag = true
  static override examples = [
    '<%= config.bin %> studies',
    '<%= config.bin %> studies --state receiving --since 2h',
    '<%= config.bin %> studies --patient PID123 --json',
  ]

  static override flags = {
    state: Flags.string({options: ['receiving', 'stable'], description: 'only studies in this state'}),
    patient: Flags.string({description: 'only this PatientID'}),
    since: Flags.string({description: 'only studies with an instance received since then: 90s, 15m, 2h, 3d or a date'}),
    limit: Flags.integer({min: 1, default: 100, description: 'at most this many studies'}),
  }

  async run(): Promise<StudiesResult> {
    const result = await listStudies(this.ddrConfig, {
      state: this.flags.state as 'receiving' | 'stable' | undefined,
      patientId: this.flags.patient,
      since: this.flags.since === undefined ? undefined : parseSince(this.flags.since),
      limit: this.flags.limit,
    })
    if (!this.jsonEnabled()) this.log(formatStudies(result))
    return result
  }
}
