import {execFile} from 'node:child_process'
import {mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {promisify} from 'node:util'

import {repoRoot} from '../../helpers/compiled-cli.js'

const run = promisify(execFile)

/**
 * Power loss, not just SIGKILL: the spool lets an instance go once its outcome is in the ledger, so
 * that commit must reach the disk first. Seen with strace: the write-ahead log is fsynced by the
 * outcome commit (a receipt-only commit need not be: the spool still holds those instances).
 */
describe('the ledger commit the spool waits for is on disk', () => {
  let dir: string

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'ddr-ledger-sync-'))
  })

  afterAll(async () => {
    if (dir) await rm(dir, {recursive: true, force: true})
  })

  it('fsyncs ledger.db-wal when outcomes are committed', async () => {
    const script = path.join(dir, 'commit.mjs')
    const store = path.join(repoRoot, 'dist/lib/ledger/sqlite-store.js')
    await writeFile(
      script,
      `import {writeSync} from 'node:fs'
import {SqliteLedgerStore} from ${JSON.stringify(store)}
const ledger = new SqliteLedgerStore(${JSON.stringify(path.join(dir, 'ledger.db'))})
const receipt = (n) => ({sopInstanceUid: '1.2.3.' + n, sopClassUid: '1.2.840.10008.5.1.4.1.1.2', studyInstanceUid: '1.2.3', callingAeTitle: 'CT', bytes: 10, receivedAt: Date.now()})
writeSync(2, 'MARK receipts\\n')
ledger.received([receipt(1), receipt(2)])
writeSync(2, 'MARK outcomes\\n')
ledger.outcomes([{sopInstanceUid: '1.2.3.1', status: 'stored', backend: 'east', at: Date.now()}])
writeSync(2, 'MARK done\\n')
ledger.close()
`,
    )
    const trace = path.join(dir, 'trace.txt')
    await run('strace', ['-f', '-o', trace, '-e', 'trace=openat,fsync,fdatasync,write', process.execPath, script])
    const lines = (await readFile(trace, 'utf8')).split('\n')
    const at = (mark: string) => lines.findIndex((l) => l.includes(`MARK ${mark}`))
    const walFds = new Set(lines.filter((l) => l.includes('ledger.db-wal"') && /= \d+$/.test(l)).map((l) => l.match(/= (\d+)$/)![1]))
    const syncsOfWal = (from: number, to: number) => lines.slice(from, to).filter((l) => [...walFds].some((fd) => l.includes(`fsync(${fd})`) || l.includes(`fdatasync(${fd})`))).length
    expect(walFds.size).toBeGreaterThan(0)
    expect(at('receipts')).toBeGreaterThan(-1)
    expect(syncsOfWal(at('outcomes'), at('done'))).toBeGreaterThan(0)
    // Receipts alone are not synced: the barrier costs one sync per outcome batch, not two.
    expect(syncsOfWal(at('receipts'), at('outcomes'))).toBe(0)
  })
})
