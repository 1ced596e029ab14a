import {Identifier} from '../../../src/lib/dicom/identifier.js'
import {Tag} from '../../../src/lib/dicom/tags.js'
import {SopClass} from '../../../src/lib/dicom/uids.js'
import {locateInstances} from '../../../src/lib/qr/retrieve.js'
import type {QuerySource} from '../../../src/lib/qr/sources.js'

const STUDY = '1.2.826.0.1.3680043.10.2.1'

interface Held {
  series: string
  sop: string
  sopClassUid: string
}

/**
 * A backend as a query source: answers an IMAGE-level query with what it holds (SOPClassUID only
 * when asked), a STUDY-level one with the study and, when it knows the key, SOPClassesInStudy.
 */
function backend(name: string, held: Held[], options: {studyClasses?: boolean; delayMs?: number; imageDelayMs?: number} = {}): QuerySource & {queries: Identifier[]} {
  const queries: Identifier[] = []
  return {
    name,
    queries,
    async find(query, {onMatch}) {
      queries.push(query)
      await new Promise((resolve) => setTimeout(resolve, options.delayMs ?? 0))
      if (query.get(Tag.QueryRetrieveLevel) === 'STUDY') {
        const classes = [...new Set(held.map((h) => h.sopClassUid))].join('\\')
        onMatch(Identifier.of([[Tag.QueryRetrieveLevel, 'STUDY'], [Tag.StudyInstanceUID, STUDY], ...(options.studyClasses === false ? [] : [[Tag.SOPClassesInStudy, classes] as [number, string]])]))
        return
      }

      await new Promise((resolve) => setTimeout(resolve, options.imageDelayMs ?? 0))
      for (const h of held) {
        onMatch(
          Identifier.of([
            [Tag.QueryRetrieveLevel, 'IMAGE'],
            [Tag.PatientID, 'P1'],
            [Tag.StudyInstanceUID, STUDY],
            [Tag.SeriesInstanceUID, h.series],
            [Tag.SOPInstanceUID, h.sop],
            ...(query.has(Tag.SOPClassUID) ? [[Tag.SOPClassUID, h.sopClassUid] as [number, string]] : []),
          ]),
        )
      }
    },
  }
}

const ct = (series: string, sop: string): Held => ({series, sop, sopClassUid: SopClass.CTImageStorage})
const sr = (series: string, sop: string): Held => ({series, sop, sopClassUid: SopClass.BasicTextSRStorage})
const options = {model: 'study root', timeoutMs: 2000, sopClassFrom: () => true}

describe('locateInstances', () => {
  it("learns a backend's SOP classes per study with one STUDY-level query: SOPClassUID is not asked of each instance", async () => {
    const pacs = backend('pacs', [ct('1.1', '1.1.1'), sr('1.2', '1.2.1')])
    const {instances} = await locateInstances({level: 'STUDY', studyInstanceUids: [STUDY]}, [pacs], options)
    expect(instances.map((i) => [i.sopInstanceUid, i.sopClassUid, i.sopClassUids])).toEqual([
      ['1.1.1', undefined, [SopClass.CTImageStorage, SopClass.BasicTextSRStorage]],
      ['1.2.1', undefined, [SopClass.CTImageStorage, SopClass.BasicTextSRStorage]],
    ])
    expect(pacs.queries.map((q) => [q.get(Tag.QueryRetrieveLevel), q.has(Tag.SOPClassUID)]).sort()).toEqual([
      ['IMAGE', false],
      ['STUDY', false],
    ])
    expect(pacs.queries.find((q) => q.get(Tag.QueryRetrieveLevel) === 'STUDY')!.get(Tag.StudyInstanceUID)).toBe(STUDY)
  })

  it('tells the SOP classes each C-GET backend named once all of them answered the STUDY-level question, before the locate ends', async () => {
    const events: string[] = []
    const east = backend('east', [ct('1.1', '1.1.1'), sr('1.2', '1.2.1')], {imageDelayMs: 50})
    const west = backend('west', [], {studyClasses: false})
    await locateInstances({level: 'STUDY', studyInstanceUids: [STUDY]}, [east, west], {...options, onSopClasses: (classes) => events.push(JSON.stringify([...classes]))})
    events.push('located')
    expect(events).toEqual([JSON.stringify([['east', [SopClass.CTImageStorage, SopClass.BasicTextSRStorage]]]), 'located'])
  })

  it('asks a backend that leaves SOPClassesInStudy empty for the SOP class of each instance', async () => {
    const pacs = backend('pacs', [ct('1.1', '1.1.1'), sr('1.2', '1.2.1')], {studyClasses: false})
    const {instances} = await locateInstances({level: 'STUDY', studyInstanceUids: [STUDY]}, [pacs], options)
    expect(instances.map((i) => [i.sopInstanceUid, i.sopClassUid, i.sopClassUids])).toEqual([
      ['1.1.1', SopClass.CTImageStorage, undefined],
      ['1.2.1', SopClass.BasicTextSRStorage, undefined],
    ])
    expect(pacs.queries.filter((q) => q.get(Tag.QueryRetrieveLevel) === 'IMAGE' && q.has(Tag.SOPClassUID))).toHaveLength(1)
  })

  it('asks SOPClassUID of each instance when the request names no study (a series by its UID alone), and nothing of a backend not fetched by C-GET', async () => {
    const pacs = backend('pacs', [ct('1.1', '1.1.1')])
    const rest = backend('rest', [ct('1.3', '1.3.1')])
    const {instances} = await locateInstances({level: 'SERIES', seriesInstanceUids: ['1.1', '1.3']}, [pacs, rest], {...options, sopClassFrom: (name: string) => name === 'pacs'})
    expect(instances.map((i) => [i.sopInstanceUid, i.sopClassUid])).toEqual([
      ['1.1.1', SopClass.CTImageStorage],
      ['1.3.1', undefined],
    ])
    expect(pacs.queries.map((q) => q.get(Tag.QueryRetrieveLevel))).toEqual(['IMAGE'])
    expect(rest.queries.map((q) => [q.get(Tag.QueryRetrieveLevel), q.has(Tag.SOPClassUID)])).toEqual([['IMAGE', false]])
  })

  it('says how many instances of a series a backend holds when all of them are fetched from it; not when one of them comes from another backend, nor at IMAGE level', async () => {
    // east answers first: the instance both hold (1.1.2) is fetched from east, so west's part of 1.1 is not whole.
    const east = backend('east', [ct('1.1', '1.1.1'), ct('1.1', '1.1.2'), ct('1.2', '1.2.1')])
    const west = backend('west', [ct('1.1', '1.1.2'), ct('1.1', '1.1.3'), ct('1.3', '1.3.1')], {delayMs: 30})
    const {instances} = await locateInstances({level: 'STUDY', studyInstanceUids: [STUDY]}, [east, west], options)
    expect(instances.map((i) => [i.sopInstanceUid, i.backend, i.seriesCount])).toEqual([
      ['1.1.1', 'east', 2],
      ['1.1.2', 'east', 2],
      ['1.1.3', 'west', undefined],
      ['1.2.1', 'east', 1],
      ['1.3.1', 'west', 1],
    ])

    const byUid = await locateInstances({level: 'IMAGE', studyInstanceUids: [STUDY], sopInstanceUids: ['1.2.1']}, [backend('east', [ct('1.2', '1.2.1')])], options)
    expect(byUid.instances.map((i) => i.seriesCount)).toEqual([undefined])
  })
})
