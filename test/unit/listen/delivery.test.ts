import {type ScriptedBackend, scriptedBackend} from '../../helpers/scripted-backend.js'
import {DdrError} from '../../../src/lib/errors.js'
import {silentLogger} from '../../../src/lib/output/logger.js'
import {BackendState} from '../../../src/lib/routing/backend-state.js'
import type {ReceivedInstance} from '../../../src/lib/dicom/received-instance.js'
import {Router} from '../../../src/lib/listen/delivery.js'

function backend(name: string, weight = 1): ScriptedBackend {
  return scriptedBackend(name, {weight})
}

function instance(study: string, n: number): ReceivedInstance {
  return {
    id: `${study}-${n}`,
    sopClassUid: '1.2.840.10008.5.1.4.1.1.2',
    sopInstanceUid: `${study}.${n}`,
    transferSyntaxUid: '1.2.840.10008.1.2.1',
    studyInstanceUid: study,
    callingAeTitle: 'TEST',
    calledAeTitle: 'DDR',
    metaHeader: Buffer.alloc(0),
    dataset: {buffer: Buffer.from('x')},
    datasetLength: 1,
    receivedAt: Date.now(),
  }
}

function makeRouter(backends: ScriptedBackend[], policy: 'least-loaded' | 'round-robin' | 'weighted' = 'least-loaded', affinity = true) {
  const states = backends.map((b) => new BackendState(b))
  return {states, router: new Router(states, {policy, affinity, failThreshold: 2, logger: silentLogger})}
}

describe('Router', () => {
  it('keeps every instance of a study on one backend and spreads studies over both', async () => {
    const a = backend('a')
    const b = backend('b')
    const {router} = makeRouter([a, b])
    for (let s = 0; s < 20; s++) for (let n = 0; n < 5; n++) await router.deliver(instance(`1.2.${s}`, n))
    for (let s = 0; s < 20; s++) {
      const onA = a.stored.filter((uid) => uid.startsWith(`1.2.${s}.`)).length
      const onB = b.stored.filter((uid) => uid.startsWith(`1.2.${s}.`)).length
      expect([onA, onB].sort()).toEqual([0, 5])
    }

    expect(a.stored.length).toBeGreaterThan(0)
    expect(b.stored.length).toBeGreaterThan(0)
  })

  it('stops counting an instance as load on its primary once stored, while its mirror copy is queued', async () => {
    const primary = backend('primary')
    const mirror = scriptedBackend('mirror', {mirror: true})
    const {states, router} = makeRouter([primary, mirror])
    const loadDuringCopy: number[] = []
    const copy = router.mirrors.copy.bind(router.mirrors)
    router.mirrors.copy = async (...args) => {
      loadDuringCopy.push(states[0].inFlight)
      return copy(...args)
    }
    await router.deliver(instance('3.3.3', 1))
    await router.mirrorsIdle()
    expect(loadDuringCopy).toEqual([0])
    expect(states[0].inFlight).toBe(0)
    expect(mirror.stored).toEqual(['3.3.3.1'])
  })

  it('keeps a new study together while its first instances are still in flight', async () => {
    const a = backend('a')
    const b = backend('b')
    a.answer = b.answer = () => new Promise((resolve) => setTimeout(() => resolve({status: 0}), 20))
    const {router} = makeRouter([a, b])
    await Promise.all(Array.from({length: 8}, (_, n) => router.deliver(instance('2.2.2', n))))
    expect([a.stored.length, b.stored.length].sort()).toEqual([0, 8])
  })

  it('fails over when the chosen backend cannot be reached, and marks it down after the threshold', async () => {
    const a = backend('a')
    const b = backend('b')
    const {router, states} = makeRouter([a, b])
    const first = router.placer.place(instance('7.7', 0)).order[0].name
    const dead = first === 'a' ? a : b
    dead.answer = async () => {
      throw new DdrError('BACKEND_UNREACHABLE', 'connection refused')
    }

    for (let n = 0; n < 3; n++) expect((await router.deliver(instance('7.7', n))).status).toBe(0)
    const survivor = first === 'a' ? b : a
    expect(survivor.stored).toHaveLength(3)
    expect(router.counters.failovers).toBe(1)
    // the study now lives on the survivor: no more attempts on the dead backend for it
    const deadState = states.find((s) => s.name === dead.config.name)!
    expect(deadState.consecutiveFailures).toBe(1)
    // a second new study that prefers the dead backend: the second failure marks it down
    let s = 0
    while (router.placer.place(instance(`8.${s}`, 0)).order[0].name !== dead.config.name) s++
    expect((await router.deliver(instance(`8.${s}`, 0))).status).toBe(0)
    expect(deadState.healthy).toBe(false)
    expect(router.placer.place(instance('9.9.9', 0)).order.map((b) => b.name)).toEqual([survivor.config.name])
  })

  it('passes a refusal (Cxxx) back to the sender without trying elsewhere', async () => {
    const a = backend('a')
    const b = backend('b')
    a.answer = b.answer = async () => ({status: 0xc000, errorComment: 'cannot understand'})
    const {router} = makeRouter([a, b])
    const outcome = await router.deliver(instance('3.3', 1))
    expect(outcome.status).toBe(0xc000)
    expect(router.counters.failovers).toBe(0)
  })

  it('tries the next backend on out-of-resources (A700)', async () => {
    const a = backend('a')
    const b = backend('b')
    a.answer = b.answer = async () => ({status: 0xa700})
    const {router} = makeRouter([a, b])
    const chosen = router.placer.place(instance('4.4', 0)).order[0].name
    ;(chosen === 'a' ? b : a).answer = async () => ({status: 0})
    expect((await router.deliver(instance('4.4', 0))).status).toBe(0)
  })

  it('answers A700 when nothing stored the instance', async () => {
    const a = backend('a')
    a.answer = async () => {
      throw new DdrError('BACKEND_UNREACHABLE', 'connection refused')
    }

    const {router} = makeRouter([a])
    const outcome = await router.deliver(instance('5.5', 0))
    expect(outcome.status).toBe(0xa700)
    expect(outcome.errorComment).toMatch(/not stored/)
    expect(router.counters.failed).toBe(1)
  })

  it('weighted policy without affinity shares instances by weight', async () => {
    const a = backend('a', 3)
    const b = backend('b', 1)
    const {router} = makeRouter([a, b], 'weighted', false)
    for (let n = 0; n < 40; n++) await router.deliver(instance(`8.${n}`, n))
    expect(a.stored).toHaveLength(30)
    expect(b.stored).toHaveLength(10)
  })

  it('round-robin without affinity alternates', async () => {
    const a = backend('a')
    const b = backend('b')
    const {router} = makeRouter([a, b], 'round-robin', false)
    for (let n = 0; n < 10; n++) await router.deliver(instance(`6.${n}`, n))
    expect(a.stored).toHaveLength(5)
    expect(b.stored).toHaveLength(5)
  })
})
