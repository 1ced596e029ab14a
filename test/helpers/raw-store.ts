import net from 'node:net'

import {CommandField, CommandTag, commandNumber, commandString, decodeCommand, encodeCommand} from '../../src/lib/dimse/command.js'
import {APPLICATION_CONTEXT, ContextResult, PduReader, PduType, decodeAssociateAc, decodePData, encodeAssociateRq, encodeReleaseRq, pDataHeader} from '../../src/lib/dimse/pdu.js'

/** One C-STORE written byte by byte as the test says, whatever the standard allows. */
export interface RawStore {
  /** The presentation context's abstract syntax. */
  abstractSyntax: string
  transferSyntax: string
  /** Propose these transfer syntaxes for the context (default: only transferSyntax); the command is sent in the accepted one. */
  proposeTransferSyntaxes?: string[]
  /** The command's Affected SOP Class UID (default: the abstract syntax). */
  commandSopClassUid?: string
  sopInstanceUid: string
  /** The dataset as P-DATA fragments, one PDV each, sent as they are (odd lengths included). */
  fragments: Buffer[]
}

export interface RawStoreResult {
  status: number
  errorComment?: string
  /** How long from the last fragment to the answer. */
  ms: number
}

/**
 * A DICOM sender with no safety belt: it associates, sends each C-STORE's fragments exactly as
 * given, and returns each answer (undefined when the peer aborted or closed instead). Our own
 * SCU refuses to send malformed data; the tests of a receiver need a sender that does not.
 */
export async function rawStores(port: number, calledAeTitle: string, stores: RawStore[], timeoutMs = 20_000, acceptedOut?: Array<{id: number; result: number; transferSyntax: string}>): Promise<Array<RawStoreResult | undefined>> {
  const socket = net.connect({host: '127.0.0.1', port})
  socket.setNoDelay(true)
  await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject))
  const reader = new PduReader(1 << 22)
  const waiting: Array<(pdu: {type: number; body: Buffer} | undefined) => void> = []
  const arrived: Array<{type: number; body: Buffer} | undefined> = []
  const deliver = (pdu: {type: number; body: Buffer} | undefined) => {
    const waiter = waiting.shift()
    if (waiter) waiter(pdu)
    else arrived.push(pdu)
  }

  socket.on('data', (chunk) => {
    reader.push(chunk)
    for (let pdu = reader.next(); pdu !== undefined; pdu = reader.next()) deliver(pdu)
  })
  socket.on('close', () => deliver(undefined))
  socket.on('error', () => {})
  const nextPdu = () =>
    new Promise<{type: number; body: Buffer} | undefined>((resolve, reject) => {
      if (arrived.length > 0) return resolve(arrived.shift())
      const timer = setTimeout(() => reject(new Error(`no PDU from the peer within ${timeoutMs} ms`)), timeoutMs)
      waiting.push((pdu) => {
        clearTimeout(timer)
        resolve(pdu)
      })
    })

  const contexts = stores.map((store, index) => ({id: index * 2 + 1, abstractSyntax: store.abstractSyntax, transferSyntaxes: store.proposeTransferSyntaxes ?? [store.transferSyntax]}))
  socket.write(encodeAssociateRq({calledAeTitle, callingAeTitle: 'RAWSENDER', applicationContext: APPLICATION_CONTEXT, presentationContexts: contexts, userInformation: {maxPduLength: 1 << 20}}))
  const ac = await nextPdu()
  if (ac?.type !== PduType.associateAc) throw new Error(`association not accepted (PDU type ${ac?.type})`)
  const accepted = decodeAssociateAc(ac.body).presentationContexts
  acceptedOut?.push(...accepted.map((c) => ({id: c.id, result: c.result, transferSyntax: c.transferSyntax})))
  if (stores.every((store) => store.fragments.length === 0)) {
    socket.destroy()
    return []
  }

  const results: Array<RawStoreResult | undefined> = []
  try {
    for (const [index, store] of stores.entries()) {
      const contextId = index * 2 + 1
      if (accepted.find((c) => c.id === contextId)?.result !== ContextResult.acceptance) throw new Error(`context ${contextId} (${store.abstractSyntax} in ${store.transferSyntax}) was not accepted`)
      const command = encodeCommand([
        [CommandTag.affectedSopClassUid, store.commandSopClassUid ?? store.abstractSyntax],
        [CommandTag.commandField, CommandField.cStoreRq],
        [CommandTag.messageId, index + 1],
        [CommandTag.priority, 0],
        [CommandTag.commandDataSetType, 0],
        [CommandTag.affectedSopInstanceUid, store.sopInstanceUid],
      ])
      socket.write(Buffer.concat([pDataHeader(contextId, true, true, command.length), command]))
      for (const [n, fragment] of store.fragments.entries()) socket.write(Buffer.concat([pDataHeader(contextId, false, n === store.fragments.length - 1, fragment.length), fragment]))
      const sentAt = performance.now()
      const answer = await nextPdu()
      if (answer === undefined || answer.type !== PduType.pData) {
        results.push(undefined)
        return results
      }

      const response = decodeCommand(Buffer.concat(decodePData(answer.body).map((pdv) => pdv.data)))
      results.push({status: commandNumber(response, CommandTag.status) ?? -1, errorComment: commandString(response, CommandTag.errorComment), ms: performance.now() - sentAt})
    }

    socket.write(encodeReleaseRq())
    await nextPdu().catch(() => undefined)
    return results
  } finally {
    socket.destroy()
  }
}
