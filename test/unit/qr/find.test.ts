import {Identifier} from '../../../src/lib/dicom/identifier.js'
import {Tag} from '../../../src/lib/dicom/tags.js'
import {type FleetMatch, queryFleet} from '../../../src/lib/qr/find.js'
import type {QuerySource} from '../../../src/lib/qr/sources.js'

const study = (uid: string, count: string, modalities = 'CT') =>
  Identifier.of([
    [Tag.QueryRetrieveLevel, 'STUDY'],
    [Tag.StudyInstanceUID, uid],
    [Tag.NumberOfStudyRelatedInstances, count],
    [Tag.ModalitiesInStudy, modalities],
  ])

function source(name: string, matches: Identifier[], behaviour: {delayMs?: number; fail?: string; hang?: boolean} = {}): QuerySource & {queries: Identifier[]} {
  const queries: Identifier[] = []
  return {
    name,
    queries,
    async find(query, options) {
      queries.push(query)
      if (behaviour.fail !== undefined) throw new Error(behaviour.fail)
      if (behaviour.hang) {
        await new Promise<void>((resolve) => options.signal?.addEventListener('abort', () => resolve()))
        return
      }

      await new Promise((resolve) => setTimeout(resolve, behaviour.delayMs ?? 0))
      for (const match of matches) options.onMatch(match.clone())
    },
  }
}

describe('queryFleet', () => {
  it('merges a study held by two backends into one match with summed counts and united modalities', async () => {
    const query = Identifier.of([[Tag.QueryRetrieveLevel, 'STUDY'], [Tag.NumberOfStudyRelatedInstances, ''], [Tag.ModalitiesInStudy, '']])
    const seen: FleetMatch[] = []
    const result = await queryFleet(query, [source('east', [study('1.2.3', '4', 'CT')]), source('west', [study('1.2.3', '2', 'SR'), study('1.2.4', '7')])], {model: 'm', timeoutMs: 1000, onMatch: (m) => seen.push(m)})
    expect(result.missing).toEqual([])
    expect(result.answered.sort()).toEqual(['east', 'west'])
    const merged = result.matches.find((m) => m.identifier.get(Tag.StudyInstanceUID) === '1.2.3')!
    expect(merged.identifier.get(Tag.NumberOfStudyRelatedInstances)).toBe('6')
    expect(merged.identifier.get(Tag.ModalitiesInStudy)).toBe('CT\\SR')
    expect(merged.backends.sort()).toEqual(['east', 'west'])
    // Counts asked for: each match is reported once, after all answered, with the sums.
    expect(seen).toHaveLength(2)
    expect(seen.find((m) => m.identifier.get(Tag.StudyInstanceUID) === '1.2.3')!.identifier.get(Tag.NumberOfStudyRelatedInstances)).toBe('6')
  })

  it('streams matches as they arrive when no counts are asked for, and never reports one twice', async () => {
    const query = Identifier.of([[Tag.QueryRetrieveLevel, 'STUDY']])
    const seen: string[] = []
    const slow = source('west', [study('1.2.3', '1')], {delayMs: 200})
    const started = Date.now()
    const result = await queryFleet(query, [source('east', [study('1.2.3', '1')]), slow], {
      model: 'm',
      timeoutMs: 1000,
      onMatch: (m) => seen.push(`${m.identifier.get(Tag.StudyInstanceUID)} after ${Date.now() - started < 150 ? 'east' : 'west'}`),
    })
    expect(result.answered).toContain('west')
    expect(seen).toEqual(['1.2.3 after east'])
    // The unique key is asked of every backend even when the requester left it out.
    expect(slow.queries[0].has(Tag.StudyInstanceUID)).toBe(true)
    expect(result.matches).toHaveLength(1)
  })

  it('names a backend that fails or times out, and keeps the others answers', async () => {
    const result = await queryFleet(Identifier.of([[Tag.QueryRetrieveLevel, 'STUDY']]), [source('east', [study('1.2.3', '1')]), source('west', [], {fail: 'connection refused'}), source('north', [], {hang: true})], {model: 'm', timeoutMs: 200})
    expect(result.matches.map((m) => m.identifier.get(Tag.StudyInstanceUID))).toEqual(['1.2.3'])
    expect(result.answered).toEqual(['east'])
    expect(result.missing.map((m) => m.backend).sort()).toEqual(['north', 'west'])
    expect(result.missing.find((m) => m.backend === 'north')!.why).toMatch(/did not answer within 200 ms/)
  })

  it('refuses a query without a valid level', async () => {
    await expect(queryFleet(Identifier.of([[Tag.QueryRetrieveLevel, 'SERIESX']]), [], {model: 'm', timeoutMs: 100})).rejects.toThrow(/unknown Query\/Retrieve Level "SERIESX"/)
  })
})

describe('Identifier', () => {
  it('round-trips text, numbers and odd lengths in both little endian syntaxes', () => {
    const identifier = Identifier.of([
      [Tag.QueryRetrieveLevel, 'STUDY'],
      [Tag.PatientName, 'DOE^J*'],
      [Tag.StudyInstanceUID, '1.2.345'],
      [0x00280010, '512'],
    ])
    for (const syntax of ['1.2.840.10008.1.2.1', '1.2.840.10008.1.2']) {
      const bytes = identifier.encode(syntax)
      expect(bytes.length % 2).toBe(0)
      const back = Identifier.decode(bytes, syntax)
      expect(back.toJSON()).toEqual(identifier.toJSON())
    }
  })
})
