import {deflateRawSync} from 'node:zlib'

export {brokenFixture, brokenFixtures, fixturePath, fixturesDir, goodFixtures, manifest, type ManifestEntry, readFixture} from '../../helpers/fixtures.js'

// --- A small dataset encoder for datasets the fixtures do not cover ------------------------

/** An element for encodeDataset: text, raw bytes, items (a sequence) or fragments (encapsulated). */
export interface TestElement {
  tag: number
  vr: string
  value?: string | Buffer
  items?: TestElement[][]
  fragments?: Buffer[]
  undefinedLength?: boolean
  undefinedItemLength?: boolean
}

export interface TestEncoding {
  explicitVr: boolean
  littleEndian: boolean
}

export const implicitLittle: TestEncoding = {explicitVr: false, littleEndian: true}
export const explicitLittle: TestEncoding = {explicitVr: true, littleEndian: true}
export const explicitBig: TestEncoding = {explicitVr: true, littleEndian: false}

const LONG = new Set(['OB', 'OD', 'OF', 'OL', 'OV', 'OW', 'SQ', 'SV', 'UC', 'UN', 'UR', 'UT', 'UV'])
const UNDEFINED = 0xffffffff

function u16(value: number, littleEndian: boolean): Buffer {
  const b = Buffer.alloc(2)
  if (littleEndian) b.writeUInt16LE(value)
  else b.writeUInt16BE(value)
  return b
}

function u32(value: number, littleEndian: boolean): Buffer {
  const b = Buffer.alloc(4)
  if (littleEndian) b.writeUInt32LE(value >>> 0)
  else b.writeUInt32BE(value >>> 0)
  return b
}

function marker(element: number, length: number, littleEndian: boolean): Buffer {
  return Buffer.concat([u16(0xfffe, littleEndian), u16(element, littleEndian), u32(length, littleEndian)])
}

function textValue(vr: string, value: string | Buffer | undefined): Buffer {
  const bytes = Buffer.isBuffer(value) ? value : Buffer.from(value ?? '', 'latin1')
  if (bytes.length % 2 === 0) return bytes
  return Buffer.concat([bytes, Buffer.from([vr === 'UI' || vr === 'OB' || vr === 'UN' ? 0 : 0x20])])
}

/** Encodes elements in the given order (callers keep tags ascending). */
export function encodeDataset(elements: TestElement[], encoding: TestEncoding): Buffer {
  return Buffer.concat(elements.map((element) => encodeElement(element, encoding)))
}

function encodeElement(element: TestElement, encoding: TestEncoding): Buffer {
  const {littleEndian} = encoding
  let body: Buffer
  let length: number
  if (element.items) {
    // CP-246: an explicit-VR UN sequence holds implicit VR little endian items.
    const inner = element.vr === 'UN' ? implicitLittle : encoding
    const items = element.items.map((item) => {
      const content = encodeDataset(item, inner)
      return element.undefinedItemLength
        ? Buffer.concat([marker(0xe000, UNDEFINED, inner.littleEndian), content, marker(0xe00d, 0, inner.littleEndian)])
        : Buffer.concat([marker(0xe000, content.length, inner.littleEndian), content])
    })
    body = Buffer.concat(element.undefinedLength ? [...items, marker(0xe0dd, 0, inner.littleEndian)] : items)
    length = element.undefinedLength ? UNDEFINED : body.length
  } else if (element.fragments) {
    const parts = [marker(0xe000, 0, littleEndian)]
    for (const fragment of element.fragments) parts.push(marker(0xe000, fragment.length, littleEndian), fragment)
    parts.push(marker(0xe0dd, 0, littleEndian))
    body = Buffer.concat(parts)
    length = UNDEFINED
  } else {
    body = textValue(element.vr, element.value)
    length = body.length
  }
  const tag = Buffer.concat([u16(element.tag >>> 16, littleEndian), u16(element.tag & 0xffff, littleEndian)])
  let header: Buffer
  if (!encoding.explicitVr) header = Buffer.concat([tag, u32(length, littleEndian)])
  else if (LONG.has(element.vr)) header = Buffer.concat([tag, Buffer.from(element.vr, 'latin1'), Buffer.alloc(2), u32(length, littleEndian)])
  else header = Buffer.concat([tag, Buffer.from(element.vr, 'latin1'), u16(length, littleEndian)])
  return Buffer.concat([header, body])
}

/** Deflates like the Deflated Explicit VR Little Endian syntax: raw deflate, no zlib header. */
export function deflate(dataset: Buffer): Buffer {
  return deflateRawSync(dataset)
}
