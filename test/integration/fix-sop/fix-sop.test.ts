import {createHash} from 'node:crypto'
import {copyFile, mkdir, mkdtemp, readdir, readFile, rm} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {readDatasetFromFile} from '../../../src/lib/dicom/dataset-reader.js'
import type {FixSopResult} from '../../../src/lib/dicom/fix-sop.js'
import {encodeUidElement} from '../../../src/lib/dicom/repair.js'
import {Tag} from '../../../src/lib/dicom/tags.js'
import {openPart10, walkPart10} from '../../../src/lib/dicom/walker.js'
import {dcmsend, startStorescp, type Storescp} from '../../helpers/dcmtk.js'
import {fixturePath} from '../../unit/dicom/helpers.js'
import {parseJson, requireBuild, runCli} from './cli.js'

const CT = '1.2.840.10008.5.1.4.1.1.2'
const MR = '1.2.840.10008.5.1.4.1.1.4'

/** PS3.5 9.1 written out on its own: digits and dots, no component with a leading zero, at most 64 characters. */
const isPs35Uid = (uid: string) => uid.length > 0 && uid.length <= 64 && uid.split('.').every((component) => /^(0|[1-9][0-9]*)$/.test(component))
const sha = async (file: string) => createHash('sha256').update(await readFile(file)).digest('hex')

async function received(dir: string): Promise<Map<string, string>> {
  const byInstance = new Map<string, string>()
  for (const name of await readdir(dir)) {
    const {values} = await readDatasetFromFile(path.join(dir, name), [Tag.SOPClassUID, Tag.SOPInstanceUID])
    byInstance.set(values.get(Tag.SOPInstanceUID) as string, values.get(Tag.SOPClassUID) as string)
  }
  return byInstance
}

describe('ddr fix-sop (compiled CLI) with dcmsend and storescp', () => {
  let root: string
  let storescp: Storescp | undefined
  const send = (files: string[]) => dcmsend(['-aet', 'DDR_TEST', '-aec', storescp?.aeTitle ?? '', '127.0.0.1', String(storescp?.port), ...files])

  beforeAll(async () => {
    requireBuild('fix-sop')
    root = await mkdtemp(path.join(os.tmpdir(), 'ddr-fix-sop-it-'))
    await mkdir(path.join(root, 'received'))
    storescp = await startStorescp({dir: path.join(root, 'received')})
  })

  afterAll(async () => {
    await storescp?.stop()
    if (root) await rm(root, {recursive: true, force: true})
  })

  it('repairs the broken fixtures in place, exits 4 for the ones it cannot fix, and dcmsend then sends them', async () => {
    const work = path.join(root, 'broken')
    await mkdir(work)
    for (const name of await readdir(fixturePath('broken'))) await copyFile(fixturePath(`broken/${name}`), path.join(work, name))
    const missing = path.join(work, 'missing-sop-class-meta-ok.dcm')

    const refused = await send([missing])
    expect(refused.code).not.toBe(0)
    expect(refused.stderr).toMatch(/Invalid SOP Class UID/)

    const result = await runCli(['fix-sop', work, path.join(work, 'not-dicom.dcm'), '--json'])
    expect(result.code).toBe(4)
    const json = parseJson<FixSopResult>(result)
    const status = Object.fromEntries(json.files.map((file) => [path.basename(file.path), file.status]))
    expect(status).toEqual({
      'missing-sop-class-meta-ok.dcm': 'fixed',
      'missing-sop-class-no-meta-class.dcm': 'fixed',
      'sop-class-mismatch.dcm': 'fixed',
      'truncated-meta.dcm': 'cannot-fix',
      'truncated-pixel-data.dcm': 'cannot-fix',
      'not-dicom.dcm': 'cannot-fix',
    })
    expect(json.summary).toEqual({files: 6, fixed: 3, wouldFix: 0, alreadyFine: 0, cannotFix: 3, skipped: 0})
    expect(json.files.find((file) => file.path.endsWith('not-dicom.dcm'))?.reason).toMatch(/^not a DICOM Part 10 file/)
    expect(json.files.find((file) => file.path.endsWith('truncated-pixel-data.dcm'))?.reason).toMatch(/^truncated: .*PixelData \(7FE0,0010\)/)
    expect(json.files.find((file) => file.path.endsWith('no-meta-class.dcm'))).toMatchObject({sopClassUid: MR, sopClassName: 'MR Image Storage', sopClassSource: 'modality'})

    // Byte comparison: the repaired file is the fixture plus the one SOPClassUID element.
    const original = await readFile(fixturePath('broken/missing-sop-class-meta-ok.dcm'))
    const opened = openPart10(original)
    const at = opened.meta.datasetOffset + (walkPart10(opened).find((e) => e.tag > Tag.SOPClassUID)?.offset ?? 0)
    const expected = Buffer.concat([original.subarray(0, at), encodeUidElement(Tag.SOPClassUID, CT, {explicitVr: true, littleEndian: true}), original.subarray(at)])
    expect((await readFile(missing)).equals(expected)).toBe(true)
    // Files it cannot fix are left as they were.
    expect(await sha(path.join(work, 'truncated-pixel-data.dcm'))).toBe(await sha(fixturePath('broken/truncated-pixel-data.dcm')))

    const fixed = ['missing-sop-class-meta-ok.dcm', 'missing-sop-class-no-meta-class.dcm', 'sop-class-mismatch.dcm'].map((name) => path.join(work, name))
    const sent = await send(fixed)
    expect(sent.stderr).not.toMatch(/^[EFW]:/m)
    expect(sent.code).toBe(0)
    const arrived = await received(path.join(root, 'received'))
    for (const file of fixed) {
      const {values, meta} = await readDatasetFromFile(file, [Tag.SOPClassUID, Tag.SOPInstanceUID])
      expect(meta.mediaStorageSopClassUid).toBe(values.get(Tag.SOPClassUID))
      expect(arrived.get(values.get(Tag.SOPInstanceUID) as string)).toBe(values.get(Tag.SOPClassUID))
    }

    const again = await runCli(['fix-sop', ...fixed])
    expect(again.code).toBe(0)
    expect(again.stdout).toContain('3 files: 0 fixed, 3 already fine, 0 cannot be fixed')
  })

  it('--new-uids --out writes copies with new PS3.5 UIDs that storescp receives as new instances; the originals stay', async () => {
    const sources = ['studies/1/ct-implicit-le.dcm', 'studies/1/ct-explicit-be.dcm', 'studies/1/ct-deflated.dcm', 'studies/2/mr-private-latin1.dcm', 'broken/missing-sop-class-no-meta-class.dcm']
    const work = path.join(root, 'new-uids')
    const out = path.join(root, 'new-uids-out')
    await mkdir(work)
    for (const source of sources) await copyFile(fixturePath(source), path.join(work, path.basename(source)))
    const before = await Promise.all(sources.map((source) => sha(path.join(work, path.basename(source)))))

    const result = await runCli(['fix-sop', work, '--out', out, '--new-uids', '--json'])
    expect(result.code).toBe(0)
    const json = parseJson<FixSopResult>(result)
    expect(json.summary.fixed).toBe(5)
    expect(await Promise.all(sources.map((source) => sha(path.join(work, path.basename(source)))))).toEqual(before)

    const copies = json.files.map((file) => file.output as string)
    const uids: string[] = []
    for (const [index, copy] of copies.entries()) {
      const {values, meta} = await readDatasetFromFile(copy, [Tag.SOPInstanceUID, Tag.SOPClassUID])
      const uid = values.get(Tag.SOPInstanceUID) as string
      expect([uid, isPs35Uid(uid), uid.startsWith('2.25.')]).toEqual([uid, true, true])
      expect(meta.mediaStorageSopInstanceUid).toBe(uid)
      const change = json.files[index].changes.find((c) => c.name === 'SOPInstanceUID')
      expect(change?.to).toBe(uid)
      expect(change?.from).not.toBe(uid)
      uids.push(uid)
    }
    expect(new Set(uids).size).toBe(copies.length)

    const sent = await send(copies)
    expect(sent.stderr).not.toMatch(/^[EF]:/m)
    expect(sent.code).toBe(0)
    const arrived = await received(path.join(root, 'received'))
    for (const uid of uids) expect(arrived.has(uid)).toBe(true)
  })

  it('--dry-run prints what would change and writes nothing', async () => {
    const work = path.join(root, 'dry')
    await mkdir(work)
    const file = path.join(work, 'missing.dcm')
    await copyFile(fixturePath('broken/missing-sop-class-meta-ok.dcm'), file)
    const before = await sha(file)
    const result = await runCli(['fix-sop', file, '--dry-run', '--new-uids'])
    expect(result.code).toBe(0)
    expect(result.stdout).toMatch(/missing\.dcm\s+would fix\s+SOPClassUID added: CT Image Storage \(from the meta header\); new SOPInstanceUID/)
    expect(result.stdout).toContain('1 file: 1 would be fixed, 0 already fine, 0 cannot be fixed (dry run: nothing written)')
    expect(await sha(file)).toBe(before)
    expect(await readdir(work)).toEqual(['missing.dcm'])
  })

  it('says what is wrong with the flags (exit 2)', async () => {
    const badClass = await runCli(['fix-sop', fixturePath('broken'), '--sop-class', 'CT'])
    expect(badClass.code).toBe(2)
    expect(badClass.stderr).toMatch(/error \[USAGE\]: --sop-class "CT" is not a valid UID/)
    const missingPath = await runCli(['fix-sop', path.join(root, 'nowhere')])
    expect(missingPath.code).toBe(2)
    expect(missingPath.stderr).toContain(`${path.join(root, 'nowhere')}: no such file or folder`)
  })
})
