import {redactUrl} from '../output/redact.js'
import {createInterface} from 'node:readline/promises'

import {Listr, ListrLogger, ProcessOutput} from 'listr2'

import type {BackendConfig} from '../config/schema.js'
import {DdrError, ExitCode, type ExitCodeValue, isDdrError} from '../errors.js'
import {formatTable, painter} from '../output/table.js'
import {formatBytes} from '../output/units.js'
import {type OrthancClient, orthancClientFor} from './client.js'

/** What a backend holds (Orthanc /statistics). */
export interface PurgeCounts {
  patients: number
  studies: number
  instances: number
  diskBytes: number
}

/** One backend, before anything is deleted. */
export interface PurgePlanEntry {
  backend: BackendConfig
  /** Null when the backend could not be counted (see `error`) or has no url. */
  counts: PurgeCounts | null
  state: 'ready' | 'refused' | 'unreachable' | 'skipped'
  error: string | null
}

export interface PurgePlan {
  entries: PurgePlanEntry[]
  /** Instances that would be deleted, over the reachable backends. */
  instances: number
}

/**
 * purged: holds nothing now; empty: held nothing; partial: some resources could not be deleted (or
 * instances arrived meanwhile); unreachable: not reached (before or during the purge); refused: it
 * answered with an error to counting or listing (wrong credentials: HTTP 401); skipped: no REST url
 * configured; dry-run: counted only; cancelled: the confirmation was declined.
 */
export type PurgeBackendState = 'cancelled' | 'dry-run' | 'empty' | 'partial' | 'purged' | 'refused' | 'skipped' | 'unreachable'

export interface PurgeBackendResult {
  name: string
  url: string | null
  state: PurgeBackendState
  /** What it held before (null when it could not be counted). */
  before: PurgeCounts | null
  /** Instances and patients removed (instances: counted before minus after). */
  deleted: {patients: number; instances: number}
  /** Patients whose deletion Orthanc refused. */
  failed: number
  /** Instances left afterwards (null when not counted: unreachable, dry run, cancelled). */
  remaining: number | null
  /** The first few error messages. */
  errors: string[]
}

/** What `ddr purge --json` prints. */
export interface PurgeResult {
  dryRun: boolean
  /** False when the confirmation was declined. */
  confirmed: boolean
  /** Instances deleted over all backends. */
  deleted: number
  /** Patients that could not be deleted, over all backends. */
  failed: number
  backends: PurgeBackendResult[]
}

export interface PurgeOptions {
  /** Patients per POST /tools/bulk-delete (default 100). */
  batchSize?: number
  /** Per REST request (default 60 s: a bulk delete of big studies takes time). */
  timeoutMs?: number
  /** Progress on stderr: 'tty' (listr2, redrawn), 'lines' (one line per step), 'none' (default). */
  progress?: 'lines' | 'none' | 'tty'
  /** Where progress goes (default process.stderr). */
  output?: NodeJS.WriteStream
}

const MAX_ERRORS = 5
/** Passes over a backend: instances that arrive during a purge (a router still running) get another one. */
const MAX_PASSES = 3

function clientFor(backend: BackendConfig, timeoutMs: number): OrthancClient {
  return orthancClientFor(backend, {timeoutMs})
}

/** Counts what each backend holds, in parallel. Never throws for a backend: it is marked unreachable. */
export async function planPurge(backends: BackendConfig[], options: {timeoutMs?: number} = {}): Promise<PurgePlan> {
  const entries = await Promise.all(
    backends.map(async (backend): Promise<PurgePlanEntry> => {
      if (backend.url === undefined) return {backend, counts: null, state: 'skipped', error: 'no REST url configured: ddr can only purge an Orthanc'}
      const client = clientFor(backend, options.timeoutMs ?? 10_000)
      try {
        return {backend, counts: await counts(client), state: 'ready', error: null}
      } catch (error) {
        return {backend, counts: null, state: isDdrError(error, 'BACKEND_REFUSED') ? 'refused' : 'unreachable', error: describeError(error)}
      } finally {
        client.close()
      }
    }),
  )
  return {entries, instances: entries.reduce((sum, e) => sum + (e.counts?.instances ?? 0), 0)}
}

async function counts(client: OrthancClient): Promise<PurgeCounts> {
  const stats = await client.statistics()
  return {patients: stats.CountPatients, studies: stats.CountStudies, instances: stats.CountInstances, diskBytes: Number(stats.TotalDiskSize)}
}

/** The result of a plan when nothing is deleted: a dry run, or a declined confirmation. */
export function planResult(plan: PurgePlan, how: 'cancelled' | 'dry-run'): PurgeResult {
  return {
    dryRun: how === 'dry-run',
    confirmed: how !== 'cancelled',
    deleted: 0,
    failed: 0,
    backends: plan.entries.map((e) => ({
      name: e.backend.name,
      url: e.backend.url === undefined ? null : redactUrl(e.backend.url),
      state: e.state === 'ready' ? how : e.state,
      before: e.counts,
      deleted: {patients: 0, instances: 0},
      failed: 0,
      remaining: null,
      errors: e.error === null ? [] : [e.error],
    })),
  }
}

/**
 * Deletes everything from the backends of the plan that are ready, in parallel: patients (each with
 * all its studies) in batches through POST /tools/bulk-delete, one by one where Orthanc has no
 * bulk delete or refuses a batch (to find the patient it refuses). Up to three passes, for
 * instances that arrive meanwhile. Never throws for a backend: each result says what happened.
 */
export async function purgeBackends(plan: PurgePlan, options: PurgeOptions = {}): Promise<PurgeResult> {
  const results = planResult(plan, 'dry-run').backends.map((r) => ({...r, state: r.state === 'dry-run' ? ('purged' as const) : r.state}))
  const ready = plan.entries.map((entry, index) => ({entry, result: results[index]})).filter(({entry}) => entry.state === 'ready')
  const run = (entry: PurgePlanEntry, result: PurgeBackendResult, report: (text: string) => void) => purgeOne(entry, result, options, report)
  const progress = options.progress ?? 'none'
  if (progress === 'none' || ready.length === 0) {
    await Promise.all(ready.map(({entry, result}) => run(entry, result, () => {})))
  } else {
    const output = options.output ?? process.stderr
    const processOutput = new ProcessOutput(output, output)
    const logger = new ListrLogger({processOutput, useIcons: progress === 'tty'})
    const tasks = new Listr<unknown, 'default' | 'simple', 'simple'>(
      ready.map(({entry, result}) => ({
        title: `${entry.backend.name}: ${entry.counts!.instances} instances`,
        task: async (_, task) => {
          await run(entry, result, (text) => (task.output = text))
          task.title = `${entry.backend.name}: ${describeOutcome(result)}`
          // Thrown only to show the task as failed: the result says what happened.
          if (result.state !== 'purged' && result.state !== 'empty') throw new Error(task.title)
        },
      })),
      {
        concurrent: true,
        exitOnError: false,
        collectErrors: false,
        registerSignalListeners: false,
        renderer: progress === 'tty' ? 'default' : 'simple',
        rendererOptions: {logger},
        fallbackRenderer: 'simple',
        fallbackRendererOptions: {logger},
        fallbackRendererCondition: progress !== 'tty',
      },
    )
    await tasks.run().catch(() => undefined)
  }

  return {
    dryRun: false,
    confirmed: true,
    deleted: results.reduce((sum, r) => sum + r.deleted.instances, 0),
    failed: results.reduce((sum, r) => sum + r.failed, 0),
    backends: results,
  }
}

async function purgeOne(entry: PurgePlanEntry, result: PurgeBackendResult, options: PurgeOptions, report: (text: string) => void): Promise<void> {
  const client = clientFor(entry.backend, options.timeoutMs ?? 60_000)
  const batchSize = Math.max(1, options.batchSize ?? 100)
  const failedIds = new Set<string>()
  const noteError = (error: unknown) => {
    if (result.errors.length < MAX_ERRORS) result.errors.push(describeError(error))
  }

  let bulk = true
  try {
    // Counted again: instances may have arrived while the user read the plan.
    let before = (await counts(client)).instances
    for (let pass = 0; pass < MAX_PASSES; pass++) {
      const patients = (await client.patients()).filter((id) => !failedIds.has(id))
      if (patients.length === 0) break
      for (let start = 0; start < patients.length; start += batchSize) {
        report(`${start}/${patients.length} patients deleted`)
        const batch = patients.slice(start, start + batchSize)
        if (bulk) {
          try {
            await client.bulkDelete(batch)
            result.deleted.patients += batch.length
            continue
          } catch (error) {
            if (!isDdrError(error, 'BACKEND_REFUSED')) throw error
            // 404: an Orthanc before 1.9.4, without bulk delete; otherwise one of the batch is refused.
            if (httpStatus(error) === 404) bulk = false
          }
        }

        for (const id of batch) {
          try {
            await client.deletePatient(id)
            result.deleted.patients++
          } catch (error) {
            if (!isDdrError(error, 'BACKEND_REFUSED')) throw error
            // Already gone (by a batch that failed half-way, or someone else): that is what we wanted.
            if (httpStatus(error) === 404) {
              result.deleted.patients++
              continue
            }

            failedIds.add(id)
            noteError(error)
          }
        }
      }

      const after = await counts(client)
      result.deleted.instances += Math.max(0, before - after.instances)
      result.remaining = after.instances
      before = after.instances
      if (after.instances === 0) break
    }

    result.failed = failedIds.size
    result.remaining ??= (await counts(client)).instances
    result.state = entry.counts!.instances === 0 && result.remaining === 0 ? 'empty' : result.remaining === 0 && result.failed === 0 ? 'purged' : 'partial'
  } catch (error) {
    result.failed = failedIds.size
    result.state = isDdrError(error, 'BACKEND_REFUSED') ? 'refused' : 'unreachable'
    noteError(error)
  } finally {
    client.close()
  }
}

/** The HTTP status Orthanc answered with (OrthancClient keeps got's HTTPError as the cause). */
function httpStatus(error: unknown): number | undefined {
  const cause = (error as {cause?: {response?: {statusCode?: unknown}}}).cause
  return typeof cause?.response?.statusCode === 'number' ? cause.response.statusCode : undefined
}

/** The message, and the hint when there is one (wrong credentials: which variables to set). */
function describeError(error: unknown): string {
  return isDdrError(error) && error.hint ? `${error.message} (${error.hint})` : (error as Error).message
}

function describeOutcome(result: PurgeBackendResult): string {
  switch (result.state) {
    case 'purged':
      return `${result.deleted.instances} instances deleted`
    case 'empty':
      return 'already empty'
    case 'partial':
      return `${result.deleted.instances} deleted, ${result.failed} patients failed, ${result.remaining} instances remain`
    default:
      return `${result.state}: ${result.errors[0] ?? ''}`
  }
}

/**
 * 3 when a backend was unreachable or refused us (before or during the purge), 4 when something
 * could not be deleted or instances remain, else 0. A skipped backend (no url) is not a failure.
 */
export function purgeExitCode(result: PurgeResult): ExitCodeValue {
  if (result.backends.some((b) => b.state === 'unreachable' || b.state === 'refused')) return ExitCode.peer
  if (result.backends.some((b) => b.state === 'partial')) return ExitCode.partial
  return ExitCode.ok
}

/** The refusal when there is nobody to ask: stdin is not a terminal and --yes was not given. */
export function confirmationRequiredError(): DdrError {
  return new DdrError('USAGE', 'refusing to purge without confirmation: stdin is not a terminal, so ddr cannot ask (nothing was deleted)', {
    hint: 'add --yes to purge from a script, or --dry-run to only count what would be deleted',
  })
}

/**
 * Shows the plan on `output` and asks for "yes". True only for an explicit yes (Ctrl-C, Ctrl-D or
 * anything else is a no); an empty plan needs no confirmation (nothing would be deleted).
 */
export async function confirmPurge(plan: PurgePlan, io: {input?: NodeJS.ReadableStream; output?: NodeJS.WritableStream; color?: boolean} = {}): Promise<boolean> {
  const output = io.output ?? process.stderr
  output.write(`${formatPurgePlan(plan, {color: io.color})}\n\n`)
  const targets = plan.entries.filter((e) => e.state === 'ready' && (e.counts?.instances ?? 0) > 0)
  if (targets.length === 0) return true
  const readline = createInterface({input: io.input ?? process.stdin, output})
  try {
    const answer = await readline.question(`Delete ${plan.instances} instances from ${targets.map((e) => e.backend.name).join(', ')}? This cannot be undone. Type "yes" to confirm: `)
    return /^\s*y(es)?\s*$/i.test(answer)
  } catch (error) {
    // Ctrl-C or Ctrl-D at the question: a no.
    if ((error as Error).name === 'AbortError' || (error as {code?: string}).code === 'ERR_USE_AFTER_CLOSE') {
      output.write('\n')
      return false
    }

    throw error
  } finally {
    readline.close()
  }
}

/** What would be deleted, per backend. */
export function formatPurgePlan(plan: PurgePlan, options: {color?: boolean} = {}): string {
  const paint = painter(options.color ?? false)
  const table = formatTable(
    plan.entries,
    [
      {header: 'BACKEND', value: (e) => e.backend.name},
      {header: 'URL', value: (e) => e.backend.url ?? '-'},
      {header: 'PATIENTS', value: (e) => count(e.counts?.patients), align: 'right'},
      {header: 'STUDIES', value: (e) => count(e.counts?.studies), align: 'right'},
      {header: 'INSTANCES', value: (e) => count(e.counts?.instances), align: 'right'},
      {header: 'DISK', value: (e) => (e.counts ? formatBytes(e.counts.diskBytes) : '-'), align: 'right'},
      {header: 'STATE', value: (e) => (e.state === 'ready' ? 'reachable' : e.state), paint: (e, text) => (e.state === 'ready' || e.state === 'skipped' ? text : paint.red(text))},
    ],
    {color: options.color},
  )
  const notes = plan.entries.filter((e) => e.error !== null).map((e) => `${e.backend.name}: ${e.error}${e.state === 'skipped' ? '' : ' (it will not be purged)'}`)
  return [table, ...notes].join('\n')
}

/** What happened, per backend. */
export function formatPurgeResult(result: PurgeResult, options: {color?: boolean} = {}): string {
  const paint = painter(options.color ?? false)
  const good = new Set<PurgeBackendState>(['purged', 'empty', 'dry-run'])
  const table = formatTable(
    result.backends,
    [
      {header: 'BACKEND', value: (b) => b.name},
      {header: 'STATE', value: (b) => b.state, paint: (b, text) => (good.has(b.state) ? paint.green(text) : b.state === 'skipped' || b.state === 'cancelled' ? text : paint.red(text))},
      ...(result.dryRun
        ? [
            {header: 'PATIENTS', value: (b: PurgeBackendResult) => count(b.before?.patients), align: 'right' as const},
            {header: 'STUDIES', value: (b: PurgeBackendResult) => count(b.before?.studies), align: 'right' as const},
            {header: 'INSTANCES', value: (b: PurgeBackendResult) => count(b.before?.instances), align: 'right' as const},
            {header: 'DISK', value: (b: PurgeBackendResult) => (b.before ? formatBytes(b.before.diskBytes) : '-'), align: 'right' as const},
          ]
        : [
            {header: 'BEFORE', value: (b: PurgeBackendResult) => count(b.before?.instances), align: 'right' as const},
            {header: 'DELETED', value: (b: PurgeBackendResult) => String(b.deleted.instances), align: 'right' as const},
            {header: 'FAILED', value: (b: PurgeBackendResult) => (b.failed === 0 ? '0' : `${b.failed} patients`), align: 'right' as const},
            {header: 'REMAINING', value: (b: PurgeBackendResult) => count(b.remaining ?? undefined), align: 'right' as const},
          ]),
    ],
    {color: options.color},
  )
  const notes = result.backends.flatMap((b) => (good.has(b.state) ? [] : b.errors.map((message) => `${b.name}: ${message}`)))
  const summary = result.dryRun
    ? `dry run: ${result.backends.reduce((sum, b) => sum + (b.before?.instances ?? 0), 0)} instances would be deleted; nothing was deleted`
    : result.confirmed
      ? `${result.deleted} instances deleted${result.failed > 0 ? `, ${result.failed} patients could not be deleted` : ''}`
      : 'not confirmed: nothing was deleted'
  return [table, ...notes, '', summary].join('\n')
}

function count(value: number | undefined): string {
  return value === undefined ? '-' : String(value)
}
