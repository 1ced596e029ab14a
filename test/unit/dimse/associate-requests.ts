import {APPLICATION_CONTEXT, encodeAssociateRq} from '../../../src/lib/dimse/pdu.js'

const USER_INFORMATION = 0x50
const MAX_LENGTH = 0x51
const USER_IDENTITY = 0x58

function item(type: number, body: Buffer): Buffer {
  const header = Buffer.alloc(4)
  header[0] = type
  header.writeUInt16BE(body.length, 2)
  return Buffer.concat([header, body])
}

/** A UID of exactly `length` characters under `root`. */
function uidOf(root: string, index: number, length: number): string {
  const tail = `.${index + 1}`
  return `${root}.${'9'.repeat(Math.max(0, length - root.length - 1 - tail.length))}${tail}`.slice(0, length)
}

/**
 * The largest A-ASSOCIATE-RQ a conforming peer could send (see MAX_ASSOCIATE_PDU_LENGTH): 128
 * presentation contexts, each a 64-character storage SOP class UID with 65 transfer syntaxes of 26
 * characters (Explicit VR Little Endian among them, so a listener can accept it), and a user
 * information item at its 16-bit maximum (a user identity sub-item fills it).
 */
export function largestAssociateRq(options: {calledAeTitle?: string} = {}): Buffer {
  const transferSyntaxes = ['1.2.840.10008.1.2.1', ...Array.from({length: 64}, (_, index) => uidOf('1.2.840.10008.1.2.4', index, 26))]
  const base = encodeAssociateRq({
    calledAeTitle: options.calledAeTitle ?? 'DDR',
    callingAeTitle: 'BIG_PROPOSER',
    applicationContext: APPLICATION_CONTEXT,
    presentationContexts: Array.from({length: 128}, (_, index) => ({id: 2 * index + 1, abstractSyntax: uidOf('1.2.840.10008.5.1.4.1.1', index, 64), transferSyntaxes})),
    userInformation: {maxPduLength: 16_384},
  })
  // Replace the encoder's small user information item (the last one) with one of 65 535 bytes.
  let offset = 6 + 68
  while (base[offset] !== USER_INFORMATION) offset += 4 + base.readUInt16BE(offset + 2)
  const maxLength = Buffer.alloc(4)
  maxLength.writeUInt32BE(16_384, 0)
  const identityHead = Buffer.from([1, 0, 0, 0]) // username, no response requested, primary length follows
  const primaryLength = 65_535 - item(MAX_LENGTH, maxLength).length - 4 - identityHead.length - 2
  identityHead.writeUInt16BE(primaryLength, 2)
  const identity = item(USER_IDENTITY, Buffer.concat([identityHead, Buffer.alloc(primaryLength, 0x61), Buffer.alloc(2)]))
  const userInformation = item(USER_INFORMATION, Buffer.concat([item(MAX_LENGTH, maxLength), identity]))
  const body = Buffer.concat([base.subarray(6, offset), userInformation])
  const header = Buffer.alloc(6)
  header[0] = base[0]
  header.writeUInt32BE(body.length, 2)
  return Buffer.concat([header, body])
}
