import {Identifier} from '../../../src/lib/dicom/identifier.js'
import {Tag} from '../../../src/lib/dicom/tags.js'
import {identifierOfQido, patientsOfStudies, qidoRequestOf} from '../../../src/lib/qr/qido-source.js'
import {firstMultipartPart} from '../../../src/lib/qr/wado.js'

describe('QIDO-RS mapping', () => {
  it('matching keys become parameters in their DICOM syntax (wildcards, ranges), UID lists comma-separated, return keys includefield', () => {
    const query = Identifier.of([
      [Tag.QueryRetrieveLevel, 'STUDY'],
      [Tag.SpecificCharacterSet, 'ISO_IR 100'],
      [Tag.PatientID, 'PAT*'],
      [Tag.PatientName, ''],
      [Tag.StudyDate, '20260101-20260131'],
      [Tag.StudyInstanceUID, '1.2.3\\1.2.4'],
      [Tag.AccessionNumber, '*'],
      [Tag.NumberOfStudyRelatedInstances, ''],
    ])
    const {resource, searchParams} = qidoRequestOf(query)
    expect(resource).toBe('studies')
    expect([...searchParams]).toEqual([
      ['00080020', '20260101-20260131'],
      ['00100020', 'PAT*'],
      ['0020000D', '1.2.3,1.2.4'],
      ['includefield', '00080050'],
      ['includefield', '00100010'],
      ['includefield', '00201208'],
    ])
    expect(qidoRequestOf(Identifier.of([[Tag.QueryRetrieveLevel, 'SERIES'], [Tag.StudyInstanceUID, '1.2.3']])).resource).toBe('series')
    expect(qidoRequestOf(Identifier.of([[Tag.QueryRetrieveLevel, 'IMAGE'], [Tag.SOPInstanceUID, '']])).resource).toBe('instances')
  })

  it('a DICOM JSON answer becomes the query\'s keys: person names by their groups, numbers in decimal, absent ones empty, UTF-8 said', () => {
    const query = Identifier.of([
      [Tag.QueryRetrieveLevel, 'STUDY'],
      [Tag.PatientName, ''],
      [Tag.StudyInstanceUID, ''],
      [Tag.ModalitiesInStudy, ''],
      [Tag.NumberOfStudyRelatedInstances, ''],
      [Tag.AccessionNumber, ''],
    ])
    const match = identifierOfQido(
      {
        '00100010': {vr: 'PN', Value: [{Alphabetic: 'Müller^Hans', Ideographic: ''}]},
        '0020000D': {vr: 'UI', Value: ['1.2.3']},
        '00080061': {vr: 'CS', Value: ['CT', 'SR']},
        '00201208': {vr: 'IS', Value: [42]},
        '00100020': {vr: 'LO', Value: ['not asked']},
      },
      query,
      'STUDY',
    )
    expect(match.toJSON()).toEqual({
      '00080005': 'ISO_IR 192',
      '00080050': '',
      '00080052': 'STUDY',
      '00080061': 'CT\\SR',
      '00100010': 'Müller^Hans',
      '0020000D': '1.2.3',
      '00201208': '42',
    })
  })

  it('a PATIENT-level query asks for studies and gathers them by patient, counts summed', () => {
    const query = Identifier.of([
      [Tag.QueryRetrieveLevel, 'PATIENT'],
      [Tag.PatientID, 'P*'],
      [Tag.NumberOfPatientRelatedStudies, ''],
      [Tag.NumberOfPatientRelatedInstances, ''],
    ])
    const {resource, searchParams} = qidoRequestOf(query)
    expect(resource).toBe('studies')
    expect(searchParams.getAll('includefield')).toEqual(['00100020', '00201206', '00201208'])
    const study = (patient: string, instances: number) => ({'00100020': {vr: 'LO', Value: [patient]}, '00201208': {vr: 'IS', Value: [instances]}})
    const patients = patientsOfStudies([study('P1', 3), study('P2', 1), study('P1', 4)], query)
    expect(patients.map((p) => [p.get(Tag.PatientID), p.get(Tag.NumberOfPatientRelatedStudies), p.get(Tag.NumberOfPatientRelatedInstances)])).toEqual([
      ['P1', '2', '7'],
      ['P2', '1', '1'],
    ])
  })
})

describe('WADO-RS answers', () => {
  it('takes the one part of a multipart/related answer, bytes untouched', () => {
    const file = Buffer.from([0x44, 0x49, 0x43, 0x4d, 0x0d, 0x0a, 0x2d, 0x2d, 0x00, 0xff])
    const body = Buffer.concat([Buffer.from('--b0und\r\nContent-Type: application/dicom\r\n\r\n'), file, Buffer.from('\r\n--b0und--\r\n')])
    expect(firstMultipartPart(body, 'multipart/related; type="application/dicom"; boundary=b0und').equals(file)).toBe(true)
    expect(firstMultipartPart(file, 'application/dicom').equals(file)).toBe(true)
    expect(() => firstMultipartPart(Buffer.from('--b0und\r\n\r\nabc'), 'multipart/related; boundary="b0und"')).toThrow('does not end')
  })
})
