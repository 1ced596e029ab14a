import {mkdtemp, readdir, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {validateConfig} from '../../../src/lib/config/validate.js'
import {Spool} from '../../../src/lib/spool/spool.js'

/** Dead letters as files an operator acts on: listed with their reason, moved back to the queue, or deleted. */
describe('Spool dead letters', () => {
  let dir: string
  let spool: Spool

  beforeEach(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'ddr-dead-letters-'))
    spool = new Spool(dir, validateConfig({spool: {dir}}, 'test').spool)
    await spool.open()
    await writeFile(path.join(spool.deadLetterDir, 'old-1.dcm'), Buffer.alloc(300))
    await writeFile(path.join(spool.deadLetterDir, 'old-1.reason.json'), JSON.stringify({id: 'old-1', at: '2026-01-01T00:00:00.000Z', reason: 'refused', sopInstanceUid: '1.2.3'}))
    await writeFile(path.join(spool.deadLetterDir, 'new-2.dcm'), Buffer.alloc(10))
    await writeFile(path.join(spool.deadLetterDir, 'new-2.reason.json'), JSON.stringify({id: 'new-2', at: '2026-02-01T00:00:00.000Z', reason: 'busy'}))
    // One moved here by hand: no reason file.
    await writeFile(path.join(spool.deadLetterDir, 'bare.dcm'), Buffer.alloc(1))
    await spool.open()
  })

  afterEach(async () => {
    await rm(dir, {recursive: true, force: true})
  })

  it('lists them newest first with their reason file, and counts them', async () => {
    const letters = await spool.listDeadLetters()
    expect(letters.map((l) => l.id)).toEqual(['bare', 'new-2', 'old-1'])
    expect(letters.find((l) => l.id === 'old-1')).toMatchObject({bytes: 300, at: '2026-01-01T00:00:00.000Z', details: {reason: 'refused', sopInstanceUid: '1.2.3'}})
    expect(letters.find((l) => l.id === 'bare')!.details).toEqual({})
    expect(spool.stats().deadLetters).toBe(3)
  })

  it('moves one back into the queue (its reason goes) and deletes another; ids that could name another folder are nobody', async () => {
    const target = await spool.requeueDeadLetter('old-1')
    expect(target).toBe(path.join(spool.queueDir, 'old-1.dcm'))
    expect(await readdir(spool.queueDir)).toContain('old-1.dcm')
    expect(await spool.discardDeadLetter('new-2')).toBe(true)
    expect((await readdir(spool.deadLetterDir)).sort()).toEqual(['bare.dcm'])
    expect(spool.stats().deadLetters).toBe(1)
    expect(await spool.requeueDeadLetter('old-1')).toBeUndefined()
    expect(await spool.discardDeadLetter('new-2')).toBe(false)
    expect(await spool.readDeadLetter('../queue/old-1')).toBeUndefined()
    expect(await spool.discardDeadLetter('../queue/old-1')).toBe(false)
    expect(await readdir(spool.queueDir)).toContain('old-1.dcm')
  })
})
