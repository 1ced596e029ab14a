import {describeTag, formatTag, isPrivateTag, makeTag, parseTag, Tag, tagElement, tagGroup, tagName, TagVr} from '../../../src/lib/dicom/tags.js'

describe('Tag', () => {
  it('has the numbers routing relies on', () => {
    expect(Tag.SOPClassUID).toBe(0x00080016)
    expect(Tag.SOPInstanceUID).toBe(0x00080018)
    expect(Tag.StudyInstanceUID).toBe(0x0020000d)
    expect(Tag.SeriesInstanceUID).toBe(0x0020000e)
    expect(Tag.PatientID).toBe(0x00100020)
    expect(Tag.PatientName).toBe(0x00100010)
    expect(Tag.Modality).toBe(0x00080060)
    expect(Tag.SpecificCharacterSet).toBe(0x00080005)
    expect(Tag.TransferSyntaxUID).toBe(0x00020010)
    expect(Tag.MediaStorageSOPClassUID).toBe(0x00020002)
    expect(Tag.MediaStorageSOPInstanceUID).toBe(0x00020003)
    expect(Tag.StudyDate).toBe(0x00080020)
    expect(Tag.AccessionNumber).toBe(0x00080050)
    expect(Tag.NumberOfFrames).toBe(0x00280008)
    expect(Tag.PixelData).toBe(0x7fe00010)
    expect(Tag.SequenceDelimitationItem).toBe(0xfffee0dd)
  })

  it('gives each tag one name', () => {
    const values = Object.values(Tag)
    expect(new Set(values).size).toBe(values.length)
  })

  it('knows the VR of every named tag, for implicit VR', () => {
    for (const [name, tag] of Object.entries(Tag)) {
      if (tagGroup(tag) === 0xfffe) continue
      expect([name, TagVr[tag]]).toEqual([name, expect.stringMatching(/^[A-Z]{2}$/)])
    }
  })
})

describe('tag helpers', () => {
  it('splits and builds tags', () => {
    expect(tagGroup(Tag.PixelData)).toBe(0x7fe0)
    expect(tagElement(Tag.PixelData)).toBe(0x0010)
    expect(makeTag(0xfffe, 0xe0dd)).toBe(Tag.SequenceDelimitationItem)
    expect(makeTag(0x0008, 0x0016)).toBe(Tag.SOPClassUID)
  })

  it('formats and describes tags', () => {
    expect(formatTag(Tag.StudyInstanceUID)).toBe('(0020,000D)')
    expect(formatTag(Tag.ItemDelimitationItem)).toBe('(FFFE,E00D)')
    expect(describeTag(Tag.SOPClassUID)).toBe('SOPClassUID (0008,0016)')
    expect(describeTag(0x00291010)).toBe('(0029,1010)')
    expect(tagName(Tag.Modality)).toBe('Modality')
    expect(tagName(0x00291010)).toBeUndefined()
  })

  it('parses tags from text', () => {
    expect(parseTag('0020,000d')).toBe(Tag.StudyInstanceUID)
    expect(parseTag('(0020,000D)')).toBe(Tag.StudyInstanceUID)
    expect(parseTag('0020000D')).toBe(Tag.StudyInstanceUID)
    expect(parseTag('PatientID')).toBe(Tag.PatientID)
    expect(parseTag('7fe0,0010')).toBe(Tag.PixelData)
    expect(parseTag('NoSuchKeyword')).toBeUndefined()
    expect(parseTag('12345')).toBeUndefined()
    expect(parseTag('toString')).toBeUndefined()
  })

  it('tells private tags', () => {
    expect(isPrivateTag(0x00291010)).toBe(true)
    expect(isPrivateTag(Tag.PatientID)).toBe(false)
  })
})
