import {mkdtemp, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {dumpLines} from '../../../src/lib/dicom/dump.js'
import {type InspectFileResult, inspectFile} from '../../../src/lib/inspect/file.js'
import {runDcmtk} from '../../helpers/dcmtk.js'
import {brokenFixture, fixturePath, goodFixtures} from '../../unit/dicom/helpers.js'
import {parseJson, requireBuild, runCli} from '../fix-sop/cli.js'

/** (indent, tag) of every element line dcmdump prints, items and delimiters left out. */
async function dcmdumpStructure(file: string): Promise<string[]> {
  const result = await runDcmtk('dcmdump', ['+L', '-q', file])
  expect(result.code).toBe(0)
  return result.stdout
    .split('\n')
    .map((line) => /^( *)\(([0-9a-f]{4}),([0-9a-f]{4})\)/i.exec(line))
    .filter((match): match is RegExpExecArray => match !== null && match[2].toLowerCase() !== 'fffe')
    .map((match) => `${match[1].length / 2} (${match[2]},${match[3]})`.toUpperCase())
}

describe('inspectFile against dcmdump', () => {
  it('finds the same elements at the same depths as dcmdump in every good fixture (UN sequence, deflate, big endian included)', async () => {
    for (const entry of goodFixtures) {
      const result = await inspectFile(fixturePath(entry), {tags: true})
      const ours = dumpLines([...(result.meta ?? []), ...(result.elements ?? [])])
        .filter((line) => !line.tag.startsWith('(FFFE,'))
        .map((line) => `${line.depth} ${line.tag}`)
      expect([entry.path, ours]).toEqual([entry.path, await dcmdumpStructure(fixturePath(entry))])
    }
  })

  it('reads the header fields the manifest lists, for every good fixture', async () => {
    for (const entry of goodFixtures) {
      const result = await inspectFile(fixturePath(entry))
      expect({
        path: entry.path,
        sopClass: result.sopClass?.uid,
        sopInstance: result.sopInstanceUid,
        study: result.study.instanceUid,
        series: result.series.instanceUid,
        patientId: result.patient.id,
        modality: result.modality,
        transferSyntax: result.transferSyntax.uid,
        warnings: result.warnings,
      }).toEqual({
        path: entry.path,
        sopClass: entry.sopClassUid,
        sopInstance: entry.sopInstanceUid,
        study: entry.studyInstanceUid,
        series: entry.seriesInstanceUid,
        patientId: entry.patientId,
        modality: entry.modality,
        transferSyntax: entry.transferSyntaxUid,
        warnings: [],
      })
      if (entry.numberOfFrames !== undefined) expect([entry.path, result.frames]).toEqual([entry.path, entry.numberOfFrames])
    }
  })
})

describe('ddr inspect FILE (compiled CLI)', () => {
  let root: string

  beforeAll(async () => {
    requireBuild('inspect')
    root = await mkdtemp(path.join(os.tmpdir(), 'ddr-inspect-it-'))
  })

  afterAll(async () => {
    if (root) await rm(root, {recursive: true, force: true})
  })

  it('shows the main header of the Latin-1 MR with its private UN sequence', async () => {
    const result = await runCli(['inspect', fixturePath('studies/2/mr-private-latin1.dcm')])
    expect(result.code).toBe(0)
    expect(result.stdout).toMatch(/^Patient\s+MÜLLER\^JÜRGEN, ID DDR-P002/m)
    expect(result.stdout).toMatch(/^SOP class\s+MR Image Storage \(1\.2\.840\.10008\.5\.1\.4\.1\.1\.4\)$/m)
    expect(result.stdout).toMatch(/^Transfer syntax\s+Explicit VR Little Endian/m)
    expect(result.stdout).toMatch(/^Frames\s+1$/m)
  })

  it('--tags dumps every element with sequences indented; --json gives the same structure', async () => {
    const text = await runCli(['inspect', fixturePath('studies/2/mr-private-latin1.dcm'), '--tags'])
    expect(text.code).toBe(0)
    expect(text.stdout).toMatch(/^\(0009,1001\)\s+UN\s+u\/l\s+\(sequence, 2 items\)\s+Private "DDR PRIVATE SEQ" 01$/m)
    expect(text.stdout).toMatch(/^ {4}\(0010,0020\)\s+LO\s+16\s+NOT-THE-PATIENT\s+PatientID$/m)
    expect(text.stdout).toMatch(/^\(0002,0010\)\s+UI\s+20\s+1\.2\.840\.10008\.1\.2\.1 \(Explicit VR Little Endian\)\s+TransferSyntaxUID$/m)
    const json = parseJson<InspectFileResult>(await runCli(['inspect', fixturePath('studies/1/ct-deflated.dcm'), '--tags', '--json']))
    expect(json).toMatchObject({kind: 'file', transferSyntax: {name: 'Deflated Explicit VR Little Endian'}, frames: 1})
    expect(json.elements?.find((e) => e.tag === '(0008,1140)')?.items).toHaveLength(40)
  })

  it('warns about a missing SOP class and a meta header that disagrees', async () => {
    const missing = parseJson<InspectFileResult>(await runCli(['inspect', fixturePath(brokenFixture('missing-sop-class-no-meta-class.dcm')), '--json']))
    expect(missing.sopClass).toBeUndefined()
    expect(missing.warnings).toEqual([expect.stringMatching(/^no SOPClassUID \(0008,0016\) in the dataset/)])
    const mismatch = await runCli(['inspect', fixturePath(brokenFixture('sop-class-mismatch.dcm'))])
    expect(mismatch.code).toBe(0)
    expect(mismatch.stdout).toMatch(/^Meta SOP class\s+MR Image Storage/m)
    expect(mismatch.stdout).toContain('warning: the meta header says MR Image Storage but the dataset says CT Image Storage')
  })

  it.each([
    ['not-dicom.dcm', /not a DICOM Part 10 file: no "DICM" prefix at byte 128/],
    ['truncated-meta.dcm', /truncated file meta information/],
    ['truncated-pixel-data.dcm', /truncated: the data ends at byte 6282, inside the value of PixelData \(7FE0,0010\)/],
  ])('exits 2 for %s, naming the file and what is wrong', async (name, message) => {
    const file = fixturePath(brokenFixture(name))
    const result = await runCli(['inspect', file])
    expect(result.code).toBe(2)
    expect(result.stdout).toBe('')
    expect(result.stderr).toContain(`error [INVALID_DICOM]: ${file}: `)
    expect(result.stderr).toMatch(message)
    const json = await runCli(['inspect', file, '--json'])
    expect(json.code).toBe(2)
    expect(parseJson<{error: {code: string; message: string}}>(json).error).toMatchObject({code: 'INVALID_DICOM', message: expect.stringMatching(message)})
  })

  it('exits 2 for a file that does not exist, an empty file, or a mix of uses', async () => {
    const empty = path.join(root, 'empty.dcm')
    await writeFile(empty, '')
    const missing = await runCli(['inspect', path.join(root, 'nope.dcm')])
    expect([missing.code, missing.stderr]).toEqual([2, expect.stringContaining('nope.dcm: no such file')])
    const zero = await runCli(['inspect', empty])
    expect([zero.code, zero.stderr]).toEqual([2, expect.stringContaining('empty.dcm: not a DICOM Part 10 file: 0 bytes')])
    const mixed = await runCli(['inspect', empty, '--study', '1.2.3'])
    expect([mixed.code, mixed.stderr]).toEqual([2, expect.stringContaining('error [USAGE]: give a FILE or a backend query')])
    const nothing = await runCli(['inspect'])
    expect([nothing.code, nothing.stderr]).toEqual([2, expect.stringContaining('nothing to inspect')])
  })
})
