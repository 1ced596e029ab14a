import {BaseCommand} from '../lib/base-command.js'
import {DdrError} from '../lib/errors.js'

export default class Send extends BaseCommand<typeof Send> {
  static override description = 'send DICOM files, folders or ZIPs over C-STORE (like storescu) or the Orthanc REST API'

  async run(): Promise<void> {
    throw new DdrError('NOT_IMPLEMENTED', '"ddr send" is not built yet (issue #5)', {hint: 'see README.md for what works today'})
  }
}
