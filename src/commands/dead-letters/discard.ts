import {Args, Flags} from '@oclif/core'
import {createInterface} from 'node:readline/promises'

import {type DeadLettersResult, deadLetters, formatDeadLetters} from '../../lib/console/dead-letters.js'
import {DdrError} from '../../lib/errors.js'
import {BaseCommand} from '../base-command.js'
import {actionFlags, deadLetterFilter} from './retry.js'

export default class DeadLettersDiscard extends BaseCommand<typeof DeadLettersDiscard> {
  static override description = `delete dead letters for good

Asks for "yes" on a terminal; --yes skips the question (scripts), and without --yes and a terminal nothing is deleted (exit 2). Through the running router when one answers (its log says who did it), else in the spool folder. Exit 4 when an id was not found.`

  static override enableJsonFlag = true
  static override strict = false
  static override args = {id: Args.string({description: 'dead letter ids (`ddr dead-letters` lists them)'})}
  static override examples = ['<%= config.bin %> dead-letters discard lq3k2-0001-9f2c1a7e --yes', "<%= config.bin %> dead-letters discard --all --study 1.2.3 --yes"]
  static override flags = {...actionFlags, yes: Flags.boolean({char: 'y', description: 'do not ask for confirmation'})}

  async run(): Promise<DeadLettersResult> {
    if (!this.flags.yes) {
      if (!process.stdin.isTTY) throw new DdrError('USAGE', 'discarding deletes the instances for good: give --yes (stdin is not a terminal to ask on)')
      const what = this.flags.all ? 'every matching dead letter' : `${this.positionals.length} dead letter(s)`
      const reader = createInterface({input: process.stdin, output: process.stderr})
      const answer = await reader.question(`delete ${what} for good? type yes: `)
      reader.close()
      if (answer.trim() !== 'yes') return {via: 'spool', deadLetters: [], results: []}
    }

    const result = await deadLetters(this.ddrConfig, {action: 'discard', ids: this.positionals, all: this.flags.all, filter: deadLetterFilter(this.flags)})
    if (!this.jsonEnabled()) this.log(formatDeadLetters(result))
    if (result.results?.some((r) => r.outcome === 'not found' || r.outcome === 'gone')) this.setPartialFailure()
    return result
  }
}
