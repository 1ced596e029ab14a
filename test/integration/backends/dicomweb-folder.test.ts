import {readFileSync} from 'node:fs'
import {mkdtemp, readdir, readFile, rm} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {validateConfig} from '../../../src/lib/config/validate.js'
import {readMetaHeader} from '../../../src/lib/dicom/part10.js'
import {Logger} from '../../../src/lib/output/logger.js'
import {type RouterService, startRouterService} from '../../../src/lib/listen/service.js'
import {DICOMWEB_PLUGIN} from '../../../src/lib/stack/orthanc-process.js'
import {datasetOf, fixturesDir, goodFixtures, onTheWire, sendFixturesRaw} from '../../helpers/fixtures.js'
import {type TestOrthanc, startTestOrthanc} from '../../helpers/orthanc.js'

async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, {recursive: true, withFileTypes: true})
  return entries.filter((e) => e.isFile()).map((e) => path.relative(dir, path.join(e.parentPath, e.name))).sort()
}

describe('dicomweb (STOW-RS) primary with a folder mirror', () => {
  let orthanc: TestOrthanc
  let service: RouterService
  let workDir: string
  const logs: string[] = []

  beforeAll(async () => {
    workDir = await mkdtemp(path.join(os.tmpdir(), 'ddr-backends-'))
    orthanc = await startTestOrthanc({name: 'web', aeTitle: 'WEB', plugins: [DICOMWEB_PLUGIN], extra: {DicomWeb: {Enable: true, Root: '/dicom-web/'}}})
    const config = validateConfig(
      {
        listen: {host: '127.0.0.1', port: 0, aeTitle: 'DDR_TEST'},
        status: {host: '127.0.0.1', port: 0},
        spool: {dir: path.join(workDir, 'spool'), retryBaseMs: 100, retryMaxMs: 1000},
        health: {intervalMs: 500, timeoutMs: 2000, failThreshold: 1, recoverThreshold: 1},
        backends: [
          {name: 'web', type: 'dicomweb', url: `${orthanc.url}/dicom-web`},
          {name: 'disk', type: 'folder', path: path.join(workDir, 'archive'), mirror: true, minFreeMb: 1},
        ],
      },
      'test',
    )
    service = await startRouterService(config, {logger: new Logger({debug: true, write: (line) => logs.push(line)}), memoryLimitBytes: 4096})
  })

  afterAll(async () => {
    await service?.stop(5000)
    await orthanc?.stop()
    if (workDir) await rm(workDir, {recursive: true, force: true})
  })

  it('stores every fixture byte-exact through STOW-RS, and mirrors each to the folder in the exact layout', async () => {
    const statuses = await sendFixturesRaw(service.port, 'DDR_TEST')
    expect(statuses.every((s) => s === 0)).toBe(true)
    await service.forwarder!.idle()
    await service.router.mirrorsIdle()

    for (const fixture of goodFixtures) {
      const expected = onTheWire(datasetOf(readFileSync(path.join(fixturesDir, fixture.path))))
      const id = await orthanc.client.lookupInstance(fixture.sopInstanceUid)
      expect({fixture: fixture.path, inOrthanc: id !== undefined}).toEqual({fixture: fixture.path, inOrthanc: true})
      const stored = await orthanc.client.instanceFile(id!)
      expect({fixture: fixture.path, identical: datasetOf(stored).equals(expected), syntax: readMetaHeader(stored).transferSyntaxUid}).toEqual({fixture: fixture.path, identical: true, syntax: fixture.transferSyntaxUid})

      const copy = await readFile(path.join(workDir, 'archive', fixture.patientId, fixture.studyInstanceUid, fixture.seriesInstanceUid, `${fixture.sopInstanceUid}.dcm`))
      expect({fixture: fixture.path, identical: datasetOf(copy).equals(expected), syntax: readMetaHeader(copy).transferSyntaxUid}).toEqual({fixture: fixture.path, identical: true, syntax: fixture.transferSyntaxUid})
    }

    // Exactly one file per instance, nothing half-written left behind.
    expect(await listFiles(path.join(workDir, 'archive'))).toEqual(goodFixtures.map((f) => path.join(f.patientId, f.studyInstanceUid, f.seriesInstanceUid, `${f.sopInstanceUid}.dcm`)).sort())
    const status = service.status()
    expect(status.counters).toMatchObject({routed: goodFixtures.length, mirrored: goodFixtures.length, mirrorFailed: 0, mirrorPending: 0})
    expect(status.backends.map((b) => [b.name, b.routed, b.healthy])).toEqual([
      ['web', goodFixtures.length, true],
      ['disk', goodFixtures.length, true],
    ])
    // The mirror's bytes were held by hard links while pending; none is left.
    expect(await readdir(path.join(workDir, 'spool', 'mirror')).catch(() => [])).toEqual([])
  })
})
