import {readFile, readdir, mkdtemp, rm} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {type BreakingProxy, startBreakingProxy} from '../../helpers/breaking-proxy.js'
import {type SyntheticInstance, writeSyntheticStudies} from '../../helpers/datasets.js'
import {storescu} from '../../helpers/dcmtk.js'
import {datasetOf} from '../../helpers/fixtures.js'
import {type TestOrthanc, startTestOrthanc} from '../../helpers/orthanc.js'
import {type TestRouter, startTestRouter} from '../../helpers/router.js'

describe.each([
  {mode: 'cut' as const, maxAttempts: 8, expectedInterruptions: 3},
  {mode: 'stall' as const, maxAttempts: 2, expectedInterruptions: 2},
])('a backend that breaks off on one instance ($mode, spool.maxAttempts $maxAttempts)', ({mode, maxAttempts, expectedInterruptions}) => {
  let orthanc: TestOrthanc
  let proxy: BreakingProxy
  let router: TestRouter
  let workDir: string
  let instances: SyntheticInstance[]
  let poison: SyntheticInstance

  beforeAll(async () => {
    workDir = await mkdtemp(path.join(os.tmpdir(), 'ddr-interrupted-'))
    instances = await writeSyntheticStudies(workDir, {studies: 1, instancesPerStudy: 12, pixelBytes: 8192})
    poison = instances[5]
    orthanc = await startTestOrthanc({name: `flaky-${mode}`, aeTitle: 'FLAKY'})
    proxy = await startBreakingProxy(orthanc.dicomPort, Buffer.from(poison.sopInstanceUid, 'latin1'), mode)
    router = await startTestRouter([{name: 'flaky', aeTitle: 'FLAKY', dicomPort: proxy.port, config: {storeTimeoutMs: 1500}}], {spool: {maxAttempts}})
  })

  afterAll(async () => {
    await router?.stop()
    await proxy?.close()
    await orthanc?.stop()
    if (workDir) await rm(workDir, {recursive: true, force: true})
  })

  it('dead-letters that instance after its tries, keeps the backend up and delivers every other instance', async () => {
    const started = Date.now()
    const sent = await storescu(['-aec', router.aeTitle, '127.0.0.1', String(router.port), ...instances.map((i) => i.path)], {timeoutMs: 60_000})
    expect(sent.code).toBe(0)
    await router.drained()

    // Every other instance is in Orthanc, byte for byte as sent.
    for (const instance of instances.filter((i) => i !== poison)) {
      const id = await orthanc.client.lookupInstance(instance.sopInstanceUid)
      expect({sop: instance.sopInstanceUid, stored: id !== undefined}).toEqual({sop: instance.sopInstanceUid, stored: true})
      expect(datasetOf(await orthanc.client.instanceFile(id!)).equals(datasetOf(await readFile(instance.path)))).toBe(true)
    }

    expect(await orthanc.client.lookupInstance(poison.sopInstanceUid)).toBeUndefined()

    // The poison instance is in dead-letter with what the backend did, after exactly its tries.
    const deadLetterDir = path.join(router.config.spool.dir, 'dead-letter')
    const files = await readdir(deadLetterDir)
    const reasonFile = files.find((f) => f.endsWith('.reason.json'))!
    const reason = JSON.parse(await readFile(path.join(deadLetterDir, reasonFile), 'utf8'))
    expect(reason).toMatchObject({sopInstanceUid: poison.sopInstanceUid, interruptions: expectedInterruptions, tries: expectedInterruptions, busyAnswers: 0})
    expect(reason.tries).toBeLessThanOrEqual(maxAttempts)
    expect(reason.reason).toMatch(/C-ECHO still answered/)
    expect(proxy.broken).toBe(expectedInterruptions)

    // The backend was never marked down: its C-ECHO answered throughout.
    const backend = router.service.backends[0]
    expect(backend.healthy).toBe(true)
    expect(router.logs.filter((line) => line.includes('backend-down'))).toEqual([])
    expect(router.service.router.counters).toMatchObject({received: instances.length, routed: instances.length - 1, failed: 1})
    // Bounded: each stalled try ends after storeTimeoutMs, not Orthanc's 30 s or the 60 s request timeout.
    expect(Date.now() - started).toBeLessThan(30_000)
  })
})
