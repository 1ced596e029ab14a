import {mkdtemp, rm} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {OrthancClient} from '../../src/lib/orthanc/client.js'
import {type OrthancProcessOptions, startOrthanc, stopOrthanc} from '../../src/lib/stack/orthanc-process.js'
import {freePort} from './ports.js'

export interface TestOrthanc {
  name: string
  aeTitle: string
  dicomPort: number
  httpPort: number
  url: string
  dir: string
  pid: number
  client: OrthancClient
  /** Stops the process and removes its temp folder; safe to call twice. */
  stop(): Promise<void>
  /** Stops the process but keeps its data, ports and folder (a backend outage). */
  halt(): Promise<void>
  /** Starts it again after halt(), on the same ports with the same data. */
  resume(): Promise<void>
}

export interface TestOrthancOptions {
  name?: string
  aeTitle?: string
  plugins?: string[]
  extra?: Record<string, unknown>
  /** Keep the temp folder after stop (to read the log). */
  keepDir?: boolean
}

let counter = 0

/** A real Orthanc on free ports in a fresh temp folder. Always call stop() (afterAll). */
export async function startTestOrthanc(options: TestOrthancOptions = {}): Promise<TestOrthanc> {
  counter += 1
  const name = options.name ?? `test-orthanc-${process.pid}-${counter}`
  const aeTitle = options.aeTitle ?? `ORTHANC${counter}`
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ddr-orthanc-'))
  const processOptions: OrthancProcessOptions = {
    name,
    aeTitle,
    dicomPort: await freePort(),
    httpPort: await freePort(),
    dir,
    plugins: options.plugins,
    extra: options.extra,
  }
  let info
  try {
    info = await startOrthanc(processOptions)
  } catch (error) {
    await rm(dir, {recursive: true, force: true})
    throw error
  }

  const client = new OrthancClient({url: info.url})
  let stopped = false
  const handle: TestOrthanc = {
    name,
    aeTitle,
    dicomPort: info.dicomPort,
    httpPort: info.httpPort,
    url: info.url,
    dir,
    pid: info.pid,
    client,
    async halt() {
      await stopOrthanc(dir)
    },
    async resume() {
      handle.pid = (await startOrthanc(processOptions)).pid
    },
    async stop() {
      if (stopped) return
      stopped = true
      client.close()
      try {
        await stopOrthanc(dir)
      } finally {
        if (!options.keepDir) await rm(dir, {recursive: true, force: true})
      }
    },
  }
  return handle
}
