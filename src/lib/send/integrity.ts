import {createReadStream, readSync} from 'node:fs'
import {Readable, Writable} from 'node:stream'
import {pipeline} from 'node:stream/promises'
import {createInflate, createInflateRaw} from 'node:zlib'

import {ElementStream, type StreamCut} from '../dicom/element-stream.js'
import {describeTag} from '../dicom/tags.js'
import {datasetEncoding, type DatasetEncoding} from '../dicom/uids.js'
import {isDdrError} from '../errors.js'

/** Random access to the bytes of a file or of a buffer. */
export interface ByteSource {
  readonly size: number
  /** Up to `length` bytes from `position` (fewer at the end). */
  read(position: number, length: number): Promise<Buffer>
  /** The bytes from `start` to the end, as a stream. */
  stream(start: number): Readable
}

/** A ByteSource over a buffer (a ZIP entry in memory). */
export function bufferSource(buffer: Buffer): ByteSource {
  return {
    size: buffer.length,
    read: async (position, length) => buffer.subarray(position, Math.min(buffer.length, position + length)),
    stream: (start) => Readable.from([buffer.subarray(start)]),
  }
}

/**
 * A ByteSource over an open file descriptor. Reads are synchronous: the files ddr send checks sit
 * in the page cache more often than not, and a thread-pool round trip per read costs more than
 * the read itself. The last block read is kept, so the meta header and the element walk that
 * follows it share one read for a small file.
 */
export function fileSource(fd: number, filePath: string, size: number): ByteSource {
  let last = Buffer.alloc(0)
  let lastStart = 0
  return {
    size,
    async read(position, length) {
      const wanted = Math.max(0, Math.min(length, size - position))
      if (position >= lastStart && position + wanted <= lastStart + last.length) return last.subarray(position - lastStart, position - lastStart + wanted)
      const buffer = Buffer.allocUnsafe(wanted)
      let filled = 0
      while (filled < wanted) {
        const bytesRead = readSync(fd, buffer, filled, wanted - filled, position + filled)
        if (bytesRead === 0) break
        filled += bytesRead
      }
      last = buffer.subarray(0, filled)
      lastStart = position
      return last
    },
    stream: (start) => createReadStream(filePath, {start}),
  }
}

/** Whether the dataset is whole; when not, what was cut and where. */
export type DatasetCheck = {complete: true} | {complete: false; reason: string}

// Reads of this size keep the walk to a few reads per file; values are skipped, not read.
const WINDOW = 64 * 1024

/**
 * Words a cut the way `ddr send` reports it ("truncated: the file ends inside PixelData
 * (7FE0,0010) ..."); offsets count from the first dataset byte.
 */
function describeCut(cut: StreamCut, what: string): string {
  const container = cut.path.length === 0 ? 'the dataset' : cut.path.join(' > ')
  switch (cut.inside) {
    case 'value': {
      return `${what} ends inside ${describeTag(cut.tag)} (its value needs ${cut.length} bytes from dataset byte ${cut.valueOffset}, ${cut.length - cut.missing} are there)`
    }

    case 'header': {
      return cut.tag === undefined ? `${what} ends inside ${container} (an element header at dataset byte ${cut.offset})` : `${what} ends inside the header of ${describeTag(cut.tag)} at dataset byte ${cut.offset}`
    }

    case 'item': {
      return `${what} ends inside an item of ${describeTag(cut.tag)} (at dataset byte ${cut.offset})`
    }

    default: {
      return `${what} ends inside ${describeTag(cut.tag)} (no sequence delimiter)`
    }
  }
}

/** The verdict of the element reader on a dataset it was fed to the end, or that it refused. */
function verdict(stream: ElementStream, what: string): DatasetCheck {
  const end = stream.end()
  return end.complete ? {complete: true} : {complete: false, reason: `truncated: ${describeCut(end.cut, what)}`}
}

function refusal(error: unknown): DatasetCheck {
  if (isDdrError(error) && error.code === 'INVALID_DICOM') return {complete: false, reason: error.message}
  throw error
}

/**
 * Checks that a Part 10 file's dataset is not cut short and walks in its transfer syntax: every
 * element (sequences, items and encapsulated pixel data included) must end within the data and
 * inside its container. The walk is ElementStream's (the router's check on receive), fed through
 * a read window: it reads element headers only, and seeks past values (a few reads per file).
 * A deflated dataset is inflated as a stream (nothing kept): its deflate stream must end, and
 * the inflated elements must walk to their end too.
 */
export async function checkDatasetComplete(source: ByteSource, datasetOffset: number, transferSyntaxUid: string): Promise<DatasetCheck> {
  const encoding = datasetEncoding(transferSyntaxUid)
  if (encoding.deflated) return checkDeflatedDataset(source, datasetOffset, encoding)
  const stream = new ElementStream(encoding)
  try {
    let position = datasetOffset
    while (position < source.size) {
      const skip = Math.min(stream.skippable, source.size - position)
      if (skip > 0) {
        stream.advance(skip)
        position += skip
        continue
      }

      const chunk = await source.read(position, WINDOW)
      if (chunk.length === 0) break
      stream.push(chunk)
      position += chunk.length
    }

    return verdict(stream, 'the file')
  } catch (error) {
    return refusal(error)
  }
}

/**
 * Inflates the dataset into the element reader; a failed inflate is reported as the old check did
 * (a cut stream is "truncated"), a malformed inflated dataset as the reader says.
 */
async function checkDeflatedDataset(source: ByteSource, datasetOffset: number, encoding: DatasetEncoding): Promise<DatasetCheck> {
  const walk = async (raw: boolean): Promise<DatasetCheck> => {
    const stream = new ElementStream(encoding, {offsetNoun: 'inflated dataset byte'})
    // The reader's refusal is kept, not thrown into the pipeline: an inflate error must still win.
    let refused: DatasetCheck | undefined
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        if (refused === undefined) {
          try {
            stream.push(chunk)
          } catch (error) {
            refused = refusal(error)
          }
        }

        done()
      },
    })
    await pipeline(source.stream(datasetOffset), raw ? createInflateRaw() : createInflate(), sink)
    if (refused !== undefined) return refused
    try {
      return verdict(stream, 'the inflated dataset')
    } catch (error) {
      return refusal(error)
    }
  }

  try {
    return await walk(true)
  } catch (rawError) {
    // Some writers wrap the stream in zlib (RFC 1950) although DICOM asks for raw deflate.
    const head = await source.read(datasetOffset, 2)
    const zlibHeader = head.length === 2 && (head[0] & 0x0f) === 8 && ((head[0] << 8) | head[1]) % 31 === 0
    if (zlibHeader) {
      try {
        return await walk(false)
      } catch {
        // report the raw error: it describes the standard encoding
      }
    }
    const message = (rawError as Error).message
    return /unexpected end/i.test(message)
      ? {complete: false, reason: 'truncated: the file ends inside the deflated dataset (the deflate stream is cut)'}
      : {complete: false, reason: `malformed dataset: the deflated dataset cannot be inflated (${message})`}
  }
}
