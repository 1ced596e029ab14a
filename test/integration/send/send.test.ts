import {spawn} from 'node:child_process'
import {existsSync, readFileSync, readdirSync} from 'node:fs'
import {copyFile, cp, mkdir, mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import http from 'node:http'
import net, {type AddressInfo} from 'node:net'
import os from 'node:os'
import path from 'node:path'

import {readMetaHeader} from '../../../src/lib/dicom/part10.js'
import type {SendResult} from '../../../src/lib/send/types.js'
import {type ManifestEntry, fixturesDir, goodFixtures} from '../../helpers/fixtures.js'
import {writeSyntheticStudies} from '../../helpers/datasets.js'
import {type Storescp, dcmsend, startStorescp} from '../../helpers/dcmtk.js'
import {type TestOrthanc, startTestOrthanc} from '../../helpers/orthanc.js'
import {freePort} from '../../helpers/ports.js'
import {writeZip} from '../../helpers/zip.js'

const repoRoot = path.resolve(import.meta.dirname ?? path.dirname(new URL(import.meta.url).pathname), '../../..')
const truncatedFixture = path.join(fixturesDir, 'broken/truncated-pixel-data.dcm')

interface CliRun {
  code: number | null
  stdout: string
  stderr: string
}

/** The compiled CLI (npm run build first), in `cwd`, without colours or a terminal, DDR_* variables only as given. */
function ddr(args: string[], options: {cwd: string; env?: Record<string, string>}): Promise<CliRun> {
  const env: NodeJS.ProcessEnv = {NO_COLOR: '1'}
  for (const [key, value] of Object.entries(process.env)) if (!key.startsWith('DDR_')) env[key] = value
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(repoRoot, 'bin/run.js'), ...args], {cwd: options.cwd, env: {...env, ...options.env}, stdio: ['ignore', 'pipe', 'pipe']})
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk))
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
    const timer = setTimeout(() => child.kill('SIGKILL'), 90_000)
    child.on('error', reject)
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({code, stdout, stderr})
    })
  })
}

function parseJson<T>(run: CliRun): T {
  try {
    return JSON.parse(run.stdout) as T
  } catch {
    throw new Error(`stdout is not JSON (exit ${run.code}):\n${run.stdout}\n${run.stderr}`)
  }
}

/** Resolves once something accepts TCP connections on the port (5 s at most). */
async function waitForPort(port: number): Promise<void> {
  const deadline = Date.now() + 5000
  for (;;) {
    const open = await new Promise<boolean>((resolve) => {
      const socket = net.connect({host: '127.0.0.1', port}, () => {
        socket.destroy()
        resolve(true)
      })
      socket.on('error', () => resolve(false))
    })
    if (open) return
    if (Date.now() > deadline) throw new Error(`nothing listens on port ${port} after 5 s`)
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
}

/** The dataset part of a Part 10 file: what goes on the wire (each receiver writes its own meta header). */
function datasetOf(file: Buffer): Buffer {
  return file.subarray(readMetaHeader(file).datasetOffset)
}

/** The dataset bytes a C-STORE carries for a file: its own, with the pad byte PS3.5 asks of an odd deflated stream. */
function wireDataset(file: Buffer): Buffer {
  const dataset = datasetOf(file)
  return dataset.length % 2 === 0 ? dataset : Buffer.concat([dataset, Buffer.from([0])])
}

function fixtureBytes(entry: ManifestEntry): Buffer {
  return readFileSync(path.join(fixturesDir, entry.path))
}

describe('ddr send (compiled CLI) against real receivers', () => {
  let workDir: string
  let inputs: string[]
  let storescp: Storescp
  let target: TestOrthanc
  let reference: TestOrthanc
  let restTarget: TestOrthanc

  beforeAll(async () => {
    if (!existsSync(path.join(repoRoot, 'dist/commands/send.js'))) throw new Error('dist/commands/send.js is missing: run "npm run build" first')
    workDir = await mkdtemp(path.join(os.tmpdir(), 'ddr-send-it-'))
    // A folder of five studies, a ZIP of the sixth, a text file and a truncated DICOM file.
    await mkdir(path.join(workDir, 'inputs/studies'), {recursive: true})
    for (const study of ['1', '2', '4', '5', '6']) await cp(path.join(fixturesDir, 'studies', study), path.join(workDir, 'inputs/studies', study), {recursive: true})
    const zipped = goodFixtures.filter((f) => f.path.startsWith('studies/3/'))
    await writeZip(path.join(workDir, 'inputs/study3.zip'), [
      {name: '3/', data: Buffer.alloc(0)},
      ...zipped.map((f, index) => ({name: f.path.replace('studies/', ''), data: fixtureBytes(f), store: index === 0})),
    ])
    await writeFile(path.join(workDir, 'inputs/notes.txt'), 'exported with the study\n')
    await copyFile(truncatedFixture, path.join(workDir, 'inputs/truncated.dcm'))
    inputs = ['inputs/studies', 'inputs/study3.zip', 'inputs/notes.txt', 'inputs/truncated.dcm']

    await mkdir(path.join(workDir, 'received'))
    ;[storescp, target, reference, restTarget] = await Promise.all([
      startStorescp({dir: path.join(workDir, 'received'), aeTitle: 'BITSCP', extraArgs: ['+B', '-uf']}),
      startTestOrthanc({name: 'send-target', aeTitle: 'SENDTARGET'}),
      startTestOrthanc({name: 'send-reference', aeTitle: 'SENDREF'}),
      startTestOrthanc({name: 'send-rest', aeTitle: 'SENDREST'}),
    ])
  })

  afterAll(async () => {
    await Promise.allSettled([storescp?.stop(), target?.stop(), reference?.stop(), restTarget?.stop()])
    if (workDir) await rm(workDir, {recursive: true, force: true})
  })

  it('sends a folder, a ZIP and a broken file to storescp: every good instance byte for byte, the broken one named, exit 4', async () => {
    const run = await ddr(['send', ...inputs, '--port', String(storescp.port), '-aec', storescp.aeTitle, '-aet', 'DDRTEST'], {cwd: workDir})
    expect({code: run.code, stderr: run.stderr}).toEqual({code: 4, stderr: expect.stringContaining('sending 30 DICOM files')})
    expect(run.stdout).toContain(`sent 30 of 31 DICOM files`)
    expect(run.stdout).toContain('1 failed, 1 skipped')
    expect(run.stdout).toMatch(/inputs\/truncated\.dcm\s+truncated: the file ends inside PixelData \(7FE0,0010\)/)
    expect(run.stdout).toMatch(/inputs\/notes\.txt\s+not DICOM/)
    expect(storescp.output()).not.toMatch(/error/i)

    const received = new Map<string, Buffer>()
    for (const name of readdirSync(path.join(workDir, 'received'))) {
      const file = await readFile(path.join(workDir, 'received', name))
      received.set(readMetaHeader(file).mediaStorageSopInstanceUid ?? name, file)
    }
    expect(received.size).toBe(goodFixtures.length)
    for (const fixture of goodFixtures) {
      const copy = received.get(fixture.sopInstanceUid)
      expect({fixture: fixture.path, received: copy !== undefined}).toEqual({fixture: fixture.path, received: true})
      expect({fixture: fixture.path, syntax: readMetaHeader(copy!).transferSyntaxUid, identical: datasetOf(copy!).equals(wireDataset(fixtureBytes(fixture)))}).toEqual({
        fixture: fixture.path,
        syntax: fixture.transferSyntaxUid,
        identical: true,
      })
    }
  })

  it('sends to Orthanc over 4 associations: every good instance stored once, as a direct dcmsend stores it', async () => {
    const run = await ddr(['send', ...inputs, '--port', String(target.dicomPort), '--called-ae', target.aeTitle, '--concurrency', '4', '--json'], {cwd: workDir})
    expect(run.code).toBe(4)
    const result = parseJson<SendResult>(run)
    expect({sent: result.sent, failed: result.failed, skipped: result.skipped, concurrency: result.concurrency}).toEqual({sent: 30, failed: 1, skipped: 1, concurrency: 4})
    expect(result.failures[0]).toMatchObject({file: path.join('inputs', 'truncated.dcm'), code: 'INVALID_DICOM', reason: expect.stringMatching(/^truncated/)})
    expect((await target.client.statistics()).CountInstances).toBe(goodFixtures.length)

    // Orthanc re-encodes some datasets as it stores them (DCMTK), so compare with what it stores
    // from dcmsend; where it keeps them, they are also the file's own bytes.
    const direct = await dcmsend(['-aec', reference.aeTitle, '127.0.0.1', String(reference.dicomPort), ...goodFixtures.map((f) => path.join(fixturesDir, f.path))], {timeoutMs: 120_000})
    expect(direct.code).toBe(0)
    let keptAsSent = 0
    for (const fixture of goodFixtures) {
      const id = await target.client.lookupInstance(fixture.sopInstanceUid)
      expect({fixture: fixture.path, stored: id !== undefined}).toEqual({fixture: fixture.path, stored: true})
      const stored = await target.client.instanceFile(id!)
      const viaDcmsend = await reference.client.instanceFile((await reference.client.lookupInstance(fixture.sopInstanceUid))!)
      if (readMetaHeader(viaDcmsend).transferSyntaxUid === fixture.transferSyntaxUid) {
        expect({fixture: fixture.path, sameAsDcmsend: datasetOf(stored).equals(datasetOf(viaDcmsend))}).toEqual({fixture: fixture.path, sameAsDcmsend: true})
      }
      if (datasetOf(stored).equals(wireDataset(fixtureBytes(fixture)))) keptAsSent++
    }
    expect(keptAsSent).toBeGreaterThanOrEqual(15)
  })

  it('fails the files whose transfer syntax the receiver does not accept, by name, and sends the rest (no transcoding)', async () => {
    const dir = path.join(workDir, 'received-uncompressed')
    await mkdir(dir)
    // +xe after the helper's +xa: this storescp accepts uncompressed syntaxes only.
    const picky = await startStorescp({dir, aeTitle: 'PICKY', extraArgs: ['+xe']})
    try {
      const run = await ddr(['send', 'inputs/studies/1', '--port', String(picky.port), '-aec', 'PICKY', '--json'], {cwd: workDir})
      expect(run.code).toBe(4)
      const result = parseJson<SendResult>(run)
      const compressed = goodFixtures.filter((f) => f.path.startsWith('studies/1/') && !['1.2.840.10008.1.2', '1.2.840.10008.1.2.1', '1.2.840.10008.1.2.2'].includes(f.transferSyntaxUid))
      expect(result.failures.map((f) => f.file).sort()).toEqual(compressed.map((f) => path.join('inputs', f.path)).sort())
      expect(result.failures.find((f) => f.file.endsWith('ct-rle.dcm'))).toMatchObject({code: 'BACKEND_REFUSED', reason: 'PICKY@localhost:' + picky.port + ' did not accept CT Image Storage in RLE Lossless'})
      expect(result.sent).toBe(readdirSync(dir).length)
    } finally {
      await picky.stop()
    }
  })

  it('exits 3 when nothing listens on the port, and says so in --json', async () => {
    const port = await freePort()
    const run = await ddr(['send', 'inputs/studies/1', '--port', String(port)], {cwd: workDir})
    expect(run.code).toBe(3)
    expect(run.stderr).toContain(`error [BACKEND_UNREACHABLE]: cannot connect to DYNAMIC_DICOM_MW@localhost:${port}`)
    expect(run.stderr).toContain(`hint: is a DICOM receiver listening at localhost:${port}`)

    const json = await ddr(['send', 'inputs/studies/1', '--port', String(port), '--json'], {cwd: workDir})
    expect(json.code).toBe(3)
    expect(parseJson<{error: {code: string; exit: number}}>(json).error).toMatchObject({code: 'BACKEND_UNREACHABLE', exit: 3})
  })

  it('exits 3 when the receiver rejects the association, and 4 when it aborts every store (each file tried twice)', async () => {
    const dir = path.join(workDir, 'received-aborting')
    await mkdir(dir)
    // storescp --refuse refuses the helper's C-ECHO probe too, so it is started here and awaited by TCP.
    const port = await freePort()
    const refusing = spawn('storescp', ['--refuse', '-aet', 'REFUSING', String(port)], {stdio: 'ignore', env: {...process.env, TCP_NODELAY: '1'}})
    try {
      await waitForPort(port)
      const run = await ddr(['send', 'inputs/studies/5', '--port', String(port), '-aec', 'REFUSING'], {cwd: workDir})
      expect(run.code).toBe(3)
      expect(run.stderr).toContain(`error [ASSOCIATION_REJECTED]: REFUSING@localhost:${port} rejected the association`)
    } finally {
      refusing.kill('SIGTERM')
    }

    const aborting = await startStorescp({dir, aeTitle: 'ABORTING', extraArgs: ['--abort-after', '-v']})
    try {
      const run = await ddr(['send', 'inputs/studies/5/cr.dcm', 'inputs/studies/5/dx.dcm', '--port', String(aborting.port), '-aec', 'ABORTING', '--json'], {cwd: workDir})
      expect(run.code).toBe(4)
      const result = parseJson<SendResult>(run)
      expect(result).toMatchObject({sent: 0, failed: 2})
      for (const failure of result.failures) expect(failure).toMatchObject({code: 'ASSOCIATION_ABORTED', reason: expect.stringContaining('aborted the association')})
      // Each file twice, each time on a new association.
      expect(aborting.output().match(/Received Store Request/g)).toHaveLength(4)
    } finally {
      await aborting.stop()
    }
  })

  it('gives --json the SendResult shape: counts, failures with reason and hint, skips, nothing on stderr', async () => {
    const dir = path.join(workDir, 'json')
    const synthetic = await writeSyntheticStudies(dir, {studies: 1, instancesPerStudy: 3, pixelBytes: 2048, prefix: 'JSON'})
    await copyFile(path.join(fixturesDir, 'broken/missing-sop-class-meta-ok.dcm'), path.join(dir, 'no-class.dcm'))
    await writeFile(path.join(dir, 'readme.md'), '# not DICOM\n')
    const run = await ddr(['send', 'json', '--port', String(storescp.port), '--called-ae', storescp.aeTitle, '--json'], {cwd: workDir})
    expect(run.stderr).toBe('')
    expect(run.code).toBe(4)
    const result = parseJson<SendResult>(run)
    expect(Object.keys(result).sort()).toEqual(['bytes', 'concurrency', 'durationMs', 'failed', 'failures', 'files', 'sent', 'skipped', 'skips', 'target', 'warnings'])
    expect(result).toMatchObject({
      target: {protocol: 'dimse', host: 'localhost', port: storescp.port, calledAeTitle: 'BITSCP', callingAeTitle: 'DDR'},
      files: 5,
      sent: 3,
      failed: 1,
      skipped: 1,
      concurrency: 1,
      failures: [
        {
          file: path.join('json', 'no-class.dcm'),
          code: 'INVALID_DICOM',
          reason: expect.stringMatching(/^missing SOPClassUID \(0008,0016\)/),
          hint: `repair it with "ddr fix-sop ${path.join('json', 'no-class.dcm')}", then send it again`,
        },
      ],
      skips: [{file: path.join('json', 'readme.md'), reason: 'not DICOM (12 bytes, no Part 10 header)'}],
      warnings: [],
    })
    expect(result.bytes).toBe(synthetic.reduce((sum, instance) => sum + readFileSync(instance.path).length, 0))
    expect(typeof result.durationMs).toBe('number')
  })

  it('uploads through the Orthanc REST API (--rest URL): the files stored byte for byte, the broken one named', async () => {
    const run = await ddr(['send', ...inputs, '--rest', restTarget.url, '--concurrency', '2', '--json'], {cwd: workDir})
    expect(run.code).toBe(4)
    const result = parseJson<SendResult>(run)
    expect(result).toMatchObject({target: {protocol: 'rest', url: restTarget.url}, sent: 30, failed: 1, skipped: 1})
    expect(result.failures.map((f) => f.file)).toEqual([path.join('inputs', 'truncated.dcm')])
    for (const fixture of goodFixtures) {
      const id = await restTarget.client.lookupInstance(fixture.sopInstanceUid)
      expect({fixture: fixture.path, stored: id !== undefined}).toEqual({fixture: fixture.path, stored: true})
      expect({fixture: fixture.path, identical: (await restTarget.client.instanceFile(id!)).equals(fixtureBytes(fixture))}).toEqual({fixture: fixture.path, identical: true})
    }

    // Sending again: Orthanc keeps its first copy and says so; ddr counts them as sent, with a remark.
    const again = parseJson<SendResult>(await ddr(['send', 'inputs/studies/5', '--rest', restTarget.url, '--json'], {cwd: workDir}))
    expect(again).toMatchObject({sent: 3, failed: 0})
    expect(again.warnings.map((w) => w.message)).toEqual(Array.from({length: 3}, () => 'Orthanc already had this instance (kept its first copy)'))
  })
})

describe('ddr send --rest with credentials from the config and the environment', () => {
  let workDir: string
  let server: http.Server
  let url: string
  const seen: Array<string | undefined> = []

  beforeAll(async () => {
    workDir = await mkdtemp(path.join(os.tmpdir(), 'ddr-send-auth-'))
    // A stand-in for an Orthanc with authentication: it only checks the credentials.
    server = http.createServer((request, response) => {
      seen.push(request.headers.authorization)
      request.resume()
      request.on('end', () => {
        const ok = request.headers.authorization === `Basic ${Buffer.from('uploader:s3cret').toString('base64')}`
        response.writeHead(ok ? 200 : 401, {'content-type': 'application/json'})
        response.end(ok ? JSON.stringify({ID: 'x', Status: 'Success'}) : JSON.stringify({Message: 'Unauthorized'}))
      })
    })
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
    await writeFile(path.join(workDir, 'ddr.config.json'), JSON.stringify({backends: [{name: 'secure-pacs', port: 4242, aeTitle: 'SECURE', url, username: 'uploader', transport: 'rest'}]}))
    await mkdir(path.join(workDir, 'study'))
    await copyFile(path.join(fixturesDir, goodFixtures[0].path), path.join(workDir, 'study/a.dcm'))
  })

  afterAll(async () => {
    await new Promise<void>((resolve) => server?.close(() => resolve()))
    if (workDir) await rm(workDir, {recursive: true, force: true})
  })

  it('uses DDR_BACKEND_<NAME>_PASSWORD with --rest NAME', async () => {
    const run = await ddr(['send', 'study', '--rest', 'secure-pacs', '--json'], {cwd: workDir, env: {DDR_BACKEND_SECURE_PACS_PASSWORD: 's3cret'}})
    expect(run.code).toBe(0)
    expect(parseJson<SendResult>(run)).toMatchObject({target: {protocol: 'rest', url, backend: 'secure-pacs'}, sent: 1, failed: 0})
    expect(run.stdout).not.toContain('s3cret')
  })

  it('exits 3 with a hint when the server refuses the credentials (no password given, none assumed)', async () => {
    seen.length = 0
    const run = await ddr(['send', 'study', '--backend', 'secure-pacs'], {cwd: workDir})
    expect(run.code).toBe(3)
    expect(run.stderr).toContain('HTTP 401 (not authorized)')
    expect(run.stderr).toContain('check the username and password of backend secure-pacs (DDR_BACKEND_SECURE_PACS_USERNAME / DDR_BACKEND_SECURE_PACS_PASSWORD)')
    expect(seen).toEqual([`Basic ${Buffer.from('uploader:').toString('base64')}`])
  })
})
