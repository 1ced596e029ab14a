import {readFileSync, readdirSync} from 'node:fs'
import {mkdir, mkdtemp, rm} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {readMetaHeader} from '../../../src/lib/dicom/part10.js'
import {datasetOf, fixturesDir, goodFixtures, onTheWire, sendFixturesRaw} from '../../helpers/fixtures.js'
import {type SyntheticInstance, writeSyntheticStudies} from '../../helpers/datasets.js'
import {type Storescp, dcmsend, echoscu, startStorescp, storescu} from '../../helpers/dcmtk.js'
import {type TestOrthanc, startTestOrthanc} from '../../helpers/orthanc.js'
import {type TestRouter, startTestRouter} from '../../helpers/router.js'

/** Implicit VR little endian, explicit VR little endian, explicit VR big endian. */
const UNCOMPRESSED_SYNTAXES = ['1.2.840.10008.1.2', '1.2.840.10008.1.2.1', '1.2.840.10008.1.2.2']

/** Sends every good fixture's own dataset bytes and expects Success for each. */
async function expectAllStored(port: number, calledAeTitle: string): Promise<void> {
  const statuses = await sendFixturesRaw(port, calledAeTitle)
  for (const [index, fixture] of goodFixtures.entries()) expect({fixture: fixture.path, status: statuses[index]}).toEqual({fixture: fixture.path, status: 0})
}

/** Which of the backends hold this SOP instance, with the stored file. */
async function whereIs(backends: TestOrthanc[], sopInstanceUid: string): Promise<Array<{backend: string; file: Buffer}>> {
  const found = []
  for (const backend of backends) {
    const id = await backend.client.lookupInstance(sopInstanceUid)
    if (id !== undefined) found.push({backend: backend.name, file: await backend.client.instanceFile(id)})
  }

  return found
}

/** For each SOP Instance UID of these instances, the backends that hold it (one tools/find per study and backend). */
async function holdersByStudy(backends: TestOrthanc[], instances: SyntheticInstance[]): Promise<Map<string, string[]>> {
  const held = new Map<string, string[]>()
  for (const backend of backends) {
    for (const study of new Set(instances.map((i) => i.studyInstanceUid))) {
      for (const sopInstanceUid of await backend.client.studyInstanceUids(study)) held.set(sopInstanceUid, [...(held.get(sopInstanceUid) ?? []), backend.name])
    }
  }

  return held
}

describe('ddr listen in front of two real Orthanc servers', () => {
  let orthancs: TestOrthanc[] = []
  let reference: TestOrthanc
  let router: TestRouter
  let workDir: string

  beforeAll(async () => {
    orthancs = await Promise.all([startTestOrthanc({name: 'alpha', aeTitle: 'ALPHA'}), startTestOrthanc({name: 'beta', aeTitle: 'BETA'})])
    reference = await startTestOrthanc({name: 'reference', aeTitle: 'REFERENCE'})
    router = await startTestRouter(orthancs)
    workDir = await mkdtemp(path.join(os.tmpdir(), 'ddr-listen-'))
  })

  afterAll(async () => {
    await router?.stop()
    await Promise.all([...orthancs, reference].filter(Boolean).map((o) => o.stop()))
    if (workDir) await rm(workDir, {recursive: true, force: true})
  })

  it('answers C-ECHO', async () => {
    const result = await echoscu(['-aec', router.aeTitle, '127.0.0.1', String(router.port)])
    expect(result.stderr).toBe('')
    expect(result.code).toBe(0)
  })

  it('stores every fixture exactly once, with the same dataset bytes as a direct send', async () => {
    const files = goodFixtures.map((f) => path.join(fixturesDir, f.path))
    const viaRouter = await dcmsend(['-aec', router.aeTitle, '127.0.0.1', String(router.port), ...files], {timeoutMs: 120_000})
    expect(viaRouter.code).toBe(0)
    await router.drained()
    const direct = await dcmsend(['-aec', reference.aeTitle, '127.0.0.1', String(reference.dicomPort), ...files], {timeoutMs: 120_000})
    expect(direct.code).toBe(0)

    const compared: string[] = []
    for (const fixture of goodFixtures) {
      const copies = await whereIs(orthancs, fixture.sopInstanceUid)
      expect({fixture: fixture.path, copies: copies.length}).toEqual({fixture: fixture.path, copies: 1})
      const [referenceCopy] = await whereIs([reference], fixture.sopInstanceUid)
      // Where dcmsend and Orthanc negotiated the same transfer syntax directly (ddr may be offered a
      // different first choice), Orthanc stored the very same dataset bytes both ways.
      const routed = {syntax: readMetaHeader(copies[0].file).transferSyntaxUid, dataset: datasetOf(copies[0].file)}
      const direct = {syntax: readMetaHeader(referenceCopy.file).transferSyntaxUid, dataset: datasetOf(referenceCopy.file)}
      if (direct.syntax === routed.syntax) {
        expect({fixture: fixture.path, identical: routed.dataset.equals(direct.dataset)}).toEqual({fixture: fixture.path, identical: true})
        compared.push(fixture.path)
      }
    }

    // Not a vacuous check: every uncompressed fixture (nothing to negotiate differently) and at
    // least half of all fixtures were compared (19 of 30 today).
    const uncompressed = goodFixtures.filter((f) => UNCOMPRESSED_SYNTAXES.includes(f.transferSyntaxUid)).map((f) => f.path)
    expect(uncompressed.length).toBeGreaterThanOrEqual(10)
    expect({compared}).toEqual({compared: expect.arrayContaining(uncompressed)})
    expect(compared.length).toBeGreaterThanOrEqual(Math.ceil(goodFixtures.length / 2))
  })

  it('keeps each study on one backend and spreads the studies over both', async () => {
    const instances = await writeSyntheticStudies(path.join(workDir, 'spread'), {studies: 12, instancesPerStudy: 4, pixelBytes: 8192})
    const result = await storescu(['-aec', router.aeTitle, '127.0.0.1', String(router.port), ...instances.map((i) => i.path)], {timeoutMs: 120_000})
    expect(result.code).toBe(0)
    await router.drained()

    const studyHomes = new Map<string, Set<string>>()
    for (const instance of instances) {
      const copies = await whereIs(orthancs, instance.sopInstanceUid)
      expect(copies).toHaveLength(1)
      const homes = studyHomes.get(instance.studyInstanceUid) ?? new Set()
      homes.add(copies[0].backend)
      studyHomes.set(instance.studyInstanceUid, homes)
    }

    for (const homes of studyHomes.values()) expect(homes.size).toBe(1)
    const used = new Set([...studyHomes.values()].flatMap((homes) => [...homes]))
    expect(used).toEqual(new Set(['alpha', 'beta']))
    expect(router.logs.some((line) => line.includes(' routed ') && line.includes('backend=alpha'))).toBe(true)
    expect(router.logs.some((line) => line.includes(' association ') && line.includes('from=STORESCU'))).toBe(true)
  })

  it('serves /status and /metrics with the counters', async () => {
    const status = (await (await fetch(`http://127.0.0.1:${router.service.statusPort}/status`)).json()) as {counters: {routed: number; failed: number}; backends: Array<{name: string; healthy: boolean; routed: number}>}
    expect(status.counters.failed).toBe(0)
    expect(status.counters.routed).toBe(status.backends.reduce((sum, b) => sum + b.routed, 0))
    expect(status.backends.map((b) => [b.name, b.healthy])).toEqual([
      ['alpha', true],
      ['beta', true],
    ])
    const metrics = await (await fetch(`http://127.0.0.1:${router.service.statusPort}/metrics`)).text()
    expect(metrics).toContain(`ddr_instances_routed_total ${status.counters.routed}`)
    expect(metrics).toContain('ddr_backend_up{backend="alpha"} 1')
  })
})

describe('ddr listen with backends reached through the Orthanc REST API', () => {
  let orthancs: TestOrthanc[] = []
  let router: TestRouter

  beforeAll(async () => {
    orthancs = await Promise.all([startTestOrthanc({name: 'rest1', aeTitle: 'REST1'}), startTestOrthanc({name: 'rest2', aeTitle: 'REST2'})])
    router = await startTestRouter(orthancs, {transport: 'rest'})
  })

  afterAll(async () => {
    await router?.stop()
    await Promise.all(orthancs.map((o) => o.stop()))
  })

  it('uploads every instance with POST /instances, and Orthanc keeps the dataset bytes the sender sent', async () => {
    await expectAllStored(router.port, router.aeTitle)
    await router.drained()
    expect(router.service.router.counters.failed).toBe(0)
    for (const fixture of goodFixtures) {
      const copies = await whereIs(orthancs, fixture.sopInstanceUid)
      expect({fixture: fixture.path, copies: copies.length}).toEqual({fixture: fixture.path, copies: 1})
      const original = datasetOf(readFileSync(path.join(fixturesDir, fixture.path)))
      const sent = onTheWire(original)
      expect({fixture: fixture.path, identical: datasetOf(copies[0].file).equals(sent)}).toEqual({fixture: fixture.path, identical: true})
    }

    expect(router.logs.some((line) => line.includes(' routed ') && line.includes('backend=rest'))).toBe(true)
  })
})

describe('ddr listen in front of a plain DICOM SCP (storescp in bit-preserving mode)', () => {
  let behindRouter: Storescp
  let direct: Storescp
  let router: TestRouter
  let workDir: string

  beforeAll(async () => {
    workDir = await mkdtemp(path.join(os.tmpdir(), 'ddr-storescp-'))
    await Promise.all(['behind', 'direct'].map((name) => mkdir(path.join(workDir, name))))
    behindRouter = await startStorescp({dir: path.join(workDir, 'behind'), aeTitle: 'PLAINSCP', extraArgs: ['+B', '-uf']})
    direct = await startStorescp({dir: path.join(workDir, 'direct'), aeTitle: 'PLAINSCP', extraArgs: ['+B', '-uf']})
    // storescp without --fork serves one association at a time
    router = await startTestRouter([{name: 'plain', aeTitle: 'PLAINSCP', dicomPort: behindRouter.port, maxAssociations: 1}])
  })

  afterAll(async () => {
    await router?.stop()
    await behindRouter?.stop()
    await direct?.stop()
    if (workDir) await rm(workDir, {recursive: true, force: true})
  })

  /** Files storescp wrote, by SOP instance UID. */
  function receivedIn(dir: string): Map<string, Buffer> {
    const files = new Map<string, Buffer>()
    for (const name of readdirSync(dir)) {
      const file = readFileSync(path.join(dir, name))
      files.set(readMetaHeader(file).mediaStorageSopInstanceUid ?? name, file)
    }

    return files
  }

  it('forwards the bytes a dcmtk sender put on the wire, unchanged, in every transfer syntax', async () => {
    const files = goodFixtures.map((f) => path.join(fixturesDir, f.path))
    const viaRouter = await dcmsend(['-aec', router.aeTitle, '127.0.0.1', String(router.port), ...files], {timeoutMs: 120_000})
    expect(viaRouter.code).toBe(0)
    await router.drained()
    const straight = await dcmsend(['-aec', direct.aeTitle, '127.0.0.1', String(direct.port), ...files], {timeoutMs: 120_000})
    expect(straight.code).toBe(0)
    if (process.env.DDR_TEST_DEBUG) console.log(router.logs.join('\n'), behindRouter.output())
    const behind = receivedIn(path.join(workDir, 'behind'))
    const reference = receivedIn(path.join(workDir, 'direct'))
    for (const fixture of goodFixtures) {
      const copy = behind.get(fixture.sopInstanceUid)
      const expected = reference.get(fixture.sopInstanceUid)!
      expect({fixture: fixture.path, received: copy !== undefined}).toEqual({fixture: fixture.path, received: true})
      expect({fixture: fixture.path, syntax: readMetaHeader(copy!).transferSyntaxUid, identical: datasetOf(copy!).equals(datasetOf(expected))}).toEqual({
        fixture: fixture.path,
        syntax: readMetaHeader(expected).transferSyntaxUid,
        identical: true,
      })
    }
  })

  it("delivers a file's own dataset bytes when the sender sends them raw (private tags, deflate, big endian included)", async () => {
    await expectAllStored(router.port, router.aeTitle)
    await router.drained()

    const behind = receivedIn(path.join(workDir, 'behind'))
    for (const fixture of goodFixtures) {
      const original = datasetOf(readFileSync(path.join(fixturesDir, fixture.path)))
      // a deflated stream of odd length goes out with the pad byte PS3.5 A.5 asks for
      const sent = onTheWire(original)
      const copy = behind.get(fixture.sopInstanceUid)!
      expect({fixture: fixture.path, syntax: readMetaHeader(copy).transferSyntaxUid, identical: datasetOf(copy).equals(sent)}).toEqual({
        fixture: fixture.path,
        syntax: fixture.transferSyntaxUid,
        identical: true,
      })
    }
  })
})

describe.each([
  ['store-and-forward', true],
  ['pass-through', false],
])('ddr listen (%s) when a backend dies mid-stream', (_mode, spool) => {
  let orthancs: TestOrthanc[] = []
  let router: TestRouter
  let workDir: string
  let instances: SyntheticInstance[]

  beforeAll(async () => {
    orthancs = await Promise.all([startTestOrthanc({name: 'left', aeTitle: 'LEFT'}), startTestOrthanc({name: 'right', aeTitle: 'RIGHT'})])
    router = await startTestRouter(orthancs, {spool: {enabled: spool}})
    workDir = await mkdtemp(path.join(os.tmpdir(), 'ddr-failover-'))
    instances = await writeSyntheticStudies(workDir, {studies: 10, instancesPerStudy: 20, pixelBytes: 16_384})
  })

  afterAll(async () => {
    await router?.stop()
    await Promise.all(orthancs.map((o) => o.stop()))
    if (workDir) await rm(workDir, {recursive: true, force: true})
  })

  it('the sender sees no failure and, with the victim back, every instance is held by the backend that confirmed it (and by the victim only if it never confirmed)', async () => {
    const sending = storescu(['-aec', router.aeTitle, '127.0.0.1', String(router.port), ...instances.map((i) => i.path)], {timeoutMs: 120_000})
    const [victim, survivor] = orthancs
    const victimState = router.service.backends.find((b) => b.name === victim.name)!
    const deadline = Date.now() + 60_000
    while (victimState.routed < 10 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5))
    process.kill(victim.pid, 'SIGKILL')
    const routedToVictim = victimState.routed

    const result = await sending
    await router.drained()
    expect(result.stderr).not.toMatch(/[EF]: /)
    expect(result.code).toBe(0)
    expect(router.service.router.counters.failed).toBe(0)
    expect(router.service.router.counters.failovers).toBeGreaterThanOrEqual(1)
    expect(router.service.router.counters.routed).toBe(instances.length)
    expect(routedToVictim).toBeGreaterThanOrEqual(10)
    expect(victimState.healthy).toBe(false)

    // The victim comes back with what it stored before it died, and each backend is asked, by SOP
    // Instance UID, what it holds: every instance is where the router says it stored it (its
    // 'routed' log line), and on no other backend, except the few the victim stored but never
    // confirmed before it died (in flight on its associations): those failed over and the victim
    // keeps its copy too.
    await victim.resume()
    const held = await holdersByStudy(orthancs, instances)
    const storedOn = new Map<string, string[]>()
    for (const line of router.logs) {
      const routed = / routed sop=(\S+) .*backend=(\S+)/.exec(line)
      if (routed !== null) storedOn.set(routed[1], [...(storedOn.get(routed[1]) ?? []), routed[2]])
    }

    const unconfirmedOnVictim: string[] = []
    for (const {sopInstanceUid: sop} of instances) {
      const [home, ...others] = storedOn.get(sop) ?? []
      expect({sop, routedTo: others.length + 1, held: held.get(sop)?.includes(home) ?? false}).toEqual({sop, routedTo: 1, held: true})
      const elsewhere = (held.get(sop) ?? []).filter((name) => name !== home)
      if (elsewhere.length > 0) {
        expect({sop, home, elsewhere}).toEqual({sop, home: survivor.name, elsewhere: [victim.name]})
        unconfirmedOnVictim.push(sop)
      }
    }

    expect(unconfirmedOnVictim.length).toBeLessThanOrEqual(4) // the victim's associations (maxAssociations)
    const onVictim = instances.filter((i) => storedOn.get(i.sopInstanceUid)?.[0] === victim.name).length
    expect(onVictim).toBe(victimState.routed)
  })
})
