import {mkdtemp, rm} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {type HaproxyCheck, type HaproxyServerState, haproxyServerStates, startHaproxy, stopHaproxy} from '../../src/lib/stack/haproxy.js'
import {freePort} from './ports.js'
import {waitFor} from './wait.js'

export interface TestHaproxy {
  /** The DICOM frontend on 127.0.0.1: send here. */
  port: number
  dir: string
  pid: number
  /** What HAProxy says of each server now (`show stat`). */
  servers(): Promise<HaproxyServerState[]>
  /** Waits until HAProxy reports `name` as `status` (UP, DOWN); throws after `timeoutMs` (default 10 s). */
  waitForServer(name: string, status: 'DOWN' | 'UP', timeoutMs?: number): Promise<void>
  /** Stops HAProxy at once (open connections cut) and removes its folder; safe to call twice. */
  stop(): Promise<void>
}

/**
 * HAProxy (src/lib/stack/haproxy.ts's config: TCP, leastconn, GET /healthz checks every second,
 * 2 to fall, 2 to rise) on a free port of 127.0.0.1 in front of the given servers (each a DICOM
 * port and the status port /healthz is checked on). Always call stop() (afterAll).
 */
export async function startTestHaproxy(servers: Array<{name?: string; port: number; checkPort: number}>, options: {check?: Partial<HaproxyCheck>; keepDir?: boolean; sendProxy?: boolean} = {}): Promise<TestHaproxy> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ddr-haproxy-'))
  let info
  try {
    info = await startHaproxy({
      dir,
      host: '127.0.0.1',
      port: await freePort(),
      servers: servers.map((server, index) => ({name: server.name ?? `router-${index + 1}`, host: '127.0.0.1', port: server.port, checkPort: server.checkPort})),
      check: options.check,
      sendProxy: options.sendProxy,
    })
  } catch (error) {
    await rm(dir, {recursive: true, force: true})
    throw error
  }

  let stopped = false
  const states = () => haproxyServerStates(info.socketPath)
  return {
    port: info.port,
    dir,
    pid: info.pid,
    servers: states,
    async waitForServer(name, status, timeoutMs = 10_000) {
      let last: HaproxyServerState | undefined
      const check = async () => {
        last = (await states()).find((server) => server.name === name)
        return last?.status === status
      }

      await waitFor(`HAProxy to mark ${name} ${status}`, check, timeoutMs, 100).catch((error: Error) => {
        throw new Error(`${error.message}; it says ${last?.status ?? 'nothing'} (${last?.check ?? 'no check'})`)
      })
    },
    async stop() {
      if (stopped) return
      stopped = true
      await stopHaproxy(dir, {soft: false})
      if (!options.keepDir) await rm(dir, {recursive: true, force: true})
    },
  }
}
