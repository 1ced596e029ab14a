import {open} from 'node:fs/promises'

import yauzl from 'yauzl'

import {DdrError} from '../errors.js'

/** One file inside a ZIP archive. */
export interface ZipEntry {
  /** Path inside the archive, "/"-separated. */
  name: string
  /** Uncompressed size from the central directory. */
  size: number
  entry: yauzl.Entry
}

const LOCAL_FILE_HEADER = 0x04034b50
const END_OF_CENTRAL_DIRECTORY = 0x06054b50

/** Whether the file starts like a ZIP archive (a local file header, or the end record of an empty one). */
export async function looksLikeZip(file: string): Promise<boolean> {
  const handle = await open(file, 'r')
  try {
    const head = Buffer.alloc(4)
    const {bytesRead} = await handle.read(head, 0, 4, 0)
    if (bytesRead < 4) return false
    const signature = head.readUInt32LE(0)
    return signature === LOCAL_FILE_HEADER || signature === END_OF_CENTRAL_DIRECTORY
  } finally {
    await handle.close()
  }
}

/**
 * A ZIP archive read in place: entries are listed from the central directory and each one is
 * inflated into memory when asked for, never extracted to disk. Close it when done.
 */
export class ZipArchive {
  private constructor(readonly path: string, private readonly zip: yauzl.ZipFile, readonly entries: ZipEntry[]) {}

  /** Opens an archive and lists its files (folders left out). DdrError INVALID_DICOM when it is not a readable ZIP. */
  static async open(file: string): Promise<ZipArchive> {
    let zip: yauzl.ZipFile | undefined
    try {
      zip = await yauzl.openPromise(file, {lazyEntries: true, autoClose: false, strictFileNames: false})
      const entries: ZipEntry[] = []
      for await (const entry of zip.eachEntry()) {
        if (entry.fileName.endsWith('/')) continue
        entries.push({name: entry.fileName, size: entry.uncompressedSize, entry})
      }
      return new ZipArchive(file, zip, entries)
    } catch (error) {
      zip?.close()
      throw new DdrError('INVALID_DICOM', `${file}: not a readable ZIP archive: ${(error as Error).message}`, {
        hint: 'check the archive with "unzip -t"; ddr reads ZIP archives in place (deflate or stored entries)',
        cause: error,
      })
    }
  }

  /** The whole uncompressed content of one entry (CRC and size checked by yauzl). */
  async read(entry: ZipEntry): Promise<Buffer> {
    try {
      const stream = await this.zip.openReadStreamPromise(entry.entry)
      const chunks: Buffer[] = []
      for await (const chunk of stream) chunks.push(chunk as Buffer)
      return Buffer.concat(chunks)
    } catch (error) {
      throw new DdrError('INVALID_DICOM', `${this.path}!${entry.name}: cannot read the ZIP entry: ${(error as Error).message}`, {
        hint: entry.entry.isEncrypted() ? 'encrypted ZIP entries are not supported: extract the archive first' : 'check the archive with "unzip -t"',
        cause: error,
      })
    }
  }

  close(): void {
    this.zip.close()
  }
}
