import {copyFile, mkdir, mkdtemp, readFile, rm, symlink, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {DdrError} from '../../../src/lib/errors.js'
import {expandGlob, globToRegExp, isGlobPattern} from '../../../src/lib/send/glob.js'
import {type DiscoveredInputs, discoverInputs} from '../../../src/lib/send/inputs.js'
import {prepareInput} from '../../../src/lib/send/prepare.js'
import {writeZip} from '../../helpers/zip.js'

const fixture = (name: string) => path.resolve('fixtures', name)

describe('globToRegExp', () => {
  it.each([
    ['*.dcm', 'a.dcm', true],
    ['*.dcm', 'a.DCM', false],
    ['*.dcm', 'dir/a.dcm', false],
    ['*.dcm', '.hidden.dcm', false],
    ['IM?', 'IM1', true],
    ['IM?', 'IM12', false],
    ['IM[0-9]', 'IM7', true],
    ['IM[!0-9]', 'IM7', false],
    ['*.{dcm,DCM}', 'x.DCM', true],
    ['**/*.dcm', 'a.dcm', true],
    ['**/*.dcm', 'a/b/c.dcm', true],
    ['**/*.dcm', 'a/.git/c.dcm', false],
    ['a/**', 'a/b/c', true],
    ['s*/i*', 'series1/img', true],
    ['s*/i*', 'series1/x/img', false],
  ])('%s matches %s: %s', (pattern, candidate, expected) => {
    expect(globToRegExp(pattern).test(candidate)).toBe(expected)
  })

  it('tells patterns from plain paths', () => {
    expect(isGlobPattern('studies/**/*.dcm')).toBe(true)
    expect(isGlobPattern('studies/1/ct.dcm')).toBe(false)
  })
})

describe('discoverInputs', () => {
  let root: string
  let opened: DiscoveredInputs[] = []
  const discover = async (args: string[]) => {
    const found = await discoverInputs(args, {cwd: root})
    opened.push(found)
    return found
  }

  beforeAll(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'ddr-send-inputs-'))
    await mkdir(path.join(root, 'study/series'), {recursive: true})
    await copyFile(fixture('studies/1/ct-explicit-le.dcm'), path.join(root, 'study/ct.dcm'))
    await copyFile(fixture('studies/2/mr-1.dcm'), path.join(root, 'study/series/mr.dcm'))
    await copyFile(fixture('studies/2/mr-2.dcm'), path.join(root, 'study/.hidden.dcm'))
    await writeFile(path.join(root, 'study/notes.txt'), 'not DICOM\n')
    const dicom = await readFile(fixture('studies/3/us-explicit-le.dcm'))
    await writeZip(path.join(root, 'study/archive.zip'), [
      {name: 'images/', data: Buffer.alloc(0)},
      {name: 'images/us.dcm', data: dicom},
      {name: 'images/stored.dcm', data: dicom, store: true},
      {name: 'README.txt', data: Buffer.from('hello')},
    ])
    await copyFile(path.join(root, 'study/archive.zip'), path.join(root, 'export.bin'))
    await writeFile(path.join(root, 'broken.zip'), 'PK\u0003\u0004 this is no archive')
  })

  afterEach(() => {
    for (const found of opened) found.close()
    opened = []
  })

  afterAll(async () => {
    await rm(root, {recursive: true, force: true})
  })

  it('walks a folder recursively in name order and lists ZIP entries in place, without folders', async () => {
    const found = await discover(['study'])
    expect(found.items.map((item) => item.name)).toEqual([
      path.join('study', '.hidden.dcm'),
      `${path.join('study', 'archive.zip')}!images/us.dcm`,
      `${path.join('study', 'archive.zip')}!images/stored.dcm`,
      `${path.join('study', 'archive.zip')}!README.txt`,
      path.join('study', 'ct.dcm'),
      path.join('study', 'notes.txt'),
      path.join('study', 'series', 'mr.dcm'),
    ])
    expect(found.problems).toEqual([])
    const entry = found.items[1]
    expect(entry.source.kind).toBe('zip-entry')
    expect(entry.size).toBeGreaterThan(1000)
  })

  it('expands glob patterns itself (quoted on the command line), dot files left out', async () => {
    const found = await discover(['study/**/*.dcm'])
    expect(found.items.map((item) => item.name)).toEqual([path.join('study', 'ct.dcm'), path.join('study', 'series', 'mr.dcm')])
    expect(await expandGlob('study/*.{txt,zip}', root)).toEqual([path.join('study', 'archive.zip'), path.join('study', 'notes.txt')])
  })

  it('lists a file named twice once', async () => {
    const found = await discover(['study/ct.dcm', 'study', './study/ct.dcm'])
    expect(found.items.filter((item) => item.name.endsWith('ct.dcm'))).toHaveLength(1)
  })

  it('lists a file named through a symbolic link and by its real path once, under the first name', async () => {
    await symlink(path.join(root, 'study', 'ct.dcm'), path.join(root, 'link-to-ct.dcm'))
    await symlink(path.join(root, 'study'), path.join(root, 'link-to-study'))
    const found = await discover(['link-to-ct.dcm', 'study/ct.dcm', path.join(root, 'study', 'ct.dcm'), 'link-to-study/ct.dcm'])
    expect(found.items.map((item) => item.name)).toEqual(['link-to-ct.dcm'])
    // A folder reached through a link and by its path: each file once.
    const both = await discover(['link-to-study/series', 'study/series'])
    expect(both.items.map((item) => item.name)).toEqual([path.join('link-to-study', 'series', 'mr.dcm')])
    const files = await discover(['link-to-study/series/mr.dcm', 'study/series/mr.dcm'])
    expect(files.items).toHaveLength(1)
  })

  it('recognises a ZIP named on the command line by its signature, whatever its extension', async () => {
    const found = await discover(['export.bin'])
    expect(found.items.map((item) => item.name)).toEqual(['export.bin!images/us.dcm', 'export.bin!images/stored.dcm', 'export.bin!README.txt'])
  })

  it('reports an unreadable archive as a problem and goes on', async () => {
    const found = await discover(['broken.zip', 'study/ct.dcm'])
    expect(found.items.map((item) => item.name)).toEqual([path.join('study', 'ct.dcm')])
    expect(found.problems).toHaveLength(1)
    expect(found.problems[0].name).toBe('broken.zip')
    expect(found.problems[0].error.message).toMatch(/^broken\.zip: not a readable ZIP archive/)
  })

  it('refuses a path that does not exist and a glob that matches nothing (usage errors)', async () => {
    await expect(discoverInputs(['nowhere'], {cwd: root})).rejects.toMatchObject({code: 'USAGE', message: 'nowhere: no such file or folder'})
    const error = await discoverInputs(['study/*.nii'], {cwd: root}).catch((caught: unknown) => caught)
    expect(error).toBeInstanceOf(DdrError)
    expect((error as DdrError).message).toBe('no file matches study/*.nii')
  })

  it('skips what is not DICOM, on disk and inside archives, and reads DICOM entries from the archive', async () => {
    const found = await discover(['study'])
    const outcomes = await Promise.all(found.items.map((item, index) => prepareInput(item, index)))
    const byName = new Map(found.items.map((item, index) => [item.name, outcomes[index]]))
    expect(byName.get(path.join('study', 'notes.txt'))).toEqual({kind: 'skip', reason: 'not DICOM (10 bytes, no Part 10 header)'})
    expect(byName.get(`${path.join('study', 'archive.zip')}!README.txt`)).toMatchObject({kind: 'skip'})
    for (const name of ['images/us.dcm', 'images/stored.dcm']) {
      const outcome = byName.get(`${path.join('study', 'archive.zip')}!${name}`)
      expect(outcome).toMatchObject({kind: 'instance', instance: {sopClassUid: '1.2.840.10008.5.1.4.1.1.6.1', transferSyntaxUid: '1.2.840.10008.1.2.1'}})
    }
  })
})
