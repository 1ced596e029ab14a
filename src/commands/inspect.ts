import {Args, Flags} from '@oclif/core'

import {BaseCommand} from './base-command.js'
import {selectBackends} from '../lib/config/load.js'
import {type BackendStudiesResult, formatBackendStudies, formatLocate, inspectRequest, listBackendStudies, locateExitCode, locateOnBackends, type LocateResult} from '../lib/inspect/backends.js'
import {formatInspectFile, type InspectFileResult, inspectFile} from '../lib/inspect/file.js'
import {ExitCode} from '../lib/errors.js'
import {colorEnabled} from '../lib/output/table.js'

export type {BackendStudiesResult, LocateResult} from '../lib/inspect/backends.js'
export type {InspectFileResult} from '../lib/inspect/file.js'
export type InspectResult = InspectFileResult | LocateResult | BackendStudiesResult

export default class Inspect extends BaseCommand<typeof Inspect> {
  static override description = `show a DICOM file's header (--tags: every element), or where a study lives across the backends

A file is read with ddr's own reader: any transfer syntax, private and UN sequences. Exit code 2 for a file that is not DICOM or is cut short.

Backend queries ask each backend's Orthanc REST API (url and credentials from the config). Exit code 3 when no backend could be asked, 4 when some could not.`

  static override enableJsonFlag = true
  static override examples = [
    '<%= config.bin %> inspect scan.dcm',
    '<%= config.bin %> inspect scan.dcm --tags',
    '<%= config.bin %> inspect --study 1.2.840.113619.2.55.3.604688119 --json',
    '<%= config.bin %> inspect --patient "DDR-P0*"',
    '<%= config.bin %> inspect --backend orthanc2 --limit 50 --page 2',
  ]

  static override args = {file: Args.string({description: 'a DICOM Part 10 file to show'})}

  static override flags = {
    tags: Flags.boolean({description: 'dump every element (tag, VR, length, value, name), sequences indented'}),
    study: Flags.string({description: 'which backends hold this StudyInstanceUID, with series and instance counts'}),
    sop: Flags.string({description: 'which backends hold this SOPInstanceUID, and in which study'}),
    patient: Flags.string({description: "which backends hold this PatientID's studies (wildcards * and ? allowed)"}),
    backend: Flags.string({multiple: true, description: 'alone: list this backend\'s studies; with --study/--sop/--patient: ask only these'}),
    limit: Flags.integer({min: 1, max: 1000, description: 'studies per page with --backend (default 25)'}),
    offset: Flags.integer({min: 0, description: 'first study to list with --backend (0-based)'}),
    page: Flags.integer({min: 1, description: 'page to list with --backend (1-based; instead of --offset)'}),
  }

  async run(): Promise<InspectResult> {
    const request = inspectRequest({...this.flags, file: this.args.file})
    const color = colorEnabled()
    let result: InspectResult
    let text: string
    if (request.kind === 'file') {
      result = await inspectFile(request.file, {tags: request.tags})
      text = formatInspectFile(result, {color})
    } else if (request.kind === 'locate') {
      result = await locateOnBackends(selectBackends(this.ddrConfig, request.backends), request.query)
      process.exitCode = locateExitCode(result)
      text = formatLocate(result, {color})
    } else {
      result = await listBackendStudies(selectBackends(this.ddrConfig, [request.backend])[0], request)
      if (result.status !== 'ok') process.exitCode = ExitCode.peer
      text = formatBackendStudies(result, {color})
    }
    if (!this.jsonEnabled()) this.log(text)
    return result
  }
}
