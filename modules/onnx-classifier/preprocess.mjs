// An image frame (stored values, see ../lib/pixels.mjs) as a model's input: grey or RGB to the
// model's channels, MONOCHROME1 inverted, resized (bilinear), scaled to 0..1 and normalised.

/** One channel (0-based) of a frame as rows x columns values. */
function plane(read, values, channel) {
  const {rows, columns, samplesPerPixel, interleaved} = read
  const out = new Float64Array(rows * columns)
  for (let p = 0; p < out.length; p++) out[p] = interleaved ? values[p * samplesPerPixel + channel] : values[channel * rows * columns + p]
  return out
}

/** Bilinear resize of one plane to height x width. */
function resize(source, rows, columns, height, width) {
  const out = new Float32Array(height * width)
  for (let y = 0; y < height; y++) {
    const sy = Math.min(rows - 1, Math.max(0, ((y + 0.5) * rows) / height - 0.5))
    const y0 = Math.floor(sy)
    const y1 = Math.min(rows - 1, y0 + 1)
    const fy = sy - y0
    for (let x = 0; x < width; x++) {
      const sx = Math.min(columns - 1, Math.max(0, ((x + 0.5) * columns) / width - 0.5))
      const x0 = Math.floor(sx)
      const x1 = Math.min(columns - 1, x0 + 1)
      const fx = sx - x0
      const top = source[y0 * columns + x0] * (1 - fx) + source[y0 * columns + x1] * fx
      const bottom = source[y1 * columns + x0] * (1 - fx) + source[y1 * columns + x1] * fx
      out[y * width + x] = top * (1 - fy) + bottom * fy
    }
  }

  return out
}

/**
 * The model input (Float32Array, channels x height x width) for frame `index` of `read`.
 * normalisation: `range` "minmax" (default: the image's own lowest and highest values map to 0 and
 * 1) or "full" (the range BitsStored allows); then (x - mean[c]) / std[c] (default 0 and 1).
 */
export function toInputTensor(read, index, {height, width, channels, photometric, normalisation = {}}) {
  const values = read.frames[index]
  const samples = read.samplesPerPixel
  let planes = Array.from({length: samples}, (_, c) => plane(read, values, c))
  if (channels === 1 && samples > 1) {
    const grey = new Float64Array(planes[0].length)
    for (let p = 0; p < grey.length; p++) grey[p] = planes.reduce((sum, pl) => sum + pl[p], 0) / samples
    planes = [grey]
  } else if (channels > 1 && samples === 1) {
    planes = Array.from({length: channels}, () => planes[0])
  }

  let low = read.minValue
  let high = read.maxValue
  if ((normalisation.range ?? 'minmax') === 'minmax') {
    low = Infinity
    high = -Infinity
    for (const pl of planes) {
      for (const v of pl) {
        if (v < low) low = v
        if (v > high) high = v
      }
    }
  }

  const span = high - low || 1
  const invert = photometric === 'MONOCHROME1'
  const input = new Float32Array(channels * height * width)
  planes.slice(0, channels).forEach((pl, c) => {
    const scaled = pl.map((v) => {
      const unit = (v - low) / span
      return invert ? 1 - unit : unit
    })
    const resized = resize(scaled, read.rows, read.columns, height, width)
    const mean = normalisation.mean?.[c] ?? 0
    const std = normalisation.std?.[c] ?? 1
    for (let i = 0; i < resized.length; i++) input[c * height * width + i] = (resized[i] - mean) / std
  })
  return input
}
