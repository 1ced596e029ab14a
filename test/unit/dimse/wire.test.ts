import type {Socket} from 'node:net'

import {maxFragment, writePdvList, writePdvs} from '../../../src/lib/dimse/wire.js'

/** A socket that keeps what is written to it. */
function recorder(): {socket: Socket; bytes: () => Buffer; writes: () => number} {
  const written: Buffer[] = []
  const socket = {cork() {}, uncork() {}, write: (chunk: Buffer) => written.push(Buffer.from(chunk)) > 0} as unknown as Socket
  return {socket, bytes: () => Buffer.concat(written), writes: () => written.length}
}

describe('writePdvList', () => {
  const data = Buffer.from(Array.from({length: 40_000}, (_, i) => i % 251))

  it('puts the same bytes on the wire as writePdvs of the fragments copied together, whatever the cuts', () => {
    for (const maxPdu of [0, 16_384, 4096, 300]) {
      const whole = recorder()
      writePdvs(whole.socket, 3, false, data, maxPdu)
      for (const cuts of [[40_000], [16_372, 16_372, 7256], [1, 2, 39_997], [10_000, 0, 30_000], [20_000, 19_998, 2]]) {
        let at = 0
        const parts = cuts.map((n) => data.subarray(at, (at += n)))
        const list = recorder()
        writePdvList(list.socket, 3, false, parts, maxPdu)
        expect(list.bytes().equals(whole.bytes())).toBe(true)
      }
    }
  })

  it('writes views on the fragments, not copies: one header and at most two pieces per PDV', () => {
    const parts = [data.subarray(0, 16_372), data.subarray(16_372, 32_744), data.subarray(32_744)]
    const list = recorder()
    writePdvList(list.socket, 1, false, parts, 16_384)
    const pdvs = Math.ceil(data.length / maxFragment(16_384))
    expect(list.writes()).toBeLessThanOrEqual(pdvs * 3)
  })

  it('marks only the last PDV as last, and sends an empty part as one empty PDV', () => {
    const list = recorder()
    writePdvList(list.socket, 1, true, [Buffer.alloc(0), Buffer.alloc(0)], 16_384)
    expect([...list.bytes()]).toEqual([0x04, 0, 0, 0, 0, 6, 0, 0, 0, 2, 1, 0x03])
  })
})
