import {readFileSync} from 'node:fs'
import {copyFile, mkdir, mkdtemp, readdir, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import type {SendResult} from '../../../src/lib/send/types.js'
import {DICOMWEB_PLUGIN} from '../../../src/lib/stack/orthanc-process.js'
import {type CliResult, runCompiledCli} from '../../helpers/compiled-cli.js'
import {datasetOf, fixturePath, goodFixtures} from '../../helpers/fixtures.js'
import {type TestOrthanc, startTestOrthanc} from '../../helpers/orthanc.js'

function parseJson<T>(run: CliResult): T {
  try {
    return JSON.parse(run.stdout) as T
  } catch {
    throw new Error(`stdout is not JSON (exit ${run.code}):\n${run.stdout}\n${run.stderr}`)
  }
}

async function listFiles(dir: string): Promise<string[]> {
  const entries = await readdir(dir, {recursive: true, withFileTypes: true})
  return entries.filter((e) => e.isFile()).map((e) => path.relative(dir, path.join(e.parentPath, e.name))).sort()
}

describe('ddr send --backend NAME to a dicomweb or a folder backend (compiled CLI)', () => {
  let orthanc: TestOrthanc
  let workDir: string
  let configPath: string
  let inputs: string
  const send = (args: string[]) => runCompiledCli(['send', ...args, '--config', configPath], {cwd: workDir, timeoutMs: 90_000})

  beforeAll(async () => {
    workDir = await mkdtemp(path.join(os.tmpdir(), 'ddr-send-backends-'))
    orthanc = await startTestOrthanc({name: 'web', aeTitle: 'WEB', plugins: [DICOMWEB_PLUGIN], extra: {DicomWeb: {Enable: true, Root: '/dicom-web/'}}})
    inputs = path.join(workDir, 'inputs')
    await mkdir(inputs)
    for (const fixture of goodFixtures) await copyFile(fixturePath(fixture), path.join(inputs, path.basename(fixture.path).replace(/\.dcm$/, `-${fixture.sopInstanceUid.slice(-6)}.dcm`)))
    configPath = path.join(workDir, 'ddr.config.json')
    await writeFile(
      configPath,
      JSON.stringify({
        backends: [
          {name: 'pacs', host: '127.0.0.1', port: orthanc.dicomPort, aeTitle: orthanc.aeTitle},
          {name: 'web', type: 'dicomweb', url: `${orthanc.url}/dicom-web`, batchMaxInstances: 8},
          {name: 'disk', type: 'folder', path: path.join(workDir, 'archive'), minFreeMb: 1},
          {name: 'full', type: 'folder', path: path.join(workDir, 'full'), minFreeMb: 1e12},
        ],
      }),
    )
  })

  afterAll(async () => {
    await orthanc?.stop()
    if (workDir) await rm(workDir, {recursive: true, force: true})
  })

  it('--backend of a dicomweb backend uses STOW-RS: every file stored, its dataset byte for byte', async () => {
    const run = await send([inputs, '--backend', 'web', '--json'])
    expect({code: run.code, stderr: run.stderr}).toEqual({code: 0, stderr: ''})
    const result = parseJson<SendResult>(run)
    expect(result).toMatchObject({target: {protocol: 'stow', url: `${orthanc.url}/dicom-web`, backend: 'web'}, sent: goodFixtures.length, failed: 0})
    for (const fixture of goodFixtures) {
      const id = await orthanc.client.lookupInstance(fixture.sopInstanceUid)
      expect({fixture: fixture.path, stored: id !== undefined}).toEqual({fixture: fixture.path, stored: true})
      const stored = await orthanc.client.instanceFile(id!)
      expect({fixture: fixture.path, identical: datasetOf(stored).equals(datasetOf(readFileSync(fixturePath(fixture))))}).toEqual({fixture: fixture.path, identical: true})
    }

    const human = await send([path.join(inputs, (await readdir(inputs))[0]), '--backend', 'web'])
    expect(human.code).toBe(0)
    expect(human.stdout).toContain(`to backend web (STOW-RS ${orthanc.url}/dicom-web)`)
  })

  it('--backend of a folder backend writes each file, unchanged, in the folder layout; again is harmless', async () => {
    for (let round = 0; round < 2; round++) {
      const run = await send([inputs, '--backend', 'disk', '--json', '--concurrency', '3'])
      expect({round, code: run.code, stderr: run.stderr}).toEqual({round, code: 0, stderr: ''})
      expect(parseJson<SendResult>(run)).toMatchObject({target: {protocol: 'folder', path: path.join(workDir, 'archive'), backend: 'disk'}, sent: goodFixtures.length, failed: 0})
    }

    const archive = path.join(workDir, 'archive')
    expect(await listFiles(archive)).toEqual(goodFixtures.map((f) => path.join(f.patientId.replaceAll(/[^\w.-]/g, '_'), f.studyInstanceUid, f.seriesInstanceUid, `${f.sopInstanceUid}.dcm`)).sort())
    for (const fixture of goodFixtures) {
      const written = readFileSync(path.join(archive, fixture.patientId.replaceAll(/[^\w.-]/g, '_'), fixture.studyInstanceUid, fixture.seriesInstanceUid, `${fixture.sopInstanceUid}.dcm`))
      expect({fixture: fixture.path, identical: written.equals(readFileSync(fixturePath(fixture)))}).toEqual({fixture: fixture.path, identical: true})
    }
  })

  it('a folder that cannot take files stops the send with exit 3; DICOM flags with such a backend are a usage error', async () => {
    const full = await send([inputs, '--backend', 'full', '--json'])
    expect(full.code).toBe(3)
    expect(parseJson<{error: {code: string; message: string}}>(full).error).toMatchObject({code: 'BACKEND_UNREACHABLE', message: expect.stringMatching(/^folder backend full: .* MB free, below minFreeMb 1000000000000; nothing was sent/)})

    const flags = await send([inputs, '--backend', 'disk', '--port', '104'])
    expect(flags.code).toBe(2)
    expect(flags.stderr).toContain('--port does not apply to backend disk: it is a folder backend, not a DICOM receiver')
    const rest = await send([inputs, '--rest', 'web'])
    expect(rest.code).toBe(2)
    expect(rest.stderr).toContain('backend web is a dicomweb backend, not an Orthanc REST API')
  })
})
