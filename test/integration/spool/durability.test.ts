import {mkdtemp, rm, stat, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {type SyntheticInstance, writeSyntheticStudies} from '../../helpers/datasets.js'
import {storescu} from '../../helpers/dcmtk.js'
import {freePort} from '../../helpers/ports.js'
import {RENAME_CALLS, SYNC_CALLS, type Syscall, type TracedRouter, WRITE_CALLS, startTracedRouter} from '../../helpers/strace.js'

// A SIGKILL leaves the page cache alone, so a crash test cannot show a missing fsync: this one
// watches the system calls instead. The compiled `ddr listen` runs under strace; for one C-STORE
// that goes into the journal (small) and one that gets a file of its own (above 128 KB), the
// calls that make it durable must all have returned before the C-STORE-RSP is written to the
// sender's socket. Runs the compiled CLI: `npm run build` first.
describe('the spool syncs an instance to disk before the sender gets Success (ddr listen under strace)', () => {
  let workDir: string
  let router: TracedRouter | undefined
  let small: SyntheticInstance
  let large: SyntheticInstance
  let calls: Syscall[]

  beforeAll(async () => {
    workDir = await mkdtemp(path.join(os.tmpdir(), 'ddr-durability-'))
    ;[small] = await writeSyntheticStudies(path.join(workDir, 'small'), {studies: 1, instancesPerStudy: 1, pixelBytes: 4096, prefix: 'SMALL'})
    ;[large] = await writeSyntheticStudies(path.join(workDir, 'large'), {studies: 1, instancesPerStudy: 1, pixelBytes: 300_000, prefix: 'LARGE'})
    const config = path.join(workDir, 'ddr.config.json')
    // The one backend listens nowhere: instances stay in the spool (what is traced is their intake).
    await writeFile(
      config,
      JSON.stringify({
        listen: {host: '127.0.0.1', port: 0, aeTitle: 'DDR_TEST'},
        status: {host: '127.0.0.1', port: 0},
        spool: {dir: path.join(workDir, 'spool')},
        backends: [{name: 'nowhere', host: '127.0.0.1', port: await freePort(), aeTitle: 'NOWHERE'}],
      }),
    )
    router = await startTracedRouter(config, path.join(workDir, 'trace.txt'), [...WRITE_CALLS, ...SYNC_CALLS, ...RENAME_CALLS, 'openat'])
    // One association each, one after the other.
    for (const instance of [small, large]) {
      const sent = await storescu(['-aec', 'DDR_TEST', '127.0.0.1', String(router.port), instance.path])
      expect({file: path.basename(instance.path), code: sent.code, stderr: sent.stderr}).toMatchObject({code: 0})
    }

    // Stopped before reading: strace has then written every line.
    await router.stop()
    calls = await router.calls()
  }, 120_000)

  afterAll(async () => {
    await router?.stop()
    if (workDir) await rm(workDir, {recursive: true, force: true})
  })

  /** The C-STORE-RSP for this instance: a P-DATA-TF (PDU type 04) on the association's socket whose command names the SOP Instance UID. */
  function storeResponse(instance: SyntheticInstance): Syscall {
    const pData = String.fromCharCode(0x04)
    const responses = calls.filter(
      (c) =>
        WRITE_CALLS.has(c.name) &&
        c.fdPath?.startsWith(`TCP:[127.0.0.1:${router!.port}->`) &&
        (c.afterFd!.startsWith(`"${pData}`) || c.afterFd!.startsWith(`[{iov_base="${pData}`)) &&
        c.args.includes(instance.sopInstanceUid),
    )
    expect(responses.map((c) => ({name: c.name, result: c.result}))).toEqual([{name: expect.any(String), result: expect.stringMatching(/^\d+$/)}])
    return responses[0]
  }

  /** The spool's calls between two trace lines, for messages. */
  const around = (from: number, to: number) =>
    calls
      .filter((c) => c.end >= from && c.start <= to && c.fdPath?.includes('/spool/'))
      .map((c) => `${c.start}-${c.end} ${c.name}(${c.fdPath}) = ${c.result}`)
      .join('\n')

  it('journal (small instance): its record is written to a segment and that segment fdatasync\'ed before the C-STORE-RSP', () => {
    const response = storeResponse(small)
    const records = calls.filter((c) => WRITE_CALLS.has(c.name) && /\/queue\/seg-\d+\.log$/.test(c.fdPath ?? '') && c.args.includes(small.sopInstanceUid))
    expect(records).toHaveLength(1)
    const [record] = records
    expect(record.end).toBeLessThan(response.start)
    const segment = record.fdPath!
    const synced = calls.filter((c) => SYNC_CALLS.has(c.name) && c.fdPath === segment && c.start > record.end && c.end < response.start && c.result === '0')
    expect({record: record.start, response: response.start, segmentSyncedInBetween: synced.length > 0, calls: around(record.start, response.start)}).toMatchObject({segmentSyncedInBetween: true})

    // The segment was new: its name must be on disk too (the queue folder fsync'ed after its creation).
    const created = calls.find((c) => c.name === 'openat' && c.args.includes(`"${segment}"`) && c.args.includes('O_EXCL'))
    expect(created).toBeDefined()
    const folderSynced = calls.filter((c) => SYNC_CALLS.has(c.name) && c.fdPath === path.dirname(segment) && c.start > created!.end && c.end < response.start && c.result === '0')
    expect({created: created!.start, response: response.start, folderSyncedInBetween: folderSynced.length > 0, calls: around(created!.start, response.start)}).toMatchObject({folderSyncedInBetween: true})
  })

  it('file of its own (above 128 KB): all its bytes written to .part, fdatasync, rename to .dcm, folder fsync, all before the C-STORE-RSP', async () => {
    const response = storeResponse(large)
    expect(calls.some((c) => WRITE_CALLS.has(c.name) && /seg-\d+\.log$/.test(c.fdPath ?? '') && c.args.includes(large.sopInstanceUid))).toBe(false)
    const first = calls.find((c) => WRITE_CALLS.has(c.name) && c.fdPath?.endsWith('.dcm.part') && c.args.includes(large.sopInstanceUid))
    expect(first).toBeDefined()
    const part = first!.fdPath!
    const final = part.slice(0, -'.part'.length)
    const writes = calls.filter((c) => WRITE_CALLS.has(c.name) && c.fdPath === part)
    // Every byte of the file the spool holds went through these writes (none left for later).
    expect(writes.every((c) => /^\d+$/.test(c.result ?? ''))).toBe(true)
    expect(writes.reduce((sum, c) => sum + Number(c.result), 0)).toBe((await stat(final)).size)
    const lastWrite = Math.max(...writes.map((c) => c.end))

    const renames = calls.filter((c) => RENAME_CALLS.has(c.name) && c.args.includes(`"${part}"`) && c.args.includes(`"${final}"`) && c.result === '0')
    expect(renames).toHaveLength(1)
    const [rename] = renames
    const dataSynced = calls.filter((c) => SYNC_CALLS.has(c.name) && c.fdPath === part && c.start > lastWrite && c.end < rename.start && c.result === '0')
    expect({lastWrite, rename: rename.start, partSyncedInBetween: dataSynced.length > 0, calls: around(lastWrite, rename.start)}).toMatchObject({partSyncedInBetween: true})
    const folderSynced = calls.filter((c) => SYNC_CALLS.has(c.name) && c.fdPath === path.dirname(part) && c.start > rename.end && c.end < response.start && c.result === '0')
    expect({rename: rename.end, response: response.start, folderSyncedInBetween: folderSynced.length > 0, calls: around(rename.end, response.start)}).toMatchObject({folderSyncedInBetween: true})
  })
})
