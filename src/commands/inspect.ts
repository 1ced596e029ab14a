import {BaseCommand} from '../lib/base-command.js'
import {DdrError} from '../lib/errors.js'

export default class Inspect extends BaseCommand<typeof Inspect> {
  static override description = "show a DICOM file's header, or where a study lives across the backends"

  async run(): Promise<void> {
    throw new DdrError('NOT_IMPLEMENTED', '"ddr inspect" is not built yet (issue #6)', {hint: 'see README.md for what works today'})
  }
}
