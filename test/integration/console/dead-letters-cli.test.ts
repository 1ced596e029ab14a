import {copyFile, mkdir, mkdtemp, readdir, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import type {DeadLettersResult} from '../../../src/lib/console/dead-letters.js'
import {runCompiledCli} from '../../helpers/compiled-cli.js'
import {fixturePath, goodFixtures} from '../../helpers/fixtures.js'
import {type TestOrthanc, startTestOrthanc} from '../../helpers/orthanc.js'
import {freePort} from '../../helpers/ports.js'
import {type TestRouter, startTestRouter} from '../../helpers/router.js'
import {waitFor} from '../../helpers/wait.js'

/** ddr dead-letters: the console's dead-letter work from the command line, with and without a running router. */
describe('ddr dead-letters (compiled CLI)', () => {
  let orthanc: TestOrthanc
  let router: TestRouter | undefined
  let dir: string
  let spoolDir: string
  const [first, second] = goodFixtures.filter((e) => e.transferSyntaxUid === '1.2.840.10008.1.2.1')

  /** A dead letter as the forwarder leaves one: the Part 10 file and its reason file. */
  const deadLetter = async (id: string, entry: typeof first, reason: string) => {
    await mkdir(path.join(spoolDir, 'dead-letter'), {recursive: true})
    await copyFile(fixturePath(entry), path.join(spoolDir, 'dead-letter', `${id}.dcm`))
    await writeFile(path.join(spoolDir, 'dead-letter', `${id}.reason.json`), JSON.stringify({reason, status: '0xA700', sopInstanceUid: entry.sopInstanceUid, studyInstanceUid: entry.studyInstanceUid, callingAeTitle: 'CT1', tries: 8}))
  }

  const config = async (statusPort: number) => {
    const file = path.join(dir, 'ddr.config.json')
    await writeFile(file, JSON.stringify({status: {host: '127.0.0.1', port: statusPort}, spool: {dir: spoolDir}, backends: [{name: orthanc.name, port: orthanc.dicomPort, aeTitle: orthanc.aeTitle, url: orthanc.url}]}))
    return file
  }

  beforeAll(async () => {
    orthanc = await startTestOrthanc({name: 'letters', aeTitle: 'LETTERS'})
    dir = await mkdtemp(path.join(os.tmpdir(), 'ddr-dead-letters-'))
    spoolDir = path.join(dir, 'spool')
  })

  afterAll(async () => {
    await router?.stop()
    await orthanc?.stop()
    if (dir) await rm(dir, {recursive: true, force: true})
  })

  it('without a router: lists from the spool folder, and retry puts the file back in the queue for the next start, which delivers it', async () => {
    await deadLetter('lq1-0001-aaaa', first, 'orthanc answered 0xA700 8 times (out of resources)')
    const file = await config(await freePort())
    const listed = await runCompiledCli(['dead-letters', '--json', '--config', file])
    expect(listed.code).toBe(0)
    expect(JSON.parse(listed.stdout) as DeadLettersResult).toMatchObject({via: 'spool', deadLetters: [{id: 'lq1-0001-aaaa', reason: expect.stringContaining('0xA700'), sopInstanceUid: first.sopInstanceUid, from: 'CT1'}]})

    const retried = await runCompiledCli(['dead-letters', 'retry', 'lq1-0001-aaaa', 'nope-0000-0000', '--config', file])
    expect(retried.code).toBe(4)
    expect(retried.stdout).toContain('lq1-0001-aaaa: queued for the next start')
    expect(retried.stdout).toContain('nope-0000-0000: not found')
    expect(await readdir(path.join(spoolDir, 'queue'))).toContain('lq1-0001-aaaa.dcm')

    router = await startTestRouter([orthanc], {spoolDir})
    await router.drained()
    expect(await orthanc.client.lookupInstance(first.sopInstanceUid)).toBeDefined()
  })

  it('with the router running: lists and discards through it (its log says so), asks for --yes without a terminal', async () => {
    await deadLetter('lq1-0002-bbbb', second, 'the backend refused it: 0xA900')
    const file = await config(router!.service.statusPort!)
    const listed = JSON.parse((await runCompiledCli(['dead-letters', '--json', '--config', file])).stdout) as DeadLettersResult
    expect(listed).toMatchObject({via: 'router', deadLetters: [{id: 'lq1-0002-bbbb'}]})

    const unasked = await runCompiledCli(['dead-letters', 'discard', '--all', '--config', file])
    expect(unasked.code).toBe(2)
    const discarded = await runCompiledCli(['dead-letters', 'discard', '--all', '--reason-contains', '0xa900', '--yes', '--json', '--config', file])
    expect(discarded.code).toBe(0)
    expect(JSON.parse(discarded.stdout)).toMatchObject({via: 'router', results: [{id: 'lq1-0002-bbbb', outcome: 'discarded'}]})
    expect(await readdir(path.join(spoolDir, 'dead-letter'))).not.toContain('lq1-0002-bbbb.dcm')
    await waitFor('the log line', () => router!.logs.some((l) => l.includes('dead-letters-discarded')), 2000)
  })

  it("with the router running but its console not reachable (another status port): refuses to touch the router's spool and says why", async () => {
    await deadLetter('lq1-0003-cccc', second, 'the backend refused it: 0xA900')
    const file = await config(await freePort())
    const discarded = await runCompiledCli(['dead-letters', 'discard', '--all', '--yes', '--config', file])
    expect(discarded.code).toBe(2)
    expect(discarded.stderr).toContain(`a router (process ${process.pid}) runs on spool folder ${spoolDir}`)
    expect(await readdir(path.join(spoolDir, 'dead-letter'))).toContain('lq1-0003-cccc.dcm')
  })
})
