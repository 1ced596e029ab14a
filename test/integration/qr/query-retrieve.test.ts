import {execFile} from 'node:child_process'
import {mkdir, mkdtemp, readFile, readdir, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {promisify} from 'node:util'

import {Identifier} from '../../../src/lib/dicom/identifier.js'
import {CommandField, CommandTag} from '../../../src/lib/dimse/command.js'
import {DimseServer, QueryModel} from '../../../src/lib/dimse/scp.js'
import {type DimseResponse, ScuAssociation} from '../../../src/lib/dimse/scu.js'
import {readMetaHeader} from '../../../src/lib/dicom/part10.js'
import {Tag} from '../../../src/lib/dicom/tags.js'
import type {FindResult} from '../../../src/lib/qr/fleet.js'
import type {GetResult} from '../../../src/lib/qr/fleet.js'
import {runCompiledCli} from '../../helpers/compiled-cli.js'
import {type SyntheticInstance, writeSyntheticStudies} from '../../helpers/datasets.js'
import {type Storescp, runDcmtk, startStorescp, storescu} from '../../helpers/dcmtk.js'
import {type TestOrthanc, startTestOrthanc} from '../../helpers/orthanc.js'
import {type TestRouter, startTestRouter} from '../../helpers/router.js'

const run = promisify(execFile)
const EXPLICIT_VR_LITTLE_ENDIAN = '1.2.840.10008.1.2.1'

/** The dataset bytes of a Part 10 file (what a byte-exact retrieval must preserve). */
function datasetOf(file: Buffer): Buffer {
  return file.subarray(readMetaHeader(file).datasetOffset)
}

/** The identifiers findscu received (its --extract files), in arrival order. */
async function findResults(dir: string): Promise<Identifier[]> {
  const files = (await readdir(dir)).filter((f) => f.startsWith('rsp')).sort()
  return Promise.all(
    files.map(async (f) => {
      const bytes = await readFile(path.join(dir, f))
      const meta = readMetaHeader(bytes)
      return Identifier.decode(bytes.subarray(meta.datasetOffset), meta.transferSyntaxUid)
    }),
  )
}

describe('query/retrieve across the fleet (findscu, movescu, getscu through ddr)', () => {
  let orthancs: TestOrthanc[] = []
  let router: TestRouter
  let viewer: Storescp
  let workDir: string
  let split: SyntheticInstance[]
  let single: SyntheticInstance[]

  const find = async (name: string, keys: string[], model = '-S') => {
    const out = path.join(workDir, `find-${name}`)
    await mkdir(out, {recursive: true})
    const result = await runDcmtk('findscu', [model, '-v', '-X', '-od', out, '-aec', router.aeTitle, ...keys.flatMap((k) => ['-k', k]), '127.0.0.1', String(router.port)], {timeoutMs: 30_000})
    return {...result, matches: await findResults(out)}
  }

  beforeAll(async () => {
    orthancs = await Promise.all([startTestOrthanc({name: 'east', aeTitle: 'EAST'}), startTestOrthanc({name: 'west', aeTitle: 'WEST'})])
    workDir = await mkdtemp(path.join(os.tmpdir(), 'ddr-qr-'))
    await mkdir(path.join(workDir, 'viewer'), {recursive: true})
    viewer = await startStorescp({dir: path.join(workDir, 'viewer'), aeTitle: 'VIEWER'})
    split = await writeSyntheticStudies(path.join(workDir, 'split'), {studies: 1, instancesPerStudy: 6, pixelBytes: 2048, prefix: 'QRSPLIT'})
    single = await writeSyntheticStudies(path.join(workDir, 'single'), {studies: 1, instancesPerStudy: 3, pixelBytes: 2048, prefix: 'QRONE'})
    await run('dcmodify', ['-nb', '-i', '(0008,0020)=20260115', ...split.map((i) => i.path)])
    await run('dcmodify', ['-nb', '-i', '(0008,0020)=20250601', ...single.map((i) => i.path)])
    // A study split over both backends (as a failover leaves it), and one on west only.
    const [east, west] = orthancs
    const sends = await Promise.all([
      storescu(['-aec', east.aeTitle, '127.0.0.1', String(east.dicomPort), ...split.slice(0, 3).map((i) => i.path)]),
      storescu(['-aec', west.aeTitle, '127.0.0.1', String(west.dicomPort), ...split.slice(3).map((i) => i.path), ...single.map((i) => i.path)]),
    ])
    expect(sends.map((s) => s.code)).toEqual([0, 0])
    router = await startTestRouter(
      orthancs.map((o) => ({...o, url: o.url})),
      {retrieve: {destinations: [{aeTitle: 'VIEWER', host: '127.0.0.1', port: viewer.port}], queryTimeoutMs: 3000}, health: {intervalMs: 60_000}},
    )
  })

  afterAll(async () => {
    await router?.stop()
    await viewer?.stop()
    await Promise.all(orthancs.map((o) => o.stop()))
    if (workDir) await rm(workDir, {recursive: true, force: true})
  })

  it('answers a STUDY-level C-FIND with a wildcard and a date range with the union of both Orthancs, a split study once with its counts summed', async () => {
    const result = await find('study', ['QueryRetrieveLevel=STUDY', 'PatientID=QR*', 'StudyDate=20260101-20260131', 'StudyInstanceUID', 'NumberOfStudyRelatedInstances', 'ModalitiesInStudy'])
    expect(result.code).toBe(0)
    expect(result.matches).toHaveLength(1)
    const [match] = result.matches
    expect(match.get(Tag.StudyInstanceUID)).toBe(split[0].studyInstanceUid)
    expect(match.get(Tag.NumberOfStudyRelatedInstances)).toBe('6')
    expect(match.get(Tag.ModalitiesInStudy)).toBe('CT')

    const all = await find('study-all', ['QueryRetrieveLevel=STUDY', 'PatientID=QR*', 'StudyInstanceUID'])
    expect(all.matches.map((m) => m.get(Tag.StudyInstanceUID)).sort()).toEqual([split[0].studyInstanceUid, single[0].studyInstanceUid].sort())
    expect(router.logs.some((l) => l.includes('"event":"query"') || l.includes('query '))).toBe(true)
  })

  it('answers SERIES and IMAGE levels (Patient Root too) without duplicates', async () => {
    const series = await find('series', ['QueryRetrieveLevel=SERIES', `StudyInstanceUID=${split[0].studyInstanceUid}`, 'SeriesInstanceUID', 'NumberOfSeriesRelatedInstances'])
    expect(series.matches).toHaveLength(1)
    expect(series.matches[0].get(Tag.NumberOfSeriesRelatedInstances)).toBe('6')

    const images = await find('image', ['QueryRetrieveLevel=IMAGE', `StudyInstanceUID=${split[0].studyInstanceUid}`, `SeriesInstanceUID=${split[0].seriesInstanceUid}`, 'SOPInstanceUID'])
    expect(images.matches.map((m) => m.get(Tag.SOPInstanceUID)).sort()).toEqual(split.map((i) => i.sopInstanceUid).sort())

    const patients = await find('patient', ['QueryRetrieveLevel=PATIENT', 'PatientID=QRONE*', 'PatientName'], '-P')
    expect(patients.matches.map((m) => m.get(Tag.PatientID))).toEqual([single[0].patientId])
  })

  it('C-MOVE sends every instance of the split study to the destination, byte-identical to what each Orthanc stores', async () => {
    const move = await runDcmtk('movescu', ['-S', '-v', '-aec', router.aeTitle, '-aem', 'VIEWER', '-k', 'QueryRetrieveLevel=STUDY', '-k', `StudyInstanceUID=${split[0].studyInstanceUid}`, '127.0.0.1', String(router.port)], {timeoutMs: 60_000})
    expect(move.code).toBe(0)
    const received = await readdir(viewer.dir)
    expect(received).toHaveLength(split.length)
    for (const instance of split) {
      const file = received.find((f) => f.endsWith(instance.sopInstanceUid))
      expect(file).toBeDefined()
      const holder = orthancs[split.indexOf(instance) < 3 ? 0 : 1]
      const stored = await holder.client.instanceFile((await holder.client.lookupInstance(instance.sopInstanceUid))!)
      expect(datasetOf(await readFile(path.join(viewer.dir, file!))).equals(datasetOf(stored))).toBe(true)
    }
  })

  it('C-GET returns every instance of the split study over the requesting association, byte-identical', async () => {
    const out = path.join(workDir, 'get')
    await mkdir(out, {recursive: true})
    const get = await runDcmtk('getscu', ['-S', '-v', '-aec', router.aeTitle, '-od', out, '-k', 'QueryRetrieveLevel=STUDY', '-k', `StudyInstanceUID=${split[0].studyInstanceUid}`, '127.0.0.1', String(router.port)], {timeoutMs: 60_000})
    expect(get.code).toBe(0)
    const received = await readdir(out)
    expect(received).toHaveLength(split.length)
    for (const instance of split) {
      const file = received.find((f) => f.endsWith(instance.sopInstanceUid))
      expect(file).toBeDefined()
      const holder = orthancs[split.indexOf(instance) < 3 ? 0 : 1]
      const stored = await holder.client.instanceFile((await holder.client.lookupInstance(instance.sopInstanceUid))!)
      expect(datasetOf(await readFile(path.join(out, file!))).equals(datasetOf(stored))).toBe(true)
    }
  })

  it('refuses a C-MOVE to an unknown destination with A801', async () => {
    const move = await runDcmtk('movescu', ['-S', '-v', '-aec', router.aeTitle, '-aem', 'NOBODY', '-k', 'QueryRetrieveLevel=STUDY', '-k', `StudyInstanceUID=${split[0].studyInstanceUid}`, '127.0.0.1', String(router.port)], {timeoutMs: 30_000})
    expect(`${move.stdout}${move.stderr}`).toMatch(/Refused: MoveDestinationUnknown/)
    expect(router.logs.some((l) => l.includes('retrieve-refused') && l.includes('NOBODY'))).toBe(true)
  })

  it('ddr find --json lists the split study once with both backends; ddr get writes it whole (east over REST: its files byte for byte; west by C-GET: its datasets) and exits 4 for a study nobody holds', async () => {
    const configFile = path.join(workDir, 'ddr.config.json')
    const [east, west] = orthancs
    await writeFile(
      configFile,
      JSON.stringify({
        listen: {aeTitle: 'DDR_CLI'},
        backends: [
          {name: east.name, port: east.dicomPort, aeTitle: east.aeTitle, url: east.url, retrieveTransport: 'rest'},
          {name: west.name, port: west.dicomPort, aeTitle: west.aeTitle, url: west.url},
        ],
      }),
    )
    const found = await runCompiledCli(['find', '--patient', 'QRSPLIT*', '--date', '20260101-20260131', '--json', '--config', configFile])
    expect(found.code).toBe(0)
    const result = JSON.parse(found.stdout) as FindResult
    expect(result.matches).toEqual([expect.objectContaining({studyInstanceUid: split[0].studyInstanceUid, instances: 6, backends: ['east', 'west']})])

    const out = path.join(workDir, 'export')
    const got = await runCompiledCli(['get', split[0].studyInstanceUid, '--out', out, '--json', '--config', configFile])
    expect(got.code).toBe(0)
    expect((JSON.parse(got.stdout) as GetResult).written).toBe(split.length)
    for (const [index, instance] of split.entries()) {
      const holder = orthancs[index < 3 ? 0 : 1]
      const stored = await holder.client.instanceFile((await holder.client.lookupInstance(instance.sopInstanceUid))!)
      const written = await readFile(path.join(out, instance.patientId, instance.studyInstanceUid, instance.seriesInstanceUid, `${instance.sopInstanceUid}.dcm`))
      if (holder === east) {
        expect(written.equals(stored)).toBe(true)
      } else {
        expect(datasetOf(written).equals(datasetOf(stored))).toBe(true)
        expect(readMetaHeader(written).sourceApplicationEntityTitle).toBe(west.aeTitle)
      }
    }

    const nobody = await runCompiledCli(['get', '1.2.3.999', '--out', out, '--config', configFile])
    expect(nobody.code).toBe(4)
    expect(nobody.stdout).toContain('1.2.3.999: held by no backend that answered')
  })

  describe('with west known only by its DICOM port (no url: fetched by C-GET)', () => {
    let dimseRouter: TestRouter
    let viewerDir: string

    beforeAll(async () => {
      const [east, west] = orthancs
      dimseRouter = await startTestRouter(
        [{...east, url: east.url}, {name: west.name, aeTitle: west.aeTitle, dicomPort: west.dicomPort}],
        {retrieve: {destinations: [{aeTitle: 'VIEWER', host: '127.0.0.1', port: viewer.port}], queryTimeoutMs: 3000}, health: {intervalMs: 60_000}, listen: {aeTitle: 'DDR_DIMSE'}},
      )
      viewerDir = viewer.dir
    })

    afterAll(async () => {
      await dimseRouter?.stop()
    })

    /** West's instances came by C-GET, east's over REST: every one must be the dataset its Orthanc stores. */
    const expectStored = async (dir: string) => {
      const received = await readdir(dir)
      for (const [index, instance] of split.entries()) {
        const file = received.find((f) => f.endsWith(instance.sopInstanceUid))
        expect(file).toBeDefined()
        const holder = orthancs[index < 3 ? 0 : 1]
        const stored = await holder.client.instanceFile((await holder.client.lookupInstance(instance.sopInstanceUid))!)
        const delivered = await readFile(path.join(dir, file!))
        expect(datasetOf(delivered).equals(datasetOf(stored))).toBe(true)
        expect(readMetaHeader(delivered).transferSyntaxUid).toBe(readMetaHeader(stored).transferSyntaxUid)
      }
    }

    it('C-MOVE sends the split study whole, west\'s half fetched by one C-GET, byte-identical to what each Orthanc stores', async () => {
      await rm(viewerDir, {recursive: true, force: true})
      await mkdir(viewerDir, {recursive: true})
      const move = await runDcmtk('movescu', ['-S', '-v', '-aec', dimseRouter.aeTitle, '-aem', 'VIEWER', '-k', 'QueryRetrieveLevel=STUDY', '-k', `StudyInstanceUID=${split[0].studyInstanceUid}`, '127.0.0.1', String(dimseRouter.port)], {timeoutMs: 60_000})
      expect(move.code).toBe(0)
      expect(await readdir(viewerDir)).toHaveLength(split.length)
      await expectStored(viewerDir)
      expect(dimseRouter.logs.some((l) => / INFO +retrieve .*completed=6 failed=0/.test(l))).toBe(true)
    })

    it('C-GET through ddr returns them over the requesting association, byte-identical', async () => {
      const out = path.join(workDir, 'get-dimse')
      await mkdir(out, {recursive: true})
      const get = await runDcmtk('getscu', ['-S', '-v', '-aec', dimseRouter.aeTitle, '-od', out, '-k', 'QueryRetrieveLevel=SERIES', '-k', `StudyInstanceUID=${split[0].studyInstanceUid}`, '-k', `SeriesInstanceUID=${split[0].seriesInstanceUid}`, '127.0.0.1', String(dimseRouter.port)], {timeoutMs: 60_000})
      expect(get.code).toBe(0)
      expect(await readdir(out)).toHaveLength(split.length)
      await expectStored(out)
    })

    it('ddr get writes west\'s instances with ddr\'s meta header and the dataset as stored', async () => {
      const [east, west] = orthancs
      const configFile = path.join(workDir, 'ddr-dimse.config.json')
      await writeFile(configFile, JSON.stringify({listen: {aeTitle: 'DDR_CLI'}, backends: [{name: east.name, port: east.dicomPort, aeTitle: east.aeTitle, url: east.url}, {name: west.name, port: west.dicomPort, aeTitle: west.aeTitle}]}))
      const out = path.join(workDir, 'export-dimse')
      const got = await runCompiledCli(['get', split[0].studyInstanceUid, '--out', out, '--json', '--config', configFile])
      expect(got.code).toBe(0)
      expect((JSON.parse(got.stdout) as GetResult).written).toBe(split.length)
      for (const [index, instance] of split.entries()) {
        const holder = orthancs[index < 3 ? 0 : 1]
        const stored = await holder.client.instanceFile((await holder.client.lookupInstance(instance.sopInstanceUid))!)
        const written = await readFile(path.join(out, instance.patientId, instance.studyInstanceUid, instance.seriesInstanceUid, `${instance.sopInstanceUid}.dcm`))
        expect(datasetOf(written).equals(datasetOf(stored))).toBe(true)
        if (index >= 3) expect(readMetaHeader(written).sourceApplicationEntityTitle).toBe(west.aeTitle)
      }
    })
  })

  it('with one backend stopped, answers from the other with a warning that names the missing backend', async () => {
    await orthancs[1].halt()
    try {
      const result = await find('degraded', ['QueryRetrieveLevel=STUDY', 'PatientID=QR*', 'StudyInstanceUID', 'NumberOfStudyRelatedInstances'])
      expect(result.matches.map((m) => m.get(Tag.StudyInstanceUID))).toEqual([split[0].studyInstanceUid])
      expect(result.matches[0].get(Tag.NumberOfStudyRelatedInstances)).toBe('3')
      expect(`${result.stdout}${result.stderr}`).toMatch(/0xb000|warning/i)
      expect(router.logs.some((l) => l.includes('no answer from west'))).toBe(true)
    } finally {
      await orthancs[1].resume()
    }
  })
})

describe('C-GET from a DICOM backend whose sub-operation fails', () => {
  let scp: DimseServer
  let router: TestRouter
  let viewer: Storescp
  let workDir: string
  let instances: Array<SyntheticInstance & {sopClassUid: string; dataset: Buffer}>
  const gets: Array<{level?: string; uids: string[]}> = []

  beforeAll(async () => {
    workDir = await mkdtemp(path.join(os.tmpdir(), 'ddr-qr-fail-'))
    const written = await writeSyntheticStudies(path.join(workDir, 'held'), {studies: 1, instancesPerStudy: 3, pixelBytes: 1024, prefix: 'QRFAIL'})
    instances = await Promise.all(
      written.map(async (instance) => {
        const file = await readFile(instance.path)
        const meta = readMetaHeader(file)
        return {...instance, sopClassUid: meta.mediaStorageSopClassUid!, dataset: file.subarray(meta.datasetOffset)}
      }),
    )
    const lost = instances[1].sopInstanceUid
    // A PACS (ddr's own DICOM listener, scripted) that answers the locate, and fails the C-GET sub-operation of one instance.
    scp = new DimseServer({
      aeTitle: 'PACS',
      transferSyntaxes: [EXPLICIT_VR_LITTLE_ENDIAN, '1.2.840.10008.1.2'],
      beginStore: () => {
        throw new Error('no store expected')
      },
      query: {
        models: [QueryModel.studyRootFind, QueryModel.studyRootGet],
        handle: async (request, responder) => {
          const identifier = Identifier.decode(request.identifier, request.transferSyntaxUid)
          if (request.kind === 'find') {
            for (const instance of instances) {
              const match = Identifier.of([
                [Tag.QueryRetrieveLevel, 'IMAGE'],
                [Tag.PatientID, instance.patientId],
                [Tag.StudyInstanceUID, instance.studyInstanceUid],
                [Tag.SeriesInstanceUID, instance.seriesInstanceUid],
                [Tag.SOPInstanceUID, instance.sopInstanceUid],
                ...(identifier.has(Tag.SOPClassUID) ? [[Tag.SOPClassUID, instance.sopClassUid] as [number, string]] : []),
              ])
              responder.match(match.encode(request.transferSyntaxUid))
            }

            return {status: 0}
          }

          // A SERIES-level C-GET (ddr asks so for a series whose every instance is fetched from here): all of it.
          const level = identifier.get(Tag.QueryRetrieveLevel)
          const uids = level === 'SERIES' ? instances.filter((i) => i.seriesInstanceUid === identifier.get(Tag.SeriesInstanceUID)).map((i) => i.sopInstanceUid) : identifier.list(Tag.SOPInstanceUID)
          gets.push({level, uids})
          const failed: string[] = []
          for (const uid of uids) {
            const instance = instances.find((i) => i.sopInstanceUid === uid)
            if (instance === undefined || uid === lost) {
              failed.push(uid)
              continue
            }

            const answer = await responder.store({sopClassUid: instance.sopClassUid, sopInstanceUid: uid, transferSyntaxUid: EXPLICIT_VR_LITTLE_ENDIAN, dataset: {buffer: instance.dataset}})
            if (answer.status !== 0) failed.push(uid)
          }

          return {status: 0xb000, counts: {remaining: 0, completed: uids.length - failed.length, failed: failed.length, warning: 0}, failedSopInstanceUids: failed}
        },
      },
    })
    const scpPort = await scp.listen(0, '127.0.0.1')
    await mkdir(path.join(workDir, 'viewer'), {recursive: true})
    viewer = await startStorescp({dir: path.join(workDir, 'viewer'), aeTitle: 'VIEWER'})
    router = await startTestRouter([{name: 'pacs', aeTitle: 'PACS', dicomPort: scpPort, config: {type: 'dimse'}}], {
      retrieve: {destinations: [{aeTitle: 'VIEWER', host: '127.0.0.1', port: viewer.port}], queryTimeoutMs: 3000},
      health: {intervalMs: 60_000},
    })
  })

  afterAll(async () => {
    await router?.stop()
    await viewer?.stop()
    await scp?.close(100)
    if (workDir) await rm(workDir, {recursive: true, force: true})
  })

  it('C-MOVE through ddr: one SERIES-level C-GET for the series, the others delivered byte for byte, the failed one counted and named in the Failed SOP Instance UID List', async () => {
    const association = await ScuAssociation.connect({
      host: '127.0.0.1',
      port: router.port,
      callingAeTitle: 'MOVER',
      calledAeTitle: router.aeTitle,
      contexts: [{abstractSyntax: QueryModel.studyRootMove, transferSyntax: EXPLICIT_VR_LITTLE_ENDIAN}],
    })
    let final
    const pendings: DimseResponse[] = []
    try {
      const identifier = Identifier.of([
        [Tag.QueryRetrieveLevel, 'STUDY'],
        [Tag.StudyInstanceUID, instances[0].studyInstanceUid],
      ])
      final = await association.query(CommandField.cMoveRq, QueryModel.studyRootMove, EXPLICIT_VR_LITTLE_ENDIAN, identifier.encode(EXPLICIT_VR_LITTLE_ENDIAN), {moveDestination: 'VIEWER', onPending: (pending) => pendings.push(pending)})
    } finally {
      await association.release()
    }

    expect(gets).toEqual([{level: 'SERIES', uids: instances.map((i) => i.sopInstanceUid)}])
    // Pending responses (paced: the first at once) carry the counts so far.
    expect(pendings.length).toBeGreaterThanOrEqual(1)
    const first = pendings[0].command!
    expect(first.get(CommandTag.numberOfRemainingSuboperations)).toBe(2)
    expect(Number(first.get(CommandTag.numberOfCompletedSuboperations)) + Number(first.get(CommandTag.numberOfFailedSuboperations))).toBe(1)
    expect(final.status).toBe(0xb000)
    expect(final.command?.get(CommandTag.numberOfCompletedSuboperations)).toBe(2)
    expect(final.command?.get(CommandTag.numberOfFailedSuboperations)).toBe(1)
    expect(Identifier.decode(final.dataset!, EXPLICIT_VR_LITTLE_ENDIAN).list(Tag.FailedSOPInstanceUIDList)).toEqual([instances[1].sopInstanceUid])
    const received = await readdir(viewer.dir)
    expect(received).toHaveLength(2)
    for (const instance of [instances[0], instances[2]]) {
      const file = received.find((f) => f.endsWith(instance.sopInstanceUid))
      expect(datasetOf(await readFile(path.join(viewer.dir, file!))).equals(instance.dataset)).toBe(true)
    }

    expect(router.logs.some((l) => l.includes('retrieve-failed') && l.includes(instances[1].sopInstanceUid) && l.includes('pacs failed its C-GET sub-operation'))).toBe(true)
  })
})

describe('an Orthanc that refuses C-GET from ddr (DicomAlwaysAllowGet false, ddr not in its DicomModalities)', () => {
  let orthanc: TestOrthanc
  let router: TestRouter
  let workDir: string
  let study: SyntheticInstance[]

  beforeAll(async () => {
    orthanc = await startTestOrthanc({name: 'strict', aeTitle: 'STRICT', extra: {DicomAlwaysAllowGet: false}})
    workDir = await mkdtemp(path.join(os.tmpdir(), 'ddr-qr-strict-'))
    study = await writeSyntheticStudies(path.join(workDir, 'study'), {studies: 1, instancesPerStudy: 3, pixelBytes: 1024, prefix: 'QRSTRICT'})
    expect((await storescu(['-aec', orthanc.aeTitle, '127.0.0.1', String(orthanc.dicomPort), ...study.map((i) => i.path)])).code).toBe(0)
    router = await startTestRouter([{...orthanc, url: orthanc.url}], {retrieve: {queryTimeoutMs: 3000}, health: {intervalMs: 60_000}})
  })

  afterAll(async () => {
    await router?.stop()
    await orthanc?.stop()
    if (workDir) await rm(workDir, {recursive: true, force: true})
  })

  it('fetches over its REST API instead, says so once in the log, and goes straight to REST the next time', async () => {
    for (const attempt of [1, 2]) {
      const out = path.join(workDir, `get-${attempt}`)
      await mkdir(out, {recursive: true})
      const get = await runDcmtk('getscu', ['-S', '-v', '-aec', router.aeTitle, '-od', out, '-k', 'QueryRetrieveLevel=STUDY', '-k', `StudyInstanceUID=${study[0].studyInstanceUid}`, '127.0.0.1', String(router.port)], {timeoutMs: 60_000})
      expect(get.code).toBe(0)
      const received = await readdir(out)
      expect(received).toHaveLength(study.length)
      for (const instance of study) {
        const stored = await orthanc.client.instanceFile((await orthanc.client.lookupInstance(instance.sopInstanceUid))!)
        expect(datasetOf(await readFile(path.join(out, received.find((f) => f.endsWith(instance.sopInstanceUid))!))).equals(datasetOf(stored))).toBe(true)
      }
    }

    const fallbacks = router.logs.filter((l) => l.includes('retrieve-fallback'))
    expect(fallbacks).toHaveLength(1)
    expect(fallbacks[0]).toContain('backend=strict instances=3')
    expect(fallbacks[0]).toContain('DicomAlwaysAllowGet')
  })
})
