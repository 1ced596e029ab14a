/**
 * DICOM upper layer PDUs (PS3.8 section 9.3): encoding and decoding of the seven PDU types.
 * Our own implementation, because the data path must stream raw dataset bytes without parsing them.
 */
import {DDR_IMPLEMENTATION_CLASS_UID as IMPLEMENTATION_CLASS_UID, DDR_IMPLEMENTATION_VERSION_NAME as IMPLEMENTATION_VERSION_NAME} from '../dicom/part10.js'

export const PduType = {
  associateRq: 0x01,
  associateAc: 0x02,
  associateRj: 0x03,
  pData: 0x04,
  releaseRq: 0x05,
  releaseRp: 0x06,
  abort: 0x07,
} as const

const ItemType = {
  applicationContext: 0x10,
  presentationContextRq: 0x20,
  presentationContextAc: 0x21,
  abstractSyntax: 0x30,
  transferSyntax: 0x40,
  userInformation: 0x50,
  maxLength: 0x51,
  implementationClassUid: 0x52,
  asyncOperations: 0x53,
  roleSelection: 0x54,
  implementationVersionName: 0x55,
} as const

export const APPLICATION_CONTEXT = '1.2.840.10008.3.1.1.1'
export const VERIFICATION_SOP_CLASS = '1.2.840.10008.1.1'

/** Presentation context results in an A-ASSOCIATE-AC (PS3.8 9.3.3.2). */
export const ContextResult = {
  acceptance: 0,
  userRejection: 1,
  noReason: 2,
  abstractSyntaxNotSupported: 3,
  transferSyntaxesNotSupported: 4,
} as const

/** A-ASSOCIATE-RJ fields (PS3.8 9.3.4). */
export const RejectResult = {permanent: 1, transient: 2} as const
export const RejectSource = {serviceUser: 1, serviceProviderAcse: 2, serviceProviderPresentation: 3} as const
export const RejectReason = {
  noReasonGiven: 1,
  applicationContextNotSupported: 2,
  callingAeNotRecognized: 3,
  calledAeNotRecognized: 7,
  // source 3 (presentation) reasons
  temporaryCongestion: 1,
  localLimitExceeded: 2,
} as const

/** A-ABORT sources and reasons (PS3.8 9.3.8). */
export const AbortSource = {serviceUser: 0, serviceProvider: 2} as const
export const AbortReason = {
  notSpecified: 0,
  unrecognizedPdu: 1,
  unexpectedPdu: 2,
  unrecognizedPduParameter: 4,
  unexpectedPduParameter: 5,
  invalidPduParameterValue: 6,
} as const

export interface PresentationContextProposal {
  id: number
  abstractSyntax: string
  transferSyntaxes: string[]
}

export interface PresentationContextResult {
  id: number
  result: number
  /** The accepted transfer syntax (meaningful only when result is acceptance). */
  transferSyntax: string
}

/** SCP/SCU role selection for one SOP class (PS3.7 D.3.3.4): C-GET asks the acceptor to act as SCU of storage. */
export interface RoleSelection {
  sopClassUid: string
  scuRole: boolean
  scpRole: boolean
}

export interface UserInformation {
  maxPduLength: number
  roleSelections?: RoleSelection[]
  implementationClassUid?: string
  implementationVersionName?: string
  maxOperationsInvoked?: number
  maxOperationsPerformed?: number
}

export interface AssociateRequest {
  calledAeTitle: string
  callingAeTitle: string
  applicationContext: string
  presentationContexts: PresentationContextProposal[]
  userInformation: UserInformation
}

export interface AssociateAccept {
  calledAeTitle: string
  callingAeTitle: string
  applicationContext: string
  presentationContexts: PresentationContextResult[]
  userInformation: UserInformation
}

export interface AssociateReject {
  result: number
  source: number
  reason: number
}

export interface Pdv {
  contextId: number
  isCommand: boolean
  isLast: boolean
  data: Buffer
}

/** Thrown for malformed PDUs: the association is aborted with the given reason. */
export class PduError extends Error {
  override readonly name = 'PduError'
  constructor(message: string, readonly abortReason: number = AbortReason.invalidPduParameterValue) {
    super(message)
  }
}

// ---------------------------------------------------------------- encoding

function pduHeader(type: number, length: number): Buffer {
  const header = Buffer.alloc(6)
  header[0] = type
  header.writeUInt32BE(length, 2)
  return header
}

function item(type: number, body: Buffer): Buffer {
  const header = Buffer.alloc(4)
  header[0] = type
  header.writeUInt16BE(body.length, 2)
  return Buffer.concat([header, body])
}

function aeField(aeTitle: string): Buffer {
  const field = Buffer.alloc(16, 0x20)
  field.write(aeTitle.slice(0, 16), 'latin1')
  return field
}

function uidItem(type: number, uid: string): Buffer {
  return item(type, Buffer.from(uid, 'latin1'))
}

function userInformationItem(info: UserInformation): Buffer {
  const maxLength = Buffer.alloc(4)
  maxLength.writeUInt32BE(info.maxPduLength, 0)
  const parts = [item(ItemType.maxLength, maxLength), uidItem(ItemType.implementationClassUid, info.implementationClassUid ?? IMPLEMENTATION_CLASS_UID)]
  if (info.maxOperationsInvoked !== undefined) {
    const window = Buffer.alloc(4)
    window.writeUInt16BE(info.maxOperationsInvoked, 0)
    window.writeUInt16BE(info.maxOperationsPerformed ?? 1, 2)
    parts.push(item(ItemType.asyncOperations, window))
  }

  for (const role of info.roleSelections ?? []) {
    const uid = Buffer.from(role.sopClassUid, 'latin1')
    const body = Buffer.alloc(2 + uid.length + 2)
    body.writeUInt16BE(uid.length, 0)
    uid.copy(body, 2)
    body[2 + uid.length] = role.scuRole ? 1 : 0
    body[3 + uid.length] = role.scpRole ? 1 : 0
    parts.push(item(ItemType.roleSelection, body))
  }

  parts.push(uidItem(ItemType.implementationVersionName, info.implementationVersionName ?? IMPLEMENTATION_VERSION_NAME))
  return item(ItemType.userInformation, Buffer.concat(parts))
}

function associateFixedPart(calledAeTitle: string, callingAeTitle: string): Buffer {
  const fixed = Buffer.alloc(68)
  fixed.writeUInt16BE(1, 0) // protocol version
  aeField(calledAeTitle).copy(fixed, 4)
  aeField(callingAeTitle).copy(fixed, 20)
  return fixed
}

export function encodeAssociateRq(request: AssociateRequest): Buffer {
  const contexts = request.presentationContexts.map((context) => {
    const head = Buffer.from([context.id, 0, 0, 0])
    const syntaxes = context.transferSyntaxes.map((ts) => uidItem(ItemType.transferSyntax, ts))
    return item(ItemType.presentationContextRq, Buffer.concat([head, uidItem(ItemType.abstractSyntax, context.abstractSyntax), ...syntaxes]))
  })
  const body = Buffer.concat([
    associateFixedPart(request.calledAeTitle, request.callingAeTitle),
    uidItem(ItemType.applicationContext, request.applicationContext),
    ...contexts,
    userInformationItem(request.userInformation),
  ])
  return Buffer.concat([pduHeader(PduType.associateRq, body.length), body])
}

export function encodeAssociateAc(accept: AssociateAccept): Buffer {
  const contexts = accept.presentationContexts.map((context) => {
    const head = Buffer.from([context.id, 0, context.result, 0])
    return item(ItemType.presentationContextAc, Buffer.concat([head, uidItem(ItemType.transferSyntax, context.transferSyntax)]))
  })
  const body = Buffer.concat([
    associateFixedPart(accept.calledAeTitle, accept.callingAeTitle),
    uidItem(ItemType.applicationContext, accept.applicationContext),
    ...contexts,
    userInformationItem(accept.userInformation),
  ])
  return Buffer.concat([pduHeader(PduType.associateAc, body.length), body])
}

export function encodeAssociateRj(reject: AssociateReject): Buffer {
  return Buffer.concat([pduHeader(PduType.associateRj, 4), Buffer.from([0, reject.result, reject.source, reject.reason])])
}

export function encodeReleaseRq(): Buffer {
  return Buffer.concat([pduHeader(PduType.releaseRq, 4), Buffer.alloc(4)])
}

export function encodeReleaseRp(): Buffer {
  return Buffer.concat([pduHeader(PduType.releaseRp, 4), Buffer.alloc(4)])
}

export function encodeAbort(source: number, reason: number): Buffer {
  return Buffer.concat([pduHeader(PduType.abort, 4), Buffer.from([0, 0, source, reason])])
}

/** Header of a P-DATA-TF PDU carrying exactly one PDV of `length` bytes; the fragment follows it on the wire. */
export function pDataHeader(contextId: number, isCommand: boolean, isLast: boolean, length: number): Buffer {
  const header = Buffer.alloc(12)
  header[0] = PduType.pData
  header.writeUInt32BE(length + 6, 2)
  header.writeUInt32BE(length + 2, 6)
  header[10] = contextId
  header[11] = (isCommand ? 0x01 : 0) | (isLast ? 0x02 : 0)
  return header
}

// ---------------------------------------------------------------- decoding

function trimUid(buffer: Buffer): string {
  return buffer.toString('latin1').replace(/[\0 ]+$/, '')
}

function trimAe(buffer: Buffer): string {
  return buffer.toString('latin1').trim()
}

function* items(body: Buffer, start: number, end: number): Generator<{type: number; value: Buffer}> {
  let offset = start
  while (offset < end) {
    if (offset + 4 > end) throw new PduError('truncated item header in association PDU')
    const type = body[offset]
    const length = body.readUInt16BE(offset + 2)
    if (offset + 4 + length > end) throw new PduError(`item 0x${type.toString(16)} is longer (${length}) than its PDU`)
    yield {type, value: body.subarray(offset + 4, offset + 4 + length)}
    offset += 4 + length
  }
}

function decodeUserInformation(value: Buffer): UserInformation {
  const info: UserInformation = {maxPduLength: 0}
  for (const sub of items(value, 0, value.length)) {
    switch (sub.type) {
      case ItemType.maxLength: {
        if (sub.value.length !== 4) throw new PduError('maximum length sub-item must be 4 bytes')
        info.maxPduLength = sub.value.readUInt32BE(0)
        break
      }

      case ItemType.implementationClassUid: {
        info.implementationClassUid = trimUid(sub.value)
        break
      }

      case ItemType.implementationVersionName: {
        info.implementationVersionName = trimAe(sub.value)
        break
      }

      case ItemType.asyncOperations: {
        if (sub.value.length === 4) {
          info.maxOperationsInvoked = sub.value.readUInt16BE(0)
          info.maxOperationsPerformed = sub.value.readUInt16BE(2)
        }

        break
      }

      case ItemType.roleSelection: {
        if (sub.value.length < 4) break
        const length = sub.value.readUInt16BE(0)
        if (2 + length + 2 > sub.value.length) break
        const sopClassUid = trimUid(sub.value.subarray(2, 2 + length))
        info.roleSelections = [...(info.roleSelections ?? []), {sopClassUid, scuRole: sub.value[2 + length] === 1, scpRole: sub.value[3 + length] === 1}]
        break
      }

      default: // extended negotiation, user identity: not used
    }
  }

  return info
}

function decodeAssociate(body: Buffer, accept: boolean): AssociateRequest & {acceptedContexts: PresentationContextResult[]} {
  if (body.length < 68) throw new PduError('association PDU shorter than its fixed fields')
  const result = {
    calledAeTitle: trimAe(body.subarray(4, 20)),
    callingAeTitle: trimAe(body.subarray(20, 36)),
    applicationContext: '',
    presentationContexts: [] as PresentationContextProposal[],
    acceptedContexts: [] as PresentationContextResult[],
    userInformation: {maxPduLength: 0} as UserInformation,
  }
  for (const it of items(body, 68, body.length)) {
    if (it.type === ItemType.applicationContext) {
      result.applicationContext = trimUid(it.value)
    } else if (it.type === ItemType.presentationContextRq && !accept) {
      if (it.value.length < 4) throw new PduError('presentation context item too short')
      const context: PresentationContextProposal = {id: it.value[0], abstractSyntax: '', transferSyntaxes: []}
      for (const sub of items(it.value, 4, it.value.length)) {
        if (sub.type === ItemType.abstractSyntax) context.abstractSyntax = trimUid(sub.value)
        else if (sub.type === ItemType.transferSyntax) context.transferSyntaxes.push(trimUid(sub.value))
      }

      result.presentationContexts.push(context)
    } else if (it.type === ItemType.presentationContextAc && accept) {
      if (it.value.length < 4) throw new PduError('presentation context item too short')
      const context: PresentationContextResult = {id: it.value[0], result: it.value[2], transferSyntax: ''}
      for (const sub of items(it.value, 4, it.value.length)) {
        if (sub.type === ItemType.transferSyntax) context.transferSyntax = trimUid(sub.value)
      }

      result.acceptedContexts.push(context)
    } else if (it.type === ItemType.userInformation) {
      result.userInformation = decodeUserInformation(it.value)
    }
  }

  return result
}

export function decodeAssociateRq(body: Buffer): AssociateRequest {
  const {acceptedContexts: _ignored, ...request} = decodeAssociate(body, false)
  return request
}

export function decodeAssociateAc(body: Buffer): AssociateAccept {
  const decoded = decodeAssociate(body, true)
  return {
    calledAeTitle: decoded.calledAeTitle,
    callingAeTitle: decoded.callingAeTitle,
    applicationContext: decoded.applicationContext,
    presentationContexts: decoded.acceptedContexts,
    userInformation: decoded.userInformation,
  }
}

export function decodeAssociateRj(body: Buffer): AssociateReject {
  if (body.length < 4) throw new PduError('A-ASSOCIATE-RJ shorter than 4 bytes')
  return {result: body[1], source: body[2], reason: body[3]}
}

export function decodeAbort(body: Buffer): {source: number; reason: number} {
  return {source: body[2] ?? 0, reason: body[3] ?? 0}
}

/** Splits a P-DATA-TF body into its PDVs (views on the body, no copies). */
export function decodePData(body: Buffer): Pdv[] {
  const pdvs: Pdv[] = []
  let offset = 0
  while (offset < body.length) {
    if (offset + 6 > body.length) throw new PduError('truncated PDV header in P-DATA-TF')
    const length = body.readUInt32BE(offset)
    if (length < 2 || offset + 4 + length > body.length) throw new PduError(`PDV length ${length} does not fit its P-DATA-TF PDU`)
    const control = body[offset + 5]
    pdvs.push({
      contextId: body[offset + 4],
      isCommand: (control & 0x01) !== 0,
      isLast: (control & 0x02) !== 0,
      data: body.subarray(offset + 6, offset + 4 + length),
    })
    offset += 4 + length
  }

  return pdvs
}

/**
 * Longest A-ASSOCIATE-RQ or -AC body we read: 320 KiB, a third of the former 1 MiB, above any
 * request a conforming peer sends. A request holds at most 128 presentation contexts (PS3.8
 * 9.3.2.2: odd context ids 1-255). Measured: storescu (dcmtk 3.6.7, `-xf` profile) proposing 128
 * storage SOP classes with each of the 45 transfer syntaxes ddr knows sends 157 519 bytes. Worst
 * case by the standard: 128 contexts × (8 item and id bytes + a 64-character abstract syntax in a
 * 68-byte item + 65 transfer syntaxes, about what PS3.6 defines with the retired ones, at 30 bytes
 * an item, their UIDs being at most 26 characters) = 259 328 bytes, plus the user information item
 * at its 16-bit maximum (65 539: user identity, role selection, extended negotiation), plus the
 * application context (25) and fixed fields (68): 324 960 bytes < 327 680. An A-ASSOCIATE-AC is
 * smaller (one transfer syntax per context). Larger is hostile: aborted before it is buffered, so
 * each connection that has not associated yet holds at most this much.
 */
export const MAX_ASSOCIATE_PDU_LENGTH = 320 * 1024

/**
 * A-ASSOCIATE-RJ, A-RELEASE-RQ, A-RELEASE-RP and A-ABORT are 4 bytes long (PS3.8 9.3.4, 9.3.6 to
 * 9.3.8); a little slack for a peer that pads them, nothing more.
 */
export const MAX_FIXED_PDU_LENGTH = 64

const PDU_NAMES: Record<number, string> = {
  [PduType.associateRq]: 'A-ASSOCIATE-RQ',
  [PduType.associateAc]: 'A-ASSOCIATE-AC',
  [PduType.associateRj]: 'A-ASSOCIATE-RJ',
  [PduType.pData]: 'P-DATA-TF',
  [PduType.releaseRq]: 'A-RELEASE-RQ',
  [PduType.releaseRp]: 'A-RELEASE-RP',
  [PduType.abort]: 'A-ABORT',
}

/** The longest body accepted for a PDU type: `maxPduLength` for P-DATA-TF, fixed bounds for the others. */
export function pduLengthLimit(type: number, maxPduLength: number): number {
  if (type === PduType.pData) return maxPduLength
  return type === PduType.associateRq || type === PduType.associateAc ? MAX_ASSOCIATE_PDU_LENGTH : MAX_FIXED_PDU_LENGTH
}

/**
 * Reassembles PDUs from socket chunks. Bounded: a PDU longer than its type allows (see
 * pduLengthLimit) is a protocol error as soon as its header arrives, so a hostile peer cannot make
 * us buffer more than that.
 */
export class PduReader {
  private chunks: Buffer[] = []
  private buffered = 0

  constructor(private readonly maxPduLength: number) {}

  push(chunk: Buffer): void {
    this.chunks.push(chunk)
    this.buffered += chunk.length
  }

  /** The next complete PDU, or undefined when more bytes are needed. */
  next(): {type: number; body: Buffer} | undefined {
    if (this.buffered < 6) return undefined
    const first = this.chunks[0]
    let type: number
    let length: number
    if (first.length >= 6) {
      type = first[0]
      length = first.readUInt32BE(2)
    } else {
      const head = this.copyOut(6, false)
      type = head[0]
      length = head.readUInt32BE(2)
    }

    if (type < PduType.associateRq || type > PduType.abort) throw new PduError(`unknown PDU type 0x${type.toString(16)}`, AbortReason.unrecognizedPdu)
    const limit = pduLengthLimit(type, this.maxPduLength)
    if (length > limit) throw new PduError(`${PDU_NAMES[type]} of ${length} bytes exceeds the limit of ${limit}`, AbortReason.invalidPduParameterValue)
    if (this.buffered < 6 + length) return undefined
    const whole = this.take(6 + length)
    return {type, body: whole.subarray(6)}
  }

  private take(length: number): Buffer {
    const first = this.chunks[0]
    if (first.length >= length) {
      // The common case: a view on the socket's chunk, no copy.
      if (first.length === length) this.chunks.shift()
      else this.chunks[0] = first.subarray(length)
      this.buffered -= length
      return first.subarray(0, length)
    }

    return this.copyOut(length, true)
  }

  /**
   * The next `length` buffered bytes copied into a buffer of their own (a PDU split across socket
   * chunks): only those bytes are copied, the rest stays where it is. `consume` drops them.
   */
  private copyOut(length: number, consume: boolean): Buffer {
    const out = Buffer.allocUnsafe(length)
    let filled = 0
    let index = 0
    while (filled < length) {
      const chunk = this.chunks[index]
      const n = Math.min(chunk.length, length - filled)
      chunk.copy(out, filled, 0, n)
      filled += n
      if (!consume) {
        index++
      } else if (n === chunk.length) {
        this.chunks.shift()
      } else {
        this.chunks[0] = chunk.subarray(n)
      }
    }

    if (consume) this.buffered -= length
    return out
  }
}
