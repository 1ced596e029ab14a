#!/usr/bin/env node
// Writes a tiny image-classification ONNX model, for the module's tests and for trying the module
// without a real model (nothing is downloaded): image [N, C, H, W] -> GlobalAveragePool -> Flatten
// -> Gemm -> Softmax -> probabilities [N, 2] for the labels "dark" and "bright" (the mean brightness
// of the normalised image decides). The protobuf is written by hand (onnx.proto, opset 13).
//
//   node scripts/make-tiny-model.mjs OUT.onnx [--size 16] [--channels 1]
import {writeFileSync} from 'node:fs'

/** Protobuf wire format: varints, and fields of the types ONNX needs. */
function varint(value) {
  let n = BigInt(value)
  const bytes = []
  do {
    let byte = Number(n & 0x7fn)
    n >>= 7n
    if (n > 0n) byte |= 0x80
    bytes.push(byte)
  } while (n > 0n)
  return Buffer.from(bytes)
}

const key = (field, wireType) => varint((field << 3) | wireType)
const intField = (field, value) => Buffer.concat([key(field, 0), varint(value)])
const bytesField = (field, bytes) => Buffer.concat([key(field, 2), varint(bytes.length), bytes])
const stringField = (field, text) => bytesField(field, Buffer.from(text, 'utf8'))
const messageField = (field, ...parts) => bytesField(field, Buffer.concat(parts))

const FLOAT = 1
const ATTRIBUTE_INT = 2

/** TensorShapeProto.Dimension: a number, or a named (symbolic) size. */
const dimension = (d) => messageField(1, typeof d === 'number' ? intField(1, d) : stringField(2, d))

/** A ValueInfoProto of a float tensor, as graph field `field` (11: an input, 12: an output). */
const valueInfo = (field, name, dims) => messageField(field, stringField(1, name), messageField(2, messageField(1, intField(1, FLOAT), messageField(2, ...dims.map(dimension)))))

/** TensorProto with float data. */
function tensor(name, dims, values) {
  const raw = Buffer.alloc(values.length * 4)
  values.forEach((v, i) => raw.writeFloatLE(v, i * 4))
  return Buffer.concat([...dims.map((d) => intField(1, d)), intField(2, FLOAT), stringField(8, name), bytesField(9, raw)])
}

function node(opType, inputs, outputs, attributes = []) {
  return Buffer.concat([...inputs.map((i) => stringField(1, i)), ...outputs.map((o) => stringField(2, o)), stringField(3, `${opType.toLowerCase()}_0`), stringField(4, opType), ...attributes])
}

const intAttribute = (name, value) => messageField(5, stringField(1, name), intField(3, value), intField(20, ATTRIBUTE_INT))

/**
 * The model's bytes: the mean of each channel, weighed so that a mean below 0.5 (after
 * normalisation to 0..1) reads "dark" and above it "bright", with confidence growing with distance.
 */
export function tinyModel({size = 16, channels = 1} = {}) {
  const weights = []
  for (let c = 0; c < channels; c++) weights.push(-10 / channels, 10 / channels)
  const graph = Buffer.concat([
    messageField(1, node('GlobalAveragePool', ['image'], ['pooled'])),
    messageField(1, node('Flatten', ['pooled'], ['flat'], [intAttribute('axis', 1)])),
    messageField(1, node('Gemm', ['flat', 'weights', 'bias'], ['logits'])),
    messageField(1, node('Softmax', ['logits'], ['probabilities'], [intAttribute('axis', 1)])),
    stringField(2, 'tiny-brightness'),
    messageField(5, tensor('weights', [channels, 2], weights)),
    messageField(5, tensor('bias', [2], [5, -5])),
    valueInfo(11, 'image', ['N', channels, size, size]),
    valueInfo(12, 'probabilities', ['N', 2]),
  ])
  // ModelProto: ir_version 8, producer, the graph, opset 13 of the default domain.
  return Buffer.concat([intField(1, 8), stringField(2, 'ddr make-tiny-model'), messageField(7, graph), messageField(8, stringField(1, ''), intField(2, 13))])
}

if (import.meta.url === `file://${process.argv[1]}`) {
  const [out, ...rest] = process.argv.slice(2)
  if (!out) {
    console.error('usage: make-tiny-model.mjs OUT.onnx [--size 16] [--channels 1]')
    process.exit(2)
  }

  const option = (name, fallback) => {
    const at = rest.indexOf(`--${name}`)
    return at === -1 ? fallback : Number(rest[at + 1])
  }

  writeFileSync(out, tinyModel({size: option('size', 16), channels: option('channels', 1)}))
  console.error(`wrote ${out}`)
}
