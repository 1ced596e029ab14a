import {createHash} from 'node:crypto'
import {chmod, copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {type FixSopResult, fixSopFiles, formatFixSopReport} from '../../../src/lib/dicom/fix-sop.js'
import {readMetaHeader} from '../../../src/lib/dicom/part10.js'
import {Tag} from '../../../src/lib/dicom/tags.js'
import {openPart10, walkPart10} from '../../../src/lib/dicom/walker.js'
import {DdrError} from '../../../src/lib/errors.js'
import {fixturePath} from './helpers.js'

const sha = async (file: string) => createHash('sha256').update(await readFile(file)).digest('hex')

async function filesUnder(dir: string): Promise<string[]> {
  const entries = await readdir(dir, {withFileTypes: true, recursive: true})
  return entries.filter((e) => e.isFile()).map((e) => path.relative(dir, path.join(e.parentPath, e.name))).sort()
}

async function uidOf(file: string, tag: number): Promise<string | undefined> {
  const element = walkPart10(openPart10(await readFile(file))).find((e) => e.tag === tag)
  return element?.value?.toString('latin1').replace(/\0+$/, '')
}

const byName = (result: FixSopResult) => Object.fromEntries(result.files.map((file) => [path.basename(file.path), file]))

describe('fixSopFiles', () => {
  let root: string
  let input: string

  beforeEach(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'ddr-fix-sop-unit-'))
    input = path.join(root, 'in')
    await mkdir(path.join(input, 'nested'), {recursive: true})
    for (const name of ['missing-sop-class-meta-ok.dcm', 'missing-sop-class-no-meta-class.dcm', 'sop-class-mismatch.dcm', 'truncated-pixel-data.dcm']) {
      await copyFile(fixturePath(`broken/${name}`), path.join(input, name))
    }
    await copyFile(fixturePath('studies/1/ct-explicit-le.dcm'), path.join(input, 'nested', 'ct-explicit-le.dcm'))
    await copyFile(fixturePath('studies/1/ct-implicit-le.dcm'), path.join(input, 'nested', 'ct-implicit-le.dcm'))
    await copyFile(fixturePath('studies/2/mr-1.dcm'), path.join(input, 'nested', 'mr-1.dcm'))
    await writeFile(path.join(input, 'README.txt'), 'not DICOM')
  })

  afterEach(async () => {
    await rm(root, {recursive: true, force: true})
  })

  it('reports per file, walks folders recursively, and touches nothing in a dry run', async () => {
    const before = await Promise.all((await filesUnder(input)).map((file) => sha(path.join(input, file))))
    const result = await fixSopFiles([input], {dryRun: true})
    expect(result.dryRun).toBe(true)
    const files = byName(result)
    expect(Object.fromEntries(Object.entries(files).map(([name, file]) => [name, file.status]))).toEqual({
      'README.txt': 'skipped',
      'ct-explicit-le.dcm': 'already-fine',
      'ct-implicit-le.dcm': 'already-fine',
      'missing-sop-class-meta-ok.dcm': 'would-fix',
      'missing-sop-class-no-meta-class.dcm': 'would-fix',
      'mr-1.dcm': 'already-fine',
      'sop-class-mismatch.dcm': 'would-fix',
      'truncated-pixel-data.dcm': 'cannot-fix',
    })
    expect(result.summary).toEqual({files: 8, fixed: 0, wouldFix: 3, alreadyFine: 3, cannotFix: 1, skipped: 1})
    expect(files['truncated-pixel-data.dcm'].reason).toMatch(/^truncated: /)
    expect(files['missing-sop-class-no-meta-class.dcm']).toMatchObject({sopClassName: 'MR Image Storage', sopClassSource: 'modality'})
    expect(await Promise.all((await filesUnder(input)).map((file) => sha(path.join(input, file))))).toEqual(before)
    const report = formatFixSopReport(result)
    expect(report).toMatch(/missing-sop-class-meta-ok\.dcm\s+would fix\s+SOPClassUID added: CT Image Storage \(from the meta header\)/)
    expect(report).toMatch(/sop-class-mismatch\.dcm\s+would fix\s+meta MediaStorageSOPClassUID MR Image Storage -> CT Image Storage/)
    expect(report).toContain('8 files: 3 would be fixed, 3 already fine, 1 cannot be fixed, 1 skipped (dry run: nothing written)')
  })

  it('fixes in place atomically, keeping the file mode and leaving no temp files', async () => {
    const target = path.join(input, 'missing-sop-class-meta-ok.dcm')
    await chmod(target, 0o640)
    const result = await fixSopFiles([target])
    expect(result.files).toEqual([expect.objectContaining({path: target, status: 'fixed', output: target})])
    expect(await uidOf(target, Tag.SOPClassUID)).toBe('1.2.840.10008.5.1.4.1.1.2')
    expect((await stat(target)).mode & 0o777).toBe(0o640)
    expect((await readdir(input)).filter((name) => name.includes('ddr-tmp'))).toEqual([])
    const again = await fixSopFiles([target])
    expect(again.files[0].status).toBe('already-fine')
  })

  it('names an explicitly given non-DICOM file "cannot fix", and refuses paths that do not exist before touching anything', async () => {
    const result = await fixSopFiles([path.join(input, 'README.txt')])
    expect(result.files[0]).toMatchObject({status: 'cannot-fix', reason: expect.stringMatching(/^not a DICOM Part 10 file/)})
    const before = await sha(path.join(input, 'missing-sop-class-meta-ok.dcm'))
    await expect(fixSopFiles([input, path.join(root, 'nope')])).rejects.toThrow(DdrError)
    await expect(fixSopFiles([input, path.join(root, 'nope')])).rejects.toThrow(/nope: no such file or folder/)
    expect(await sha(path.join(input, 'missing-sop-class-meta-ok.dcm'))).toBe(before)
  })

  it('refuses a --sop-class that is not a UID', async () => {
    await expect(fixSopFiles([input], {sopClassUid: '1.2.03'})).rejects.toMatchObject({code: 'USAGE'})
  })

  it('writes copies under --out, the complete set with folder structure, leaving the originals alone', async () => {
    const out = path.join(root, 'out')
    const before = await sha(path.join(input, 'missing-sop-class-meta-ok.dcm'))
    const result = await fixSopFiles([input], {outDir: out})
    expect(result.outDir).toBe(out)
    expect(await filesUnder(out)).toEqual([
      'missing-sop-class-meta-ok.dcm',
      'missing-sop-class-no-meta-class.dcm',
      'nested/ct-explicit-le.dcm',
      'nested/ct-implicit-le.dcm',
      'nested/mr-1.dcm',
      'sop-class-mismatch.dcm',
    ])
    expect(await sha(path.join(input, 'missing-sop-class-meta-ok.dcm'))).toBe(before)
    expect(await sha(path.join(out, 'nested/mr-1.dcm'))).toBe(await sha(path.join(input, 'nested/mr-1.dcm')))
    expect(byName(result)['mr-1.dcm']).toMatchObject({status: 'already-fine', output: path.join(out, 'nested/mr-1.dcm')})
    expect(byName(result)['truncated-pixel-data.dcm']).not.toHaveProperty('output')
  })

  it('--new-study-uids keeps the files of one study together under one new study (and series) UID', async () => {
    const out = path.join(root, 'out')
    await fixSopFiles([path.join(input, 'nested')], {outDir: out, newStudyUids: true})
    const ct = ['ct-explicit-le.dcm', 'ct-implicit-le.dcm'].map((name) => path.join(out, name))
    const mr = path.join(out, 'mr-1.dcm')
    const studies = await Promise.all([...ct, mr].map((file) => uidOf(file, Tag.StudyInstanceUID)))
    const series = await Promise.all([...ct, mr].map((file) => uidOf(file, Tag.SeriesInstanceUID)))
    expect(studies[0]).toBe(studies[1])
    expect(series[0]).toBe(series[1])
    expect(studies[2]).not.toBe(studies[0])
    expect(studies[0]).not.toBe(await uidOf(path.join(input, 'nested/ct-explicit-le.dcm'), Tag.StudyInstanceUID))
    const instances = await Promise.all([...ct, mr].map((file) => uidOf(file, Tag.SOPInstanceUID)))
    expect(new Set(instances).size).toBe(3)
    for (const [index, file] of [...ct, mr].entries()) expect(readMetaHeader(await readFile(file)).mediaStorageSopInstanceUid).toBe(instances[index])
  })

  it('refuses to let two inputs overwrite one copy', async () => {
    const other = path.join(root, 'other')
    await mkdir(other)
    await copyFile(fixturePath('studies/2/mr-2.dcm'), path.join(other, 'mr-1.dcm'))
    const result = await fixSopFiles([path.join(input, 'nested', 'mr-1.dcm'), path.join(other, 'mr-1.dcm')], {outDir: path.join(root, 'out')})
    expect(result.files.map((file) => file.status)).toEqual(['already-fine', 'cannot-fix'])
    expect(result.files[1].reason).toMatch(/would overwrite the copy of/)
  })
})
