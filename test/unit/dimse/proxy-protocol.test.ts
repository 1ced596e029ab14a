import {ProxyHeaderError, parseProxyHeader} from '../../../src/lib/dimse/proxy-protocol.js'

const SIGNATURE = Buffer.from('0d0a0d0a000d0a515549540a', 'hex')

/** A v2 header: command (0 LOCAL, 1 PROXY), family/protocol byte, address block. */
function v2(command: number, family: number, block: Buffer): Buffer {
  const head = Buffer.alloc(4)
  head[0] = 0x20 | command
  head[1] = family
  head.writeUInt16BE(block.length, 2)
  return Buffer.concat([SIGNATURE, head, block])
}

function ipv4Block(source: number[], sourcePort: number): Buffer {
  const block = Buffer.alloc(12)
  Buffer.from(source).copy(block, 0)
  Buffer.from([10, 0, 0, 1]).copy(block, 4)
  block.writeUInt16BE(sourcePort, 8)
  block.writeUInt16BE(11_112, 10)
  return block
}

describe('PROXY protocol header', () => {
  const association = Buffer.from([0x01, 0x00, 0x00, 0x00]) // the A-ASSOCIATE-RQ that follows

  it('reads a v1 TCP4/TCP6 header and says where the DICOM bytes start', () => {
    const header = Buffer.from('PROXY TCP4 192.168.7.20 10.0.0.1 40123 11112\r\n')
    expect(parseProxyHeader(Buffer.concat([header, association]))).toEqual({peer: {address: '192.168.7.20', port: 40_123}, length: header.length})
    expect(parseProxyHeader(Buffer.from('PROXY TCP6 2001:db8::7 2001:db8::1 5000 11112\r\n'))?.peer).toEqual({address: '2001:db8::7', port: 5000})
    expect(parseProxyHeader(Buffer.from('PROXY UNKNOWN\r\n'))).toEqual({peer: undefined, length: 15})
  })

  it('reads a v2 header: IPv4, IPv6 (short form, IPv4-mapped), LOCAL (a health check) and TLVs after the addresses', () => {
    const four = v2(1, 0x11, ipv4Block([172, 16, 4, 9], 50_000))
    expect(parseProxyHeader(Buffer.concat([four, association]))).toEqual({peer: {address: '172.16.4.9', port: 50_000}, length: 28})

    const six = Buffer.alloc(36)
    Buffer.from('20010db8000000000000000000000007', 'hex').copy(six, 0)
    six.writeUInt16BE(6000, 32)
    expect(parseProxyHeader(v2(1, 0x21, six))?.peer).toEqual({address: '2001:db8::7', port: 6000})
    const mapped = Buffer.alloc(36)
    Buffer.from('00000000000000000000ffffc0a80105', 'hex').copy(mapped, 0)
    expect(parseProxyHeader(v2(1, 0x21, mapped))?.peer?.address).toBe('::ffff:192.168.1.5')

    expect(parseProxyHeader(v2(0, 0x00, Buffer.alloc(0)))).toEqual({peer: undefined, length: 16})
    const withTlv = v2(1, 0x11, Buffer.concat([ipv4Block([10, 9, 8, 7], 1), Buffer.from([0x04, 0x00, 0x01, 0x00])]))
    expect(parseProxyHeader(withTlv)).toEqual({peer: {address: '10.9.8.7', port: 1}, length: 32})
  })

  it('asks for more bytes while a header is incomplete', () => {
    const header = v2(1, 0x11, ipv4Block([10, 1, 1, 1], 7))
    for (const length of [1, 11, 12, 15, 16, 27]) expect(parseProxyHeader(header.subarray(0, length))).toBeUndefined()
    expect(parseProxyHeader(Buffer.from('PROXY TCP4 10.1'))).toBeUndefined()
    expect(parseProxyHeader(Buffer.from('PRO'))).toBeUndefined()
  })

  it('refuses what is not a PROXY header: a sender that bypassed the balancer, garbage, a header too long', () => {
    expect(() => parseProxyHeader(association)).toThrow(ProxyHeaderError)
    expect(() => parseProxyHeader(Buffer.from('GET / HTTP/1.1\r\n'))).toThrow(ProxyHeaderError)
    expect(() => parseProxyHeader(Buffer.from('PROXY TCP4 not-an-address 10.0.0.1 1 2\r\n'))).toThrow(/malformed PROXY v1 header/)
    expect(() => parseProxyHeader(Buffer.from('PROXY TCP4 10.0.0.2 10.0.0.1 99999 2\r\n'))).toThrow(/malformed/)
    expect(() => parseProxyHeader(Buffer.from(`PROXY TCP4 ${'1'.repeat(120)}`))).toThrow(/longer than 107 bytes/)
    const v3 = v2(1, 0x11, ipv4Block([10, 1, 1, 1], 7))
    v3[12] = 0x31
    expect(() => parseProxyHeader(v3)).toThrow(/version 3/)
  })
})
