import {mkdtemp, readFile, readdir, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {FolderBackend, folderLayout, safePathComponent} from '../../../src/lib/backends/folder-backend.js'
import type {ReceivedInstance} from '../../../src/lib/dicom/received-instance.js'

function instance(fields: Partial<ReceivedInstance> = {}): ReceivedInstance {
  return {
    id: 'i1',
    sopClassUid: '1.2.840.10008.5.1.4.1.1.2',
    sopInstanceUid: '1.2.3.4',
    transferSyntaxUid: '1.2.840.10008.1.2.1',
    studyInstanceUid: '1.2.3',
    seriesInstanceUid: '1.2.3.1',
    patientId: 'P/../1 x',
    callingAeTitle: 'A',
    calledAeTitle: 'B',
    metaHeader: Buffer.from('META'),
    dataset: {buffer: Buffer.from('DATASET')},
    datasetLength: 7,
    receivedAt: 0,
    ...fields,
  }
}

describe('FolderBackend', () => {
  let root: string
  beforeEach(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'ddr-folder-'))
  })
  afterEach(async () => {
    await rm(root, {recursive: true, force: true})
  })

  it('makes identifiers safe path components', () => {
    expect(safePathComponent('P/../1 x')).toBe('P_.._1_x')
    expect(safePathComponent('..')).toBe('_')
    expect(safePathComponent('')).toBe('unknown')
    expect(safePathComponent(undefined)).toBe('unknown')
    expect(folderLayout(instance({patientId: undefined}))).toBe(path.join('unknown', '1.2.3', '1.2.3.1', '1.2.3.4.dcm'))
  })

  it('writes meta header + dataset exactly, atomically, and takes an identical re-send as success', async () => {
    const backend = new FolderBackend({name: 'disk', weight: 1, maxAssociations: 4, type: 'folder', path: root, minFreeMb: 0})
    expect(await backend.store(instance())).toEqual({status: 0})
    const file = path.join(root, 'P_.._1_x', '1.2.3', '1.2.3.1', '1.2.3.4.dcm')
    expect((await readFile(file)).toString()).toBe('METADATASET')
    expect(await backend.store(instance())).toEqual({status: 0})
    expect(await readdir(path.dirname(file))).toEqual(['1.2.3.4.dcm'])

    // File-backed dataset slice.
    const source = path.join(root, 'source.bin')
    await writeFile(source, 'xxSLICEyy')
    expect(await backend.store(instance({sopInstanceUid: '9', dataset: {path: source, offset: 2, length: 5}, datasetLength: 5}))).toEqual({status: 0})
    expect((await readFile(path.join(root, 'P_.._1_x', '1.2.3', '1.2.3.1', '9.dcm'))).toString()).toBe('METASLICE')
    expect(await backend.echo()).toBeGreaterThanOrEqual(0)
  })

  it('reports a full disk as unhealthy', async () => {
    const backend = new FolderBackend({name: 'disk', weight: 1, maxAssociations: 4, type: 'folder', path: root, minFreeMb: 1e12})
    await expect(backend.echo()).rejects.toThrow(/MB free, below minFreeMb/)
  })

  it('checks as the router does (a missing root is created) or as balance-status does (only looked at, files counted)', async () => {
    const missing = path.join(root, 'archive')
    const survey = await new FolderBackend({name: 'disk', weight: 1, maxAssociations: 4, type: 'folder', path: missing, minFreeMb: 0}).check({timeoutMs: 1000, survey: true})
    expect(survey).toMatchObject({answered: false, echoMs: null, instances: null, problems: [expect.stringMatching(/^folder: .*archive does not exist/)]})
    await expect(readdir(missing)).rejects.toMatchObject({code: 'ENOENT'})

    const backend = new FolderBackend({name: 'disk', weight: 1, maxAssociations: 4, type: 'folder', path: missing, minFreeMb: 0})
    const routerCheck = await backend.check({timeoutMs: 1000})
    expect(routerCheck).toMatchObject({answered: true, problems: [], instances: null})
    expect(routerCheck.echoMs).toBeGreaterThanOrEqual(0)
    await backend.store(instance())
    expect(await backend.check({timeoutMs: 1000, survey: true})).toMatchObject({answered: true, problems: [], instances: 1, minFreeBytes: 0})
    // Passive (a store just worked): nothing is looked at.
    expect(await backend.check({timeoutMs: 1000, passive: true})).toMatchObject({answered: false, problems: [], echoMs: null})
  })
})
