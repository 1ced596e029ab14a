import {Flags} from '@oclif/core'

import {DdrError} from '../lib/errors.js'
import {openStoredInstances} from '../lib/ledger/query.js'
import {type GetResult, formatGetResult, getFromFleet} from '../lib/qr/fleet.js'
import {BaseCommand} from './base-command.js'

export type {GetResult} from '../lib/qr/fleet.js'

export default class Get extends BaseCommand<typeof Get> {
  static override description = `download studies from whichever backends hold them

Finds every instance of each study on every backend (as ddr find asks them), then fetches each instance from the backend that holds it exactly as stored (a DICOM backend by C-GET: the file is then its dataset as received behind ddr's meta header; an Orthanc stored to over REST, or with retrieveTransport rest, over its REST API; a DICOMweb backend by WADO-RS; a folder backend's file), into DIR/<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm. A study split over several backends arrives whole.
Exit codes: 0 every instance written, 4 a study is held by no backend that answered or an instance could not be fetched, 3 no backend answered.`

  static override enableJsonFlag = true
  static override strict = false
  static override examples = [
    '<%= config.bin %> get 1.2.840.113619.2.55.3.1234 --out ./studies',
    '<%= config.bin %> get 1.2.3.4 1.2.3.5 --out /data/export --json',
  ]

  static override flags = {
    out: Flags.string({char: 'o', required: true, description: 'folder to write the studies into'}),
  }

  async run(): Promise<GetResult> {
    const uids = this.positionals
    const progress = !this.jsonEnabled() && process.stderr.isTTY
    // Folder backends are answered from the study ledger.
    const stored = openStoredInstances(this.ddrConfig)
    const result = await getFromFleet(this.ddrConfig, uids, {
      outDir: this.flags.out,
      stored,
      onProgress: (done, total, failure) => {
        if (failure !== undefined) this.note(`failed: ${failure.sopInstanceUid} from ${failure.backend}: ${failure.why}`)
        else if (progress) process.stderr.write(`\r${done}/${total} instances`)
        if (progress && done === total) process.stderr.write('\n')
      },
    }).finally(() => stored?.close())
    if (result.written === 0 && result.missing.length > 0 && result.studies.every((s) => s.instances === 0)) {
      throw new DdrError('BACKEND_UNREACHABLE', `no backend answered: ${result.missing.map((m) => `${m.backend}: ${m.why}`).join('; ')}`)
    }

    if (!this.jsonEnabled()) this.log(formatGetResult(result))
    if (result.notFound.length > 0 || result.failures.length > 0) this.setPartialFailure()
    return result
  }
}
