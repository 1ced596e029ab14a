import {spawn} from 'node:child_process'
import {rm, writeFile} from 'node:fs/promises'
import path from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {freePort} from './ports.js'

export interface ToolResult {
  code: number | null
  stdout: string
  stderr: string
}

/** Debian's dcmtk leaves Nagle on unless TCP_NODELAY=1 is in the environment (~88 ms per instance). */
const toolEnv = (): NodeJS.ProcessEnv => ({...process.env, TCP_NODELAY: '1'})

/** Runs a dcmtk tool to completion (killed after timeoutMs, default 60 s). Never rejects on a non-zero exit. */
export function runDcmtk(tool: string, args: string[], options: {timeoutMs?: number} = {}): Promise<ToolResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(tool, args, {env: toolEnv(), stdio: ['ignore', 'pipe', 'pipe']})
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk))
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk))
    const timer = setTimeout(() => child.kill('SIGKILL'), options.timeoutMs ?? 60_000)
    child.on('error', (error) => {
      clearTimeout(timer)
      reject(error)
    })
    child.on('close', (code) => {
      clearTimeout(timer)
      resolve({code, stdout, stderr})
    })
  })
}

/** storescu [args]: e.g. storescu(['-aec', 'ORTHANC', 'localhost', '4242', file]). */
export const storescu = (args: string[], options?: {timeoutMs?: number}) => runDcmtk('storescu', args, options)
/** dcmsend [args]: proposes each file's own transfer syntax (use it for compressed files). */
export const dcmsend = (args: string[], options?: {timeoutMs?: number}) => runDcmtk('dcmsend', args, options)
/** echoscu [args]: e.g. echoscu(['-aec', 'ORTHANC', 'localhost', '4242']). */
export const echoscu = (args: string[], options?: {timeoutMs?: number}) => runDcmtk('echoscu', args, options)

export interface Storescp {
  port: number
  aeTitle: string
  dir: string
  /** The storescp process (without --fork it serves every association itself: SIGSTOP stalls it). */
  pid: number
  /** What storescp printed so far. */
  output(): string
  stop(): Promise<void>
}

/** A storescp on a free port writing every received instance into `dir` (accepts all transfer syntaxes). */
export async function startStorescp(options: {dir: string; aeTitle?: string; extraArgs?: string[]}): Promise<Storescp> {
  const aeTitle = options.aeTitle ?? 'STORESCP'
  const port = await freePort()
  const child = spawn('storescp', ['-od', options.dir, '+xa', '-aet', aeTitle, ...(options.extraArgs ?? []), String(port)], {
    env: toolEnv(),
    stdio: ['ignore', 'pipe', 'pipe'],
  })
  let output = ''
  const collect = (chunk: string) => {
    output = (output + chunk).slice(-100_000)
  }

  child.stdout.setEncoding('utf8').on('data', collect)
  child.stderr.setEncoding('utf8').on('data', collect)
  let exited = false
  const closed = new Promise<void>((resolve) => child.on('close', () => resolve()))
  child.on('exit', () => (exited = true))
  const stop = async () => {
    if (!exited) {
      child.kill('SIGTERM')
      child.kill('SIGCONT') // a test may have stalled it with SIGSTOP
    }

    const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
    await closed
    clearTimeout(timer)
  }

  const deadline = Date.now() + 10_000
  for (;;) {
    if (exited) throw new Error(`storescp exited at startup on port ${port}: ${output}`)
    const echo = await echoscu(['-aec', aeTitle, '127.0.0.1', String(port)], {timeoutMs: 5000})
    if (echo.code === 0) break
    if (Date.now() > deadline) {
      await stop()
      throw new Error(`storescp on port ${port} did not answer C-ECHO within 10 s: ${output}`)
    }

    await sleep(50)
  }

  return {port, aeTitle, dir: options.dir, pid: child.pid!, output: () => output, stop}
}

export interface TestDicomOptions {
  sopInstanceUid?: string
  studyInstanceUid?: string
  seriesInstanceUid?: string
  patientId?: string
  patientName?: string
  /** Number of 16-bit pixels (a rows x 1 image); default 4. */
  pixels?: number
}

let uidCounter = 0

/** A UID under the dcmtk example root, unique per process and call. */
export function testUid(): string {
  uidCounter += 1
  return `1.2.826.0.1.3680043.8.498.${Date.now()}.${process.pid}.${uidCounter}`
}

/**
 * Writes a small valid CT Part 10 file (explicit VR little endian) with dump2dcm and returns its path and UIDs.
 * For tests that need "some DICOM file" without depending on fixtures/.
 */
export async function makeTestDicom(file: string, options: TestDicomOptions = {}): Promise<{file: string; sopInstanceUid: string; studyInstanceUid: string; seriesInstanceUid: string}> {
  const sopInstanceUid = options.sopInstanceUid ?? testUid()
  const studyInstanceUid = options.studyInstanceUid ?? testUid()
  const seriesInstanceUid = options.seriesInstanceUid ?? testUid()
  const pixels = options.pixels ?? 4
  const pixelData = Array.from({length: pixels}, (_, index) => (index % 65536).toString(16).padStart(4, '0')).join('\\')
  const dump = [
    '(0008,0016) UI =CTImageStorage',
    `(0008,0018) UI [${sopInstanceUid}]`,
    '(0008,0060) CS [CT]',
    `(0010,0010) PN [${options.patientName ?? 'Test^Patient'}]`,
    `(0010,0020) LO [${options.patientId ?? 'DDR-TEST'}]`,
    `(0020,000d) UI [${studyInstanceUid}]`,
    `(0020,000e) UI [${seriesInstanceUid}]`,
    '(0028,0002) US 1',
    '(0028,0004) CS [MONOCHROME2]',
    `(0028,0010) US ${pixels}`,
    '(0028,0011) US 1',
    '(0028,0100) US 16',
    '(0028,0101) US 16',
    '(0028,0102) US 15',
    '(0028,0103) US 0',
    `(7fe0,0010) OW ${pixelData}`,
    '',
  ].join('\n')
  const dumpFile = `${file}.dump`
  await writeFile(dumpFile, dump)
  const result = await runDcmtk('dump2dcm', ['+te', dumpFile, file])
  await rm(dumpFile, {force: true})
  if (result.code !== 0) throw new Error(`dump2dcm failed for ${path.basename(file)}: ${result.stderr}`)
  return {file, sopInstanceUid, studyInstanceUid, seriesInstanceUid}
}
