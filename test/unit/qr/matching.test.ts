import {Identifier} from '../../../src/lib/dicom/identifier.js'
import {Tag} from '../../../src/lib/dicom/tags.js'
import {matchesKey, matchesQuery} from '../../../src/lib/qr/matching.js'

describe('matchesKey (PS3.4 C.2.2.2)', () => {
  it('universal, single value and wildcard matching; person names without regard to case', () => {
    expect(matchesKey('', 'anything', 'LO')).toBe(true)
    expect(matchesKey('', undefined, 'LO')).toBe(true)
    expect(matchesKey('PAT-1', 'PAT-1', 'LO')).toBe(true)
    expect(matchesKey('PAT-1', 'pat-1', 'LO')).toBe(false)
    expect(matchesKey('PAT*', 'PAT-0042', 'LO')).toBe(true)
    expect(matchesKey('PAT-?', 'PAT-12', 'LO')).toBe(false)
    expect(matchesKey('P.T*', 'PAT', 'LO')).toBe(false)
    expect(matchesKey('*', undefined, 'LO')).toBe(true)
    expect(matchesKey('PAT*', undefined, 'LO')).toBe(false)
    expect(matchesKey('doe^*', 'DOE^JOHN', 'PN')).toBe(true)
    expect(matchesKey('DOE^JOHN', 'doe^john', 'PN')).toBe(true)
  })

  it('a multi-valued candidate matches when one value does (ModalitiesInStudy)', () => {
    expect(matchesKey('CT', 'CT\\SR', 'CS')).toBe(true)
    expect(matchesKey('MR', 'CT\\SR', 'CS')).toBe(false)
  })

  it('lists of UIDs', () => {
    expect(matchesKey('1.2.3\\1.2.4', '1.2.4', 'UI')).toBe(true)
    expect(matchesKey('1.2.3\\1.2.4', '1.2.5', 'UI')).toBe(false)
    expect(matchesKey('1.2.*', '1.2.3', 'UI')).toBe(false)
  })

  it('date and time ranges, bounds included, open at either end', () => {
    expect(matchesKey('20260101-20260131', '20260115', 'DA')).toBe(true)
    expect(matchesKey('20260101-20260131', '20260131', 'DA')).toBe(true)
    expect(matchesKey('20260101-20260131', '20260201', 'DA')).toBe(false)
    expect(matchesKey('-20251231', '20260101', 'DA')).toBe(false)
    expect(matchesKey('20251231-', '20260101', 'DA')).toBe(true)
    expect(matchesKey('20260101-20260131', '', 'DA')).toBe(false)
    expect(matchesKey('0800-1200', '120030', 'TM')).toBe(true)
    expect(matchesKey('0800-1200', '120130', 'TM')).toBe(false)
    expect(matchesKey('0800-1200', '07:59:59', 'TM')).toBe(false)
  })
})

describe('matchesQuery', () => {
  it('needs every matching key to match; return keys, the level and the character set select nothing', () => {
    const query = Identifier.of([
      [Tag.QueryRetrieveLevel, 'STUDY'],
      [Tag.SpecificCharacterSet, 'ISO_IR 192'],
      [Tag.PatientID, 'PAT*'],
      [Tag.StudyDate, '20260101-20260131'],
      [Tag.PatientName, ''],
      [Tag.NumberOfStudyRelatedInstances, ''],
    ])
    const values: Record<number, string> = {[Tag.PatientID]: 'PAT-7', [Tag.StudyDate]: '20260110'}
    expect(matchesQuery(query, (tag) => values[tag])).toBe(true)
    values[Tag.StudyDate] = '20260210'
    expect(matchesQuery(query, (tag) => values[tag])).toBe(false)
  })
})
