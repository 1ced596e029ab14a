import {CommandField, CommandTag, decodeCommand, encodeCommand} from '../../../src/lib/dimse/command.js'
import {
  APPLICATION_CONTEXT,
  AbortReason,
  MAX_ASSOCIATE_PDU_LENGTH,
  MAX_FIXED_PDU_LENGTH,
  PduError,
  PduReader,
  PduType,
  decodeAssociateAc,
  decodeAssociateRq,
  decodePData,
  encodeAbort,
  encodeAssociateAc,
  encodeAssociateRq,
  encodeReleaseRq,
  pDataHeader,
} from '../../../src/lib/dimse/pdu.js'
import {largestAssociateRq} from './associate-requests.js'
import {isStored, isTransientRefusal, statusKind} from '../../../src/lib/dimse/status.js'

const request = {
  calledAeTitle: 'DYNAMIC_DICOM_MW',
  callingAeTitle: 'STORESCU',
  applicationContext: APPLICATION_CONTEXT,
  presentationContexts: [
    {id: 1, abstractSyntax: '1.2.840.10008.5.1.4.1.1.2', transferSyntaxes: ['1.2.840.10008.1.2.1', '1.2.840.10008.1.2']},
    {id: 3, abstractSyntax: '1.2.840.10008.1.1', transferSyntaxes: ['1.2.840.10008.1.2']},
  ],
  userInformation: {maxPduLength: 16384, implementationClassUid: '1.2.3', implementationVersionName: 'TEST'},
}

function readAll(bytes: Buffer, chunkSize: number, max = 1 << 20) {
  const reader = new PduReader(max)
  const pdus = []
  for (let i = 0; i < bytes.length; i += chunkSize) {
    reader.push(bytes.subarray(i, i + chunkSize))
    for (let pdu = reader.next(); pdu; pdu = reader.next()) pdus.push(pdu)
  }

  return pdus
}

describe('PDU codec', () => {
  it('round-trips an A-ASSOCIATE-RQ, even when it arrives one byte at a time', () => {
    const [pdu] = readAll(encodeAssociateRq(request), 1)
    expect(pdu.type).toBe(PduType.associateRq)
    expect(decodeAssociateRq(pdu.body)).toEqual(request)
  })

  it('round-trips an A-ASSOCIATE-AC with per-context results', () => {
    const accept = {
      calledAeTitle: 'A',
      callingAeTitle: 'B',
      applicationContext: APPLICATION_CONTEXT,
      presentationContexts: [
        {id: 1, result: 0, transferSyntax: '1.2.840.10008.1.2.1'},
        {id: 3, result: 3, transferSyntax: '1.2.840.10008.1.2'},
      ],
      userInformation: {maxPduLength: 262144, implementationClassUid: '1.2.3.4', implementationVersionName: 'X'},
    }
    const [pdu] = readAll(encodeAssociateAc(accept), 7)
    expect(decodeAssociateAc(pdu.body)).toEqual(accept)
  })

  it('splits several PDUs that share one chunk, and PDVs inside a P-DATA-TF', () => {
    const payload = Buffer.from('dataset bytes!')
    const pData = Buffer.concat([pDataHeader(5, false, true, payload.length), payload])
    const pdus = readAll(Buffer.concat([pData, encodeAbort(0, 0)]), 4096)
    expect(pdus.map((p) => p.type)).toEqual([PduType.pData, PduType.abort])
    expect(decodePData(pdus[0].body)).toEqual([{contextId: 5, isCommand: false, isLast: true, data: payload}])
  })

  it('reassembles a run of PDUs whatever the socket chunks (split headers, several PDUs per chunk)', () => {
    const pdus = [1, 7, 3000, 16_000, 2].map((n, i) => Buffer.concat([pDataHeader(1, i % 2 === 0, true, n * 2), Buffer.alloc(n * 2, i + 1)]))
    const bytes = Buffer.concat([...pdus, encodeReleaseRq()])
    for (const chunkSize of [1, 5, 6, 7, 13, 4096, 16_384, 65_536]) {
      const read = readAll(bytes, chunkSize)
      expect(read.map((p) => p.type)).toEqual([...pdus.map(() => PduType.pData), PduType.releaseRq])
      expect(Buffer.concat(read.map((p, i) => Buffer.concat([i < pdus.length ? pdus[i].subarray(0, 6) : encodeReleaseRq().subarray(0, 6), p.body])))).toEqual(bytes)
    }
  })

  it('refuses a PDU longer than the limit instead of buffering it', () => {
    const header = Buffer.from([PduType.pData, 0, 0x7f, 0xff, 0xff, 0xff])
    const reader = new PduReader(16384)
    reader.push(header)
    expect(() => reader.next()).toThrow(PduError)
  })

  it('refuses an unknown PDU type', () => {
    const reader = new PduReader(16384)
    reader.push(Buffer.from([0x09, 0, 0, 0, 0, 0]))
    expect(() => reader.next()).toThrow(/unknown PDU type/)
  })

  it('refuses a PDV whose length runs past its PDU', () => {
    const body = Buffer.alloc(10)
    body.writeUInt32BE(100, 0)
    expect(() => decodePData(body)).toThrow(PduError)
  })
})

describe('PDU length limits by type', () => {
  const headerOnly = (type: number, length: number) => {
    const header = Buffer.alloc(6)
    header[0] = type
    header.writeUInt32BE(length, 2)
    return header
  }

  it('reads the largest A-ASSOCIATE-RQ the standard allows in practice: 128 contexts × 65 transfer syntaxes, 64-character SOP classes, a full user information item', () => {
    const bytes = largestAssociateRq()
    expect(bytes.length - 6).toBeGreaterThan(320_000)
    expect(bytes.length - 6).toBeLessThanOrEqual(MAX_ASSOCIATE_PDU_LENGTH)
    const [pdu] = readAll(bytes, 65_536, 16_384)
    const decoded = decodeAssociateRq(pdu.body)
    expect(decoded.presentationContexts).toHaveLength(128)
    expect(decoded.presentationContexts.every((context) => context.transferSyntaxes.length === 65 && context.abstractSyntax.length === 64)).toBe(true)
    expect(decoded.userInformation.maxPduLength).toBe(16_384)
  })

  it('aborts an A-ASSOCIATE-RQ or -AC one byte over the limit as soon as its header is in, buffering nothing more', () => {
    for (const type of [PduType.associateRq, PduType.associateAc]) {
      const reader = new PduReader(16_384)
      reader.push(headerOnly(type, MAX_ASSOCIATE_PDU_LENGTH + 1))
      expect(() => reader.next()).toThrow(`of ${MAX_ASSOCIATE_PDU_LENGTH + 1} bytes exceeds the limit of ${MAX_ASSOCIATE_PDU_LENGTH}`)
    }

    // What the former 1 MiB bound let through is refused too, with the reason the A-ABORT carries.
    const reader = new PduReader(16_384)
    reader.push(headerOnly(PduType.associateRq, 1 << 20))
    let error: unknown
    try {
      reader.next()
    } catch (caught) {
      error = caught
    }

    expect(error).toBeInstanceOf(PduError)
    expect((error as PduError).abortReason).toBe(AbortReason.invalidPduParameterValue)
    expect((error as PduError).message).toBe(`A-ASSOCIATE-RQ of ${1 << 20} bytes exceeds the limit of ${MAX_ASSOCIATE_PDU_LENGTH}`)
  })

  it('holds A-ASSOCIATE-RJ, A-RELEASE and A-ABORT to their fixed 4 bytes (with a little slack)', () => {
    expect(readAll(Buffer.concat([encodeReleaseRq(), encodeAbort(0, 0)]), 3).map((pdu) => pdu.type)).toEqual([PduType.releaseRq, PduType.abort])
    for (const type of [PduType.associateRj, PduType.releaseRq, PduType.releaseRp, PduType.abort]) {
      const reader = new PduReader(16_384)
      reader.push(headerOnly(type, MAX_FIXED_PDU_LENGTH + 1))
      expect(() => reader.next()).toThrow(PduError)
    }
  })
})

describe('DIMSE command sets', () => {
  it('round-trips a C-STORE-RQ with an even-padded odd-length UID', () => {
    const encoded = encodeCommand([
      [CommandTag.commandField, CommandField.cStoreRq],
      [CommandTag.affectedSopClassUid, '1.2.840.10008.5.1.4.1.1.2'],
      [CommandTag.messageId, 7],
      [CommandTag.affectedSopInstanceUid, '2.25.123'],
    ])
    expect(encoded.length % 2).toBe(0)
    const decoded = decodeCommand(encoded)
    expect(decoded.get(CommandTag.groupLength)).toBe(encoded.length - 12)
    expect(decoded.get(CommandTag.affectedSopClassUid)).toBe('1.2.840.10008.5.1.4.1.1.2')
    expect(decoded.get(CommandTag.affectedSopInstanceUid)).toBe('2.25.123')
    expect(decoded.get(CommandTag.messageId)).toBe(7)
  })
})

describe('status codes', () => {
  it('reads success and warnings as stored, A7xx as transient, Cxxx as an error', () => {
    expect(isStored(0)).toBe(true)
    expect(isStored(0xb000)).toBe(true)
    expect(isStored(0xa700)).toBe(false)
    expect(isTransientRefusal(0xa700)).toBe(true)
    expect(isTransientRefusal(0xa900)).toBe(false)
    expect(statusKind(0xc000)).toBe('error')
    expect(statusKind(0x0110)).toBe('failure')
  })
})
