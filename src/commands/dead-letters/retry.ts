import {Args, Flags} from '@oclif/core'

import {type DeadLettersResult, deadLetters, formatDeadLetters} from '../../lib/console/dead-letters.js'
import type {DeadLetterFilter} from '../../lib/console/console.js'
import {DdrError} from '../../lib/errors.js'
import {BaseCommand} from '../base-command.js'

/** --reason-contains, --since (30m, 2h, 1d) and --study as the dead-letter filter. */
export function deadLetterFilter(flags: {'reason-contains'?: string; since?: string; study?: string}): DeadLetterFilter {
  let since: number | undefined
  if (flags.since !== undefined) {
    const match = /^(\d+(?:\.\d+)?)\s*(s|m|h|d)$/.exec(flags.since.trim())
    if (match === null) throw new DdrError('USAGE', `--since "${flags.since}" is not a duration`, {hint: 'e.g. 30m, 2h, 1d'})
    since = Date.now() - Number(match[1]) * {s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000}[match[2] as 's' | 'm' | 'h' | 'd']
  }

  return {reasonContains: flags['reason-contains'], since, studyInstanceUid: flags.study}
}

export const actionFlags = {
  all: Flags.boolean({description: 'every dead letter (narrowed by the filters)'}),
  'reason-contains': Flags.string({description: 'with --all: only those whose reason contains this text'}),
  since: Flags.string({description: 'with --all: only those from this last while (30m, 2h, 1d)'}),
  study: Flags.string({description: 'with --all: only those of this StudyInstanceUID'}),
}

export default class DeadLettersRetry extends BaseCommand<typeof DeadLettersRetry> {
  static override description = `send dead letters again

With the router running, through it: each goes back into its queue and is delivered like any instance (durable, retried, bytes unchanged), and its log says who asked. Without a router, the file moves back into spool.dir/queue and is delivered when the router starts. Exit 4 when an id was not found.`

  static override enableJsonFlag = true
  static override strict = false
  static override args = {id: Args.string({description: 'dead letter ids (`ddr dead-letters` lists them)'})}
  static override examples = ['<%= config.bin %> dead-letters retry lq3k2-0001-9f2c1a7e', "<%= config.bin %> dead-letters retry --all --reason-contains 'A700' --since 1h"]
  static override flags = actionFlags

  async run(): Promise<DeadLettersResult> {
    const result = await deadLetters(this.ddrConfig, {action: 'retry', ids: this.positionals, all: this.flags.all, filter: deadLetterFilter(this.flags)})
    if (!this.jsonEnabled()) this.log(formatDeadLetters(result))
    if (result.results?.some((r) => r.outcome === 'not found' || r.outcome === 'gone')) this.setPartialFailure()
    return result
  }
}
