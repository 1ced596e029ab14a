import {BaseCommand} from '../lib/base-command.js'
import {DdrError} from '../lib/errors.js'

export default class Purge extends BaseCommand<typeof Purge> {
  static override description = 'delete every instance from the configured Orthanc backends'

  async run(): Promise<void> {
    throw new DdrError('NOT_IMPLEMENTED', '"ddr purge" is not built yet (issue #7)', {hint: 'see README.md for what works today'})
  }
}
