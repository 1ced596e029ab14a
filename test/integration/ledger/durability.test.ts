import {execFile} from 'node:child_process'
import {mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {promisify} from 'node:util'

import {repoRoot} from '../../helpers/compiled-cli.js'

const run = promisify(execFile)

/**
 * Power loss, not just SIGKILL: the spool lets an instance go once the ledger says its outcome is
 * recorded (StudyLedger.outcome resolves), so that record must be on disk first. Seen with strace
 * (threads included: the sync runs in the thread pool): the write-ahead log is fdatasynced before
 * outcome() resolves; a receipt alone is not synced (the spool still holds its instance).
 */
describe('the ledger commit the spool waits for is on disk', () => {
  let dir: string

  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'ddr-ledger-sync-'))
  })

  afterAll(async () => {
    if (dir) await rm(dir, {recursive: true, force: true})
  })

  it('syncs ledger.db-wal before an outcome is reported recorded', async () => {
    const script = path.join(dir, 'commit.mjs')
    const lib = (file: string) => JSON.stringify(path.join(repoRoot, 'dist/lib', file))
    await writeFile(
      script,
      `import {writeSync} from 'node:fs'
import {SqliteLedgerStore} from ${lib('ledger/sqlite-store.js')}
import {StudyLedger} from ${lib('ledger/ledger.js')}
import {silentLogger} from ${lib('output/logger.js')}
const ledger = new StudyLedger(new SqliteLedgerStore(${JSON.stringify(path.join(dir, 'ledger.db'))}), {stableSeconds: 60, keepDays: 30, logger: silentLogger})
const receipt = (n) => ({sopInstanceUid: '1.2.3.' + n, sopClassUid: '1.2.840.10008.5.1.4.1.1.2', studyInstanceUid: '1.2.3', callingAeTitle: 'CT', bytes: 10, receivedAt: Date.now()})
writeSync(2, 'MARK receipts\\n')
ledger.received(receipt(1))
ledger.received(receipt(2))
await new Promise((resolve) => setTimeout(resolve, 100))
writeSync(2, 'MARK outcomes\\n')
await ledger.outcome({sopInstanceUid: '1.2.3.1', status: 'stored', backend: 'east', at: Date.now()})
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
    expect(at('done')).toBeGreaterThan(at('outcomes'))
    expect(syncsOfWal(at('outcomes'), at('done'))).toBeGreaterThan(0)
    // Receipts alone are not synced: the barrier costs one sync per batch of outcomes.
    expect(syncsOfWal(at('receipts'), at('outcomes'))).toBe(0)
  })
})
