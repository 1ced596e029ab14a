import {Channel} from '../../../src/lib/qr/channel.js'
import {type RetrieveSink, deliverInstances} from '../../../src/lib/qr/deliver.js'
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
