// Pixel data as stored values, shared by the modules shipped with ddr: native (uncompressed,
// deflated, big endian) and RLE Lossless are decoded here; the JPEG family is not (no codec).
import {decodeRleFrame} from './rle.mjs'

/** An attribute of a dcmjs naturalized dataset as a number (its first value), or undefined. */
export const int = (value) => {
  const n = Number(Array.isArray(value) ? value[0] : value)
  return Number.isFinite(n) ? n : undefined
}

const NATIVE = new Set(['1.2.840.10008.1.2', '1.2.840.10008.1.2.1', '1.2.840.10008.1.2.1.99', '1.2.840.10008.1.2.2'])
const BIG_ENDIAN = '1.2.840.10008.1.2.2'
const RLE = '1.2.840.10008.1.2.5'
const SYNTAX_NAMES = {
  '1.2.840.10008.1.2.4.50': 'JPEG Baseline',
  '1.2.840.10008.1.2.4.51': 'JPEG Extended',
  '1.2.840.10008.1.2.4.57': 'JPEG Lossless',
  '1.2.840.10008.1.2.4.70': 'JPEG Lossless SV1',
  '1.2.840.10008.1.2.4.80': 'JPEG-LS Lossless',
  '1.2.840.10008.1.2.4.81': 'JPEG-LS Near-Lossless',
  '1.2.840.10008.1.2.4.90': 'JPEG 2000 Lossless',
  '1.2.840.10008.1.2.4.91': 'JPEG 2000',
}

/**
 * The frames of an instance as stored values (BitsStored applied, signed when PixelRepresentation
 * is 1), or why they cannot be read: `{frames, maxValue, minValue, rows, columns, samplesPerPixel,
 * interleaved}` (one Float64Array per frame) or `{unchecked: reason, framesPresent}`; undefined for
 * an instance without pixel data.
 */
export function readFrames(dataset, transferSyntaxUid) {
  const pixelData = dataset.PixelData
  if (pixelData === undefined) return undefined
  const rows = int(dataset.Rows)
  const columns = int(dataset.Columns)
  const samplesPerPixel = int(dataset.SamplesPerPixel) ?? 1
  const bitsAllocated = int(dataset.BitsAllocated)
  const bitsStored = int(dataset.BitsStored) ?? bitsAllocated
  const signed = int(dataset.PixelRepresentation) === 1
  const frames = int(dataset.NumberOfFrames) ?? 1
  if (!rows || !columns || ![8, 16, 32].includes(bitsAllocated)) return {unchecked: `pixel layout not handled (Rows ${rows}, Columns ${columns}, BitsAllocated ${bitsAllocated})`}
  const perFrame = rows * columns * samplesPerPixel
  const shape = {rows, columns, samplesPerPixel, bitsAllocated}
  let raw
  if (NATIVE.has(transferSyntaxUid)) {
    const bytes = Buffer.concat(pixelData.map((part) => Buffer.from(part)))
    const bytesPerValue = bitsAllocated / 8
    const available = Math.floor(bytes.length / (perFrame * bytesPerValue))
    raw = []
    for (let f = 0; f < Math.min(frames, available); f++) {
      const values = new Float64Array(perFrame)
      for (let i = 0; i < perFrame; i++) {
        const at = (f * perFrame + i) * bytesPerValue
        values[i] = bytesPerValue === 1 ? bytes[at] : transferSyntaxUid === BIG_ENDIAN ? (bytesPerValue === 2 ? bytes.readUInt16BE(at) : bytes.readUInt32BE(at)) : bytesPerValue === 2 ? bytes.readUInt16LE(at) : bytes.readUInt32LE(at)
      }

      raw.push(values)
    }
  } else if (transferSyntaxUid === RLE) {
    try {
      raw = pixelData.slice(0, frames).map((frame) => decodeRleFrame(Buffer.from(frame), shape))
    } catch (error) {
      return {unchecked: `RLE pixel data cannot be decoded: ${error.message}`, framesPresent: pixelData.length}
    }
  } else {
    return {unchecked: `compressed pixel data (${SYNTAX_NAMES[transferSyntaxUid] ?? transferSyntaxUid}) is not decoded by this module`, framesPresent: pixelData.length}
  }

  const mask = bitsStored >= 32 ? 0xffffffff : 2 ** bitsStored - 1
  const signBit = 2 ** (bitsStored - 1)
  for (const values of raw) {
    for (let i = 0; i < values.length; i++) {
      let v = values[i] % (mask + 1)
      if (signed && v >= signBit) v -= mask + 1
      values[i] = v
    }
  }

  // RLE frames are decoded pixel by pixel (samples interleaved); native ones keep PlanarConfiguration.
  const interleaved = transferSyntaxUid === RLE || int(dataset.PlanarConfiguration) !== 1
  return {frames: raw, expectedFrames: frames, maxValue: signed ? signBit - 1 : mask, minValue: signed ? -signBit : 0, rows, columns, samplesPerPixel, interleaved}
}

