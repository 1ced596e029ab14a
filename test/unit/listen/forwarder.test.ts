import {scriptedBackend} from '../../helpers/scripted-backend.js'
import {mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import {setFlagsFromString} from 'node:v8'
import {runInNewContext} from 'node:vm'

import {validateConfig} from '../../../src/lib/config/validate.js'
import {silentLogger} from '../../../src/lib/output/logger.js'
import {BackendState} from '../../../src/lib/routing/backend-state.js'
import type {ReceivedInstance} from '../../../src/lib/dicom/received-instance.js'
import {Router} from '../../../src/lib/listen/delivery.js'
import {Forwarder} from '../../../src/lib/listen/forwarder.js'
import {Spool} from '../../../src/lib/spool/spool.js'

describe('Forwarder', () => {
  let dir: string
  let spool: Spool
  const settings = validateConfig({spool: {dir: '.', maxAttempts: 3, retryBaseMs: 10, retryMaxMs: 20}}, 'test').spool

  beforeEach(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'ddr-forwarder-'))
    spool = new Spool(dir, settings)
    await spool.open()
  })

  afterEach(() => rmSync(dir, {recursive: true, force: true}))

  function setup(...names: string[]) {
    const backends = names.map((name) => scriptedBackend(name, {maxAssociations: 2}))
    const states = backends.map((b) => new BackendState(b))
    const router = new Router(states, {policy: 'least-loaded', affinity: true, failThreshold: 100, logger: silentLogger})
    return {backends, states, router, forwarder: new Forwarder(router, spool, settings, silentLogger)}
  }

  function queued(n: number): ReceivedInstance {
    const file = path.join(spool.queueDir, `id-${n}.dcm`)
    writeFileSync(file, 'x')
    return {id: `id-${n}`, sopClassUid: '1.2', sopInstanceUid: `1.2.3.${n}`, transferSyntaxUid: '1.2.840.10008.1.2.1', studyInstanceUid: '9.9', callingAeTitle: 'T', calledAeTitle: 'D', metaHeader: Buffer.alloc(0), dataset: {buffer: Buffer.from('x')}, path: file, datasetLength: 1, receivedAt: Date.now()}
  }

  it('removes the spool file once a backend stored the instance', async () => {
    const {forwarder} = setup('a')
    forwarder.enqueue(queued(1))
    await forwarder.idle()
    expect(readdirSync(spool.queueDir)).toEqual([])
    expect(spool.stats().depth).toBe(0)
    await forwarder.stop(100)
  })

  it('lets go of a delivered instance: the queue keeps no reference to its dataset', async () => {
    setFlagsFromString('--expose-gc')
    const gc = runInNewContext('gc') as () => void
    const {forwarder} = setup('a')
    // Made in a function of its own, so no local of this test holds them.
    const enqueue = (n: number): WeakRef<Buffer> => {
      const buffer = Buffer.alloc(4096, n)
      forwarder.enqueue({...queued(n), dataset: {buffer}})
      return new WeakRef(buffer)
    }

    const held = [10, 11, 12, 13, 14, 15].map((n) => enqueue(n))
    await forwarder.idle()
    await new Promise((resolve) => setImmediate(resolve))
    gc()
    expect(held.filter((ref) => ref.deref() !== undefined)).toHaveLength(0)
    await forwarder.stop(100)
  })

  it('sends a refused instance (Cxxx) to dead-letter at once, with a reason file', async () => {
    const {backends, forwarder} = setup('a')
    backends[0].answer = async () => ({status: 0xc000, errorComment: 'cannot understand'})
    forwarder.enqueue(queued(2))
    await forwarder.idle()
    expect(backends[0].seen).toHaveLength(1)
    const reason = JSON.parse(readFileSync(path.join(spool.deadLetterDir, 'id-2.reason.json'), 'utf8'))
    expect(reason.status).toBe('0xC000')
    expect(reason.sopInstanceUid).toBe('1.2.3.2')
    expect(spool.stats().deadLetters).toBe(1)
    await forwarder.stop(100)
  })

  it('retries out-of-resources, moves on to the next backend after two, and dead-letters after maxAttempts', async () => {
    const {backends, forwarder} = setup('a', 'b')
    for (const b of backends) b.answer = async () => ({status: 0xa700})
    forwarder.enqueue(queued(3))
    await forwarder.idle()
    const tries = backends.map((b) => b.seen.length)
    expect(tries[0] + tries[1]).toBe(3)
    expect(Math.min(...tries)).toBeGreaterThanOrEqual(1)
    expect(readdirSync(spool.deadLetterDir)).toContain('id-3.dcm')
    expect(forwarder.counters.retries).toBe(2)
    await forwarder.stop(100)
  })

  it('keeps waiting (never dead-letters) while the backend is unreachable, and delivers when it answers', async () => {
    const {backends, forwarder} = setup('a')
    let reachable = false
    backends[0].answer = async () => {
      if (!reachable) throw new Error('connection refused')
      return {status: 0}
    }

    forwarder.enqueue(queued(4))
    await new Promise((resolve) => setTimeout(resolve, 700))
    expect(backends[0].seen.length).toBeGreaterThanOrEqual(3)
    expect(readdirSync(spool.deadLetterDir)).toEqual([])
    reachable = true
    await forwarder.idle()
    expect(readdirSync(spool.queueDir)).toEqual([])
    await forwarder.stop(100)
  })
})
