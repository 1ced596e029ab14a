import {Readable, Writable} from 'node:stream'
import {pipeline} from 'node:stream/promises'
import {createInflate, createInflateRaw} from 'node:zlib'

import {decodeElementValue} from './dataset-reader.js'
import {ElementStream} from './element-stream.js'
import {Tag} from './tags.js'
import {datasetEncoding} from './uids.js'

/** What a receiver was told the dataset is, in the C-STORE command and its presentation context. */
export interface ExpectedIdentity {
  transferSyntaxUid: string
  sopClassUid: string
  sopInstanceUid: string
}

/**
 * The verdict on a received dataset. `malformed`: it does not walk to its end in its transfer
 * syntax (cut short, broken structure, odd length); `identity`: it walks, but is not the instance
 * the command named (SOP Instance or Class UID differs, or it has none).
 */
export type DatasetVerdict = {ok: true; values: Map<number, string>} | {ok: false; problem: 'malformed' | 'identity'; why: string}

/** The tags to capture for a caller's list (the same list for every instance): made once per list. */
const captureLists = new WeakMap<readonly number[], number[]>()

/**
 * Checks a dataset while it arrives, on the bytes as they are (headers only, values skipped: it
 * costs about the same for any instance size), and says at the end whether a backend can take
 * it: every element whole, every sequence closed, the length rules of the transfer syntax held,
 * and the dataset is the instance the command named. Keeps the text of a few wanted top-level
 * elements (for routing) on the way. A deflated dataset is checked at the end, from a second
 * read of its bytes (see finish()).
 */
export class ReceivedDatasetCheck {
  private readonly stream: ElementStream
  private readonly deflated: boolean
  private readonly littleEndian: boolean
  private problem?: string
  private pushed = 0

  constructor(private readonly expected: ExpectedIdentity, private readonly capture: readonly number[]) {
    const encoding = datasetEncoding(expected.transferSyntaxUid)
    this.deflated = encoding.deflated
    this.littleEndian = encoding.littleEndian
    let wanted = captureLists.get(capture)
    if (wanted === undefined) {
      wanted = [...new Set([...capture, Tag.SOPClassUID, Tag.SOPInstanceUID, Tag.SpecificCharacterSet])]
      captureLists.set(capture, wanted)
    }

    this.stream = new ElementStream(encoding, {capture: wanted})
  }

  /** The next received bytes. Never throws: the first problem is kept for finish(). */
  push(chunk: Buffer): void {
    this.pushed += chunk.length
    if (this.deflated || this.problem !== undefined) return
    try {
      this.stream.push(chunk)
    } catch (error) {
      this.problem = (error as Error).message
    }
  }

  /**
   * The verdict. A deflated dataset needs `reread`, which yields its (deflated) bytes again from
   * memory or from the file they were written to.
   */
  async finish(reread: () => AsyncIterable<Buffer> | Iterable<Buffer>): Promise<DatasetVerdict> {
    // PS3.5 7.1 / PS3.8 annex E: a dataset has an even length; only a deflate stream may lack its pad byte.
    if (!this.deflated && this.pushed % 2 === 1) return {ok: false, problem: 'malformed', why: `odd dataset length (${this.pushed} bytes) in a transfer syntax that needs even lengths`}
    if (this.deflated && this.problem === undefined) await this.inflateInto(reread)
    if (this.problem !== undefined) return {ok: false, problem: 'malformed', why: this.problem}
    const end = this.stream.end()
    if (!end.complete) return {ok: false, problem: 'malformed', why: `dataset cut short: ${end.problem}`}

    const values = this.decodedValues()
    const sopInstanceUid = values.get(Tag.SOPInstanceUID)
    if (!sopInstanceUid) return {ok: false, problem: 'identity', why: 'the dataset has no SOPInstanceUID (0008,0018)'}
    if (sopInstanceUid !== this.expected.sopInstanceUid) {
      return {ok: false, problem: 'identity', why: `SOPInstanceUID ${sopInstanceUid} in the dataset is not the command's ${this.expected.sopInstanceUid}`}
    }

    const sopClassUid = values.get(Tag.SOPClassUID)
    if (sopClassUid && sopClassUid !== this.expected.sopClassUid) {
      return {ok: false, problem: 'identity', why: `SOPClassUID ${sopClassUid} in the dataset is not the command's ${this.expected.sopClassUid}`}
    }

    return {ok: true, values}
  }

  private decodedValues(): Map<number, string> {
    const raw = this.stream.values
    const charset = raw.has(Tag.SpecificCharacterSet) ? decodeElementValue(raw.get(Tag.SpecificCharacterSet)!, Tag.SpecificCharacterSet, 'CS', this.littleEndian) : undefined
    const values = new Map<number, string>()
    for (const [tag, bytes] of raw) {
      const text = decodeElementValue(bytes, tag, undefined, this.littleEndian, charset)
      if (text !== undefined) values.set(tag, text)
    }

    return values
  }

  /** Inflates the deflated bytes as a stream (memory stays flat) into the element walk. */
  private async inflateInto(reread: () => AsyncIterable<Buffer> | Iterable<Buffer>): Promise<void> {
    const source = reread()
    const iterator = Symbol.asyncIterator in source ? source[Symbol.asyncIterator]() : source[Symbol.iterator]()
    // DICOM asks for raw deflate (RFC 1951); some senders wrap it in zlib (RFC 1950): peek at the first bytes.
    const head: Buffer[] = []
    let headLength = 0
    while (headLength < 2) {
      const next = await iterator.next()
      if (next.done) break
      head.push(next.value)
      headLength += next.value.length
    }

    const start = Buffer.concat(head)
    const zlibHeader = start.length >= 2 && (start[0] & 0x0f) === 8 && ((start[0] << 8) | start[1]) % 31 === 0
    const sink = new Writable({
      write: (chunk: Buffer, _encoding, callback) => {
        try {
          this.stream.push(chunk)
          callback()
        } catch (error) {
          callback(error as Error)
        }
      },
    })
    try {
      await pipeline(
        Readable.from(
          (async function* () {
            yield start
            for (let next = await iterator.next(); !next.done; next = await iterator.next()) yield next.value
          })(),
        ),
        zlibHeader ? createInflate() : createInflateRaw(),
        sink,
      )
    } catch (error) {
      this.problem ??= `the deflated dataset cannot be inflated: ${(error as Error).message}`
    }
  }
}
