import {mkdtemp, readdir, rm} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {Tag} from '../../../src/lib/dicom/tags.js'
import {Status} from '../../../src/lib/dimse/status.js'
import {ContextResult} from '../../../src/lib/dimse/pdu.js'
import {type Storescp, dcmsend, startStorescp} from '../../helpers/dcmtk.js'
import {waitFor} from '../../helpers/wait.js'
import {brokenFixture, datasetOf, fixturePath, goodFixtures, readFixture} from '../../helpers/fixtures.js'
import {type TestOrthanc, startTestOrthanc} from '../../helpers/orthanc.js'
import {rawStores} from '../../helpers/raw-store.js'
import {type TestRouter, startTestRouter} from '../../helpers/router.js'
import {encodeDataset, explicitLittle} from '../../unit/dicom/helpers.js'

const CT = '1.2.840.10008.5.1.4.1.1.2'
const MR = '1.2.840.10008.5.1.4.1.1.4'
const EXPLICIT_LE = '1.2.840.10008.1.2.1'
const IMPLICIT_LE = '1.2.840.10008.1.2'
const JPEG_LS = '1.2.840.10008.1.2.4.80'

const fixture = (name: string) => {
  const entry = goodFixtures.find((f) => f.path.endsWith(name))!
  return {entry, dataset: datasetOf(readFixture(entry))}
}

/** A CT whose dataset is larger than the spool's in-memory limit, so it streams to a file of its own. */
function largeCt(sopInstanceUid: string): Buffer {
  return encodeDataset(
    [
      {tag: Tag.SOPClassUID, vr: 'UI', value: CT},
      {tag: Tag.SOPInstanceUID, vr: 'UI', value: sopInstanceUid},
      {tag: Tag.Modality, vr: 'CS', value: 'CT'},
      {tag: Tag.PatientID, vr: 'LO', value: 'REFUSALS'},
      {tag: Tag.StudyInstanceUID, vr: 'UI', value: '1.2.826.0.1.3680043.10.1.77.1'},
      {tag: Tag.SeriesInstanceUID, vr: 'UI', value: '1.2.826.0.1.3680043.10.1.77.2'},
      {tag: Tag.PixelData, vr: 'OW', value: Buffer.alloc(400_000, 7)},
    ],
    explicitLittle,
  )
}

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, {recursive: true, withFileTypes: true}).catch(() => [])
  return entries.filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name))
}

describe('the router never says Success for an instance no backend will take', () => {
  let orthanc: TestOrthanc
  let spooled: TestRouter
  let passThrough: TestRouter

  beforeAll(async () => {
    orthanc = await startTestOrthanc({name: 'refusals', aeTitle: 'REFUSALS'})
    spooled = await startTestRouter([orthanc])
    passThrough = await startTestRouter([orthanc], {spool: {enabled: false}})
  })

  afterAll(async () => {
    await spooled?.stop()
    await passThrough?.stop()
    await orthanc?.stop()
  })

  it('refuses malformed datasets and mismatched commands before Success, and keeps nothing of them', async () => {
    const rtplan = fixture('rtplan.dcm')
    const rtstruct = fixture('rtstruct.dcm')
    const ct = fixture('ct-explicit-le.dcm')
    const large = largeCt('1.2.826.0.1.3680043.10.1.77.3')
    const sequenceCut = rtstruct.dataset.indexOf(Buffer.from([0x06, 0x30, 0x39, 0x00])) + 40 // inside ROIContourSequence's nested items
    const cases = [
      {name: 'RT Plan cut inside an element', store: {abstractSyntax: rtplan.entry.sopClassUid, transferSyntax: EXPLICIT_LE, sopInstanceUid: rtplan.entry.sopInstanceUid, fragments: [rtplan.dataset.subarray(0, rtplan.dataset.length - 10)]}, status: Status.cannotUnderstand, why: /cut short: the data ends inside the value of/},
      {name: 'RT Structure Set cut inside nested undefined-length sequences', store: {abstractSyntax: rtstruct.entry.sopClassUid, transferSyntax: EXPLICIT_LE, sopInstanceUid: rtstruct.entry.sopInstanceUid, fragments: [rtstruct.dataset.subarray(0, sequenceCut - (sequenceCut % 2))]}, status: Status.cannotUnderstand, why: /cut short/},
      {name: 'large CT cut inside PixelData (file path)', store: {abstractSyntax: CT, transferSyntax: EXPLICIT_LE, sopInstanceUid: '1.2.826.0.1.3680043.10.1.77.3', fragments: [large.subarray(0, 150_000), large.subarray(150_000, large.length - 1000)]}, status: Status.cannotUnderstand, why: /PixelData \(7FE0,0010\)/},
      {name: 'command SOP Instance UID differs from the dataset', store: {abstractSyntax: CT, transferSyntax: EXPLICIT_LE, sopInstanceUid: '1.2.3.999', fragments: [ct.dataset]}, status: Status.dataSetDoesNotMatchSopClass, why: /SOPInstanceUID .* is not the command's 1\.2\.3\.999/},
      {name: 'command SOP Class UID differs from the context', store: {abstractSyntax: CT, commandSopClassUid: MR, transferSyntax: EXPLICIT_LE, sopInstanceUid: ct.entry.sopInstanceUid, fragments: [ct.dataset]}, status: Status.cannotUnderstand, why: /is not the presentation context's/},
      {name: 'command SOP Class UID differs from the dataset', store: {abstractSyntax: MR, transferSyntax: EXPLICIT_LE, sopInstanceUid: ct.entry.sopInstanceUid, fragments: [ct.dataset]}, status: Status.dataSetDoesNotMatchSopClass, why: /SOPClassUID .* is not the command's/},
      {name: 'odd last fragment (a byte appended)', store: {abstractSyntax: CT, transferSyntax: EXPLICIT_LE, sopInstanceUid: ct.entry.sopInstanceUid, fragments: [Buffer.concat([ct.dataset, Buffer.from([0])])]}, status: Status.dataSetDoesNotMatchSopClass, why: /odd-length dataset fragment/},
      {name: 'odd fragment in the middle, even in total', store: {abstractSyntax: CT, transferSyntax: EXPLICIT_LE, sopInstanceUid: ct.entry.sopInstanceUid, fragments: [ct.dataset.subarray(0, 101), ct.dataset.subarray(101)]}, status: Status.dataSetDoesNotMatchSopClass, why: /odd-length dataset fragment \(101 bytes\)/},
    ]
    const before = await orthanc.client.statistics()
    for (const router of [spooled, passThrough]) {
      const results = await rawStores(router.port, router.aeTitle, cases.map((c) => c.store))
      for (const [index, c] of cases.entries()) {
        expect({case: c.name, status: results[index]?.status}).toEqual({case: c.name, status: c.status})
        // Answered at once, not after a backend gave up on it.
        expect(results[index]!.ms).toBeLessThan(3000)
        const line = router.logs.find((l) => l.includes('instance-refused') && c.why.test(l))
        expect({case: c.name, logged: line !== undefined}).toEqual({case: c.name, logged: true})
        expect(line).toMatch(/RAWSENDER/)
        expect(line).toMatch(/127\.0\.0\.1:\d+/)
      }
    }

    await spooled.drained()
    expect((await orthanc.client.statistics()).CountInstances).toBe(before.CountInstances)
    expect(spooled.service.router.counters.received).toBe(0)
    // Nothing queued, nothing dead-lettered, no partial file left behind.
    expect(await filesUnder(path.join(spooled.config.spool.dir, 'dead-letter'))).toEqual([])
    expect((await filesUnder(path.join(spooled.config.spool.dir, 'queue'))).filter((f) => f.endsWith('.dcm') || f.endsWith('.part'))).toEqual([])
  })

  it('takes the same instances whole: a large CT on the file path and a deflated dataset of odd length without its pad byte', async () => {
    const large = largeCt('1.2.826.0.1.3680043.10.1.77.4')
    const deflated = goodFixtures.find((f) => f.path.endsWith('ct-deflated.dcm'))!
    const deflatedDataset = datasetOf(readFixture(deflated))
    expect(deflatedDataset.length % 2).toBe(1)
    const results = await rawStores(spooled.port, spooled.aeTitle, [
      {abstractSyntax: CT, transferSyntax: EXPLICIT_LE, sopInstanceUid: '1.2.826.0.1.3680043.10.1.77.4', fragments: Array.from({length: Math.ceil(large.length / 16_384)}, (_, i) => large.subarray(i * 16_384, (i + 1) * 16_384))},
      {abstractSyntax: deflated.sopClassUid, transferSyntax: deflated.transferSyntaxUid, sopInstanceUid: deflated.sopInstanceUid, fragments: [deflatedDataset]},
    ])
    expect(results.map((r) => r?.status)).toEqual([0, 0])
    await spooled.drained()
    const id = await orthanc.client.lookupInstance('1.2.826.0.1.3680043.10.1.77.4')
    expect(id).toBeDefined()
    expect(datasetOf(await orthanc.client.instanceFile(id!)).equals(large)).toBe(true)
    expect(await orthanc.client.lookupInstance(deflated.sopInstanceUid)).toBeDefined()
  })

  it('refuses what dcmsend -nuc sends for a file whose meta header and dataset name different SOP classes', async () => {
    const file = fixturePath(brokenFixture('sop-class-mismatch.dcm'))
    // dcmsend sends the dataset's class (CT) in the command, on the context of the meta header's class (MR).
    const result = await dcmsend(['-nuc', '-v', '-aec', spooled.aeTitle, '127.0.0.1', String(spooled.port), file])
    const output = `${result.stdout}${result.stderr}`
    expect(output).toMatch(/Received C-STORE Response \(Error: CannotUnderstand\)/i)
    expect(output).not.toMatch(/with status SUCCESS/)
    const line = spooled.logs.find((l) => l.includes('instance-refused') && /is not the presentation context's 1\.2\.840\.10008\.5\.1\.4\.1\.1\.4/.test(l))
    expect(line).toBeDefined()
    expect(await orthanc.client.lookupInstance(brokenFixture('sop-class-mismatch.dcm').sopInstanceUid)).toBeUndefined()
  })
})

describe('transfer syntaxes: the listener accepts only what every backend can store', () => {
  let orthanc: TestOrthanc
  let plain: Storescp
  let router: TestRouter
  let plainDir: string

  beforeAll(async () => {
    plainDir = await mkdtemp(path.join(os.tmpdir(), 'ddr-plain-scp-'))
    orthanc = await startTestOrthanc({name: 'syntaxes', aeTitle: 'SYNTAXES'})
    plain = await startStorescp({dir: plainDir, aeTitle: 'PLAIN'})
    router = await startTestRouter([orthanc, {name: 'plain', aeTitle: 'PLAIN', dicomPort: plain.port, config: {type: 'dimse', transferSyntaxes: [IMPLICIT_LE, EXPLICIT_LE]}}])
  })

  afterAll(async () => {
    await router?.stop()
    await plain?.stop()
    await orthanc?.stop()
    if (plainDir) await rm(plainDir, {recursive: true, force: true})
  })

  it("takes the sender's first syntax that every backend stores, and logs why a context was rejected", async () => {
    const accepted: Array<{id: number; result: number; transferSyntax: string}> = []
    await rawStores(router.port, router.aeTitle, [
      {abstractSyntax: CT, transferSyntax: JPEG_LS, proposeTransferSyntaxes: [JPEG_LS, EXPLICIT_LE], sopInstanceUid: '1.2.3', fragments: []},
      {abstractSyntax: CT, transferSyntax: JPEG_LS, sopInstanceUid: '1.2.4', fragments: []},
    ], 20_000, accepted)
    expect(accepted).toEqual([
      {id: 1, result: ContextResult.acceptance, transferSyntax: EXPLICIT_LE},
      {id: 3, result: ContextResult.transferSyntaxesNotSupported, transferSyntax: expect.any(String)},
    ])
    await waitFor('the rejected context in the log', () => router.logs.some((l) => l.includes('context-rejected')), 5000)
    const line = router.logs.find((l) => l.includes('context-rejected'))!
    expect(line).toMatch(/RAWSENDER/)
    expect(line).toMatch(/JPEG-LS Lossless Image Compression \(not plain\)/)
  })
})
