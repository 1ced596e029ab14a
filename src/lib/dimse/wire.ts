import type {Socket} from 'node:net'

import {pDataHeader} from './pdu.js'

/** Largest PDV payload that fits a peer's maximum PDU length (0 means unlimited). */
export function maxFragment(peerMaxPduLength: number): number {
  const limit = peerMaxPduLength === 0 ? 1 << 20 : Math.min(peerMaxPduLength, 1 << 20)
  return Math.max(limit - 6, 256)
}

/**
 * Writes a whole message part (command or dataset bytes held in memory) as P-DATA-TF PDUs with one
 * PDV each, fragmented to the peer's maximum PDU length; `last` marks whether this ends the part.
 * Returns false when the socket asked us to wait for 'drain'.
 */
export function writePdvs(socket: Socket, contextId: number, isCommand: boolean, data: Buffer, peerMaxPduLength: number, last = true): boolean {
  const fragment = maxFragment(peerMaxPduLength)
  let ok = true
  socket.cork()
  if (data.length === 0) {
    ok = socket.write(pDataHeader(contextId, isCommand, last, 0))
  }

  for (let offset = 0; offset < data.length; offset += fragment) {
    const end = Math.min(offset + fragment, data.length)
    const isLast = last && end === data.length
    socket.write(pDataHeader(contextId, isCommand, isLast, end - offset))
    ok = socket.write(data.subarray(offset, end))
  }

  process.nextTick(() => socket.uncork())
  return ok
}

/**
 * As writePdvs, for a message part held as several buffers in order (a dataset as its fragments
 * arrived): PDVs are cut to the peer's maximum PDU length across the buffers, and each goes out as
 * its header and views on the buffers, nothing copied together.
 */
export function writePdvList(socket: Socket, contextId: number, isCommand: boolean, parts: readonly Buffer[], peerMaxPduLength: number, last = true): boolean {
  if (parts.length === 1) return writePdvs(socket, contextId, isCommand, parts[0], peerMaxPduLength, last)
  const fragment = maxFragment(peerMaxPduLength)
  let total = 0
  for (const part of parts) total += part.length
  let ok = true
  socket.cork()
  if (total === 0) ok = socket.write(pDataHeader(contextId, isCommand, last, 0))
  let index = 0
  let within = 0
  for (let sent = 0; sent < total; ) {
    const length = Math.min(fragment, total - sent)
    sent += length
    socket.write(pDataHeader(contextId, isCommand, last && sent === total, length))
    for (let left = length; left > 0; ) {
      const part = parts[index]
      const take = Math.min(part.length - within, left)
      if (take > 0) ok = socket.write(within === 0 && take === part.length ? part : part.subarray(within, within + take))
      left -= take
      within += take
      if (within === part.length) {
        index++
        within = 0
      }
    }
  }

  process.nextTick(() => socket.uncork())
  return ok
}
