import {BaseCommand} from '../lib/base-command.js'
import {DdrError} from '../lib/errors.js'

export default class Listen extends BaseCommand<typeof Listen> {
  static override description = 'run the router: receive C-STORE and forward each study to the best Orthanc backend'

  async run(): Promise<void> {
    throw new DdrError('NOT_IMPLEMENTED', '"ddr listen" is not built yet (issue #3)', {hint: 'see README.md for what works today'})
  }
}
