import {Args, Flags} from '@oclif/core'

import {BaseCommand} from './base-command.js'
import {DdrError} from '../lib/errors.js'
import {type RouteExplainResult, explainRoute, formatRouteExplain} from '../lib/routing/route-explain.js'

export type {RouteExplainResult} from '../lib/routing/route-explain.js'

export default class Route extends BaseCommand<typeof Route> {
  static override description = `show which rule and which backend a DICOM file would get, without sending it

Uses the router's own rule engine and placement (study affinity from spool.dir/affinity.jsonl, policy, rules), taking every backend as up and idle.`

  static override enableJsonFlag = true
  static override examples = [
    '<%= config.bin %> route --explain scan.dcm',
    '<%= config.bin %> route --explain scan.dcm --calling-ae MODALITY1 --json',
  ]

  static override args = {file: Args.string({description: 'a DICOM Part 10 file'})}

  static override flags = {
    explain: Flags.boolean({description: 'explain the routing decision (required: route never sends)', required: true}),
    'calling-ae': Flags.string({description: 'the sender AE title rules should see (default STORESCU)'}),
    'called-ae': Flags.string({description: 'the called AE title rules should see (default listen.aeTitle)'}),
  }

  async run(): Promise<RouteExplainResult> {
    const file = this.args.file
    if (file === undefined) throw new DdrError('USAGE', 'give the DICOM file to explain', {hint: 'ddr route --explain FILE'})
    const result = await explainRoute(this.ddrConfig, file, {callingAeTitle: this.flags['calling-ae'], calledAeTitle: this.flags['called-ae']})
    if (!this.jsonEnabled()) this.log(formatRouteExplain(result))
    return result
  }
}
