import {mkdtemp, readdir, rm} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import type {DdrConfig} from '../../../src/lib/config/schema.js'
import {validateConfig} from '../../../src/lib/config/validate.js'
import {Logger} from '../../../src/lib/output/logger.js'
import {explainRoute} from '../../../src/lib/routing/route-explain.js'
import {type RouterService, startRouterService} from '../../../src/lib/listen/service.js'
import {writeSyntheticStudies} from '../../helpers/datasets.js'
import {fixturesDir, manifest, sendFixturesRaw} from '../../helpers/fixtures.js'
import {storescu} from '../../helpers/dcmtk.js'
import {type TestOrthanc, startTestOrthanc} from '../../helpers/orthanc.js'

const mrFixtures = manifest.files.filter((f) => !f.broken && f.modality === 'MR')
const srFixture = manifest.files.find((f) => !f.broken && f.modality === 'SR')!

async function sopUidsIn(dir: string): Promise<string[]> {
  const entries = await readdir(dir, {recursive: true, withFileTypes: true}).catch(() => [])
  return entries.filter((e) => e.isFile() && e.name.endsWith('.dcm')).map((e) => e.name.replace(/\.dcm$/, ''))
}

describe('routing rules: CT to one group, MR to another, SR dropped, a mirror of everything', () => {
  let orthancs: TestOrthanc[] = []
  let service: RouterService
  let config: DdrConfig
  let workDir: string

  beforeAll(async () => {
    workDir = await mkdtemp(path.join(os.tmpdir(), 'ddr-rules-'))
    orthancs = await Promise.all([startTestOrthanc({name: 'ct1', aeTitle: 'CT1'}), startTestOrthanc({name: 'ct2', aeTitle: 'CT2'})])
    config = validateConfig(
      {
        listen: {host: '127.0.0.1', port: 0, aeTitle: 'DDR_TEST'},
        status: {host: '127.0.0.1', port: 0},
        // Pass-through: the sender's answer shows the drop.
        spool: {dir: path.join(workDir, 'spool'), enabled: false},
        health: {intervalMs: 500, timeoutMs: 2000, failThreshold: 1, recoverThreshold: 1},
        backends: [
          ...orthancs.map((o) => ({name: o.name, host: '127.0.0.1', port: o.dicomPort, aeTitle: o.aeTitle, url: o.url})),
          {name: 'mr', type: 'folder', path: path.join(workDir, 'mr'), minFreeMb: 1},
          {name: 'all', type: 'folder', path: path.join(workDir, 'all'), minFreeMb: 1, mirror: true},
        ],
        rules: [
          {name: 'no-sr', match: {modality: 'SR'}, action: {drop: 'SR is not archived here'}},
          {name: 'mr', match: {tags: {Modality: {equals: 'MR'}}}, action: {backends: ['mr']}},
          {name: 'ct', match: {modality: 'CT'}, action: {backends: ['ct1', 'ct2']}},
        ],
      },
      'test',
    )
    service = await startRouterService(config, {logger: new Logger({write: () => undefined}), statusServer: false})
  })

  afterAll(async () => {
    await service?.stop(5000)
    await Promise.all(orthancs.map((o) => o.stop()))
    if (workDir) await rm(workDir, {recursive: true, force: true})
  })

  it('routes by the rules, balances CT inside its group, mirrors every stored instance, and --explain agrees', async () => {
    const ct = await writeSyntheticStudies(path.join(workDir, 'ct'), {studies: 10, instancesPerStudy: 2, pixelBytes: 2048})
    const result = await storescu(['-aec', 'DDR_TEST', '127.0.0.1', String(service.port), ...ct.map((i) => i.path)], {timeoutMs: 120_000})
    expect(result.code).toBe(0)
    expect(await sendFixturesRaw(service.port, 'DDR_TEST', mrFixtures)).toEqual(mrFixtures.map(() => 0))
    expect(await sendFixturesRaw(service.port, 'DDR_TEST', [srFixture])).toEqual([0xc000])
    await service.router.mirrorsIdle()

    const where = new Map<string, string[]>()
    const note = (sop: string, backend: string) => where.set(sop, [...(where.get(sop) ?? []), backend])
    for (const instance of ct) {
      for (const o of orthancs) if ((await o.client.lookupInstance(instance.sopInstanceUid)) !== undefined) note(instance.sopInstanceUid, o.name)
    }

    for (const sop of await sopUidsIn(path.join(workDir, 'mr'))) note(sop, 'mr')
    const mirrored = new Set(await sopUidsIn(path.join(workDir, 'all')))

    for (const instance of ct) expect({sop: instance.sopInstanceUid, where: where.get(instance.sopInstanceUid)?.length}).toEqual({sop: instance.sopInstanceUid, where: 1})
    const ctHomes = new Set(ct.map((i) => where.get(i.sopInstanceUid)![0]))
    expect(ctHomes).toEqual(new Set(['ct1', 'ct2']))
    for (const fixture of mrFixtures) expect(where.get(fixture.sopInstanceUid)).toEqual(['mr'])
    expect(where.has(srFixture.sopInstanceUid)).toBe(false)
    expect(mirrored).toEqual(new Set([...ct.map((i) => i.sopInstanceUid), ...mrFixtures.map((f) => f.sopInstanceUid)]))
    expect(service.router.counters).toMatchObject({dropped: 1, mirrored: ct.length + mrFixtures.length, mirrorFailed: 0})

    // --explain uses the same rules and placement: it names where each instance went.
    for (const instance of ct.slice(0, 6)) {
      const explained = await explainRoute(config, instance.path)
      expect({sop: instance.sopInstanceUid, rule: explained.rule, backend: explained.backend, mirrors: explained.mirrors}).toEqual({sop: instance.sopInstanceUid, rule: 'ct', backend: where.get(instance.sopInstanceUid)![0], mirrors: ['all']})
    }

    const mr = await explainRoute(config, path.join(fixturesDir, mrFixtures[0].path))
    expect(mr).toMatchObject({rule: 'mr', backend: 'mr', order: ['mr'], mirrors: ['all'], drop: null})
    const sr = await explainRoute(config, path.join(fixturesDir, srFixture.path))
    expect(sr).toMatchObject({rule: 'no-sr', backend: null, drop: 'SR is not archived here'})
  })
})

describe('routing rules in store-and-forward mode', () => {
  let service: RouterService
  let workDir: string

  beforeAll(async () => {
    workDir = await mkdtemp(path.join(os.tmpdir(), 'ddr-drop-spool-'))
    const config: DdrConfig = validateConfig(
      {
        listen: {host: '127.0.0.1', port: 0, aeTitle: 'DDR_DROP'},
        status: {host: '127.0.0.1', port: 0},
        spool: {dir: path.join(workDir, 'spool')},
        backends: [{name: 'archive', type: 'folder', path: path.join(workDir, 'archive')}],
        rules: [{name: 'no-sr', match: {modality: 'SR'}, action: {drop: 'SR is not archived here'}}],
      },
      'test',
    )
    service = await startRouterService(config, {logger: new Logger({write: () => {}}), statusServer: false})
  })

  afterAll(async () => {
    await service?.stop(5000)
    if (workDir) await rm(workDir, {recursive: true, force: true})
  })

  it('refuses a dropped instance before acknowledging it, and keeps nothing of it', async () => {
    const [srStatus, mrStatus] = await sendFixturesRaw(service.port, 'DDR_DROP', [srFixture, mrFixtures[0]])
    expect(srStatus).toBe(0xc000)
    expect(mrStatus).toBe(0)
    await service.forwarder!.idle()
    expect(await sopUidsIn(path.join(workDir, 'archive'))).toEqual([mrFixtures[0].sopInstanceUid])
    expect(await readdir(path.join(workDir, 'spool', 'dead-letter'))).toEqual([])
    expect(service.status().spool!.depth).toBe(0)
    expect(service.router.counters.dropped).toBe(1)
  })
})
