import {inflateRawSync} from 'node:zlib'

import {datasetEncoding} from '../../../src/lib/dicom/dataset-reader.js'
import {ElementStream, type StreamEnd} from '../../../src/lib/dicom/element-stream.js'
import {readMetaHeader} from '../../../src/lib/dicom/part10.js'
import {Tag} from '../../../src/lib/dicom/tags.js'
import {brokenFixture, encodeDataset, explicitBig, explicitLittle, goodFixtures, implicitLittle, readFixture, type TestElement, type TestEncoding} from './helpers.js'

function datasetOfFixture(file: Buffer): {dataset: Buffer; transferSyntaxUid: string} {
  const meta = readMetaHeader(file)
  let dataset = file.subarray(meta.datasetOffset)
  if (datasetEncoding(meta.transferSyntaxUid).deflated) dataset = inflateRawSync(dataset)
  return {dataset, transferSyntaxUid: meta.transferSyntaxUid}
}

function walk(dataset: Buffer, encoding: TestEncoding, chunkSizes?: () => number): {end: StreamEnd; stream: ElementStream} {
  const stream = new ElementStream(encoding, {capture: [Tag.SOPInstanceUID, Tag.StudyInstanceUID]})
  if (chunkSizes === undefined) {
    stream.push(dataset)
  } else {
    for (let at = 0; at < dataset.length; ) {
      const size = Math.max(1, chunkSizes())
      stream.push(dataset.subarray(at, at + size))
      at += size
    }
  }

  return {end: stream.end(), stream}
}

function seeded(seed: number): () => number {
  let state = seed
  return () => {
    state = (state * 1_103_515_245 + 12_345) % 2_147_483_648
    return state / 2_147_483_648
  }
}

const uid = (value: Buffer | undefined) => value?.toString('latin1').replace(/[\0 ]+$/, '')

const sequenceDataset = (encoding: TestEncoding, undefinedLength: boolean): Buffer =>
  encodeDataset(
    [
      {tag: Tag.SOPInstanceUID, vr: 'UI', value: '1.2.3.4'},
      {tag: 0x00081140, vr: 'SQ', undefinedLength, undefinedItemLength: undefinedLength, items: [[{tag: 0x00081150, vr: 'UI', value: '1.2.840.10008.5.1.4.1.1.2'}], [{tag: 0x00081155, vr: 'UI', value: '1.2.3.5'}]]},
      {tag: Tag.StudyInstanceUID, vr: 'UI', value: '1.2.3.6'},
      {tag: Tag.PixelData, vr: 'OB', fragments: [Buffer.alloc(100, 1), Buffer.alloc(50, 2)]},
    ] satisfies TestElement[],
    encoding,
  )

describe('ElementStream', () => {
  it.each(goodFixtures.map((f) => [f.path, f] as const))('walks %s to its end and keeps the captured values, whole or in small chunks', (_name, fixture) => {
    const {dataset, transferSyntaxUid} = datasetOfFixture(readFixture(fixture))
    const encoding = datasetEncoding(transferSyntaxUid)
    const whole = walk(dataset, encoding)
    expect(whole.end).toEqual({complete: true, length: dataset.length})
    expect(uid(whole.stream.values.get(Tag.SOPInstanceUID))).toBe(fixture.sopInstanceUid)
    expect(uid(whole.stream.values.get(Tag.StudyInstanceUID))).toBe(fixture.studyInstanceUid)
    const chunked = walk(dataset, encoding, (() => {
      const random = seeded(dataset.length)
      return () => 1 + Math.floor(random() * 40)
    })())
    expect(chunked.end).toEqual(whole.end)
    expect([...chunked.stream.values]).toEqual([...whole.stream.values])
  })

  it.each(goodFixtures.map((f) => [f.path, f] as const))('says %s is cut short when its last element lacks bytes', (_name, fixture) => {
    const {dataset, transferSyntaxUid} = datasetOfFixture(readFixture(fixture))
    const encoding = datasetEncoding(transferSyntaxUid)
    for (const missing of [1, 2, 7]) {
      const {end} = walk(dataset.subarray(0, dataset.length - missing), encoding)
      expect(end.complete).toBe(false)
    }
  })

  it('reports the truncated fixture as ending inside PixelData', () => {
    const {dataset, transferSyntaxUid} = datasetOfFixture(readFixture(brokenFixture('truncated-pixel-data.dcm')))
    const {end} = walk(dataset, datasetEncoding(transferSyntaxUid))
    expect(end).toMatchObject({complete: false, problem: expect.stringMatching(/inside the value of PixelData \(7FE0,0010\)/)})
  })

  it.each([
    ['explicit little endian', explicitLittle],
    ['explicit big endian', explicitBig],
    ['implicit little endian', implicitLittle],
  ])('follows sequences of defined and undefined length and encapsulated fragments (%s)', (_name, encoding) => {
    for (const undefinedLength of [false, true]) {
      const dataset = sequenceDataset(encoding, undefinedLength)
      const whole = walk(dataset, encoding)
      expect(whole.end).toEqual({complete: true, length: dataset.length})
      expect(uid(whole.stream.values.get(Tag.StudyInstanceUID))).toBe('1.2.3.6')
      // Every cut strictly inside the data is noticed, except those that fall on a top-level boundary.
      const boundaries = new Set<number>([0, dataset.length])
      let offset = 0
      for (const element of [
        {tag: Tag.SOPInstanceUID, vr: 'UI', value: '1.2.3.4'},
        {tag: 0x00081140, vr: 'SQ', undefinedLength, undefinedItemLength: undefinedLength, items: [[{tag: 0x00081150, vr: 'UI', value: '1.2.840.10008.5.1.4.1.1.2'}], [{tag: 0x00081155, vr: 'UI', value: '1.2.3.5'}]]},
        {tag: Tag.StudyInstanceUID, vr: 'UI', value: '1.2.3.6'},
      ] satisfies TestElement[]) {
        offset += encodeDataset([element], encoding).length
        boundaries.add(offset)
      }

      for (let cut = 1; cut < dataset.length; cut++) {
        if (boundaries.has(cut)) continue
        let end: StreamEnd | undefined
        try {
          end = walk(dataset.subarray(0, cut), encoding).end
        } catch {
          continue // a cut header that reads as nonsense is also a refusal
        }

        expect({cut, complete: end.complete}).toEqual({cut, complete: false})
      }
    }
  })

  it('names the open sequence when an undefined-length sequence has no delimiter', () => {
    const dataset = sequenceDataset(explicitLittle, true)
    // Cut just after the sequence's second item delimiter: the items are whole, the sequence is not.
    const sequenceEnd = dataset.indexOf(Buffer.from([0xfe, 0xff, 0xdd, 0xe0]))
    const {end} = walk(dataset.subarray(0, sequenceEnd), explicitLittle)
    expect(end).toMatchObject({complete: false, problem: expect.stringMatching(/inside the sequence ReferencedImageSequence \(0008,1140\) \(no delimiter\)/)})
  })

  it('refuses an element that runs past the end of its item', () => {
    const item = encodeDataset([{tag: 0x00081150, vr: 'UI', value: '1.2.840.10008.5.1.4.1.1.2'}], explicitLittle)
    // In a sequence of undefined length, an item that claims 4 bytes but holds a longer element.
    const header = Buffer.from([0x08, 0x00, 0x40, 0x11, 0x53, 0x51, 0, 0, 0xff, 0xff, 0xff, 0xff])
    const itemHeader = Buffer.from([0xfe, 0xff, 0x00, 0xe0, 4, 0, 0, 0])
    const dataset = Buffer.concat([header, itemHeader, item])
    expect(() => walk(dataset, explicitLittle)).toThrow(/runs past the end of the item or sequence/)
  })

  it('refuses bytes that are not an explicit VR element', () => {
    const dataset = Buffer.concat([encodeDataset([{tag: Tag.SOPInstanceUID, vr: 'UI', value: '1.2.3'}], explicitLittle), Buffer.from([0x10, 0x00, 0x10, 0x00, 0x01, 0x02, 0, 0])])
    expect(() => walk(dataset, explicitLittle)).toThrow(expect.objectContaining({code: 'INVALID_DICOM', message: expect.stringMatching(/has no valid VR/)}))
  })
})

describe('ElementStream as the one reader', () => {
  const dataset = sequenceDataset(explicitLittle, true)

  it('seeks past values it is told passed (advance) and still says where a cut falls', () => {
    const big = encodeDataset([
      {tag: Tag.SOPInstanceUID, vr: 'UI', value: '1.2.3.4'},
      {tag: Tag.PixelData, vr: 'OB', value: Buffer.alloc(10_000, 7)},
      {tag: 0x7fe10010, vr: 'LO', value: 'TAIL'},
    ], explicitLittle)
    const pixelValue = big.indexOf(Buffer.alloc(16, 7))
    // Feed the headers, skip the pixel value unread, feed the tail.
    const stream = new ElementStream(explicitLittle, {capture: [Tag.SOPInstanceUID]})
    stream.push(big.subarray(0, pixelValue + 100))
    expect(stream.skippable).toBe(10_000 - 100)
    stream.advance(stream.skippable)
    stream.push(big.subarray(pixelValue + 10_000))
    expect(stream.end()).toEqual({complete: true, length: big.length})
    expect(uid(stream.values.get(Tag.SOPInstanceUID))).toBe('1.2.3.4')

    // The file ends 500 bytes into the value: advancing over what is there leaves it cut.
    const cut = new ElementStream(explicitLittle)
    cut.push(big.subarray(0, pixelValue + 100))
    cut.advance(400)
    expect(cut.end()).toMatchObject({complete: false, cut: {inside: 'value', tag: Tag.PixelData, valueOffset: pixelValue, length: 10_000, missing: 9500}})
    expect(() => new ElementStream(explicitLittle).advance(1)).toThrow(/past the 0 skippable bytes/)
  })

  it('tells a visitor every element, container and fragment, in order', () => {
    const events: string[] = []
    const stream = new ElementStream(explicitLittle, {
      capture: [Tag.StudyInstanceUID],
      visitor: {
        element: (h) => {
          events.push(`element ${h.tag.toString(16)} ${h.vr} depth ${h.depth}${h.captured ? ' captured' : ''}`)
        },
        captured: (tag, vr, value) => events.push(`captured ${tag.toString(16)} ${vr} ${uid(value)}`),
        open: (kind, _offset, length) => events.push(`open ${kind}${length === 0xffffffff ? '' : ` ${length}`}`),
        close: (kind, end) => events.push(`close ${kind} at ${end}`),
        fragment: (_offset, length) => events.push(`fragment ${length}`),
      },
    })
    // One byte at a time: the events do not depend on the chunks.
    for (let at = 0; at < dataset.length; at++) stream.push(dataset.subarray(at, at + 1))
    expect(stream.end().complete).toBe(true)
    expect(events).toEqual([
      'element 80018 UI depth 0',
      'element 81140 SQ depth 0',
      'open sequence',
      'open item',
      'element 81150 UI depth 2',
      `close item at ${dataset.indexOf(Buffer.from([0xfe, 0xff, 0x0d, 0xe0])) + 8}`,
      'open item',
      'element 81155 UI depth 2',
      `close item at ${dataset.lastIndexOf(Buffer.from([0xfe, 0xff, 0x0d, 0xe0])) + 8}`,
      `close sequence at ${dataset.indexOf(Buffer.from([0xfe, 0xff, 0xdd, 0xe0])) + 8}`,
      'element 20000d UI depth 0 captured',
      'captured 20000d UI 1.2.3.6',
      'element 7fe00010 OB depth 0',
      'open fragments',
      'fragment 0',
      'fragment 100',
      'fragment 50',
      `close fragments at ${dataset.length}`,
    ])
  })

  it('calls a top-level visitor for top-level elements only', () => {
    const seen: number[] = []
    const stream = new ElementStream(explicitLittle, {visitor: {topLevelOnly: true, element: (h) => void seen.push(h.tag)}})
    stream.push(dataset)
    expect(stream.end().complete).toBe(true)
    expect(seen).toEqual([Tag.SOPInstanceUID, 0x00081140, Tag.StudyInstanceUID, Tag.PixelData])
  })

  it('reads a defined-length value as items when the visitor asks, tolerating a redundant delimiter', () => {
    const items = encodeDataset([{tag: 0x00081140, vr: 'SQ', items: [[{tag: 0x00081155, vr: 'UI', value: '1.2.3.5'}]]}], explicitLittle)
    // A sequence of defined length that also ends with a sequence delimiter (dcmtk reads it).
    const withDelimiter = Buffer.concat([items, Buffer.from([0xfe, 0xff, 0xdd, 0xe0, 0, 0, 0, 0])])
    withDelimiter.writeUInt32LE(withDelimiter.length - 12, 8)
    const seen: number[] = []
    const stream = new ElementStream(explicitLittle, {
      visitor: {
        element(h) {
          seen.push(h.tag)
          return h.vr === 'SQ'
        },
      },
    })
    stream.push(withDelimiter)
    expect(stream.end()).toEqual({complete: true, length: withDelimiter.length})
    expect(seen).toEqual([0x00081140, 0x00081155])
  })

  it('stops when told to and takes nothing after', () => {
    const stream: ElementStream = new ElementStream(explicitLittle, {visitor: {element: (h) => (h.tag === 0x00081140 ? stream.stop() : undefined)}})
    stream.push(dataset)
    expect(stream.isStopped).toBe(true)
    expect(stream.length).toBe(dataset.length)
    expect(() => stream.end()).toThrow(/after stop/)
  })

  it('names the containers it is inside when it refuses, with the caller\'s offsets and hint', () => {
    const broken = Buffer.from(dataset)
    // The second item's element gets a VR that is not one.
    const second = broken.indexOf(Buffer.from([0x08, 0x00, 0x55, 0x11]))
    broken[second + 4] = 0x31
    const stream = new ElementStream(explicitLittle, {source: 'x.dcm', baseOffset: 300, offsetNoun: 'byte', hint: 'dcmdump shows it'})
    expect(() => stream.push(broken)).toThrow(expect.objectContaining({
      code: 'INVALID_DICOM',
      message: `x.dcm: malformed dataset: ReferencedSOPInstanceUID (0008,1155) has no valid VR (bytes 0x31 0x49) at byte ${300 + second} (inside ReferencedImageSequence (0008,1140) > item 2)`,
      hint: 'dcmdump shows it',
    }))
  })

  it('refuses a group FFFE tag where an element belongs', () => {
    const dataset = Buffer.concat([encodeDataset([{tag: Tag.SOPInstanceUID, vr: 'UI', value: '1.2.3'}], explicitLittle), Buffer.from([0xfe, 0xff, 0x01, 0x00, 0, 0, 0, 0])])
    expect(() => walk(dataset, explicitLittle)).toThrow(/\(FFFE,0001\) where an element was expected at dataset byte 14/)
  })

  it('names the tag of a header cut after its first four bytes', () => {
    const {end} = walk(dataset.subarray(0, 20), explicitLittle)
    expect(end).toMatchObject({complete: false, cut: {inside: 'header', offset: 16, tag: 0x00081140, path: []}})
  })
})
