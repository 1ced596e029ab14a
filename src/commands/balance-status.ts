import {BaseCommand} from '../lib/base-command.js'
import {DdrError} from '../lib/errors.js'

export default class BalanceStatus extends BaseCommand<typeof BalanceStatus> {
  static override description = "show health and load of every backend, and the router's counters"

  async run(): Promise<void> {
    throw new DdrError('NOT_IMPLEMENTED', '"ddr balance-status" is not built yet (issue #7)', {hint: 'see README.md for what works today'})
  }
}
