import type net from 'node:net'

/**
 * The PROXY protocol (HAProxy's `send-proxy` / `send-proxy-v2`, versions 1 and 2): a load balancer
 * in TCP mode opens each connection to the router with one header that names the client's own
 * address, so that the router's address allow-list and logs see the sender, not the balancer.
 * Spec: https://www.haproxy.org/download/2.6/doc/proxy-protocol.txt
 */

/** The client a PROXY header names; undefined for a LOCAL (v2) or UNKNOWN (v1) connection: a health check of the balancer itself. */
export type ProxiedPeer = {address: string; port: number} | undefined

const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a])
const V1_PREFIX = Buffer.from('PROXY ')
/** A v1 header is at most 107 bytes, CRLF included. */
const V1_MAX = 107
/** A v2 header's address block (and TLVs) is bounded by its 16-bit length; a balancer sends far less. */
const V2_MAX_BLOCK = 4096

export class ProxyHeaderError extends Error {}

/**
 * Parses the PROXY header at the start of `data`: the peer it names and how many bytes it took, or
 * undefined when more bytes are needed. Throws ProxyHeaderError when `data` does not start with a
 * valid header (a client that bypassed the balancer, or something else on the port).
 */
export function parseProxyHeader(data: Buffer): {peer: ProxiedPeer; length: number} | undefined {
  const prefix = Math.min(data.length, V2_SIGNATURE.length)
  if (data.subarray(0, prefix).equals(V2_SIGNATURE.subarray(0, prefix))) {
    if (data.length < 16) return undefined
    return parseV2(data)
  }

  const head = Math.min(data.length, V1_PREFIX.length)
  if (!data.subarray(0, head).equals(V1_PREFIX.subarray(0, head))) throw new ProxyHeaderError('the connection does not start with a PROXY protocol header')
  const end = data.indexOf('\r\n')
  if (end === -1) {
    if (data.length >= V1_MAX) throw new ProxyHeaderError('PROXY v1 header longer than 107 bytes')
    return undefined
  }

  if (end + 2 > V1_MAX) throw new ProxyHeaderError('PROXY v1 header longer than 107 bytes')
  const fields = data.toString('latin1', 6, end).split(' ')
  if (fields[0] === 'UNKNOWN') return {peer: undefined, length: end + 2}
  if ((fields[0] !== 'TCP4' && fields[0] !== 'TCP6') || fields.length !== 5) throw new ProxyHeaderError(`malformed PROXY v1 header "${data.toString('latin1', 0, end)}"`)
  const port = Number(fields[3])
  if (!Number.isInteger(port) || port < 0 || port > 65_535 || !/^[0-9A-Fa-f.:]+$/.test(fields[1])) throw new ProxyHeaderError(`malformed PROXY v1 header "${data.toString('latin1', 0, end)}"`)
  return {peer: {address: fields[1], port}, length: end + 2}
}

function parseV2(data: Buffer): {peer: ProxiedPeer; length: number} | undefined {
  const versionCommand = data[12]
  if (versionCommand >> 4 !== 2) throw new ProxyHeaderError(`PROXY v2 header with version ${versionCommand >> 4}`)
  const command = versionCommand & 0x0f
  const blockLength = data.readUInt16BE(14)
  if (blockLength > V2_MAX_BLOCK) throw new ProxyHeaderError(`PROXY v2 header of ${blockLength} bytes`)
  const length = 16 + blockLength
  if (data.length < length) return undefined
  if (command === 0x0) return {peer: undefined, length} // LOCAL: the balancer's own connection
  if (command !== 0x1) throw new ProxyHeaderError(`PROXY v2 header with command ${command}`)
  const family = data[13] >> 4
  if (family === 0x1 && blockLength >= 12) {
    const address = [...data.subarray(16, 20)].join('.')
    return {peer: {address, port: data.readUInt16BE(24)}, length}
  }

  if (family === 0x2 && blockLength >= 36) {
    const groups: string[] = []
    for (let i = 0; i < 8; i++) groups.push(data.readUInt16BE(16 + i * 2).toString(16))
    return {peer: {address: compressIpv6(groups), port: data.readUInt16BE(48)}, length}
  }

  // UNSPEC or a UNIX socket: no IP address to report; the connection's own address stands.
  return {peer: undefined, length}
}

/** An IPv6 address in its usual short form (the longest run of zero groups as "::"), and IPv4-mapped as ::ffff:a.b.c.d. */
function compressIpv6(groups: string[]): string {
  if (groups.slice(0, 5).every((g) => g === '0') && groups[5] === 'ffff') {
    const [high, low] = [Number.parseInt(groups[6], 16), Number.parseInt(groups[7], 16)]
    return `::ffff:${high >> 8}.${high & 0xff}.${low >> 8}.${low & 0xff}`
  }

  let best = {start: -1, length: 0}
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++
      continue
    }

    let j = i
    while (j < 8 && groups[j] === '0') j++
    if (j - i > best.length && j - i > 1) best = {start: i, length: j - i}
    i = j
  }

  if (best.start === -1) return groups.join(':')
  return `${groups.slice(0, best.start).join(':')}::${groups.slice(best.start + best.length).join(':')}`
}

/**
 * Reads the PROXY header off a new connection. Resolves with the peer it names once the header is
 * in (any bytes after it are put back on the socket, which is left paused); rejects with
 * ProxyHeaderError for a connection without a valid header, or one that sends none within `timeoutMs`.
 */
export function readProxyHeader(socket: net.Socket, timeoutMs: number): Promise<ProxiedPeer> {
  return new Promise((resolve, reject) => {
    let received: Buffer = Buffer.alloc(0)
    const finish = (error: Error | undefined, peer?: ProxiedPeer, rest?: Buffer) => {
      clearTimeout(timer)
      socket.off('data', onData)
      socket.off('close', onClose)
      socket.pause()
      if (error !== undefined) {
        reject(error)
        return
      }

      if (rest !== undefined && rest.length > 0) socket.unshift(rest)
      resolve(peer)
    }

    const onData = (chunk: Buffer) => {
      received = received.length === 0 ? chunk : Buffer.concat([received, chunk])
      try {
        const parsed = parseProxyHeader(received)
        if (parsed !== undefined) finish(undefined, parsed.peer, received.subarray(parsed.length))
      } catch (error) {
        finish(error as Error)
      }
    }

    const onClose = () => finish(new ProxyHeaderError('the connection closed before its PROXY header'))
    const timer = setTimeout(() => finish(new ProxyHeaderError(`no PROXY header within ${timeoutMs} ms`)), timeoutMs)
    socket.on('data', onData)
    socket.once('close', onClose)
  })
}
