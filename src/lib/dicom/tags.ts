/**
 * DICOM tags as numbers: `(gggg,eeee)` is `0xggggeeee`. Every tag number ddr uses is named here,
 * once.
 */
export const Tag = {
  // File meta information (group 0002, always explicit VR little endian)
  FileMetaInformationGroupLength: 0x00020000,
  FileMetaInformationVersion: 0x00020001,
  MediaStorageSOPClassUID: 0x00020002,
  MediaStorageSOPInstanceUID: 0x00020003,
  TransferSyntaxUID: 0x00020010,
  ImplementationClassUID: 0x00020012,
  ImplementationVersionName: 0x00020013,
  SourceApplicationEntityTitle: 0x00020016,
  SendingApplicationEntityTitle: 0x00020017,
  ReceivingApplicationEntityTitle: 0x00020018,
  PrivateInformationCreatorUID: 0x00020100,
  PrivateInformation: 0x00020102,

  // SOP common, study, series, equipment
  SpecificCharacterSet: 0x00080005,
  ImageType: 0x00080008,
  InstanceCreationDate: 0x00080012,
  InstanceCreationTime: 0x00080013,
  SOPClassUID: 0x00080016,
  SOPInstanceUID: 0x00080018,
  StudyDate: 0x00080020,
  SeriesDate: 0x00080021,
  AcquisitionDate: 0x00080022,
  ContentDate: 0x00080023,
  AcquisitionDateTime: 0x0008002a,
  StudyTime: 0x00080030,
  SeriesTime: 0x00080031,
  ContentTime: 0x00080033,
  AccessionNumber: 0x00080050,
  QueryRetrieveLevel: 0x00080052,
  RetrieveAETitle: 0x00080054,
  InstanceAvailability: 0x00080056,
  FailedSOPInstanceUIDList: 0x00080058,
  Modality: 0x00080060,
  ModalitiesInStudy: 0x00080061,
  SOPClassesInStudy: 0x00080062,
  ConversionType: 0x00080064,
  PresentationIntentType: 0x00080068,
  Manufacturer: 0x00080070,
  InstitutionName: 0x00080080,
  ReferringPhysicianName: 0x00080090,
  StationName: 0x00081010,
  StudyDescription: 0x00081030,
  SeriesDescription: 0x0008103e,
  ManufacturerModelName: 0x00081090,
  ReferencedImageSequence: 0x00081140,
  ReferencedSOPClassUID: 0x00081150,
  ReferencedSOPInstanceUID: 0x00081155,

  // Patient
  PatientName: 0x00100010,
  PatientID: 0x00100020,
  IssuerOfPatientID: 0x00100021,
  PatientBirthDate: 0x00100030,
  PatientSex: 0x00100040,
  OtherPatientIDsSequence: 0x00101002,

  // Acquisition
  BodyPartExamined: 0x00180015,
  SliceThickness: 0x00180050,
  ProtocolName: 0x00181030,

  // Relationship
  StudyInstanceUID: 0x0020000d,
  SeriesInstanceUID: 0x0020000e,
  StudyID: 0x00200010,
  SeriesNumber: 0x00200011,
  AcquisitionNumber: 0x00200012,
  InstanceNumber: 0x00200013,
  FrameOfReferenceUID: 0x00200052,
  ImagesInAcquisition: 0x00201002,
  NumberOfPatientRelatedStudies: 0x00201200,
  NumberOfPatientRelatedSeries: 0x00201202,
  NumberOfPatientRelatedInstances: 0x00201204,
  NumberOfStudyRelatedSeries: 0x00201206,
  NumberOfStudyRelatedInstances: 0x00201208,
  NumberOfSeriesRelatedInstances: 0x00201209,

  // Image pixel
  SamplesPerPixel: 0x00280002,
  PhotometricInterpretation: 0x00280004,
  PlanarConfiguration: 0x00280006,
  NumberOfFrames: 0x00280008,
  FrameIncrementPointer: 0x00280009,
  Rows: 0x00280010,
  Columns: 0x00280011,
  BitsAllocated: 0x00280100,
  BitsStored: 0x00280101,
  HighBit: 0x00280102,
  PixelRepresentation: 0x00280103,
  LossyImageCompression: 0x00282110,

  // Structured reporting, waveforms
  ContentSequence: 0x0040a730,
  WaveformSequence: 0x54000100,
  WaveformData: 0x54001010,

  // Pixel data and the elements after it
  FloatPixelData: 0x7fe00008,
  DoubleFloatPixelData: 0x7fe00009,
  PixelData: 0x7fe00010,
  DataSetTrailingPadding: 0xfffcfffc,

  // Sequence delimiters (group FFFE has no VR, even in explicit VR syntaxes)
  Item: 0xfffee000,
  ItemDelimitationItem: 0xfffee00d,
  SequenceDelimitationItem: 0xfffee0dd,
} as const

export type TagName = keyof typeof Tag

/**
 * The VR of each named tag, used to decode values read in implicit VR (where the file does not
 * carry VRs). Tags without an entry decode as text.
 */
export const TagVr: Readonly<Partial<Record<number, string>>> = {
  [Tag.FileMetaInformationGroupLength]: 'UL',
  [Tag.FileMetaInformationVersion]: 'OB',
  [Tag.MediaStorageSOPClassUID]: 'UI',
  [Tag.MediaStorageSOPInstanceUID]: 'UI',
  [Tag.TransferSyntaxUID]: 'UI',
  [Tag.ImplementationClassUID]: 'UI',
  [Tag.ImplementationVersionName]: 'SH',
  [Tag.SourceApplicationEntityTitle]: 'AE',
  [Tag.SendingApplicationEntityTitle]: 'AE',
  [Tag.ReceivingApplicationEntityTitle]: 'AE',
  [Tag.PrivateInformationCreatorUID]: 'UI',
  [Tag.PrivateInformation]: 'OB',
  [Tag.SpecificCharacterSet]: 'CS',
  [Tag.ImageType]: 'CS',
  [Tag.InstanceCreationDate]: 'DA',
  [Tag.InstanceCreationTime]: 'TM',
  [Tag.SOPClassUID]: 'UI',
  [Tag.SOPInstanceUID]: 'UI',
  [Tag.StudyDate]: 'DA',
  [Tag.SeriesDate]: 'DA',
  [Tag.AcquisitionDate]: 'DA',
  [Tag.ContentDate]: 'DA',
  [Tag.AcquisitionDateTime]: 'DT',
  [Tag.StudyTime]: 'TM',
  [Tag.SeriesTime]: 'TM',
  [Tag.ContentTime]: 'TM',
  [Tag.AccessionNumber]: 'SH',
  [Tag.QueryRetrieveLevel]: 'CS',
  [Tag.RetrieveAETitle]: 'AE',
  [Tag.InstanceAvailability]: 'CS',
  [Tag.FailedSOPInstanceUIDList]: 'UI',
  [Tag.Modality]: 'CS',
  [Tag.ModalitiesInStudy]: 'CS',
  [Tag.SOPClassesInStudy]: 'UI',
  [Tag.ConversionType]: 'CS',
  [Tag.PresentationIntentType]: 'CS',
  [Tag.Manufacturer]: 'LO',
  [Tag.InstitutionName]: 'LO',
  [Tag.ReferringPhysicianName]: 'PN',
  [Tag.StationName]: 'SH',
  [Tag.StudyDescription]: 'LO',
  [Tag.SeriesDescription]: 'LO',
  [Tag.ManufacturerModelName]: 'LO',
  [Tag.ReferencedImageSequence]: 'SQ',
  [Tag.ReferencedSOPClassUID]: 'UI',
  [Tag.ReferencedSOPInstanceUID]: 'UI',
  [Tag.PatientName]: 'PN',
  [Tag.PatientID]: 'LO',
  [Tag.IssuerOfPatientID]: 'LO',
  [Tag.PatientBirthDate]: 'DA',
  [Tag.PatientSex]: 'CS',
  [Tag.OtherPatientIDsSequence]: 'SQ',
  [Tag.BodyPartExamined]: 'CS',
  [Tag.SliceThickness]: 'DS',
  [Tag.ProtocolName]: 'LO',
  [Tag.StudyInstanceUID]: 'UI',
  [Tag.SeriesInstanceUID]: 'UI',
  [Tag.StudyID]: 'SH',
  [Tag.SeriesNumber]: 'IS',
  [Tag.AcquisitionNumber]: 'IS',
  [Tag.InstanceNumber]: 'IS',
  [Tag.FrameOfReferenceUID]: 'UI',
  [Tag.ImagesInAcquisition]: 'IS',
  [Tag.NumberOfPatientRelatedStudies]: 'IS',
  [Tag.NumberOfPatientRelatedSeries]: 'IS',
  [Tag.NumberOfPatientRelatedInstances]: 'IS',
  [Tag.NumberOfStudyRelatedSeries]: 'IS',
  [Tag.NumberOfStudyRelatedInstances]: 'IS',
  [Tag.NumberOfSeriesRelatedInstances]: 'IS',
  [Tag.SamplesPerPixel]: 'US',
  [Tag.PhotometricInterpretation]: 'CS',
  [Tag.PlanarConfiguration]: 'US',
  [Tag.NumberOfFrames]: 'IS',
  [Tag.FrameIncrementPointer]: 'AT',
  [Tag.Rows]: 'US',
  [Tag.Columns]: 'US',
  [Tag.BitsAllocated]: 'US',
  [Tag.BitsStored]: 'US',
  [Tag.HighBit]: 'US',
  [Tag.PixelRepresentation]: 'US',
  [Tag.LossyImageCompression]: 'CS',
  [Tag.ContentSequence]: 'SQ',
  [Tag.WaveformSequence]: 'SQ',
  [Tag.WaveformData]: 'OW',
  [Tag.FloatPixelData]: 'OF',
  [Tag.DoubleFloatPixelData]: 'OD',
  [Tag.PixelData]: 'OW',
  [Tag.DataSetTrailingPadding]: 'OB',
}

const tagNames = new Map<number, TagName>(Object.entries(Tag).map(([name, tag]) => [tag, name as TagName]))

/** The group number: `0x0008` for `(0008,0016)`. */
export function tagGroup(tag: number): number {
  return tag >>> 16
}

/** The element number: `0x0016` for `(0008,0016)`. */
export function tagElement(tag: number): number {
  return tag & 0xffff
}

/** Builds a tag from its group and element. */
export function makeTag(group: number, element: number): number {
  return ((group & 0xffff) * 0x10000 + (element & 0xffff)) >>> 0
}

/** Private tags have an odd group number. */
export function isPrivateTag(tag: number): boolean {
  return (tagGroup(tag) & 1) === 1
}

/** `(0008,0016)`: the form dcmdump and the standard use. */
export function formatTag(tag: number): string {
  const hex = (tag >>> 0).toString(16).toUpperCase().padStart(8, '0')
  return `(${hex.slice(0, 4)},${hex.slice(4)})`
}

/** `SOPClassUID (0008,0016)` for named tags, else just `(gggg,eeee)`: for messages. */
export function describeTag(tag: number): string {
  const name = tagNames.get(tag >>> 0)
  return name ? `${name} ${formatTag(tag)}` : formatTag(tag)
}

/** The keyword of a named tag, if ddr names it. */
export function tagName(tag: number): TagName | undefined {
  return tagNames.get(tag >>> 0)
}

/**
 * Parses `0008,0016`, `(0008,0016)`, `00080016` or a keyword ddr names (`SOPClassUID`); undefined
 * when the text is none of these.
 */
export function parseTag(text: string): number | undefined {
  const trimmed = text.trim()
  if (Object.hasOwn(Tag, trimmed)) return Tag[trimmed as TagName]
  const match = /^\(?([0-9a-fA-F]{4}),?([0-9a-fA-F]{4})\)?$/.exec(trimmed)
  return match ? makeTag(Number.parseInt(match[1], 16), Number.parseInt(match[2], 16)) : undefined
}
