import {Flags} from '@oclif/core'

import type {QueryLevel} from '../lib/dicom/identifier.js'
import {openStoredInstances} from '../lib/ledger/query.js'
import {colorEnabled} from '../lib/output/table.js'
import {type FindResult, findInFleet, formatFindResult} from '../lib/qr/fleet.js'
import {BaseCommand} from './base-command.js'

export type {FindResult, FoundRow} from '../lib/qr/fleet.js'

export default class Find extends BaseCommand<typeof Find> {
  static override description = `find patients, studies, series or instances on every backend at once, and which backend holds them

Asks every backend of the config at the same time (DICOM backends by C-FIND: Orthanc must let ddr's AE title query it, DicomModalities or DicomAlwaysAllowFind; DICOMweb backends by QIDO-RS; folder backends from the study ledger and their files) and merges the answers: a study split over two backends is one row, its instances summed, with both backends named. Wildcards (* and ?) work as in DICOM. No router needs to run.
Exit codes: 0 all backends answered, 4 some did not (their names are in the warning; the rows are from the others).`

  static override enableJsonFlag = true
  static override examples = [
    "<%= config.bin %> find --patient 'PAT-0042'",
    "<%= config.bin %> find --name 'DOE^*' --date 20260101-20260131",
    '<%= config.bin %> find --study 1.2.840.113619.2.55.3.1234 --level series',
    '<%= config.bin %> find --accession A123 --modality CT --json',
  ]

  static override flags = {
    patient: Flags.string({description: 'PatientID (wildcards * and ? allowed)'}),
    name: Flags.string({description: "PatientName, e.g. 'DOE^*'"}),
    study: Flags.string({description: 'StudyInstanceUID (several: separated by \\)'}),
    accession: Flags.string({description: 'AccessionNumber'}),
    modality: Flags.string({description: 'Modality (ModalitiesInStudy at study level)'}),
    date: Flags.string({description: 'StudyDate or range: 20260101, 20260101-20260131, -20260131, 20260101-'}),
    level: Flags.string({options: ['patient', 'study', 'series', 'image'], default: 'study', description: 'what to list'}),
  }

  async run(): Promise<FindResult> {
    const {flags} = this
    // Folder backends are answered from the study ledger.
    const stored = openStoredInstances(this.ddrConfig)
    const result = await findInFleet(this.ddrConfig, {
      level: flags.level.toUpperCase() as QueryLevel,
      patientId: flags.patient,
      patientName: flags.name,
      studyInstanceUid: flags.study,
      accessionNumber: flags.accession,
      modality: flags.modality,
      date: flags.date,
      stored,
    }).finally(() => stored?.close())
    if (!this.jsonEnabled()) this.log(formatFindResult(result, {color: colorEnabled()}))
    if (result.missing.length > 0) this.setPartialFailure()
    return result
  }
}
