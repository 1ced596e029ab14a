import type {ChildProcess} from 'node:child_process'
import {mkdtemp, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {ScuAssociation} from '../../../src/lib/dimse/scu.js'
import {runCompiledCli, spawnCompiledCli} from '../../helpers/compiled-cli.js'
import {datasetOf, goodFixtures, readFixture} from '../../helpers/fixtures.js'
import {type TestOrthanc, startTestOrthanc} from '../../helpers/orthanc.js'
import {freePort} from '../../helpers/ports.js'
import {waitFor} from '../../helpers/wait.js'

/** Rolling upgrades behind a load balancer: /healthz says when to send traffic, --drain empties a router before it exits. */
describe('ddr listen --drain and /healthz', () => {
  let orthanc: TestOrthanc
  let dir: string
  let router: ChildProcess
  let listenPort: number
  let statusPort: number
  let configPath: string
  const log: string[] = []
  const healthz = async () => {
    const response = await fetch(`http://127.0.0.1:${statusPort}/healthz`)
    return {status: response.status, text: await response.text()}
  }

  beforeAll(async () => {
    orthanc = await startTestOrthanc({name: 'drain', aeTitle: 'DRAIN'})
    dir = await mkdtemp(path.join(os.tmpdir(), 'ddr-drain-'))
    ;[listenPort, statusPort] = [await freePort(), await freePort()]
    configPath = path.join(dir, 'ddr.config.json')
    await writeFile(
      configPath,
      JSON.stringify({
        listen: {host: '127.0.0.1', port: listenPort, aeTitle: 'DDR_DRAIN'},
        // With a token, draining (like every action on the status port) needs it: `listen --drain` sends it.
        status: {host: '127.0.0.1', port: statusPort, token: 'drain-test-token-0123456789'},
        spool: {dir: path.join(dir, 'spool')},
        backends: [{name: 'drain', host: '127.0.0.1', port: orthanc.dicomPort, aeTitle: orthanc.aeTitle, url: orthanc.url}],
      }),
    )
    router = spawnCompiledCli(['listen', '--config', configPath])
    router.stdout!.resume()
    router.stderr!.setEncoding('utf8').on('data', (chunk: string) => log.push(chunk))
    await waitFor('the router', async () => (await healthz().catch(() => ({status: 0}))).status === 200, 20_000)
  })

  afterAll(async () => {
    if (router.exitCode === null && router.signalCode === null) router.kill('SIGKILL')
    await orthanc?.stop()
    if (dir) await rm(dir, {recursive: true, force: true})
  })

  it('stops taking associations, lets an open one finish, delivers, says draining on /healthz, then exits 0', async () => {
    const entry = goodFixtures.find((e) => e.transferSyntaxUid === '1.2.840.10008.1.2.1')!
    const open = await ScuAssociation.connect({host: '127.0.0.1', port: listenPort, callingAeTitle: 'MODALITY', calledAeTitle: 'DDR_DRAIN', contexts: [{abstractSyntax: entry.sopClassUid, transferSyntax: entry.transferSyntaxUid}]})
    const exited = new Promise<number | null>((resolve) => router.once('exit', (code) => resolve(code)))

    const stranger = await fetch(`http://127.0.0.1:${statusPort}/drain`, {method: 'POST'})
    expect(stranger.status).toBe(401)
    expect((await healthz()).status).toBe(200)
    const asked = await runCompiledCli(['listen', '--drain', '--config', configPath], {timeoutMs: 15_000})
    expect(asked.code).toBe(0)
    expect(asked.stdout).toContain('draining')
    await waitFor('/healthz to say draining', async () => (await healthz()).status === 503, 5000)
    expect((await healthz()).text).toContain('draining')
    // New associations are not taken.
    await expect(ScuAssociation.connect({host: '127.0.0.1', port: listenPort, callingAeTitle: 'LATE', calledAeTitle: 'DDR_DRAIN', contexts: [], connectTimeoutMs: 2000})).rejects.toThrow()

    // The open one still works: its instance is stored and delivered before the router exits.
    const answer = await open.store({sopClassUid: entry.sopClassUid, sopInstanceUid: entry.sopInstanceUid, transferSyntaxUid: entry.transferSyntaxUid, dataset: {buffer: datasetOf(readFixture(entry))}})
    expect(answer.status).toBe(0)
    expect(router.exitCode).toBeNull()
    await open.release()
    expect(await exited).toBe(0)
    expect(await orthanc.client.lookupInstance(entry.sopInstanceUid)).toBeDefined()
    expect(log.join('')).toMatch(/drained .*associationsLeft=0 queued=0/)
  })
})
