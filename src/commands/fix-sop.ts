import {BaseCommand} from '../lib/base-command.js'
import {DdrError} from '../lib/errors.js'

export default class FixSop extends BaseCommand<typeof FixSop> {
  static override description = 'repair files whose SOPClassUID is missing or disagrees with the meta header'

  async run(): Promise<void> {
    throw new DdrError('NOT_IMPLEMENTED', '"ddr fix-sop" is not built yet (issue #6)', {hint: 'see README.md for what works today'})
  }
}
