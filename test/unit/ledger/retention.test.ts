import {mkdtempSync, readdirSync, rmSync} from 'node:fs'
import os from 'node:os'
import path from 'node:path'

import type {ReceivedInstance} from '../../../src/lib/dicom/received-instance.js'
import {readFileSlice} from '../../../src/lib/fs/durable.js'
import {RetentionStore, extractRetained} from '../../../src/lib/ledger/retention.js'
import {Journal} from '../../../src/lib/spool/journal.js'

describe('RetentionStore', () => {
  let dir: string

  beforeEach(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'ddr-retention-'))
  })

  afterEach(() => rmSync(dir, {recursive: true, force: true}))

  const meta = Buffer.from('META-HEADER-')
  const datasetOf = (n: number) => Buffer.alloc(1000 + n * 2, n)

  /** An instance spooled in a journal record, as the intake makes it. */
  async function spooled(journal: Journal, n: number): Promise<ReceivedInstance> {
    const dataset = datasetOf(n)
    const record = await journal.append(`id-${n}`, [meta, dataset.subarray(0, 500), dataset.subarray(500)])
    return {id: `id-${n}`, sopClassUid: '1.2', sopInstanceUid: `1.2.3.${n}`, transferSyntaxUid: '1.2.840.10008.1.2.1', callingAeTitle: 'T', calledAeTitle: 'D', metaHeader: meta, dataset: {buffers: [dataset.subarray(0, 500), dataset.subarray(500)]}, journal: record, datasetLength: dataset.length, receivedAt: Date.now()}
  }

  it('keeps a journal-spooled instance by linking its segment once: no bytes written again, and the copy reads back', async () => {
    const spoolDir = path.join(dir, 'queue')
    const {mkdirSync} = await import('node:fs')
    mkdirSync(spoolDir)
    const journal = new Journal(spoolDir)
    await journal.open()
    const retention = new RetentionStore(path.join(dir, 'retention'), {maxAgeMs: 3_600_000, maxBytes: 1 << 30})
    await retention.open()
    const kept = []
    for (const n of [1, 2, 3]) kept.push(await retention.keep(await spooled(journal, n)))
    expect(readdirSync(retention.dir)).toEqual([path.basename(kept[0].file)])
    expect(path.basename(kept[0].file)).toMatch(/^j-[0-9a-z]+-seg-\d+\.log$/)
    expect(new Set(kept.map((k) => k.file)).size).toBe(1)
    for (const [i, location] of kept.entries()) {
      expect(retention.holds(location)).toBe(true)
      expect(await readFileSlice(location.file, location.offset, location.length)).toEqual(Buffer.concat([meta, datasetOf(i + 1)]))
    }

    // The spool lets the segment go; retention's link keeps the bytes.
    await journal.close()
    rmSync(spoolDir, {recursive: true})
    const target = path.join(dir, 'repaired.dcm')
    await extractRetained(kept[1], target)
    expect(await readFileSlice(target, 0, kept[1].length)).toEqual(Buffer.concat([meta, datasetOf(2)]))
    retention.close()
  })

  it('links the segment again after dropping its link (bytes over the limit), and copies an instance held in memory only', async () => {
    const spoolDir = path.join(dir, 'queue')
    const {mkdirSync} = await import('node:fs')
    mkdirSync(spoolDir)
    const journal = new Journal(spoolDir)
    await journal.open()
    const retention = new RetentionStore(path.join(dir, 'retention'), {maxAgeMs: 3_600_000, maxBytes: 1500})
    await retention.open()
    const first = await retention.keep(await spooled(journal, 1))
    // Over 1500 bytes: the oldest file (the link) goes, the next record is linked anew.
    const second = await retention.keep(await spooled(journal, 2))
    expect(second.file).not.toBe(first.file)
    expect(retention.holds(second)).toBe(true)
    expect(await readFileSlice(second.file, second.offset, second.length)).toEqual(Buffer.concat([meta, datasetOf(2)]))

    const inMemory: ReceivedInstance = {...(await spooled(journal, 3)), journal: undefined}
    const copied = await retention.keep(inMemory)
    expect(path.basename(copied.file)).toMatch(/^r-\d+\.seg$/)
    expect(await readFileSlice(copied.file, copied.offset, copied.length)).toEqual(Buffer.concat([meta, datasetOf(3)]))
    retention.close()
    await journal.close()
  })
})
