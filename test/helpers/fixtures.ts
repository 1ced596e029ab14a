import {readFileSync} from 'node:fs'
import {fileURLToPath} from 'node:url'

import {readMetaHeader} from '../../src/lib/dicom/part10.js'
import {ScuAssociation} from '../../src/lib/dimse/scu.js'

/** fixtures/ at the repository root. */
export const fixturesDir = fileURLToPath(new URL('../../fixtures/', import.meta.url))

/** One file of fixtures/manifest.json. */
export interface ManifestEntry {
  path: string
  description: string
  sopClassUid: string
  sopInstanceUid: string
  studyInstanceUid: string
  seriesInstanceUid: string
  patientId: string
  patientName: string
  modality: string
  transferSyntaxUid: string
  numberOfFrames?: number
  size: number
  sha256: string
  broken?: string
  metaSopClassUid?: string
}

interface Manifest {
  count: number
  totalSize: number
  files: ManifestEntry[]
}

export const manifest = JSON.parse(readFileSync(`${fixturesDir}manifest.json`, 'utf8')) as Manifest
export const goodFixtures = manifest.files.filter((entry) => !entry.broken)
export const brokenFixtures = manifest.files.filter((entry) => entry.broken)

export function fixturePath(entry: ManifestEntry | string): string {
  return `${fixturesDir}${typeof entry === 'string' ? entry : entry.path}`
}

export function readFixture(entry: ManifestEntry | string): Buffer {
  return readFileSync(fixturePath(entry))
}

export function brokenFixture(name: string): ManifestEntry {
  const entry = brokenFixtures.find((e) => e.path === `broken/${name}`)
  if (!entry) throw new Error(`no broken fixture ${name}`)
  return entry
}

/** The dataset part of a Part 10 file (what a sender puts on the wire; the meta header is each receiver's own). */
export function datasetOf(file: Buffer): Buffer {
  return file.subarray(readMetaHeader(file).datasetOffset)
}

/** The dataset as a DIMSE sender sends it: an odd-length (deflated) one gains its pad byte (PS3.5 A.5). */
export function onTheWire(dataset: Buffer): Buffer {
  return dataset.length % 2 === 0 ? dataset : Buffer.concat([dataset, Buffer.from([0])])
}

/**
 * Sends fixtures' own dataset bytes (no dcmtk re-encoding on the way) on one association with our
 * raw-bytes client, one presentation context per fixture; returns the status of each.
 */
export async function sendFixturesRaw(port: number, calledAeTitle: string, fixtures: ManifestEntry[] = goodFixtures): Promise<number[]> {
  const files = fixtures.map((fixture) => readFixture(fixture))
  const sender = await ScuAssociation.connect({
    host: '127.0.0.1',
    port,
    callingAeTitle: 'RAWSENDER',
    calledAeTitle,
    contexts: files.map((file, index) => ({abstractSyntax: readMetaHeader(file).mediaStorageSopClassUid!, transferSyntax: fixtures[index].transferSyntaxUid})),
  })
  const statuses: number[] = []
  try {
    for (const [index, file] of files.entries()) {
      const meta = readMetaHeader(file)
      const response = await sender.store({sopClassUid: meta.mediaStorageSopClassUid!, sopInstanceUid: fixtures[index].sopInstanceUid, transferSyntaxUid: fixtures[index].transferSyntaxUid, dataset: {buffer: datasetOf(file)}})
      statuses.push(response.status)
    }
  } finally {
    await sender.release()
  }

  return statuses
}
