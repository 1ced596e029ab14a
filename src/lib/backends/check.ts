import type {BackendConfig} from '../config/schema.js'
import {isDdrError} from '../errors.js'
import type {OrthancClient} from '../orthanc/client.js'
import type {Backend, BackendCheck, CheckOptions} from './backend.js'

/** A check before any part ran. */
export function emptyCheck(): BackendCheck {
  return {problems: [], answered: false, echoMs: null, statisticsMs: null, instances: null, studies: null, diskBytes: null, diskSizeMb: null, freeBytes: null, minFreeBytes: null}
}

/** Milliseconds to one decimal, as checks report them. */
export function roundMs(ms: number): number {
  return Math.round(ms * 10) / 10
}

/** Whether a backend is an Orthanc whose REST API gives /statistics (load and stored counts). */
export function hasOrthancStatistics(config: BackendConfig): boolean {
  return (config.type ?? 'orthanc') === 'orthanc' && config.url !== undefined
}

/**
 * Asks Orthanc's REST API into `check`: GET /system first when `system` is set (its round trip
 * is returned), then a timed GET /statistics (instances, studies, disk used). A failure is one
 * "REST: ..." problem; an HTTP error status still counts as an answer (the server is there).
 */
export async function askOrthanc(client: OrthancClient, check: BackendCheck, options: {system: boolean}): Promise<number | undefined> {
  let systemMs: number | undefined
  try {
    if (options.system) {
      const started = performance.now()
      await client.system()
      systemMs = performance.now() - started
    }

    const started = performance.now()
    const stats = await client.statistics()
    check.statisticsMs = roundMs(performance.now() - started)
    check.answered = true
    check.instances = stats.CountInstances
    check.studies = stats.CountStudies
    check.diskBytes = Number(stats.TotalDiskSize)
    check.diskSizeMb = stats.TotalDiskSizeMB
  } catch (error) {
    if (isDdrError(error, 'BACKEND_REFUSED')) check.answered = true
    check.problems.push(`REST: ${(error as Error).message}`)
  }

  return systemMs
}

/**
 * Checks one backend: its own `check` (every Backend class of src/lib/backends has one), or, for
 * a backend without (a stand-in in tests), its echo as the one part.
 */
export async function checkBackend(backend: Backend, options: CheckOptions): Promise<BackendCheck> {
  if (backend.check !== undefined) return backend.check(options)
  const check = emptyCheck()
  if (options.passive) return check
  try {
    check.echoMs = roundMs(await backend.echo(options.timeoutMs))
    check.answered = true
  } catch (error) {
    check.problems.push(`C-ECHO: ${(error as Error).message}`)
  }

  return check
}
