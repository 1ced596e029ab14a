import {readFileSync} from 'node:fs'
import {mkdir, mkdtemp, readdir, rm, stat, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {readMetaHeader} from '../../../src/lib/dicom/part10.js'
import {Logger, silentLogger} from '../../../src/lib/output/logger.js'
import {BackendState} from '../../../src/lib/routing/backend-state.js'
import {type ReceivedInstance, datasetBuffer} from '../../../src/lib/dicom/received-instance.js'
import {MirrorQueue, type MirrorQueueOptions} from '../../../src/lib/listen/mirrors.js'
import {newInstanceId} from '../../../src/lib/listen/intake.js'
import {fixturePath, goodFixtures} from '../../helpers/fixtures.js'
import {type ScriptedBackend, scriptedBackend} from '../../helpers/scripted-backend.js'

/** A fixture as the listener would hand it over: our id, its meta header, its dataset in memory (or its file). */
function received(index: number, onDisk?: string): ReceivedInstance {
  const fixture = goodFixtures[index]
  const file = readFileSync(fixturePath(fixture))
  const meta = readMetaHeader(file)
  const dataset = file.subarray(meta.datasetOffset)
  return {
    id: newInstanceId(),
    sopClassUid: fixture.sopClassUid,
    sopInstanceUid: fixture.sopInstanceUid,
    transferSyntaxUid: fixture.transferSyntaxUid,
    studyInstanceUid: fixture.studyInstanceUid,
    callingAeTitle: 'CT',
    calledAeTitle: 'DDR',
    metaHeader: file.subarray(0, meta.datasetOffset),
    dataset: onDisk === undefined ? {buffer: dataset} : {path: onDisk, offset: meta.datasetOffset, length: dataset.length},
    path: onDisk,
    datasetLength: dataset.length,
    receivedAt: Date.now(),
  }
}

/** The Part 10 bytes a backend was given. */
function bytesOf(instance: ReceivedInstance): Buffer {
  if (instance.path !== undefined) return readFileSync(instance.path)
  const source = instance.dataset
  const dataset = datasetBuffer(source) ?? ('path' in source ? readFileSync(source.path).subarray(source.offset, source.offset + source.length) : Buffer.alloc(0))
  return Buffer.concat([instance.metaHeader, dataset])
}

/** A mirror that records the bytes of every copy it stored. */
function mirror(name: string): {backend: ScriptedBackend; state: BackendState; copies: Map<string, Buffer>} {
  const backend = scriptedBackend(name, {mirror: true, url: undefined})
  const copies = new Map<string, Buffer>()
  const store = backend.store.bind(backend)
  backend.store = async (instance) => {
    const response = await store(instance)
    if (response.status === 0) copies.set(instance.sopInstanceUid, bytesOf(instance))
    return response
  }

  return {backend, state: new BackendState(backend), copies}
}

const down = async () => {
  throw new Error('connection refused')
}

describe('MirrorQueue, durable', () => {
  let dir: string
  let queues: MirrorQueue[] = []
  const counters = () => ({mirrored: 0, mirrorFailed: 0, mirrorPending: 0})
  const queue = (c: ReturnType<typeof counters>, options: Partial<MirrorQueueOptions> = {}, logger: Logger = silentLogger) => {
    const made = new MirrorQueue(c, {dir: path.join(dir, 'mirror'), durable: true, logger, failThreshold: 1, retryBaseMs: 10, retryMaxMs: 20, ...options})
    queues.push(made)
    return made
  }

  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'ddr-mirrors-'))
  })

  afterEach(async () => {
    for (const q of queues) q.stop()
    queues = []
    await rm(dir, {recursive: true, force: true})
  })

  it('keeps each pending copy as a file before copy() resolves, and a new queue on the same folder delivers it byte-exact', async () => {
    const before = mirror('copy')
    before.backend.answer = down
    const c1 = counters()
    const first = queue(c1)
    const instances = [received(0), received(1), received(2)]
    for (const instance of instances) await first.copy(instance, [before.state])
    expect((await readdir(path.join(dir, 'mirror'))).sort()).toEqual(instances.map((i) => `${i.id}~copy.dcm`).sort())
    for (const instance of instances) expect(readFileSync(path.join(dir, 'mirror', `${instance.id}~copy.dcm`)).equals(bytesOf(instance))).toBe(true)
    // The process dies here: nothing of the first queue is used again.
    first.stop()

    const after = mirror('copy')
    const c2 = counters()
    const second = queue(c2)
    expect(await second.recover([after.state])).toEqual({copies: 3, givenUp: 0})
    expect(c2.mirrorPending).toBe(3)
    await second.idle()
    expect([...after.copies.keys()].sort()).toEqual(instances.map((i) => i.sopInstanceUid).sort())
    for (const instance of instances) expect(after.copies.get(instance.sopInstanceUid)!.equals(bytesOf(instance))).toBe(true)
    expect(c2).toEqual({mirrored: 3, mirrorFailed: 0, mirrorPending: 0})
    expect(await readdir(path.join(dir, 'mirror'))).toEqual([])
  })

  it('hard-links a spool file once per mirror (no copy of the bytes), and the copies outlive the spool file', async () => {
    const spoolFile = path.join(dir, 'queue.dcm')
    await writeFile(spoolFile, readFileSync(fixturePath(goodFixtures[3])))
    const instance = received(3, spoolFile)
    const [a, b] = [mirror('a'), mirror('b')]
    a.backend.answer = down
    b.backend.answer = down
    const c = counters()
    const q = queue(c)
    await q.copy(instance, [a.state, b.state])
    expect((await stat(spoolFile)).nlink).toBe(3)
    await rm(spoolFile) // the primary stored it: the spool drops its entry
    a.backend.answer = async () => ({status: 0})
    b.backend.answer = async () => ({status: 0})
    a.state.markSuccess(1)
    b.state.markSuccess(1)
    await q.idle()
    const expected = readFileSync(fixturePath(goodFixtures[3]))
    expect(a.copies.get(instance.sopInstanceUid)!.equals(expected)).toBe(true)
    expect(b.copies.get(instance.sopInstanceUid)!.equals(expected)).toBe(true)
    expect(await readdir(path.join(dir, 'mirror'))).toEqual([])
  })

  it('does not queue a copy twice (a redelivery after a crash), and gives up copies it cannot place after a restart', async () => {
    const m = mirror('copy')
    m.backend.answer = down
    const c = counters()
    const q = queue(c)
    const instance = received(4)
    await q.copy(instance, [m.state])
    await q.copy(instance, [m.state])
    expect(c.mirrorPending).toBe(1)
    q.stop()

    // A copy being written when the process died, and one for a mirror since removed from the config.
    await writeFile(path.join(dir, 'mirror', `${instance.id}~copy.dcm.part`), 'half')
    await writeFile(path.join(dir, 'mirror', `${newInstanceId()}~gone.dcm`), readFileSync(fixturePath(goodFixtures[5])))
    const lines: string[] = []
    const logger = new Logger({format: 'json', write: (line) => lines.push(line)})
    const c2 = counters()
    const again = mirror('copy')
    const q2 = queue(c2, {}, logger)
    expect(await q2.recover([again.state])).toEqual({copies: 1, givenUp: 1})
    const events = lines.map((line) => JSON.parse(line) as {event: string; message?: string})
    expect(events.filter((e) => e.event === 'mirror-given-up').map((e) => e.message)).toEqual(['pending copy from before the restart: no backend named gone is configured any more'])
    expect(events.map((e) => e.event)).toContain('mirror-recovered')
    await q2.idle()
    expect([...again.copies.keys()]).toEqual([instance.sopInstanceUid])
    expect(c2).toEqual({mirrored: 1, mirrorFailed: 1, mirrorPending: 0})
    expect(await readdir(path.join(dir, 'mirror'))).toEqual([])
  })

  it('one mirror away does not hold up the copies for another', async () => {
    const [away, there] = [mirror('away'), mirror('there')]
    away.backend.answer = down
    away.state.markFailure('down', 1)
    const c = counters()
    const q = queue(c, {maxPending: 50})
    for (let n = 0; n < 40; n++) await q.copy(received(n % goodFixtures.length), [away.state])
    await q.copy(received(6), [there.state])
    const deadline = Date.now() + 5000
    // The copy is stored a moment before its pending count drops: wait for both.
    while ((there.copies.size === 0 || c.mirrorPending !== 40) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 10))
    expect([...there.copies.keys()]).toEqual([goodFixtures[6].sopInstanceUid])
    expect(c.mirrorPending).toBe(40)
  })

  it('without durable, nothing is written for an instance in memory', async () => {
    const m = mirror('copy')
    m.backend.answer = down
    const q = queue(counters(), {durable: false})
    await q.copy(received(0), [m.state])
    await mkdir(path.join(dir, 'mirror'), {recursive: true})
    expect(await readdir(path.join(dir, 'mirror'))).toEqual([])
    expect(q.stats()).toMatchObject({durable: false, pending: 1})
  })
})
