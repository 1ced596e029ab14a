import {Channel} from '../../../src/lib/qr/channel.js'
import {DimseServer} from '../../../src/lib/dimse/scp.js'
import {ScuAssociation} from '../../../src/lib/dimse/scu.js'
import {MoveDestinationSink, type RetrieveSink, deliverInstances} from '../../../src/lib/qr/deliver.js'
import {type FetchOutcome, type InstanceSource, type LocatedInstance, fetchMethodOf} from '../../../src/lib/qr/retrieve.js'
import type {BackendConfig} from '../../../src/lib/config/schema.js'

const instance = (sop: string): LocatedInstance => ({sopInstanceUid: sop, seriesInstanceUid: '1.2', studyInstanceUid: '1.1', patientId: 'P', backend: 'b1'})
const fetched = (bytes: number) => ({file: Buffer.alloc(bytes + 10), transferSyntaxUid: '1.2.840.10008.1.2.1', sopClassUid: '1.2.840.10008.5.1.4.1.1.7', dataset: Buffer.alloc(bytes)})

describe('Channel', () => {
  it('holds at most its capacity: a push waits until the consumer took one', async () => {
    const channel = new Channel<number>(2)
    const pushed: number[] = []
    const producer = (async () => {
      for (let n = 1; n <= 5; n++) {
        await channel.push(n)
        pushed.push(n)
      }

      channel.end()
    })()
    await new Promise((resolve) => setTimeout(resolve, 10))
    expect(pushed).toEqual([1, 2])
    const taken: number[] = []
    for await (const n of channel) taken.push(n)
    await producer
    expect(taken).toEqual([1, 2, 3, 4, 5])
  })

  it('cancel drops what is in and releases a waiting producer', async () => {
    const channel = new Channel<number>(1)
    await channel.push(1)
    const waiting = channel.push(2)
    channel.cancel()
    await waiting
    const taken: number[] = []
    for await (const n of channel) taken.push(n)
    expect(taken).toEqual([])
  })
})

describe('deliverInstances', () => {
  const sourceOf = (outcomes: FetchOutcome[]): InstanceSource => ({
    async *fetchAll() {
      yield* outcomes
    },
  })

  it('hands each fetched instance to the sink as it arrives, counts failed fetches and refusals with their reasons', async () => {
    const stored: string[] = []
    const sink: RetrieveSink = {
      store: async (located) => {
        stored.push(located.sopInstanceUid)
        return located.sopInstanceUid === 'c' ? {status: 0xa700, errorComment: 'disk full'} : {status: located.sopInstanceUid === 'd' ? 0xb000 : 0}
      },
      close: async () => {},
    }
    const progress: number[] = []
    const result = await deliverInstances(
      ['a', 'b', 'c', 'd'].map(instance),
      sourceOf([
        {instance: instance('b'), fetched: fetched(4)},
        {instance: instance('a'), why: 'pacs failed its C-GET sub-operation'},
        {instance: instance('c'), fetched: fetched(6)},
        {instance: instance('d'), fetched: fetched(8)},
      ]),
      sink,
      {onProgress: (counts) => progress.push(counts.remaining)},
    )
    expect(stored).toEqual(['b', 'c', 'd'])
    expect(result.counts).toEqual({remaining: 0, completed: 1, failed: 2, warning: 1})
    expect(result.failures).toEqual([
      {sopInstanceUid: 'a', backend: 'b1', why: 'pacs failed its C-GET sub-operation'},
      {sopInstanceUid: 'c', backend: 'b1', why: 'the destination answered 0xA700 (disk full)'},
    ])
    expect(result.bytes).toBe(12)
    expect(result.cancelled).toBe(false)
    expect(progress).toEqual([3, 2, 1, 0])
  })
})

describe('fetchMethodOf', () => {
  const orthanc = (extra: Record<string, unknown> = {}) => ({name: 'o', host: 'h', port: 1, aeTitle: 'O', transport: 'dimse', weight: 1, maxAssociations: 1, storeTimeoutMs: 1000, ...extra}) as BackendConfig
  it('C-GET (REST as fallback with a url), REST for an Orthanc stored to over REST, retrieveTransport when given; files, WADO-RS', () => {
    expect(fetchMethodOf(orthanc({url: 'http://h:8042'}))).toEqual({by: 'dimse', restFallback: true})
    expect(fetchMethodOf(orthanc({url: 'http://h:8042', transport: 'rest'}))).toEqual({by: 'rest'})
    expect(fetchMethodOf(orthanc({url: 'http://h:8042', retrieveTransport: 'rest'}))).toEqual({by: 'rest'})
    expect(fetchMethodOf(orthanc())).toEqual({by: 'dimse', restFallback: false})
    expect(fetchMethodOf(orthanc({type: 'dimse'}))).toEqual({by: 'dimse', restFallback: false})
    expect(fetchMethodOf(orthanc({url: 'http://h:8042', retrieveTransport: 'dimse'}))).toEqual({by: 'dimse', restFallback: true})
    expect(fetchMethodOf({name: 'f', type: 'folder', path: '/x'} as BackendConfig)).toEqual({by: 'file'})
    expect(fetchMethodOf({name: 'w', type: 'dicomweb', url: 'http://h/dicom-web'} as BackendConfig)).toEqual({by: 'wado'})
  })
})

describe('MoveDestinationSink', () => {
  const EXPLICIT = '1.2.840.10008.1.2.1'
  const IMPLICIT = '1.2.840.10008.1.2'
  const CT = '1.2.840.10008.5.1.4.1.1.2'
  const MR = '1.2.840.10008.5.1.4.1.1.4'
  const SC = '1.2.840.10008.5.1.4.1.1.7'
  const stored = (sopClassUid: string) => ({file: Buffer.alloc(0), transferSyntaxUid: EXPLICIT, sopClassUid, dataset: Buffer.from('0800180002000000', 'hex')})

  it('opens its association on open(), before any instance, proposing the expected contexts; a new context later proposes what was used and it', async () => {
    const server = new DimseServer({
      aeTitle: 'VIEWER',
      transferSyntaxes: [EXPLICIT, IMPLICIT],
      beginStore: () => ({write: () => true, waitDrain: async () => {}, finish: async () => ({status: 0}), abort: () => {}}),
    })
    let associations = 0
    server.on('association', () => associations++)
    const port = await server.listen(0, '127.0.0.1')
    const original = ScuAssociation.connect
    const proposed: string[][] = []
    ScuAssociation.connect = (options) => {
      proposed.push(options.contexts.map((c) => `${c.abstractSyntax === CT ? 'CT' : c.abstractSyntax === MR ? 'MR' : 'SC'} ${c.transferSyntax === EXPLICIT ? 'explicit' : 'implicit'}`))
      return original(options)
    }

    try {
      const sink = new MoveDestinationSink({aeTitle: 'VIEWER', host: '127.0.0.1', port}, {callingAeTitle: 'DDR', moveOriginatorAeTitle: 'MOVER', moveOriginatorMessageId: 1, timeoutMs: 5000})
      sink.open([
        {abstractSyntax: CT, transferSyntax: EXPLICIT},
        {abstractSyntax: CT, transferSyntax: IMPLICIT},
        {abstractSyntax: MR, transferSyntax: EXPLICIT},
      ])
      const deadline = Date.now() + 5000
      while (associations === 0 && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 5))
      expect(associations).toBe(1)
      expect(proposed).toEqual([['CT explicit', 'CT implicit', 'MR explicit']])

      expect((await sink.store(instance('1'), stored(CT))).status).toBe(0)
      expect((await sink.store(instance('2'), stored(CT))).status).toBe(0)
      expect(associations).toBe(1)

      expect((await sink.store(instance('3'), stored(SC))).status).toBe(0)
      expect(associations).toBe(2)
      expect(proposed[1]).toEqual(['CT explicit', 'SC explicit'])
      await sink.close()
    } finally {
      ScuAssociation.connect = original
      await server.close(100)
    }
  })
})
