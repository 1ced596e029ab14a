import {copyFile, mkdir, mkdtemp, readFile, readdir, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {validateConfig} from '../../../src/lib/config/validate.js'
import {type RouterService, startRouterService} from '../../../src/lib/listen/service.js'
import {Logger} from '../../../src/lib/output/logger.js'
import {SpoolLock} from '../../../src/lib/spool/lock.js'
import {type SyntheticInstance, writeSyntheticStudies} from '../../helpers/datasets.js'
import {storescu} from '../../helpers/dcmtk.js'
import {datasetOf} from '../../helpers/fixtures.js'
import {waitFor} from '../../helpers/wait.js'

/**
 * Going back from `ddr listen --workers 3` to one process: the worker folders hold acknowledged
 * instances nobody owns any more. The single router takes them over (locked while it runs),
 * delivers them byte for byte, and says which dead letters it leaves where they are.
 */
describe('a router takes over the spool folders an earlier number of workers left', () => {
  let dir: string
  let service: RouterService | undefined
  const lines: string[] = []
  let left: SyntheticInstance[]

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'ddr-adopt-'))
    left = await writeSyntheticStudies(path.join(dir, 'files'), {studies: 1, instancesPerStudy: 3, pixelBytes: 4096, prefix: 'ADOPT'})
    // Two instances queued in worker-2's folder, one in worker-3's, and a dead letter in worker-3's.
    for (const [index, instance] of left.entries()) {
      const queue = path.join(dir, 'spool', `worker-${index === 2 ? 3 : 2}`, 'queue')
      await mkdir(queue, {recursive: true})
      await copyFile(instance.path, path.join(queue, `left-${index}.dcm`))
    }

    const deadLetters = path.join(dir, 'spool', 'worker-3', 'dead-letter')
    await mkdir(deadLetters, {recursive: true})
    await copyFile(left[0].path, path.join(deadLetters, 'dl-1.dcm'))
    await writeFile(path.join(deadLetters, 'dl-1.reason.json'), JSON.stringify({reason: 'refused: 0xA900'}))
    const config = validateConfig(
      {
        listen: {host: '127.0.0.1', port: 0, aeTitle: 'DDR_TEST'},
        spool: {dir: path.join(dir, 'spool')},
        studies: {receipts: false},
        backends: [{name: 'archive', type: 'folder', path: path.join(dir, 'archive')}],
      },
      'test',
    )
    service = await startRouterService(config, {logger: new Logger({write: (line) => lines.push(line)}), statusServer: false})
  })

  afterAll(async () => {
    await service?.stop(5000)
    await rm(dir, {recursive: true, force: true})
  })

  it('delivers what the worker folders held, unchanged, and empties their queues', async () => {
    const archived = async () => (await readdir(path.join(dir, 'archive'), {recursive: true})).filter((name) => String(name).endsWith('.dcm')).map(String)
    await waitFor('the three instances in the archive', async () => (await archived().catch(() => [])).length === 3, 20_000)
    for (const instance of left) {
      const stored = (await archived()).find((name) => name.endsWith(`${instance.sopInstanceUid}.dcm`))!
      expect(datasetOf(await readFile(path.join(dir, 'archive', stored))).equals(datasetOf(await readFile(instance.path)))).toBe(true)
    }

    for (const worker of ['worker-2', 'worker-3']) expect((await readdir(path.join(dir, 'spool', worker, 'queue'))).filter((name) => name.endsWith('.dcm'))).toEqual([])
    expect(lines.filter((line) => line.includes('spool-adopted')).length).toBe(2)
    expect(lines.some((line) => line.includes('spool-adopt-dead-letters') && line.includes('worker-3'))).toBe(true)
    expect(service!.ledger!.counts()).not.toBeNull()
  })

  it('holds the folders it took over while it runs, and lets them go when it stops', async () => {
    expect(() => SpoolLock.acquire(path.join(dir, 'spool', 'worker-2'))).toThrow(/already in use by this process/)
    await service!.stop(5000)
    service = undefined
    SpoolLock.acquire(path.join(dir, 'spool', 'worker-2')).release()
    SpoolLock.acquire(path.join(dir, 'spool')).release()
  })
})

describe('taking over a worker folder whose instances are in journal segments', () => {
  let dir: string

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'ddr-adopt-journal-'))
  })

  afterAll(async () => {
    await rm(dir, {recursive: true, force: true})
  })

  it('delivers what a stopped worker acknowledged into its journal (small instances), unchanged', async () => {
    const instances = await writeSyntheticStudies(path.join(dir, 'files'), {studies: 1, instancesPerStudy: 5, pixelBytes: 2048, prefix: 'JRNL'})
    const base = {listen: {host: '127.0.0.1', port: 0, aeTitle: 'DDR_TEST'}, studies: {receipts: false}}
    // A worker of an earlier run: its backend unreachable, so what it acknowledges stays in its journal.
    const worker = await startRouterService(
      validateConfig({...base, spool: {dir: path.join(dir, 'spool', 'worker-2')}, backends: [{name: 'gone', type: 'dimse', host: '127.0.0.1', port: 1, aeTitle: 'GONE'}]}, 'test'),
      {logger: new Logger({write: () => {}}), statusServer: false},
    )
    try {
      const sent = await storescu(['-aec', 'DDR_TEST', '127.0.0.1', String(worker.port), ...instances.map((i) => i.path)])
      expect(sent.code).toBe(0)
    } finally {
      await worker.stop(1000)
    }

    expect((await readdir(path.join(dir, 'spool', 'worker-2', 'queue'))).filter((name) => name.startsWith('seg-'))).not.toEqual([])
    const lines: string[] = []
    const single = await startRouterService(
      validateConfig({...base, spool: {dir: path.join(dir, 'spool')}, backends: [{name: 'archive', type: 'folder', path: path.join(dir, 'archive')}]}, 'test'),
      {logger: new Logger({write: (line) => lines.push(line)}), statusServer: false},
    )
    try {
      const archived = async () => (await readdir(path.join(dir, 'archive'), {recursive: true}).catch(() => [])).map(String).filter((name) => name.endsWith('.dcm'))
      await waitFor('the five instances in the archive', async () => (await archived()).length === 5, 20_000)
      for (const instance of instances) {
        const stored = (await archived()).find((name) => name.endsWith(`${instance.sopInstanceUid}.dcm`))!
        expect(datasetOf(await readFile(path.join(dir, 'archive', stored))).equals(datasetOf(await readFile(instance.path)))).toBe(true)
      }

      expect(lines.some((line) => line.includes('spool-adopted') && line.includes('instances=5'))).toBe(true)
    } finally {
      await single.stop(5000)
    }
  }, 60_000)
})
