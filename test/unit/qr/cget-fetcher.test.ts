import {randomBytes} from 'node:crypto'

import type {DicomBackendConfig} from '../../../src/lib/config/schema.js'
import {Identifier} from '../../../src/lib/dicom/identifier.js'
import {readMetaHeader} from '../../../src/lib/dicom/part10.js'
import {Tag} from '../../../src/lib/dicom/tags.js'
import {SopClass, TransferSyntax} from '../../../src/lib/dicom/uids.js'
import {DimseServer, QueryModel, type QueryRequest, type QueryResponder} from '../../../src/lib/dimse/scp.js'
import {CGetFetcher, planGets, proposalOrder} from '../../../src/lib/qr/cget-fetcher.js'
import type {FetchedInstance, LocatedInstance} from '../../../src/lib/qr/retrieve.js'

const STUDY = '1.2.826.0.1.3680043.10.1.1'
const located = (series: string, sop: string, sopClassUid?: string, more: Partial<LocatedInstance> = {}): LocatedInstance => ({
  sopInstanceUid: sop,
  seriesInstanceUid: series,
  studyInstanceUid: STUDY,
  patientId: 'P1',
  backend: 'pacs',
  ...(sopClassUid === undefined ? {} : {sopClassUid}),
  ...more,
})

describe('planGets: presentation contexts for a C-GET', () => {
  const syntaxes = [TransferSyntax.ImplicitVRLittleEndian, TransferSyntax.ExplicitVRLittleEndian, '1.2.840.10008.1.2.4.100', TransferSyntax.JPEGBaseline8Bit, TransferSyntax.RLELossless]

  it('proposes the likely syntaxes first, then the rest as configured', () => {
    expect(proposalOrder(syntaxes)).toEqual([TransferSyntax.ExplicitVRLittleEndian, TransferSyntax.ImplicitVRLittleEndian, TransferSyntax.JPEGBaseline8Bit, TransferSyntax.RLELossless, '1.2.840.10008.1.2.4.100'])
  })

  it('puts the series of a study on one association: each SOP class once per transfer syntax the backend stores', () => {
    const plans = planGets([located('1.1', 'a', SopClass.CTImageStorage), located('1.2', 'b', SopClass.BasicTextSRStorage), located('1.1', 'c', SopClass.CTImageStorage)], syntaxes)
    expect(plans).toHaveLength(1)
    expect(plans[0].series.map((s) => s.map((i) => i.sopInstanceUid))).toEqual([['a', 'c'], ['b']])
    expect(plans[0].sopClasses).toEqual([SopClass.CTImageStorage, SopClass.BasicTextSRStorage])
    expect(plans[0].contexts).toHaveLength(2 * syntaxes.length)
    expect(plans[0].contexts.filter((c) => c.abstractSyntax === SopClass.CTImageStorage).map((c) => c.transferSyntax)).toEqual(proposalOrder(syntaxes))
  })

  it('stays within 125 storage contexts: many classes get fewer syntaxes each (the likely ones), more go on another association', () => {
    const all = Array.from({length: 45}, (_, index) => `1.2.840.10008.1.2.${index}`)
    const classes = Array.from({length: 40}, (_, index) => `1.2.840.10008.5.1.4.1.1.${index + 1}`)
    const plans = planGets(classes.map((uid, index) => located(`2.${index}`, `s${index}`, uid)), all)
    expect(plans.length).toBe(2)
    for (const plan of plans) expect(plan.contexts.length).toBeLessThanOrEqual(125)
    expect(plans.flatMap((p) => p.sopClasses).sort()).toEqual([...classes].sort())
    const few = planGets([located('3.1', 'x', SopClass.MRImageStorage)], all)
    expect(few[0].contexts).toHaveLength(45)
  })

  it("proposes its study's SOP classes for an instance whose own class was not asked (SOP Classes in Study), not the common ones", () => {
    const study = [SopClass.CTImageStorage, SopClass.BasicTextSRStorage]
    const [plan] = planGets([located('4.1', 'y', undefined, {sopClassUids: study}), located('4.1', 'z', undefined, {sopClassUids: study})], [TransferSyntax.ExplicitVRLittleEndian])
    expect(plan.sopClasses).toEqual(study)
    expect(plan.contexts).toHaveLength(2)
  })

  it('proposes the common classes for an instance whose SOP class the backend did not say', () => {
    const [plan] = planGets([located('4.1', 'y')], [TransferSyntax.ExplicitVRLittleEndian, TransferSyntax.ImplicitVRLittleEndian])
    expect(plan.sopClasses).toEqual(expect.arrayContaining([SopClass.CTImageStorage, SopClass.MRImageStorage, SopClass.SecondaryCaptureImageStorage]))
  })
})

describe('CGetFetcher against a C-GET SCP (ddr\'s own listener)', () => {
  // The SCP holds these; a C-GET of anything else fails that sub-operation.
  const held = new Map<string, {sopClassUid: string; transferSyntaxUid: string; dataset: Buffer}>()
  const requests: Identifier[] = []
  let server: DimseServer
  let port: number
  let storeDelayMs = 0

  const handle = async (request: QueryRequest, responder: QueryResponder) => {
    const identifier = Identifier.decode(request.identifier, request.transferSyntaxUid)
    requests.push(identifier)
    const failed: string[] = []
    let completed = 0
    // A SERIES-level C-GET: everything held in the series (a UID here is its series UID and a number).
    const series = identifier.get(Tag.QueryRetrieveLevel) === 'SERIES' ? identifier.get(Tag.SeriesInstanceUID)! : undefined
    const uids = series === undefined ? identifier.list(Tag.SOPInstanceUID) : [...held.keys()].filter((uid) => uid.startsWith(`${series}.`))
    for (const uid of uids) {
      const instance = held.get(uid)
      if (instance === undefined || !responder.canStore(instance.sopClassUid, instance.transferSyntaxUid)) {
        failed.push(uid)
        continue
      }

      const answer = await responder.store({sopClassUid: instance.sopClassUid, sopInstanceUid: uid, transferSyntaxUid: instance.transferSyntaxUid, dataset: {buffer: instance.dataset}})
      if (answer.status === 0) completed++
      else failed.push(uid)
    }

    return {status: failed.length === 0 ? 0 : 0xb000, counts: {remaining: 0, completed, failed: failed.length, warning: 0}, failedSopInstanceUids: failed}
  }

  const backend = (): DicomBackendConfig => ({name: 'pacs', type: 'dimse', host: '127.0.0.1', port, aeTitle: 'PACS', transport: 'dimse', weight: 1, maxAssociations: 1, storeTimeoutMs: 10_000}) as DicomBackendConfig

  beforeAll(async () => {
    const dataset = (bytes: number) => Buffer.concat([Buffer.from('0800180002000000', 'hex'), randomBytes(bytes)])
    held.set('1.1.1', {sopClassUid: SopClass.CTImageStorage, transferSyntaxUid: TransferSyntax.ExplicitVRLittleEndian, dataset: dataset(300_000)})
    held.set('1.1.2', {sopClassUid: SopClass.CTImageStorage, transferSyntaxUid: TransferSyntax.JPEGBaseline8Bit, dataset: dataset(5000)})
    held.set('1.1.3', {sopClassUid: SopClass.SecondaryCaptureImageStorage, transferSyntaxUid: TransferSyntax.ImplicitVRLittleEndian, dataset: dataset(10)})
    server = new DimseServer({
      aeTitle: 'PACS',
      transferSyntaxes: [TransferSyntax.ExplicitVRLittleEndian, TransferSyntax.ImplicitVRLittleEndian, TransferSyntax.JPEGBaseline8Bit],
      maxPduLength: 16_384,
      beginStore: () => {
        throw new Error('no store expected')
      },
      query: {models: [QueryModel.studyRootGet], handle},
    })
    port = await server.listen(0, '127.0.0.1')
  })

  afterAll(async () => {
    await server?.close(100)
  })

  beforeEach(() => {
    requests.length = 0
    storeDelayMs = 0
  })

  const retrieve = async (instances: LocatedInstance[]) => {
    const arrivals: Array<{instance: LocatedInstance; fetched: FetchedInstance; at: number}> = []
    let taking = 0
    let overlapped = false
    const missing = await new CGetFetcher(backend(), {callingAeTitle: 'DDR', timeoutMs: 5000}).retrieve(instances, {
      onArrival: async (instance, fetched) => {
        taking++
        if (taking > 1) overlapped = true
        await new Promise((resolve) => setTimeout(resolve, storeDelayMs))
        arrivals.push({instance, fetched, at: Date.now()})
        taking--
      },
    })
    return {arrivals, missing, overlapped}
  }

  it('brings every instance of a series with one C-GET, each dataset byte for byte in the syntax the SCP holds it in', async () => {
    const {arrivals, missing} = await retrieve([located('1.1', '1.1.1', SopClass.CTImageStorage), located('1.1', '1.1.2', SopClass.CTImageStorage), located('1.1', '1.1.3', SopClass.SecondaryCaptureImageStorage)])
    expect(missing).toEqual([])
    expect(requests).toHaveLength(1)
    expect(requests[0].get(Tag.QueryRetrieveLevel)).toBe('IMAGE')
    expect(requests[0].get(Tag.SeriesInstanceUID)).toBe('1.1')
    expect(requests[0].list(Tag.SOPInstanceUID)).toEqual(['1.1.1', '1.1.2', '1.1.3'])
    expect(arrivals.map((a) => a.instance.sopInstanceUid)).toEqual(['1.1.1', '1.1.2', '1.1.3'])
    for (const {instance, fetched} of arrivals) {
      const stored = held.get(instance.sopInstanceUid)!
      expect(fetched.dataset.equals(stored.dataset)).toBe(true)
      expect(fetched.transferSyntaxUid).toBe(stored.transferSyntaxUid)
      expect(fetched.sopClassUid).toBe(stored.sopClassUid)
      // A Part 10 file: ddr's meta header naming the source, then the dataset as received.
      const meta = readMetaHeader(fetched.file)
      expect(meta.transferSyntaxUid).toBe(stored.transferSyntaxUid)
      expect(meta.sourceApplicationEntityTitle).toBe('PACS')
      expect(fetched.file.subarray(meta.datasetOffset).equals(stored.dataset)).toBe(true)
    }
  })

  it("asks for a whole series at SERIES level, no UID list, when the locate found all of the backend's series here; what it holds beyond those is taken and dropped", async () => {
    const {arrivals, missing} = await retrieve([located('1.1', '1.1.1', SopClass.CTImageStorage, {seriesCount: 2}), located('1.1', '1.1.2', SopClass.CTImageStorage, {seriesCount: 2})])
    expect(missing).toEqual([])
    expect(requests).toHaveLength(1)
    expect(requests[0].get(Tag.QueryRetrieveLevel)).toBe('SERIES')
    expect(requests[0].get(Tag.SeriesInstanceUID)).toBe('1.1')
    expect(requests[0].has(Tag.SOPInstanceUID)).toBe(false)
    // The SCP sent 1.1.3 too (it holds it in that series): not asked for, not handed on.
    expect(arrivals.map((a) => a.instance.sopInstanceUid)).toEqual(['1.1.1', '1.1.2'])
    for (const {instance, fetched} of arrivals) expect(fetched.dataset.equals(held.get(instance.sopInstanceUid)!.dataset)).toBe(true)
  })

  it('lists the UIDs when given only part of what the locate found of the series (seriesCount larger), or no seriesCount', async () => {
    await retrieve([located('1.1', '1.1.1', SopClass.CTImageStorage, {seriesCount: 2})])
    await retrieve([located('1.1', '1.1.2', SopClass.CTImageStorage)])
    expect(requests.map((r) => [r.get(Tag.QueryRetrieveLevel), r.list(Tag.SOPInstanceUID)])).toEqual([
      ['IMAGE', ['1.1.1']],
      ['IMAGE', ['1.1.2']],
    ])
  })

  it('takes the next sub-operation only once the last one was handed on', async () => {
    storeDelayMs = 50
    const {arrivals, overlapped} = await retrieve([located('1.1', '1.1.1', SopClass.CTImageStorage), located('1.1', '1.1.2', SopClass.CTImageStorage)])
    expect(arrivals).toHaveLength(2)
    expect(overlapped).toBe(false)
  })

  it('names each instance that did not come: a failed sub-operation (Failed SOP Instance UID List) or one the SCP did not send', async () => {
    const {arrivals, missing} = await retrieve([located('1.1', '1.1.1', SopClass.CTImageStorage), located('1.1', '9.9.9', SopClass.CTImageStorage)])
    expect(arrivals.map((a) => a.instance.sopInstanceUid)).toEqual(['1.1.1'])
    expect(missing).toEqual([{instance: expect.objectContaining({sopInstanceUid: '9.9.9'}), why: expect.stringContaining('pacs failed its C-GET sub-operation (the C-GET answered 0xB000')}])
  })

  it('one C-GET per series; an unreachable backend fails every instance with why', async () => {
    const {missing} = await retrieve([located('1.1', '1.1.1', SopClass.CTImageStorage), located('1.2', '1.1.3', SopClass.SecondaryCaptureImageStorage)])
    expect(missing).toEqual([])
    expect(requests.map((r) => r.get(Tag.SeriesInstanceUID))).toEqual(['1.1', '1.2'])

    const closed = await new CGetFetcher({...backend(), port: 1}, {callingAeTitle: 'DDR', timeoutMs: 2000}).retrieve([located('1.1', '1.1.1')], {onArrival: async () => {}})
    expect(closed).toEqual([{instance: expect.objectContaining({sopInstanceUid: '1.1.1'}), why: expect.stringMatching(/^C-GET from pacs: cannot connect to PACS@127.0.0.1:1/)}])
  })
})
