import {copyFile, mkdir, mkdtemp, rm} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {folderLayout} from '../../../src/lib/backends/folder-backend.js'
import type {BackendConfig} from '../../../src/lib/config/schema.js'
import {Identifier} from '../../../src/lib/dicom/identifier.js'
import {writeSyntheticStudies} from '../../../src/lib/dicom/synthetic.js'
import {Tag} from '../../../src/lib/dicom/tags.js'
import {SqliteLedgerStore} from '../../../src/lib/ledger/sqlite-store.js'
import {LedgerQuerySource, storedFilterOf} from '../../../src/lib/qr/ledger-source.js'

const CT = '1.2.840.10008.5.1.4.1.1.2'

describe('a folder backend answered from the study ledger and its files', () => {
  let dir: string
  let store: SqliteLedgerStore
  let source: LedgerQuerySource
  let instances: Awaited<ReturnType<typeof writeSyntheticStudies>>

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'ddr-ledger-source-'))
    const root = path.join(dir, 'archive')
    instances = await writeSyntheticStudies(path.join(dir, 'made'), {studies: 3, instancesPerStudy: 2, pixelBytes: 256, prefix: 'FOLD'})
    store = new SqliteLedgerStore(path.join(dir, 'ledger.db'))
    // Studies 0 and 1 went to the folder backend (the router wrote them in its layout), study 2 elsewhere.
    store.received(
      instances.map((instance, index) => ({
        sopInstanceUid: instance.sopInstanceUid,
        sopClassUid: CT,
        studyInstanceUid: instance.studyInstanceUid,
        seriesInstanceUid: instance.seriesInstanceUid,
        patientId: instance.patientId,
        modality: 'CT',
        studyDate: index < 4 ? '20260105' : '20260220',
        callingAeTitle: 'CT1',
        bytes: 1000,
        receivedAt: 1000 + index,
      })),
    )
    store.outcomes(instances.map((instance, index) => ({sopInstanceUid: instance.sopInstanceUid, status: 'stored' as const, backend: index < 4 ? 'archive' : 'orthanc1', at: 5000})))
    for (const instance of instances.slice(0, 4)) {
      const target = path.join(root, folderLayout(instance))
      await mkdir(path.dirname(target), {recursive: true})
      await copyFile(instance.path, target)
    }

    source = new LedgerQuerySource({name: 'archive', type: 'folder', path: root} as BackendConfig, store)
  })

  afterAll(async () => {
    store?.close()
    await rm(dir, {recursive: true, force: true})
  })

  const find = async (keys: Array<[number, string]>) => {
    const matches: Identifier[] = []
    await source.find(Identifier.of(keys), {model: '1.2.840.10008.5.1.4.1.2.2.1', onMatch: (match) => matches.push(match)})
    return matches
  }

  it('answers a STUDY-level query: the ledger narrows, the files say the names, ddr counts', async () => {
    const matches = await find([
      [Tag.QueryRetrieveLevel, 'STUDY'],
      [Tag.PatientID, 'FOLD-*'],
      [Tag.PatientName, 'synthetic^1'],
      [Tag.StudyInstanceUID, ''],
      [Tag.NumberOfStudyRelatedInstances, ''],
      [Tag.ModalitiesInStudy, ''],
    ])
    expect(matches).toHaveLength(1)
    expect(matches[0].toJSON()).toEqual({
      '00080052': 'STUDY',
      '00080061': 'CT',
      '00100010': 'SYNTHETIC^1',
      '00100020': 'FOLD-1',
      '0020000D': instances[2].studyInstanceUid,
      '00201208': '2',
    })
  })

  it('knows only what was stored on that backend, and filters the date in the ledger', async () => {
    expect((await find([[Tag.QueryRetrieveLevel, 'STUDY'], [Tag.StudyInstanceUID, '']])).map((m) => m.get(Tag.StudyInstanceUID)).sort()).toEqual([instances[0].studyInstanceUid, instances[2].studyInstanceUid].sort())
    expect(await find([[Tag.QueryRetrieveLevel, 'STUDY'], [Tag.StudyDate, '20260201-']])).toEqual([])
  })

  it('answers IMAGE level for a list of SOP Instance UIDs, and PATIENT level with its counts', async () => {
    const wanted = [instances[0].sopInstanceUid, instances[3].sopInstanceUid, instances[5].sopInstanceUid]
    const images = await find([
      [Tag.QueryRetrieveLevel, 'IMAGE'],
      [Tag.SOPInstanceUID, wanted.join('\\')],
      [Tag.SOPClassUID, ''],
      [Tag.PatientID, ''],
    ])
    expect(images.map((m) => m.get(Tag.SOPInstanceUID)).sort()).toEqual([instances[0].sopInstanceUid, instances[3].sopInstanceUid].sort())
    expect(images[0].get(Tag.SOPClassUID)).toBe(CT)

    const patients = await find([[Tag.QueryRetrieveLevel, 'PATIENT'], [Tag.PatientID, 'FOLD-0'], [Tag.NumberOfPatientRelatedInstances, '']])
    expect(patients.map((m) => [m.get(Tag.PatientID), m.get(Tag.NumberOfPatientRelatedInstances)])).toEqual([['FOLD-0', '2']])
  })

  it('narrows by what the ledger records: wildcards, ranges and UID lists, nothing for a universal key', () => {
    const filter = storedFilterOf(
      Identifier.of([
        [Tag.PatientID, 'FOLD-*'],
        [Tag.StudyDate, '20260101-20260131'],
        [Tag.AccessionNumber, '*'],
        [Tag.StudyInstanceUID, '1.2\\1.3'],
        [Tag.SeriesInstanceUID, ''],
      ]),
    )
    expect(filter).toEqual({patientId: 'FOLD-*', studyDate: '20260101-20260131', studyInstanceUids: ['1.2', '1.3']})
    expect(store.storedOn('archive', {patientId: 'FOLD-[0]'})).toEqual([])
    expect(store.storedOn('archive', {patientId: 'FOLD-?', studyDate: '20260101-20260131'})).toHaveLength(4)
    expect(store.storedOn('orthanc1', {})).toHaveLength(2)
  })
})
