import {AssociationPool} from '../../../src/lib/backends/association-pool.js'
import {DimseServer, type StoreSink} from '../../../src/lib/dimse/scp.js'

const CT = '1.2.840.10008.5.1.4.1.1.2'
const MR = '1.2.840.10008.5.1.4.1.1.4'
const EXPLICIT_VR_LITTLE_ENDIAN = '1.2.840.10008.1.2.1'
const JPEG_BASELINE = '1.2.840.10008.1.2.4.50'

describe('AssociationPool against a real SCP', () => {
  let server: DimseServer
  let port: number
  let associations = 0
  const stored: string[] = []

  beforeAll(async () => {
    const beginStore = (request: {sopInstanceUid: string}): StoreSink => ({
      write: () => true,
      waitDrain: async () => {},
      finish: async () => {
        stored.push(request.sopInstanceUid)
        return {status: 0}
      },
      abort: () => {},
    })
    // Explicit VR Little Endian only: a JPEG context is rejected.
    server = new DimseServer({aeTitle: 'SCP', transferSyntaxes: [EXPLICIT_VR_LITTLE_ENDIAN], beginStore})
    server.on('association', () => associations++)
    port = await server.listen(0, '127.0.0.1')
  })

  afterAll(async () => {
    await server?.close(100)
  })

  const pool = () => new AssociationPool({host: '127.0.0.1', port, calledAeTitle: 'SCP', callingAeTitle: 'DDR', maxAssociations: 1, idleMs: 10_000})
  const store = (uid: string, transferSyntax = EXPLICIT_VR_LITTLE_ENDIAN, sopClass = CT) => ({abstractSyntax: sopClass, transferSyntax, instance: {sopClassUid: sopClass, sopInstanceUid: uid, transferSyntaxUid: transferSyntax, dataset: {buffer: Buffer.alloc(8)}}})

  it('proposes the expected pairs on the first association, and refuses a rejected pair by name without asking again', async () => {
    const before = associations
    const subject = pool()
    try {
      subject.expect([
        {abstractSyntax: CT, transferSyntax: EXPLICIT_VR_LITTLE_ENDIAN},
        {abstractSyntax: CT, transferSyntax: JPEG_BASELINE},
        {abstractSyntax: MR, transferSyntax: EXPLICIT_VR_LITTLE_ENDIAN},
      ])
      for (const request of [store('1.1'), store('1.2', JPEG_BASELINE), store('1.3', EXPLICIT_VR_LITTLE_ENDIAN, MR), store('1.4', JPEG_BASELINE)]) {
        const outcome = await subject.with(request, (association) => association.store(request.instance)).then(
          (response) => response.status,
          (error: Error & {code?: string}) => `${error.code}: ${error.message}`,
        )
        expect({uid: request.instance.sopInstanceUid, outcome}).toEqual({
          uid: request.instance.sopInstanceUid,
          outcome: request.transferSyntax === JPEG_BASELINE ? `BACKEND_REFUSED: SCP@127.0.0.1:${port} did not accept CT Image Storage in JPEG Baseline (Process 1)` : 0,
        })
      }

      // One association carried everything: the refused pair did not cost a new one.
      expect(associations - before).toBe(1)
      expect(stored).toEqual(expect.arrayContaining(['1.1', '1.3']))
    } finally {
      await subject.close()
    }
  })

  it('runs the work at once on an idle association, and releaseIdle lets it go', async () => {
    const subject = pool()
    try {
      const first = store('2.1')
      await subject.with(first, (association) => association.store(first.instance))
      expect(subject.size).toBe(1)
      let started = false
      const second = store('2.2')
      const pending = subject.with(second, (association) => {
        started = true
        return association.store(second.instance)
      })
      // The C-STORE is under way before with() returns: a caller can read its next file meanwhile.
      expect(started).toBe(true)
      await pending
      await subject.releaseIdle()
      await new Promise((resolve) => setTimeout(resolve, 50))
      expect(subject.size).toBe(0)
    } finally {
      await subject.close()
    }
  })
})
