import net from 'node:net'

import {DimseServer, QueryModel, type StoreSink} from '../../../src/lib/dimse/scp.js'
import {APPLICATION_CONTEXT, AbortReason, AbortSource, MAX_ASSOCIATE_PDU_LENGTH, PduReader, PduType, decodeAbort, decodeAssociateAc, encodeAssociateRq} from '../../../src/lib/dimse/pdu.js'
import {largestAssociateRq} from './associate-requests.js'

const EXPLICIT_VR_LITTLE_ENDIAN = '1.2.840.10008.1.2.1'

/** Writes `chunks` on a fresh connection and collects every PDU the server sends until it closes. */
function exchange(port: number, chunks: Buffer[]): Promise<Array<{type: number; body: Buffer}>> {
  return new Promise((resolve, reject) => {
    const reader = new PduReader(1 << 20)
    const pdus: Array<{type: number; body: Buffer}> = []
    const socket = net.connect({host: '127.0.0.1', port}, () => {
      for (const chunk of chunks) socket.write(chunk)
    })
    const timer = setTimeout(() => {
      socket.destroy()
      reject(new Error(`no close within 5 s; got PDU types ${pdus.map((p) => p.type).join(',')}`))
    }, 5000)
    socket.on('data', (chunk: Buffer) => {
      reader.push(chunk)
      for (let pdu = reader.next(); pdu !== undefined; pdu = reader.next()) {
        pdus.push(pdu)
        // An accepted association stays open: the test only needs the answer.
        if (pdu.type === PduType.associateAc) socket.end()
      }
    })
    socket.on('error', () => {})
    socket.on('close', () => {
      clearTimeout(timer)
      resolve(pdus)
    })
  })
}

describe('DimseServer: association request size', () => {
  let server: DimseServer
  let port: number
  const protocolErrors: string[] = []

  beforeAll(async () => {
    const beginStore = (): StoreSink => {
      throw new Error('no store expected')
    }

    server = new DimseServer({aeTitle: 'DDR', transferSyntaxes: [EXPLICIT_VR_LITTLE_ENDIAN], beginStore})
    server.on('protocolError', (event: {message: string}) => protocolErrors.push(event.message))
    port = await server.listen(0, '127.0.0.1')
  })

  afterAll(async () => {
    await server?.close(100)
  })

  it('accepts the largest realistic A-ASSOCIATE-RQ (about 317 KiB: 128 contexts × 65 transfer syntaxes, full user information)', async () => {
    const request = largestAssociateRq()
    // In pieces, as TCP delivers it.
    const chunks = Array.from({length: Math.ceil(request.length / 16_384)}, (_, index) => request.subarray(index * 16_384, (index + 1) * 16_384))
    const [answer] = await exchange(port, chunks)
    expect(answer.type).toBe(PduType.associateAc)
    const accept = decodeAssociateAc(answer.body)
    expect(accept.presentationContexts).toHaveLength(128)
    expect(accept.presentationContexts.every((context) => context.result === 0 && context.transferSyntax === EXPLICIT_VR_LITTLE_ENDIAN)).toBe(true)
  })

  it('aborts a longer one cleanly (A-ABORT, invalid PDU parameter value) and keeps serving', async () => {
    const header = Buffer.alloc(6)
    header[0] = PduType.associateRq
    header.writeUInt32BE(MAX_ASSOCIATE_PDU_LENGTH + 1, 2)
    const pdus = await exchange(port, [header, Buffer.alloc(4096, 0x20)])
    expect(pdus.map((pdu) => pdu.type)).toEqual([PduType.abort])
    expect(decodeAbort(pdus[0].body)).toEqual({source: AbortSource.serviceProvider, reason: AbortReason.invalidPduParameterValue})
    expect(protocolErrors).toContain(`protocol error: A-ASSOCIATE-RQ of ${MAX_ASSOCIATE_PDU_LENGTH + 1} bytes exceeds the limit of ${MAX_ASSOCIATE_PDU_LENGTH}`)

    const [again] = await exchange(port, [largestAssociateRq()])
    expect(again.type).toBe(PduType.associateAc)
  })
})

describe('DimseServer: query/retrieve negotiation', () => {
  const CT = '1.2.840.10008.5.1.4.1.1.2'
  const request = (roleSelections?: Array<{sopClassUid: string; scuRole: boolean; scpRole: boolean}>) =>
    encodeAssociateRq({
      calledAeTitle: 'DDR',
      callingAeTitle: 'VIEWER',
      applicationContext: APPLICATION_CONTEXT,
      presentationContexts: [
        {id: 1, abstractSyntax: QueryModel.studyRootGet, transferSyntaxes: ['1.2.840.10008.1.2.4.50', EXPLICIT_VR_LITTLE_ENDIAN]},
        {id: 3, abstractSyntax: CT, transferSyntaxes: [EXPLICIT_VR_LITTLE_ENDIAN]},
      ],
      userInformation: {maxPduLength: 16384, roleSelections},
    })
  const start = async (query: boolean) => {
    const server = new DimseServer({
      aeTitle: 'DDR',
      transferSyntaxes: [EXPLICIT_VR_LITTLE_ENDIAN],
      beginStore: () => {
        throw new Error('no store expected')
      },
      ...(query ? {query: {models: [QueryModel.studyRootGet], handle: async () => ({status: 0})}} : {}),
    })
    return {server, port: await server.listen(0, '127.0.0.1')}
  }

  it('takes the C-GET requester as SCP of the storage classes it asks for (role selection answered), identifiers in an uncompressed syntax', async () => {
    const {server, port} = await start(true)
    try {
      const [answer] = await exchange(port, [request([{sopClassUid: CT, scuRole: false, scpRole: true}])])
      const accept = decodeAssociateAc(answer.body)
      expect(accept.userInformation.roleSelections).toEqual([{sopClassUid: CT, scuRole: false, scpRole: true}])
      expect(accept.presentationContexts).toEqual([
        {id: 1, result: 0, transferSyntax: EXPLICIT_VR_LITTLE_ENDIAN},
        {id: 3, result: 0, transferSyntax: EXPLICIT_VR_LITTLE_ENDIAN},
      ])
    } finally {
      await server.close(100)
    }
  })

  it('refuses the query/retrieve contexts, and answers no role, without a query handler (listen.allowQuery false)', async () => {
    const {server, port} = await start(false)
    try {
      const [answer] = await exchange(port, [request([{sopClassUid: CT, scuRole: false, scpRole: true}])])
      const accept = decodeAssociateAc(answer.body)
      expect(accept.userInformation.roleSelections ?? []).toEqual([])
      expect(accept.presentationContexts[0]).toMatchObject({id: 1, result: 3})
    } finally {
      await server.close(100)
    }
  })
})
