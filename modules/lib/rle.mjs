// RLE Lossless (PS3.5 Annex G): the one compressed transfer syntax simple enough to decode here.

/** Decodes one PackBits segment into `out` (as many bytes as it holds). */
function unpackBits(segment, out) {
  let i = 0
  let o = 0
  while (i < segment.length && o < out.length) {
    const n = segment[i] > 127 ? segment[i] - 256 : segment[i]
    i++
    if (n >= 0) {
      const count = Math.min(n + 1, out.length - o, segment.length - i)
      segment.copy(out, o, i, i + count)
      i += n + 1
      o += count
    } else if (n > -128) {
      const count = Math.min(1 - n, out.length - o)
      out.fill(segment[i], o, o + count)
      i++
      o += count
    }
  }

  return o
}

/**
 * One RLE frame as stored values, interleaved like native pixel data would be read: for each pixel,
 * each sample's bytes from its segments (most significant segment first). Returns a Float64Array
 * of rows * columns * samples values (unsigned; the caller applies BitsStored and the sign).
 */
export function decodeRleFrame(frame, {rows, columns, samplesPerPixel, bitsAllocated}) {
  const header = Buffer.from(frame.buffer, frame.byteOffset, 64)
  const segments = header.readUInt32LE(0)
  const bytesPerSample = bitsAllocated / 8
  if (segments !== samplesPerPixel * bytesPerSample) throw new Error(`RLE frame has ${segments} segments, expected ${samplesPerPixel * bytesPerSample}`)
  const pixels = rows * columns
  const planes = []
  for (let s = 0; s < segments; s++) {
    const start = header.readUInt32LE(4 + s * 4)
    const end = s + 1 < segments ? header.readUInt32LE(8 + s * 4) : frame.length
    const plane = Buffer.alloc(pixels)
    const got = unpackBits(Buffer.from(frame.buffer, frame.byteOffset + start, end - start), plane)
    if (got < pixels) throw new Error(`RLE segment ${s + 1} holds ${got} of ${pixels} bytes`)
    planes.push(plane)
  }

  const values = new Float64Array(pixels * samplesPerPixel)
  for (let p = 0; p < pixels; p++) {
    for (let sample = 0; sample < samplesPerPixel; sample++) {
      let value = 0
      for (let b = 0; b < bytesPerSample; b++) value = value * 256 + planes[sample * bytesPerSample + b][p]
      values[p * samplesPerPixel + sample] = value
    }
  }

  return values
}
