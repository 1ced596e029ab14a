import {spawn, type ChildProcess} from 'node:child_process'
import {existsSync, readFileSync} from 'node:fs'
import {mkdir, mkdtemp, readFile, rm, writeFile} from 'node:fs/promises'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'

import {OrthancClient} from '../../../src/lib/orthanc/client.js'
import {type OrthancProcessInfo, orthancStatus, startOrthanc, stopOrthanc} from '../../../src/lib/stack/orthanc-process.js'
import type {StackResult} from '../../../src/lib/stack/stack.js'
import {echoscu} from '../../helpers/dcmtk.js'
import {expectDdrError} from '../../helpers/expect.js'
import {freePort} from '../../helpers/ports.js'

const repoRoot = path.resolve(import.meta.dirname ?? path.dirname(new URL(import.meta.url).pathname), '../../..')

/** Alive and not a zombie (an Orthanc started by the CLI is reparented to init, which reaps it a little later). */
const isAlive = (pid: number) => {
  try {
    process.kill(pid, 0)
  } catch {
    return false
  }

  try {
    return !/^\d+ \(.*\) [ZX]/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'))
  } catch {
    return false
  }
}

describe('startOrthanc / stopOrthanc with a real Orthanc', () => {
  let root: string
  let dirA: string
  let dirB: string
  let first: OrthancProcessInfo
  let second: OrthancProcessInfo
  let bystander: ChildProcess | undefined
  let startMs = 0

  beforeAll(async () => {
    root = await mkdtemp(path.join(os.tmpdir(), 'ddr-stack-it-'))
    dirA = path.join(root, 'a')
    dirB = path.join(root, 'b')
    const started = performance.now()
    first = await startOrthanc({name: 'it-a', aeTitle: 'IT_A', dicomPort: await freePort(), httpPort: await freePort(), dir: dirA})
    startMs = performance.now() - started
    second = await startOrthanc({name: 'it-b', aeTitle: 'IT_B', dicomPort: await freePort(), httpPort: await freePort(), dir: dirB})
  })

  afterAll(async () => {
    bystander?.kill('SIGKILL')
    await Promise.allSettled([stopOrthanc(dirA), stopOrthanc(dirB)])
    await rm(root, {recursive: true, force: true})
  })

  it('answers GET /system with the configured name, AE title and ports', async () => {
    const client = new OrthancClient({url: first.url})
    try {
      const system = await client.system()
      expect(system).toMatchObject({Name: 'it-a', DicomAet: 'IT_A', DicomPort: first.dicomPort, HttpPort: first.httpPort})
      expect(startMs).toBeLessThan(20_000)
    } finally {
      client.close()
    }
  })

  it('starts empty: statistics count 0 instances', async () => {
    const client = new OrthancClient({url: first.url})
    try {
      const statistics = await client.statistics()
      expect(statistics.CountInstances).toBe(0)
      expect(statistics.CountStudies).toBe(0)
    } finally {
      client.close()
    }
  })

  it('answers a C-ECHO from echoscu', async () => {
    const result = await echoscu(['-aet', 'DDR_TEST', '-aec', first.aeTitle, '127.0.0.1', String(first.dicomPort)])
    expect(result.stderr).not.toMatch(/error|fail/i)
    expect(result.code).toBe(0)
  })

  it('writes its config, pid file and log under the dir, and reports itself running', async () => {
    const config = JSON.parse(await readFile(path.join(dirA, 'orthanc.json'), 'utf8'))
    expect(config).toMatchObject({
      DicomAet: 'IT_A',
      RemoteAccessAllowed: false,
      AuthenticationEnabled: false,
      DicomCheckCalledAet: false,
      UnknownSopClassAccepted: true,
      OverwriteInstances: false,
      StorageDirectory: path.join(dirA, 'storage'),
    })
    expect(config).not.toHaveProperty('RegisteredUsers')
    expect((await readFile(path.join(dirA, 'orthanc.pid'), 'utf8')).trim()).toBe(String(first.pid))
    expect(await readFile(path.join(dirA, 'orthanc.log'), 'utf8')).toContain('Orthanc has started')
    const status = await orthancStatus(dirA)
    expect(status).toMatchObject({running: true, pid: first.pid, dicomPort: first.dicomPort, httpPort: first.httpPort, aeTitle: 'IT_A', version: '1.10.1'})
  })

  it('refuses to start a second Orthanc in the same dir', async () => {
    const error = await expectDdrError(startOrthanc({name: 'it-a', aeTitle: 'IT_A', dicomPort: await freePort(), httpPort: await freePort(), dir: dirA}))
    expect(error.code).toBe('STACK_FAILED')
    expect(error.message).toContain(`pid ${first.pid}`)
  })

  it('refuses a port that is already taken, naming it (exit 3)', async () => {
    const blocker = net.createServer()
    await new Promise<void>((resolve) => blocker.listen(0, '0.0.0.0', resolve))
    const busy = (blocker.address() as net.AddressInfo).port
    const dir = path.join(root, 'busy')
    try {
      const error = await expectDdrError(startOrthanc({name: 'busy', aeTitle: 'BUSY', dicomPort: busy, httpPort: await freePort(), dir}))
      expect(error.code).toBe('STACK_FAILED')
      expect(error.exit).toBe(3)
      expect(error.message).toContain(`DICOM port ${busy} is already in use`)
    } finally {
      blocker.close()
    }
  })

  it('quotes the log when Orthanc exits during startup', async () => {
    const blocker = net.createServer()
    await new Promise<void>((resolve) => blocker.listen(0, '0.0.0.0', resolve))
    const busy = (blocker.address() as net.AddressInfo).port
    const dir = path.join(root, 'crash')
    const httpPort = await freePort()
    try {
      // The pre-check sees free ports; the override makes Orthanc itself fail to bind.
      const error = await expectDdrError(startOrthanc({name: 'crash', aeTitle: 'CRASH', dicomPort: await freePort(), httpPort, dir, extra: {DicomPort: busy}}))
      expect(error.code).toBe('STACK_FAILED')
      expect(error.message).toContain('exited during startup')
      expect(error.message).toContain(`HTTP port ${httpPort}`)
      expect(error.message).toMatch(/already in use/)
      expect(existsSync(path.join(dir, 'orthanc.pid'))).toBe(false)
    } finally {
      blocker.close()
    }
  })

  it('never signals a process that is not the Orthanc of that dir (stale pid file)', async () => {
    bystander = spawn('sleep', ['300'], {stdio: 'ignore'})
    const dir = path.join(root, 'stale')
    await mkdir(dir, {recursive: true})
    await writeFile(path.join(dir, 'orthanc.pid'), `${bystander.pid}\n`)
    const result = await stopOrthanc(dir)
    expect(result.stopped).toBe(false)
    expect(isAlive(bystander.pid!)).toBe(true)
    expect(existsSync(path.join(dir, 'orthanc.pid'))).toBe(false)
    expect((await orthancStatus(dir)).running).toBe(false)
  })

  it('stopOrthanc stops exactly that Orthanc', async () => {
    const result = await stopOrthanc(dirA)
    expect(result).toMatchObject({stopped: true, pid: first.pid})
    expect(isAlive(first.pid)).toBe(false)
    expect(existsSync(path.join(dirA, 'orthanc.pid'))).toBe(false)
    expect((await orthancStatus(dirA)).running).toBe(false)

    expect(isAlive(second.pid)).toBe(true)
    expect((await orthancStatus(dirB)).running).toBe(true)
    expect(await stopOrthanc(dirA)).toMatchObject({stopped: false})
  })
})

describe('ddr stack up/status/down (compiled CLI)', () => {
  let root: string
  let configPath: string
  let stackDirectory: string
  const ports: Record<string, number> = {}

  const runCli = (args: string[]) =>
    new Promise<{code: number | null; stdout: string; stderr: string}>((resolve, reject) => {
      const child = spawn(process.execPath, [path.join(repoRoot, 'bin/run.js'), ...args], {cwd: root, env: {...process.env, NO_COLOR: '1'}, stdio: ['ignore', 'pipe', 'pipe']})
      let stdout = ''
      let stderr = ''
      child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk))
      child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
      child.on('error', reject)
      child.on('close', (code) => resolve({code, stdout, stderr}))
    })

  const stack = async (action: string, extra: string[] = []) => {
    const result = await runCli(['stack', action, '--json', '--config', configPath, ...extra])
    let json: StackResult
    try {
      json = JSON.parse(result.stdout)
    } catch {
      throw new Error(`stack ${action}: stdout is not JSON (exit ${result.code}):\n${result.stdout}\n${result.stderr}`)
    }

    return {...result, json}
  }

  beforeAll(async () => {
    if (!existsSync(path.join(repoRoot, 'dist/commands/stack/up.js'))) throw new Error('dist/commands/stack/up.js is missing: run "npm run build" first')
    root = await mkdtemp(path.join(os.tmpdir(), 'ddr-stack-cli-'))
    stackDirectory = path.join(root, 'stack')
    for (const key of ['dicom1', 'http1', 'dicom2', 'http2']) ports[key] = await freePort()
    configPath = path.join(root, 'ddr.config.json')
    await writeFile(
      configPath,
      JSON.stringify({
        stack: {dir: stackDirectory},
        backends: [
          {name: 'cli-one', port: ports.dicom1, aeTitle: 'CLI_ONE', url: `http://127.0.0.1:${ports.http1}`},
          {name: 'cli-two', port: ports.dicom2, aeTitle: 'CLI_TWO', url: `http://localhost:${ports.http2}`},
        ],
      }),
    )
  })

  afterAll(async () => {
    if (root === undefined) return
    await Promise.allSettled([stopOrthanc(path.join(stackDirectory, 'cli-one')), stopOrthanc(path.join(stackDirectory, 'cli-two'))])
    await rm(root, {recursive: true, force: true})
  })

  it('starts one Orthanc per backend, is idempotent, reports status and stops them', async () => {
    const up = await stack('up')
    expect(up.code).toBe(0)
    expect(up.json).toMatchObject({action: 'up', ok: true, dir: stackDirectory})
    expect(up.json.backends.map((b) => [b.name, b.state, b.dicomPort, b.httpPort])).toEqual([
      ['cli-one', 'started', ports.dicom1, ports.http1],
      ['cli-two', 'started', ports.dicom2, ports.http2],
    ])
    for (const backend of up.json.backends) {
      expect(backend.pid).toEqual(expect.any(Number))
      expect(backend.dir).toBe(path.join(stackDirectory, backend.name))
      const echo = await echoscu(['-aec', backend.aeTitle, '127.0.0.1', String(backend.dicomPort)])
      expect(echo.code).toBe(0)
    }

    const again = await stack('up')
    expect(again.code).toBe(0)
    expect(again.json.backends.map((b) => b.state)).toEqual(['already-running', 'already-running'])
    expect(again.json.backends.map((b) => b.pid)).toEqual(up.json.backends.map((b) => b.pid))

    const status = await stack('status')
    expect(status.code).toBe(0)
    expect(status.json.backends.map((b) => [b.state, b.version])).toEqual([
      ['running', '1.10.1'],
      ['running', '1.10.1'],
    ])

    const table = await runCli(['stack', 'status', '--config', configPath])
    expect(table.code).toBe(0)
    expect(table.stdout).toMatch(/BACKEND\s+STATE/)
    expect(table.stdout).toMatch(/cli-one\s+running\s+CLI_ONE/)

    const down = await stack('down')
    expect(down.code).toBe(0)
    expect(down.json.backends.map((b) => b.state)).toEqual(['stopped', 'stopped'])
    for (const backend of up.json.backends) expect(isAlive(backend.pid!)).toBe(false)

    const after = await stack('status')
    expect(after.json.backends.map((b) => b.state)).toEqual(['not-running', 'not-running'])
  })

  it('lists up, down and status under "stack --help", and no base-command among the commands', async () => {
    const topic = await runCli(['stack', '--help'])
    expect(topic.code).toBe(0)
    for (const action of ['up', 'down', 'status']) expect(topic.stdout).toMatch(new RegExp(`stack ${action}\\s`))
    const up = await runCli(['stack', 'up', '--help'])
    expect(up.stdout).toContain('--start-timeout')
    expect(up.stdout).toContain('--[no-]install')
    const root = await runCli(['--help'])
    expect(root.stdout).toMatch(/^\s+stack\s/m)
    expect(root.stdout).not.toContain('base-command')
    const unknown = await runCli(['stack', 'sideways', '--config', configPath])
    expect(unknown.code).toBe(2)
  })

  it('exits 3 and reports the failed backend when an Orthanc cannot start', async () => {
    const blocker = net.createServer()
    await new Promise<void>((resolve) => blocker.listen(ports.http2, '0.0.0.0', resolve))
    try {
      const up = await stack('up')
      expect(up.code).toBe(3)
      expect(up.json.ok).toBe(false)
      expect(up.json.backends.map((b) => b.state)).toEqual(['started', 'failed'])
      expect(up.json.backends[1].message).toContain(`HTTP port ${ports.http2} is already in use`)
    } finally {
      blocker.close()
      await stack('down')
    }
  })
})
