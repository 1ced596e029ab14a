import {createHash, randomUUID} from 'node:crypto'

/** How a transfer syntax encodes the dataset. */
export interface TransferSyntaxInfo {
  uid: string
  name: string
  /** VRs written in the data (all but implicit VR little endian). */
  explicitVr: boolean
  littleEndian: boolean
  /** Pixel data in fragments (compressed or encapsulated uncompressed). */
  encapsulated: boolean
  /** The dataset after the meta header is a raw deflate stream (RFC 1951). */
  deflated: boolean
  retired?: boolean
}

/** Well-known transfer syntax UIDs. */
export const TransferSyntax = {
  ImplicitVRLittleEndian: '1.2.840.10008.1.2',
  ExplicitVRLittleEndian: '1.2.840.10008.1.2.1',
  EncapsulatedUncompressedExplicitVRLittleEndian: '1.2.840.10008.1.2.1.98',
  DeflatedExplicitVRLittleEndian: '1.2.840.10008.1.2.1.99',
  ExplicitVRBigEndian: '1.2.840.10008.1.2.2',
  JPEGBaseline8Bit: '1.2.840.10008.1.2.4.50',
  JPEGExtended12Bit: '1.2.840.10008.1.2.4.51',
  JPEGLossless: '1.2.840.10008.1.2.4.57',
  JPEGLosslessSV1: '1.2.840.10008.1.2.4.70',
  JPEGLSLossless: '1.2.840.10008.1.2.4.80',
  JPEGLSNearLossless: '1.2.840.10008.1.2.4.81',
  JPEG2000Lossless: '1.2.840.10008.1.2.4.90',
  JPEG2000: '1.2.840.10008.1.2.4.91',
  RLELossless: '1.2.840.10008.1.2.5',
} as const

type Encoding = Pick<TransferSyntaxInfo, 'explicitVr' | 'littleEndian' | 'encapsulated' | 'deflated'>
const explicitLe: Encoding = {explicitVr: true, littleEndian: true, encapsulated: false, deflated: false}
const compressed: Encoding = {...explicitLe, encapsulated: true}

const transferSyntaxList: TransferSyntaxInfo[] = [
  {uid: '1.2.840.10008.1.2', name: 'Implicit VR Little Endian', ...explicitLe, explicitVr: false},
  {uid: '1.2.840.10008.1.2.1', name: 'Explicit VR Little Endian', ...explicitLe},
  {uid: '1.2.840.10008.1.2.1.98', name: 'Encapsulated Uncompressed Explicit VR Little Endian', ...compressed},
  {uid: '1.2.840.10008.1.2.1.99', name: 'Deflated Explicit VR Little Endian', ...explicitLe, deflated: true},
  {uid: '1.2.840.10008.1.2.2', name: 'Explicit VR Big Endian', ...explicitLe, littleEndian: false, retired: true},
  {uid: '1.2.840.10008.1.2.4.50', name: 'JPEG Baseline (Process 1)', ...compressed},
  {uid: '1.2.840.10008.1.2.4.51', name: 'JPEG Extended (Process 2 & 4)', ...compressed},
  {uid: '1.2.840.10008.1.2.4.53', name: 'JPEG Extended (Process 3 & 5)', ...compressed, retired: true},
  {uid: '1.2.840.10008.1.2.4.55', name: 'JPEG Full Progression, Non-Hierarchical (Process 10 & 12)', ...compressed, retired: true},
  {uid: '1.2.840.10008.1.2.4.57', name: 'JPEG Lossless, Non-Hierarchical (Process 14)', ...compressed},
  {uid: '1.2.840.10008.1.2.4.70', name: 'JPEG Lossless, Non-Hierarchical, First-Order Prediction (Process 14 [Selection Value 1])', ...compressed},
  {uid: '1.2.840.10008.1.2.4.80', name: 'JPEG-LS Lossless Image Compression', ...compressed},
  {uid: '1.2.840.10008.1.2.4.81', name: 'JPEG-LS Lossy (Near-Lossless) Image Compression', ...compressed},
  {uid: '1.2.840.10008.1.2.4.90', name: 'JPEG 2000 Image Compression (Lossless Only)', ...compressed},
  {uid: '1.2.840.10008.1.2.4.91', name: 'JPEG 2000 Image Compression', ...compressed},
  {uid: '1.2.840.10008.1.2.4.92', name: 'JPEG 2000 Part 2 Multi-component Image Compression (Lossless Only)', ...compressed},
  {uid: '1.2.840.10008.1.2.4.93', name: 'JPEG 2000 Part 2 Multi-component Image Compression', ...compressed},
  // JPIP: the pixel data is referenced by URL, not present; nothing is encapsulated.
  {uid: '1.2.840.10008.1.2.4.94', name: 'JPIP Referenced', ...explicitLe},
  {uid: '1.2.840.10008.1.2.4.95', name: 'JPIP Referenced Deflate', ...explicitLe, deflated: true},
  {uid: '1.2.840.10008.1.2.4.100', name: 'MPEG2 Main Profile / Main Level', ...compressed},
  {uid: '1.2.840.10008.1.2.4.100.1', name: 'Fragmentable MPEG2 Main Profile / Main Level', ...compressed},
  {uid: '1.2.840.10008.1.2.4.101', name: 'MPEG2 Main Profile / High Level', ...compressed},
  {uid: '1.2.840.10008.1.2.4.101.1', name: 'Fragmentable MPEG2 Main Profile / High Level', ...compressed},
  {uid: '1.2.840.10008.1.2.4.102', name: 'MPEG-4 AVC/H.264 High Profile / Level 4.1', ...compressed},
  {uid: '1.2.840.10008.1.2.4.102.1', name: 'Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.1', ...compressed},
  {uid: '1.2.840.10008.1.2.4.103', name: 'MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1', ...compressed},
  {uid: '1.2.840.10008.1.2.4.103.1', name: 'Fragmentable MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1', ...compressed},
  {uid: '1.2.840.10008.1.2.4.104', name: 'MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video', ...compressed},
  {uid: '1.2.840.10008.1.2.4.104.1', name: 'Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video', ...compressed},
  {uid: '1.2.840.10008.1.2.4.105', name: 'MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video', ...compressed},
  {uid: '1.2.840.10008.1.2.4.105.1', name: 'Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video', ...compressed},
  {uid: '1.2.840.10008.1.2.4.106', name: 'MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2', ...compressed},
  {uid: '1.2.840.10008.1.2.4.106.1', name: 'Fragmentable MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2', ...compressed},
  {uid: '1.2.840.10008.1.2.4.107', name: 'HEVC/H.265 Main Profile / Level 5.1', ...compressed},
  {uid: '1.2.840.10008.1.2.4.108', name: 'HEVC/H.265 Main 10 Profile / Level 5.1', ...compressed},
  {uid: '1.2.840.10008.1.2.4.110', name: 'JPEG XL Lossless', ...compressed},
  {uid: '1.2.840.10008.1.2.4.111', name: 'JPEG XL JPEG Recompression', ...compressed},
  {uid: '1.2.840.10008.1.2.4.112', name: 'JPEG XL', ...compressed},
  {uid: '1.2.840.10008.1.2.4.201', name: 'High-Throughput JPEG 2000 Image Compression (Lossless Only)', ...compressed},
  {uid: '1.2.840.10008.1.2.4.202', name: 'High-Throughput JPEG 2000 with RPCL Options Image Compression (Lossless Only)', ...compressed},
  {uid: '1.2.840.10008.1.2.4.203', name: 'High-Throughput JPEG 2000 Image Compression', ...compressed},
  {uid: '1.2.840.10008.1.2.5', name: 'RLE Lossless', ...compressed},
  {uid: '1.2.840.10008.1.2.7.1', name: 'SMPTE ST 2110-20 Uncompressed Progressive Active Video', ...compressed},
  {uid: '1.2.840.10008.1.2.7.2', name: 'SMPTE ST 2110-20 Uncompressed Interlaced Active Video', ...compressed},
  {uid: '1.2.840.10008.1.2.7.3', name: 'SMPTE ST 2110-30 PCM Digital Audio', ...compressed},
]

/** Transfer syntaxes by UID. */
export const transferSyntaxes: ReadonlyMap<string, TransferSyntaxInfo> = new Map(transferSyntaxList.map((ts) => [ts.uid, ts]))

/** Whether ddr knows how the dataset of this transfer syntax is encoded. */
export function isKnownTransferSyntax(uid: string): boolean {
  return transferSyntaxes.has(uid)
}

/** The transfer syntax entry, or undefined for an unknown UID. */
export function transferSyntaxInfo(uid: string): TransferSyntaxInfo | undefined {
  return transferSyntaxes.get(uid)
}

/** How a dataset's bytes are laid out. */
export interface DatasetEncoding {
  explicitVr: boolean
  littleEndian: boolean
  deflated: boolean
}

// GE's private "implicit VR big endian" syntax keeps the dataset in implicit little endian.
const privateEncodings: Record<string, DatasetEncoding> = {
  '1.2.840.113619.5.2': {explicitVr: false, littleEndian: true, deflated: false},
}

/**
 * The encoding of the dataset for a transfer syntax. Unknown UIDs are read as explicit VR little
 * endian: PS3.5 A.4 requires that of every syntax other than the three base ones and deflate.
 */
export function datasetEncoding(transferSyntaxUid: string): DatasetEncoding {
  const known = transferSyntaxInfo(transferSyntaxUid) ?? privateEncodings[transferSyntaxUid]
  if (!known) return {explicitVr: true, littleEndian: true, deflated: false}
  return {explicitVr: known.explicitVr, littleEndian: known.littleEndian, deflated: known.deflated}
}

/** Well-known SOP class UIDs that ddr refers to by name. */
export const SopClass = {
  Verification: '1.2.840.10008.1.1',
  ComputedRadiographyImageStorage: '1.2.840.10008.5.1.4.1.1.1',
  DigitalXRayImageStorageForPresentation: '1.2.840.10008.5.1.4.1.1.1.1',
  DigitalMammographyXRayImageStorageForPresentation: '1.2.840.10008.5.1.4.1.1.1.2',
  CTImageStorage: '1.2.840.10008.5.1.4.1.1.2',
  MRImageStorage: '1.2.840.10008.5.1.4.1.1.4',
  UltrasoundImageStorage: '1.2.840.10008.5.1.4.1.1.6.1',
  SecondaryCaptureImageStorage: '1.2.840.10008.5.1.4.1.1.7',
  TwelveLeadECGWaveformStorage: '1.2.840.10008.5.1.4.1.1.9.1.1',
  XRayAngiographicImageStorage: '1.2.840.10008.5.1.4.1.1.12.1',
  NuclearMedicineImageStorage: '1.2.840.10008.5.1.4.1.1.20',
  SegmentationStorage: '1.2.840.10008.5.1.4.1.1.66.4',
  BasicTextSRStorage: '1.2.840.10008.5.1.4.1.1.88.11',
  EncapsulatedPDFStorage: '1.2.840.10008.5.1.4.1.1.104.1',
  PositronEmissionTomographyImageStorage: '1.2.840.10008.5.1.4.1.1.128',
  RTDoseStorage: '1.2.840.10008.5.1.4.1.1.481.2',
  RTStructureSetStorage: '1.2.840.10008.5.1.4.1.1.481.3',
  RTPlanStorage: '1.2.840.10008.5.1.4.1.1.481.5',
} as const

/** Storage SOP classes: the root every storage class under 1.2.840.10008.5.1.4.1.1 shares. */
export const STORAGE_SOP_CLASS_ROOT = '1.2.840.10008.5.1.4.1.1'

// Storage SOP classes by UID, named as in PS3.4 / PS3.6 (retired ones still sent by old modalities included).
const storageSuffixes: Array<[string, string]> = [
  ['1', 'Computed Radiography Image Storage'],
  ['1.1', 'Digital X-Ray Image Storage - For Presentation'],
  ['1.1.1', 'Digital X-Ray Image Storage - For Processing'],
  ['1.2', 'Digital Mammography X-Ray Image Storage - For Presentation'],
  ['1.2.1', 'Digital Mammography X-Ray Image Storage - For Processing'],
  ['1.3', 'Digital Intra-Oral X-Ray Image Storage - For Presentation'],
  ['1.3.1', 'Digital Intra-Oral X-Ray Image Storage - For Processing'],
  ['2', 'CT Image Storage'],
  ['2.1', 'Enhanced CT Image Storage'],
  ['2.2', 'Legacy Converted Enhanced CT Image Storage'],
  ['3', 'Ultrasound Multi-frame Image Storage (Retired)'],
  ['3.1', 'Ultrasound Multi-frame Image Storage'],
  ['4', 'MR Image Storage'],
  ['4.1', 'Enhanced MR Image Storage'],
  ['4.2', 'MR Spectroscopy Storage'],
  ['4.3', 'Enhanced MR Color Image Storage'],
  ['4.4', 'Legacy Converted Enhanced MR Image Storage'],
  ['5', 'Nuclear Medicine Image Storage (Retired)'],
  ['6', 'Ultrasound Image Storage (Retired)'],
  ['6.1', 'Ultrasound Image Storage'],
  ['6.2', 'Enhanced US Volume Storage'],
  ['6.3', 'Photoacoustic Image Storage'],
  ['7', 'Secondary Capture Image Storage'],
  ['7.1', 'Multi-frame Single Bit Secondary Capture Image Storage'],
  ['7.2', 'Multi-frame Grayscale Byte Secondary Capture Image Storage'],
  ['7.3', 'Multi-frame Grayscale Word Secondary Capture Image Storage'],
  ['7.4', 'Multi-frame True Color Secondary Capture Image Storage'],
  ['8', 'Standalone Overlay Storage (Retired)'],
  ['9', 'Standalone Curve Storage (Retired)'],
  ['9.1.1', '12-lead ECG Waveform Storage'],
  ['9.1.2', 'General ECG Waveform Storage'],
  ['9.1.3', 'Ambulatory ECG Waveform Storage'],
  ['9.1.4', 'General 32-bit ECG Waveform Storage'],
  ['9.2.1', 'Hemodynamic Waveform Storage'],
  ['9.3.1', 'Cardiac Electrophysiology Waveform Storage'],
  ['9.4.1', 'Basic Voice Audio Waveform Storage'],
  ['9.4.2', 'General Audio Waveform Storage'],
  ['9.5.1', 'Arterial Pulse Waveform Storage'],
  ['9.6.1', 'Respiratory Waveform Storage'],
  ['9.6.2', 'Multi-channel Respiratory Waveform Storage'],
  ['9.7.1', 'Routine Scalp Electroencephalogram Waveform Storage'],
  ['9.7.2', 'Electromyogram Waveform Storage'],
  ['9.7.3', 'Electrooculogram Waveform Storage'],
  ['9.7.4', 'Sleep Electroencephalogram Waveform Storage'],
  ['9.8.1', 'Body Position Waveform Storage'],
  ['10', 'Standalone Modality LUT Storage (Retired)'],
  ['11', 'Standalone VOI LUT Storage (Retired)'],
  ['11.1', 'Grayscale Softcopy Presentation State Storage'],
  ['11.2', 'Color Softcopy Presentation State Storage'],
  ['11.3', 'Pseudo-Color Softcopy Presentation State Storage'],
  ['11.4', 'Blending Softcopy Presentation State Storage'],
  ['11.5', 'XA/XRF Grayscale Softcopy Presentation State Storage'],
  ['11.6', 'Grayscale Planar MPR Volumetric Presentation State Storage'],
  ['11.7', 'Compositing Planar MPR Volumetric Presentation State Storage'],
  ['11.8', 'Advanced Blending Presentation State Storage'],
  ['11.9', 'Volume Rendering Volumetric Presentation State Storage'],
  ['11.10', 'Segmented Volume Rendering Volumetric Presentation State Storage'],
  ['11.11', 'Multiple Volume Rendering Volumetric Presentation State Storage'],
  ['11.12', 'Variable Modality LUT Softcopy Presentation State Storage'],
  ['12.1', 'X-Ray Angiographic Image Storage'],
  ['12.1.1', 'Enhanced XA Image Storage'],
  ['12.2', 'X-Ray Radiofluoroscopic Image Storage'],
  ['12.2.1', 'Enhanced XRF Image Storage'],
  ['12.3', 'X-Ray Angiographic Bi-Plane Image Storage (Retired)'],
  ['13.1.1', 'X-Ray 3D Angiographic Image Storage'],
  ['13.1.2', 'X-Ray 3D Craniofacial Image Storage'],
  ['13.1.3', 'Breast Tomosynthesis Image Storage'],
  ['13.1.4', 'Breast Projection X-Ray Image Storage - For Presentation'],
  ['13.1.5', 'Breast Projection X-Ray Image Storage - For Processing'],
  ['14.1', 'Intravascular Optical Coherence Tomography Image Storage - For Presentation'],
  ['14.2', 'Intravascular Optical Coherence Tomography Image Storage - For Processing'],
  ['20', 'Nuclear Medicine Image Storage'],
  ['30', 'Parametric Map Storage'],
  ['66', 'Raw Data Storage'],
  ['66.1', 'Spatial Registration Storage'],
  ['66.2', 'Spatial Fiducials Storage'],
  ['66.3', 'Deformable Spatial Registration Storage'],
  ['66.4', 'Segmentation Storage'],
  ['66.5', 'Surface Segmentation Storage'],
  ['66.6', 'Tractography Results Storage'],
  ['66.7', 'Label Map Segmentation Storage'],
  ['66.8', 'Height Map Segmentation Storage'],
  ['67', 'Real World Value Mapping Storage'],
  ['68.1', 'Surface Scan Mesh Storage'],
  ['68.2', 'Surface Scan Point Cloud Storage'],
  ['77.1', 'VL Image Storage - Trial (Retired)'],
  ['77.2', 'VL Multi-frame Image Storage - Trial (Retired)'],
  ['77.1.1', 'VL Endoscopic Image Storage'],
  ['77.1.1.1', 'Video Endoscopic Image Storage'],
  ['77.1.2', 'VL Microscopic Image Storage'],
  ['77.1.2.1', 'Video Microscopic Image Storage'],
  ['77.1.3', 'VL Slide-Coordinates Microscopic Image Storage'],
  ['77.1.4', 'VL Photographic Image Storage'],
  ['77.1.4.1', 'Video Photographic Image Storage'],
  ['77.1.5.1', 'Ophthalmic Photography 8 Bit Image Storage'],
  ['77.1.5.2', 'Ophthalmic Photography 16 Bit Image Storage'],
  ['77.1.5.3', 'Stereometric Relationship Storage'],
  ['77.1.5.4', 'Ophthalmic Tomography Image Storage'],
  ['77.1.5.5', 'Wide Field Ophthalmic Photography Stereographic Projection Image Storage'],
  ['77.1.5.6', 'Wide Field Ophthalmic Photography 3D Coordinates Image Storage'],
  ['77.1.5.7', 'Ophthalmic Optical Coherence Tomography En Face Image Storage'],
  ['77.1.5.8', 'Ophthalmic Optical Coherence Tomography B-scan Volume Analysis Storage'],
  ['77.1.6', 'VL Whole Slide Microscopy Image Storage'],
  ['77.1.7', 'Dermoscopic Photography Image Storage'],
  ['77.1.8', 'Confocal Microscopy Image Storage'],
  ['77.1.9', 'Confocal Microscopy Tiled Pyramidal Image Storage'],
  ['78.1', 'Lensometry Measurements Storage'],
  ['78.2', 'Autorefraction Measurements Storage'],
  ['78.3', 'Keratometry Measurements Storage'],
  ['78.4', 'Subjective Refraction Measurements Storage'],
  ['78.5', 'Visual Acuity Measurements Storage'],
  ['78.6', 'Spectacle Prescription Report Storage'],
  ['78.7', 'Ophthalmic Axial Measurements Storage'],
  ['78.8', 'Intraocular Lens Calculations Storage'],
  ['79.1', 'Macular Grid Thickness and Volume Report Storage'],
  ['80.1', 'Ophthalmic Visual Field Static Perimetry Measurements Storage'],
  ['81.1', 'Ophthalmic Thickness Map Storage'],
  ['82.1', 'Corneal Topography Map Storage'],
  ['88.1', 'Text SR Storage - Trial (Retired)'],
  ['88.2', 'Audio SR Storage - Trial (Retired)'],
  ['88.3', 'Detail SR Storage - Trial (Retired)'],
  ['88.4', 'Comprehensive SR Storage - Trial (Retired)'],
  ['88.11', 'Basic Text SR Storage'],
  ['88.22', 'Enhanced SR Storage'],
  ['88.33', 'Comprehensive SR Storage'],
  ['88.34', 'Comprehensive 3D SR Storage'],
  ['88.35', 'Extensible SR Storage'],
  ['88.40', 'Procedure Log Storage'],
  ['88.50', 'Mammography CAD SR Storage'],
  ['88.59', 'Key Object Selection Document Storage'],
  ['88.65', 'Chest CAD SR Storage'],
  ['88.67', 'X-Ray Radiation Dose SR Storage'],
  ['88.68', 'Radiopharmaceutical Radiation Dose SR Storage'],
  ['88.69', 'Colon CAD SR Storage'],
  ['88.70', 'Implantation Plan SR Storage'],
  ['88.71', 'Acquisition Context SR Storage'],
  ['88.72', 'Simplified Adult Echo SR Storage'],
  ['88.73', 'Patient Radiation Dose SR Storage'],
  ['88.74', 'Planned Imaging Agent Administration SR Storage'],
  ['88.75', 'Performed Imaging Agent Administration SR Storage'],
  ['88.76', 'Enhanced X-Ray Radiation Dose SR Storage'],
  ['90.1', 'Content Assessment Results Storage'],
  ['91.1', 'Microscopy Bulk Simple Annotations Storage'],
  ['104.1', 'Encapsulated PDF Storage'],
  ['104.2', 'Encapsulated CDA Storage'],
  ['104.3', 'Encapsulated STL Storage'],
  ['104.4', 'Encapsulated OBJ Storage'],
  ['104.5', 'Encapsulated MTL Storage'],
  ['128', 'Positron Emission Tomography Image Storage'],
  ['128.1', 'Legacy Converted Enhanced PET Image Storage'],
  ['129', 'Standalone PET Curve Storage (Retired)'],
  ['130', 'Enhanced PET Image Storage'],
  ['131', 'Basic Structured Display Storage'],
  ['200.1', 'CT Defined Procedure Protocol Storage'],
  ['200.2', 'CT Performed Procedure Protocol Storage'],
  ['200.3', 'Protocol Approval Storage'],
  ['200.4', 'XA Defined Procedure Protocol Storage'],
  ['200.5', 'XA Performed Procedure Protocol Storage'],
  ['481.1', 'RT Image Storage'],
  ['481.2', 'RT Dose Storage'],
  ['481.3', 'RT Structure Set Storage'],
  ['481.4', 'RT Beams Treatment Record Storage'],
  ['481.5', 'RT Plan Storage'],
  ['481.6', 'RT Brachy Treatment Record Storage'],
  ['481.7', 'RT Treatment Summary Record Storage'],
  ['481.8', 'RT Ion Plan Storage'],
  ['481.9', 'RT Ion Beams Treatment Record Storage'],
  ['481.10', 'RT Physician Intent Storage'],
  ['481.11', 'RT Segment Annotation Storage'],
  ['481.12', 'RT Radiation Set Storage'],
  ['481.13', 'C-Arm Photon-Electron Radiation Storage'],
  ['481.14', 'Tomotherapeutic Radiation Storage'],
  ['481.15', 'Robotic-Arm Radiation Storage'],
  ['481.16', 'RT Radiation Record Set Storage'],
  ['481.17', 'RT Radiation Salvage Record Storage'],
  ['481.18', 'Tomotherapeutic Radiation Record Storage'],
  ['481.19', 'C-Arm Photon-Electron Radiation Record Storage'],
  ['481.20', 'Robotic Radiation Record Storage'],
  ['481.21', 'RT Radiation Set Delivery Instruction Storage'],
  ['481.22', 'RT Treatment Preparation Storage'],
  ['481.23', 'Enhanced RT Image Storage'],
  ['481.24', 'Enhanced Continuous RT Image Storage'],
  ['481.25', 'RT Patient Position Acquisition Instruction Storage'],
  ['501.1', 'DICOS CT Image Storage'],
  ['501.2.1', 'DICOS Digital X-Ray Image Storage - For Presentation'],
  ['501.2.2', 'DICOS Digital X-Ray Image Storage - For Processing'],
  ['501.3', 'DICOS Threat Detection Report Storage'],
  ['501.4', 'DICOS 2D AIT Storage'],
  ['501.5', 'DICOS 3D AIT Storage'],
  ['501.6', 'DICOS Quadrupole Resonance (QR) Storage'],
  ['601.1', 'Eddy Current Image Storage'],
  ['601.2', 'Eddy Current Multi-frame Image Storage'],
]

// Storage classes outside the 1.2.840.10008.5.1.4.1.1 root that a PACS stores like instances.
const otherStorageClasses: Array<[string, string]> = [
  ['1.2.840.10008.5.1.4.38.1', 'Hanging Protocol Storage'],
  ['1.2.840.10008.5.1.4.39.1', 'Color Palette Storage'],
  ['1.2.840.10008.5.1.4.43.1', 'Generic Implant Template Storage'],
  ['1.2.840.10008.5.1.4.44.1', 'Implant Assembly Template Storage'],
  ['1.2.840.10008.5.1.4.45.1', 'Implant Template Group Storage'],
]

/** Storage SOP class names by UID. */
export const storageSopClasses: ReadonlyMap<string, string> = new Map([
  ...storageSuffixes.map(([suffix, name]): [string, string] => [`${STORAGE_SOP_CLASS_ROOT}.${suffix}`, name]),
  ...otherStorageClasses,
])

/** Other SOP classes that show up in messages. */
const otherSopClasses: ReadonlyMap<string, string> = new Map([
  ['1.2.840.10008.1.1', 'Verification'],
  ['1.2.840.10008.1.3.10', 'Media Storage Directory Storage'],
  ['1.2.840.10008.5.1.4.1.2.1.1', 'Patient Root Query/Retrieve Information Model - FIND'],
  ['1.2.840.10008.5.1.4.1.2.2.1', 'Study Root Query/Retrieve Information Model - FIND'],
  ['1.2.840.10008.5.1.4.1.2.2.2', 'Study Root Query/Retrieve Information Model - MOVE'],
  ['1.2.840.10008.5.1.4.1.2.2.3', 'Study Root Query/Retrieve Information Model - GET'],
  ['1.2.840.10008.5.1.4.31', 'Modality Worklist Information Model - FIND'],
  ['1.2.840.10008.1.20.1', 'Storage Commitment Push Model'],
])

/** The name of a SOP class ("CT Image Storage"), or undefined when ddr does not know it. */
export function sopClassName(uid: string): string | undefined {
  return storageSopClasses.get(uid) ?? otherSopClasses.get(uid)
}

/** A SOP class for messages: "CT Image Storage (1.2.840.10008.5.1.4.1.1.2)", or the bare UID when ddr does not know it. */
export function describeSopClass(uid: string): string {
  const name = sopClassName(uid)
  return name === undefined ? uid : `${name} (${uid})`
}

/**
 * Whether a SOP class is a storage class: anything under 1.2.840.10008.5.1.4.1.1 (so classes
 * newer than this table pass too) plus the few storage classes outside that root. Private
 * (vendor) storage classes return false; whether to accept them is the caller's policy.
 */
export function isStorageSopClass(uid: string): boolean {
  if (uid.startsWith(`${STORAGE_SOP_CLASS_ROOT}.`) && uid.length > STORAGE_SOP_CLASS_ROOT.length + 1) return isValidUid(uid)
  return otherStorageClasses.some(([known]) => known === uid)
}

/** The longest UID PS3.5 allows. */
export const MAX_UID_LENGTH = 64

/**
 * Whether a UID is valid per PS3.5 9.1: components of digits separated by single dots, no
 * component with a leading zero (a lone "0" is fine), at most 64 characters. Padding is not
 * part of the UID: strip it first.
 */
export function isValidUid(uid: string): boolean {
  if (uid.length === 0 || uid.length > MAX_UID_LENGTH) return false
  return /^(0|[1-9]\d*)(\.(0|[1-9]\d*))*$/.test(uid)
}

/** A new UID under the 2.25 root: a random (version 4) UUID written as one decimal number (PS3.5 B.2). */
export function generateUid(): string {
  return `2.25.${BigInt(`0x${randomUUID().replaceAll('-', '')}`).toString(10)}`
}

/**
 * The same UID for the same seed: under 2.25 a name-based (SHA-1, version 5 layout) UUID of the
 * seed as one decimal number; under `root`, the seed's SHA-256 as a decimal number cut to fit 64
 * characters. A decimal number never has a leading zero, so every component is valid.
 */
export function uidFromSeed(seed: string, root?: string): string {
  if (root === undefined || root === '2.25') {
    const hash = createHash('sha1').update(seed).digest().subarray(0, 16)
    hash[6] = (hash[6] & 0x0f) | 0x50
    hash[8] = (hash[8] & 0x3f) | 0x80
    return `2.25.${BigInt(`0x${hash.toString('hex')}`).toString(10)}`
  }

  if (!isValidUid(root) || root.length > MAX_UID_LENGTH - 2) throw new Error(`UID root ${root} is not a valid UID with room for a component`)
  const room = MAX_UID_LENGTH - root.length - 1
  const value = BigInt(`0x${createHash('sha256').update(seed).digest('hex')}`) % 10n ** BigInt(Math.min(room, 38))
  return `${root}.${value.toString(10)}`
}
