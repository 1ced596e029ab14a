import {Args, Flags} from '@oclif/core'

import {BaseCommand} from './base-command.js'
import {type FixSopResult, fixSopFiles, formatFixSopReport} from '../lib/dicom/fix-sop.js'
import {colorEnabled} from '../lib/output/table.js'

export type {FixSopFileResult, FixSopResult} from '../lib/dicom/fix-sop.js'

export default class FixSop extends BaseCommand<typeof FixSop> {
  static override description = `repair files whose SOPClassUID (0008,0016) is missing or disagrees with the meta header

The class comes from MediaStorageSOPClassUID (0002,0002), else from Modality and image attributes (CT, MR, US, CR, DX, MG, IO, NM, PT, XA, RF, OT, RT*, SEG, KO), else from --sop-class.

Only the changed elements differ afterwards; each file is written atomically, in place or under --out. Exit code 4 when a file cannot be fixed.`

  static override enableJsonFlag = true
  static override strict = false
  static override examples = [
    '<%= config.bin %> fix-sop ./export --dry-run',
    '<%= config.bin %> fix-sop ./export --out ./fixed --new-uids',
    '<%= config.bin %> fix-sop scan.dcm --sop-class 1.2.840.10008.5.1.4.1.1.7',
  ]

  static override args = {
    paths: Args.string({description: 'files or folders (searched recursively)', required: true}),
  }

  static override flags = {
    'sop-class': Flags.string({description: 'SOP class UID for files whose class cannot be inferred'}),
    'new-uids': Flags.boolean({description: 'give every file a new SOPInstanceUID (meta header too), so a resend is not a duplicate'}),
    'new-study-uids': Flags.boolean({description: 'also a new StudyInstanceUID per original study and SeriesInstanceUID per series (implies --new-uids)'}),
    out: Flags.string({char: 'o', description: 'write copies into this folder instead of changing the files in place'}),
    'dry-run': Flags.boolean({description: 'report what would change, write nothing'}),
  }

  async run(): Promise<FixSopResult> {
    const {flags, positionals} = this
    const result = await fixSopFiles(positionals, {
      sopClassUid: flags['sop-class'],
      newUids: flags['new-uids'],
      newStudyUids: flags['new-study-uids'],
      outDir: flags.out,
      dryRun: flags['dry-run'],
    })
    if (result.summary.cannotFix > 0) this.setPartialFailure()
    if (!this.jsonEnabled()) this.log(formatFixSopReport(result, {color: colorEnabled()}))
    return result
  }
}
