import {type ScriptedBackend, scriptedBackend} from '../../helpers/scripted-backend.js'
import type {RoutingRule} from '../../../src/lib/config/schema.js'
import {Tag} from '../../../src/lib/dicom/tags.js'
import {silentLogger} from '../../../src/lib/output/logger.js'
import {BackendState} from '../../../src/lib/routing/backend-state.js'
import type {ReceivedInstance} from '../../../src/lib/dicom/received-instance.js'
import {Router} from '../../../src/lib/listen/delivery.js'
import {RuleEngine} from '../../../src/lib/routing/rules.js'

function backend(name: string, mirror = false): ScriptedBackend {
  return scriptedBackend(name, {mirror, url: undefined})
}

/** Explicit VR little endian element with a short length. */
function element(tag: number, vr: string, value: string): Buffer {
  const data = Buffer.from(value.length % 2 === 0 ? value : `${value} `, 'latin1')
  const head = Buffer.alloc(8)
  head.writeUInt16LE(tag >>> 16, 0)
  head.writeUInt16LE(tag & 0xffff, 2)
  head.write(vr, 4, 'latin1')
  head.writeUInt16LE(data.length, 6)
  return Buffer.concat([head, data])
}

function instance(study: string, n: number, fields: Partial<ReceivedInstance> = {}, institution = 'GENERAL HOSPITAL'): ReceivedInstance {
  const dataset = Buffer.concat([element(Tag.Modality, 'CS', fields.modality ?? 'CT'), element(0x00080080, 'LO', institution)])
  return {
    id: `${study}-${n}`,
    sopClassUid: '1.2.840.10008.5.1.4.1.1.2',
    sopInstanceUid: `${study}.${n}`,
    transferSyntaxUid: '1.2.840.10008.1.2.1',
    studyInstanceUid: study,
    modality: 'CT',
    callingAeTitle: 'MODALITY1',
    calledAeTitle: 'DDR',
    metaHeader: Buffer.alloc(0),
    dataset: {buffer: dataset},
    datasetLength: dataset.length,
    receivedAt: Date.now(),
    ...fields,
  }
}

function makeRouter(backends: ScriptedBackend[], rules: RoutingRule[]) {
  const states = backends.map((b) => new BackendState(b))
  return new Router(states, {policy: 'least-loaded', affinity: true, failThreshold: 2, logger: silentLogger, rules})
}

describe('RuleEngine', () => {
  const backends = [{name: 'a'}, {name: 'b'}, {name: 'copy', mirror: true}]

  it('takes the first matching rule, and adds the mirrors to every decision', () => {
    const engine = new RuleEngine(
      [
        {match: {modality: 'MR'}, action: {backends: ['a']}},
        {name: 'from-er', match: {callingAeTitle: 'ER_CT'}, action: {backends: ['b'], mirrors: ['a']}},
        {match: {}, action: {backends: ['a', 'b']}},
      ],
      backends,
    )
    expect(engine.decide(instance('1', 1, {modality: 'MR', callingAeTitle: 'ER_CT'}))).toEqual({rule: 'rules[0]', backends: ['a'], mirrors: ['copy']})
    expect(engine.decide(instance('1', 1, {callingAeTitle: 'ER_CT'}))).toEqual({rule: 'from-er', backends: ['b'], mirrors: ['copy', 'a']})
    expect(engine.decide(instance('1', 1))).toEqual({rule: 'rules[2]', backends: ['a', 'b'], mirrors: ['copy']})
    expect(new RuleEngine([], [{name: 'a'}]).decide(instance('1', 1))).toEqual({mirrors: []})
  })

  it('matches any tag by number or keyword, with equals, prefix and regex, reading the dataset only when needed', () => {
    const engine = new RuleEngine(
      [
        {match: {tags: {'0008,0080': {prefix: 'ST. '}}}, action: {drop: 'not ours'}},
        {match: {tags: {Modality: {regex: '^(CT|PT)$'}, '(0008,0080)': {equals: 'GENERAL HOSPITAL'}}}, action: {backends: ['b']}},
      ],
      backends,
    )
    expect(engine.extraTags).toEqual([0x00080080])
    expect(engine.decide(instance('1', 1, {}, 'ST. ELSEWHERE')).drop).toBe('not ours')
    expect(engine.decide(instance('1', 1)).backends).toEqual(['b'])
    expect(engine.decide(instance('1', 1, {modality: 'MR'})).rule).toBeUndefined()
    expect(engine.decide(instance('1', 1, {}, 'OTHER')).rule).toBeUndefined()
  })

  it('rejects an unknown keyword', () => {
    expect(() => new RuleEngine([{match: {tags: {NoSuchKeyword: {equals: 'x'}}}, action: {drop: 'x'}}], backends)).toThrow(/rules\[0\]\.match\.tags\.NoSuchKeyword: unknown tag/)
  })
})

describe('Router with rules and mirrors', () => {
  it('places each modality within its group only, balanced inside the group', async () => {
    const [ct1, ct2, mr] = [backend('ct1'), backend('ct2'), backend('mr')]
    const router = makeRouter([ct1, ct2, mr], [
      {match: {modality: 'MR'}, action: {backends: ['mr']}},
      {match: {modality: 'CT'}, action: {backends: ['ct1', 'ct2']}},
    ])
    for (let s = 0; s < 20; s++) {
      await router.deliver(instance(`1.2.${s}`, 1, {modality: s % 2 === 0 ? 'CT' : 'MR'}))
    }

    expect(mr.stored).toHaveLength(10)
    expect(ct1.stored.length + ct2.stored.length).toBe(10)
    expect(ct1.stored.length).toBeGreaterThan(0)
    expect(ct2.stored.length).toBeGreaterThan(0)
    expect(router.placer.place(instance('1.2.1', 2, {modality: 'MR'})).why).toMatch(/^rule rules\[0\], study affinity/)
  })

  it('refuses a dropped instance with 0xC000 and the reason, sending nothing', async () => {
    const a = backend('a')
    const router = makeRouter([a], [{name: 'no-sr', match: {modality: 'SR'}, action: {drop: 'SR not archived here'}}])
    const response = await router.deliver(instance('1.3', 1, {modality: 'SR'}))
    expect(response).toEqual({status: 0xc000, errorComment: 'dropped by rule no-sr: SR not archived here'})
    expect(a.stored).toEqual([])
    expect(router.counters.dropped).toBe(1)
    // The store-and-forward path (attempt() directly) refuses it too, without the backend.
    const result = await router.attempt(instance('1.3', 2, {modality: 'SR'}), router.backends[0], 'test')
    expect(result.kind).toBe('refused')
    expect(a.stored).toEqual([])
  })

  it('copies every instance to the mirror, never places on it, and a failing mirror does not fail the primary', async () => {
    const [a, b, copy] = [backend('a'), backend('b'), backend('copy', true)]
    const router = makeRouter([a, b, copy], [])
    let copyFails = 3
    copy.answer = async () => {
      if (copyFails-- > 0) throw new Error('mirror down')
      return {status: 0}
    }

    // Fast retries for the test.
    ;(router.mirrors as unknown as {retryBaseMs: number}).retryBaseMs = 10
    for (let s = 0; s < 10; s++) {
      const response = await router.deliver(instance(`1.4.${s}`, 1))
      expect(response.status).toBe(0)
    }

    // The mirror's failures marked it down; bring it back as the health monitor would.
    const mirrorState = router.backends[2]
    mirrorState.markSuccess(1)
    mirrorState.markSuccess(1)
    await router.mirrorsIdle()
    expect(a.stored.length + b.stored.length).toBe(10)
    expect(a.stored.length).toBeGreaterThan(0)
    expect(b.stored.length).toBeGreaterThan(0)
    expect(copy.stored.sort()).toEqual([...a.stored, ...b.stored].sort())
    expect(router.counters).toMatchObject({routed: 10, mirrored: 10, mirrorPending: 0, mirrorFailed: 0})
    expect(mirrorState.routed).toBe(10)
    router.mirrors.stop()
  })
})
