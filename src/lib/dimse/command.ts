/**
 * DIMSE command sets (PS3.7 section 9 and 10): group 0000 elements, always implicit VR little endian.
 */
import {PduError} from './pdu.js'

export const CommandTag = {
  groupLength: 0x00000000,
  affectedSopClassUid: 0x00000002,
  requestedSopClassUid: 0x00000003,
  commandField: 0x00000100,
  messageId: 0x00000110,
  messageIdBeingRespondedTo: 0x00000120,
  moveDestination: 0x00000600,
  priority: 0x00000700,
  commandDataSetType: 0x00000800,
  status: 0x00000900,
  errorComment: 0x00000902,
  affectedSopInstanceUid: 0x00001000,
  requestedSopInstanceUid: 0x00001001,
  numberOfRemainingSuboperations: 0x00001020,
  numberOfCompletedSuboperations: 0x00001021,
  numberOfFailedSuboperations: 0x00001022,
  numberOfWarningSuboperations: 0x00001023,
  moveOriginatorAeTitle: 0x00001030,
  moveOriginatorMessageId: 0x00001031,
} as const

export const CommandField = {
  cStoreRq: 0x0001,
  cStoreRsp: 0x8001,
  cGetRq: 0x0010,
  cGetRsp: 0x8010,
  cFindRq: 0x0020,
  cFindRsp: 0x8020,
  cMoveRq: 0x0021,
  cMoveRsp: 0x8021,
  cEchoRq: 0x0030,
  cEchoRsp: 0x8030,
  cCancelRq: 0x0fff,
} as const

/** CommandDataSetType value meaning "no dataset follows". */
export const NO_DATASET = 0x0101
/** A CommandDataSetType value meaning "a dataset follows" (any value but 0x0101 does). */
export const DATASET_FOLLOWS = 0x0102

type Vr = 'UI' | 'US' | 'UL' | 'AE' | 'LO'

const VR_OF: Record<number, Vr> = {
  [CommandTag.groupLength]: 'UL',
  [CommandTag.affectedSopClassUid]: 'UI',
  [CommandTag.requestedSopClassUid]: 'UI',
  [CommandTag.commandField]: 'US',
  [CommandTag.messageId]: 'US',
  [CommandTag.messageIdBeingRespondedTo]: 'US',
  [CommandTag.moveDestination]: 'AE',
  [CommandTag.priority]: 'US',
  [CommandTag.commandDataSetType]: 'US',
  [CommandTag.status]: 'US',
  [CommandTag.errorComment]: 'LO',
  [CommandTag.affectedSopInstanceUid]: 'UI',
  [CommandTag.requestedSopInstanceUid]: 'UI',
  [CommandTag.numberOfRemainingSuboperations]: 'US',
  [CommandTag.numberOfCompletedSuboperations]: 'US',
  [CommandTag.numberOfFailedSuboperations]: 'US',
  [CommandTag.numberOfWarningSuboperations]: 'US',
  [CommandTag.moveOriginatorAeTitle]: 'AE',
  [CommandTag.moveOriginatorMessageId]: 'US',
}

/** A decoded command: numbers for US/UL elements, strings for the rest; unknown elements are kept as raw bytes. */
export type CommandSet = Map<number, number | string | Buffer>

/** Bytes of a value as encoded: US 2, UL 4, text padded to even length (UI with NUL, others with a space). */
function valueLength(vr: Vr, value: number | string): number {
  if (vr === 'US') return 2
  if (vr === 'UL') return 4
  const length = String(value).length
  return length + (length % 2)
}

/**
 * Encodes a command set with its group length; elements are written in tag order. Sized first and
 * written into one buffer: every request and response on the data path goes through here.
 */
export function encodeCommand(fields: Array<[number, number | string]>): Buffer {
  let sorted = fields
  for (let i = 1; i < fields.length; i++) {
    if (fields[i - 1][0] > fields[i][0]) {
      sorted = [...fields].sort((a, b) => a[0] - b[0])
      break
    }
  }

  let length = 0
  for (const [tag, value] of sorted) {
    const vr = VR_OF[tag]
    if (vr === undefined) throw new Error(`no VR known for command tag ${tag.toString(16)}`)
    length += 8 + valueLength(vr, value)
  }

  const out = Buffer.allocUnsafe(12 + length)
  out.writeUInt32LE(0, 0) // (0000,0000) group length, UL
  out.writeUInt32LE(4, 4)
  out.writeUInt32LE(length, 8)
  let offset = 12
  for (const [tag, value] of sorted) {
    const vr = VR_OF[tag]
    const valueBytes = valueLength(vr, value)
    out.writeUInt16LE(tag >>> 16, offset)
    out.writeUInt16LE(tag & 0xffff, offset + 2)
    out.writeUInt32LE(valueBytes, offset + 4)
    offset += 8
    if (vr === 'US') {
      out.writeUInt16LE(value as number, offset)
    } else if (vr === 'UL') {
      out.writeUInt32LE(value as number, offset)
    } else {
      const text = String(value)
      out.write(text, offset, 'latin1')
      if (text.length % 2 === 1) out[offset + text.length] = vr === 'UI' ? 0 : 0x20
    }

    offset += valueBytes
  }

  return out
}

export function decodeCommand(buffer: Buffer): CommandSet {
  const command: CommandSet = new Map()
  let offset = 0
  while (offset < buffer.length) {
    if (offset + 8 > buffer.length) throw new PduError('truncated element in DIMSE command set')
    const group = buffer.readUInt16LE(offset)
    const element = buffer.readUInt16LE(offset + 2)
    const length = buffer.readUInt32LE(offset + 4)
    if (group !== 0) throw new PduError(`DIMSE command set holds a non-command element (${group.toString(16)},${element.toString(16)})`)
    if (offset + 8 + length > buffer.length) throw new PduError('DIMSE command element longer than its command set')
    const tag = element
    const value = buffer.subarray(offset + 8, offset + 8 + length)
    const vr = VR_OF[tag]
    if (vr === 'US' && length >= 2) command.set(tag, value.readUInt16LE(0))
    else if (vr === 'UL' && length >= 4) command.set(tag, value.readUInt32LE(0))
    else if (vr === 'UI') command.set(tag, value.toString('latin1').replace(/[\0 ]+$/, ''))
    else if (vr === 'AE' || vr === 'LO') command.set(tag, value.toString('latin1').trim())
    else command.set(tag, Buffer.from(value))
    offset += 8 + length
  }

  return command
}

export function commandNumber(command: CommandSet, tag: number): number | undefined {
  const value = command.get(tag)
  return typeof value === 'number' ? value : undefined
}

export function commandString(command: CommandSet, tag: number): string | undefined {
  const value = command.get(tag)
  return typeof value === 'string' ? value : undefined
}
