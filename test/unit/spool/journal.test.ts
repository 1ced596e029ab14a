import {appendFileSync, mkdtempSync, readdirSync, rmSync, statSync, truncateSync, writeFileSync, readFileSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'

import {Journal} from '../../../src/lib/spool/journal.js'

describe('Journal', () => {
  let dir: string

  beforeEach(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'ddr-journal-'))
  })

  afterEach(() => rmSync(dir, {recursive: true, force: true}))

  const payload = (n: number) => Buffer.from(`meta-${n}|dataset-${'x'.repeat(n)}`)

  it('reads back every appended record after a restart, in order, byte for byte', async () => {
    const journal = new Journal(dir)
    await journal.open()
    await Promise.all([1, 2, 3].map((n) => journal.append(`id-${n}`, [payload(n).subarray(0, 6), payload(n).subarray(6)])))
    await journal.close()
    const records = await new Journal(dir).open()
    expect(records.map((r) => r.id)).toEqual(['id-1', 'id-2', 'id-3'])
    expect(records.map((r) => r.payload.toString())).toEqual([1, 2, 3].map((n) => payload(n).toString()))
    const segment = readFileSync(records[1].segment.path)
    expect(segment.subarray(records[1].payloadOffset, records[1].payloadOffset + records[1].payloadLength)).toEqual(payload(2))
  })

  it('drops a torn last record (never acknowledged) and keeps the ones before it', async () => {
    const journal = new Journal(dir, undefined, {preallocateBytes: 0})
    await journal.open()
    for (const n of [1, 2, 3]) await journal.append(`id-${n}`, [payload(n)])
    await journal.close()
    const [file] = readdirSync(dir)
    truncateSync(path.join(dir, file), statSync(path.join(dir, file)).size - 3)
    const records = await new Journal(dir).open()
    expect(records.map((r) => r.id)).toEqual(['id-1', 'id-2'])
  })

  it('drops a record torn inside preallocated space (its tail still zeros)', async () => {
    const journal = new Journal(dir)
    await journal.open()
    const written = []
    for (const n of [1, 2, 3]) written.push(await journal.append(`id-${n}`, [payload(n)]))
    await journal.close()
    const last = written[2]
    const file = last.segment.path
    const content = readFileSync(file)
    content.fill(0, last.payloadOffset + last.payloadLength - 3, last.payloadOffset + last.payloadLength)
    writeFileSync(file, content)
    expect((await new Journal(dir).open()).map((r) => r.id)).toEqual(['id-1', 'id-2'])
  })

  it('writes records into zeros written ahead, so appending does not grow the file each time', async () => {
    const journal = new Journal(dir, 64 * 1024 * 1024, {preallocateBytes: 1024 * 1024})
    await journal.open()
    const first = await journal.append('id-1', [Buffer.alloc(1000, 1)])
    const sizeAfterFirst = statSync(first.segment.path).size
    expect(sizeAfterFirst).toBeGreaterThanOrEqual(1024 * 1024)
    for (let n = 2; n <= 20; n++) await journal.append(`id-${n}`, [Buffer.alloc(1000, n)])
    expect(statSync(first.segment.path).size).toBe(sizeAfterFirst)
    // Past half of the space, the next zeros are written ahead; a record larger than all of it is appended.
    const big = await journal.append('id-big', [Buffer.alloc(3 * 1024 * 1024, 7)])
    await journal.append('id-after', [Buffer.alloc(10, 8)])
    await journal.close()
    const records = await new Journal(dir).open()
    expect(records.map((r) => r.id)).toEqual([...Array.from({length: 20}, (_, i) => `id-${i + 1}`), 'id-big', 'id-after'])
    expect(records.find((r) => r.id === 'id-big')!.payload.equals(Buffer.alloc(3 * 1024 * 1024, 7))).toBe(true)
    expect(big.payloadOffset).toBe(records.find((r) => r.id === 'id-big')!.payloadOffset)
  })

  it('stops at a damaged record (checksum) and at garbage', async () => {
    const journal = new Journal(dir, undefined, {preallocateBytes: 0})
    await journal.open()
    for (const n of [1, 2]) await journal.append(`id-${n}`, [payload(n)])
    await journal.close()
    const [file] = readdirSync(dir)
    const content = readFileSync(path.join(dir, file))
    content[content.length - 1] ^= 0xff
    writeFileSync(path.join(dir, file), content)
    appendFileSync(path.join(dir, file), Buffer.from('garbage after the end'))
    expect((await new Journal(dir).open()).map((r) => r.id)).toEqual(['id-1'])
  })

  it('does not hand back records that were delivered before a restart (the .done list)', async () => {
    const journal = new Journal(dir)
    await journal.open()
    const records = []
    for (const n of [1, 2, 3, 4]) records.push(await journal.append(`id-${n}`, [payload(n)]))
    await journal.release(records[0])
    await journal.release(records[2])
    await journal.close()
    const again = new Journal(dir)
    const recovered = await again.open()
    expect(recovered.map((r) => r.id)).toEqual(['id-2', 'id-4'])
    // Released after the restart too: the segment and its list go once nothing is left.
    for (const record of recovered) await again.release(record)
    await again.close()
    expect(readdirSync(dir)).toEqual([])
  })

  it('ignores a torn last line of the .done list and removes a list without its segment', async () => {
    const journal = new Journal(dir)
    await journal.open()
    const records = []
    for (const n of [1, 2]) records.push(await journal.append(`id-${n}`, [payload(n)]))
    await journal.close()
    const segment = records[0].segment.path
    const done = segment.replace(/\.log$/, '.done')
    writeFileSync(done, 'id-1\nid-')
    writeFileSync(path.join(dir, 'seg-99999999.done'), 'id-7\n')
    expect((await new Journal(dir).open()).map((r) => r.id)).toEqual(['id-2'])
    expect(readdirSync(dir).sort()).toEqual([path.basename(segment).replace(/\.log$/, '.done'), path.basename(segment)].sort())
  })

  it('deletes a recovered segment once all its records are released', async () => {
    const journal = new Journal(dir)
    await journal.open()
    for (const n of [1, 2]) await journal.append(`id-${n}`, [payload(n)])
    await journal.close()
    const again = new Journal(dir)
    const records = await again.open()
    await again.release(records[0])
    expect(readdirSync(dir).filter((name) => name.endsWith('.log'))).toHaveLength(1)
    await again.release(records[1])
    await new Promise((resolve) => setImmediate(resolve))
    expect(readdirSync(dir)).toHaveLength(0)
  })

  it('rotates to a new segment when one is full and removes the old one once released', async () => {
    const journal = new Journal(dir, 256)
    await journal.open()
    const first = await journal.append('id-1', [Buffer.alloc(200, 1)])
    const second = await journal.append('id-2', [Buffer.alloc(200, 2)])
    expect(first.segment).not.toBe(second.segment)
    expect(readdirSync(dir)).toHaveLength(2)
    await journal.release(first)
    expect(readdirSync(dir)).toHaveLength(1)
    await journal.close()
  })
})
