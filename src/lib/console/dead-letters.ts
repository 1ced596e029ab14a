/**
 * `ddr dead-letters`: the console's dead-letter work from the command line. With the router
 * running, through its API (so its forwarder sends a retried instance at once and its log says who
 * did what); without it, on the spool folder itself (a retried instance waits in the queue for the
 * next start).
 */
import {existsSync} from 'node:fs'
import {mkdir} from 'node:fs/promises'

import type {DdrConfig} from '../config/schema.js'
import {DdrError} from '../errors.js'
import {type Column, formatTable} from '../output/table.js'
import {formatBytes} from '../output/units.js'
import {callRouter, isRouterNotRunning, routerStatusUrl} from '../status/client.js'
import {SpoolLock} from '../spool/lock.js'
import {type DeadLetter, Spool} from '../spool/spool.js'
import {type DeadLetterFilter, matchesDeadLetter} from './console.js'

export interface DeadLetterRow {
  id: string
  at: string
  bytes: number
  reason: string | null
  sopInstanceUid: string | null
  studyInstanceUid: string | null
  from: string | null
}

export interface DeadLettersResult {
  /** Where the work was done: the running router's API, or the spool folder (no router answered). */
  via: 'router' | 'spool'
  deadLetters: DeadLetterRow[]
  /** retry/discard: what happened to each. */
  results?: Array<{id: string; outcome: string}>
}

export interface DeadLettersOptions {
  action: 'list' | 'retry' | 'discard'
  /** retry/discard: these ids, or every dead letter the filter matches with `all`. */
  ids?: string[]
  all?: boolean
  filter?: DeadLetterFilter
}

const text = (value: unknown): string | null => (typeof value === 'string' ? value : null)

function rowOf(letter: DeadLetter): DeadLetterRow {
  return {id: letter.id, at: letter.at, bytes: letter.bytes, reason: text(letter.details.reason), sopInstanceUid: text(letter.details.sopInstanceUid), studyInstanceUid: text(letter.details.studyInstanceUid), from: text(letter.details.callingAeTitle)}
}

/**
 * Whether a router with its console answers on the status port. Only "nothing listens there" means
 * no router: one that answers but cannot be talked to (a TLS refusal, a timeout) is an error, not
 * a reason to work on the spool folder under its feet.
 */
async function routerAnswers(config: DdrConfig): Promise<boolean> {
  try {
    return (await callRouter(config, 'GET', '/api/session', {timeoutMs: 2000})).ok
  } catch (error) {
    if (isRouterNotRunning(error)) return false
    throw error
  }
}

/** Lists, retries or discards dead letters, through the running router when one answers. */
export async function deadLetters(config: DdrConfig, options: DeadLettersOptions): Promise<DeadLettersResult> {
  const filter = options.filter ?? {}
  if (options.action !== 'list' && (options.ids ?? []).length === 0 && !options.all) {
    throw new DdrError('USAGE', `say which dead letters to ${options.action}: their ids, or --all (with --reason-contains, --since or --study to narrow it)`, {hint: '`ddr dead-letters` lists them'})
  }

  if (await routerAnswers(config)) return viaRouter(config, options, filter)
  return viaSpool(config, options, filter)
}

async function viaRouter(config: DdrConfig, options: DeadLettersOptions, filter: DeadLetterFilter): Promise<DeadLettersResult> {
  const base = routerStatusUrl(config.status)
  const call = async (method: 'GET' | 'POST' | 'DELETE', path: string, body?: unknown): Promise<any> => {
    const {statusCode, ok, body: answer} = await callRouter(config, method, path, {json: body, withToken: true, timeoutMs: 60_000})
    if (statusCode === 404) return undefined
    if (statusCode === 401) throw new DdrError('USAGE', `the router at ${base} wants its token for this`, {hint: 'set DDR_STATUS_TOKEN (or status.token in the config)'})
    if (!ok) throw new DdrError('BACKEND_REFUSED', `${method} ${base}${path}: HTTP ${statusCode}${answer.error ? `: ${answer.error}` : ''}`)
    return answer
  }

  const query = new URLSearchParams({limit: '5000'})
  if (filter.reasonContains !== undefined) query.set('reason', filter.reasonContains)
  if (filter.since !== undefined) query.set('since', String(filter.since))
  if (filter.studyInstanceUid !== undefined) query.set('study', filter.studyInstanceUid)
  const listed = (await call('GET', `/api/dead-letters?${query}`)) as {deadLetters: Array<DeadLetterRow & Record<string, unknown>>}
  const rows = listed.deadLetters.map((l) => ({id: l.id, at: l.at, bytes: l.bytes, reason: l.reason ?? null, sopInstanceUid: text(l.sopInstanceUid), studyInstanceUid: text(l.studyInstanceUid), from: text(l.callingAeTitle) ?? text(l.from)}))
  if (options.action === 'list') return {via: 'router', deadLetters: rows}
  let results: Array<{id: string; outcome: string}>
  if (options.all) {
    const body = {all: true, reasonContains: filter.reasonContains, since: filter.since, study: filter.studyInstanceUid}
    results = ((await call('POST', `/api/dead-letters/${options.action}`, body)) as {results: Array<{id: string; outcome: string}>}).results
  } else {
    results = []
    for (const id of options.ids ?? []) {
      const answer = options.action === 'retry' ? await call('POST', `/api/dead-letters/${encodeURIComponent(id)}/retry`) : await call('DELETE', `/api/dead-letters/${encodeURIComponent(id)}`)
      results.push({id, outcome: answer === undefined ? 'not found' : String(answer.outcome)})
    }
  }

  return {via: 'router', deadLetters: rows, results}
}

/**
 * Holds the spool folder while the command works in it. A router that runs on it owns it even when
 * its status port did not answer with the console's API (status.console false, or another port):
 * then the command says so instead of changing a queue under the router's feet.
 */
function holdSpool(config: DdrConfig): SpoolLock | undefined {
  if (!existsSync(config.spool.dir)) return undefined
  try {
    return SpoolLock.acquire(config.spool.dir)
  } catch (error) {
    const pid = SpoolLock.holder(config.spool.dir)
    if (pid === undefined) throw error
    throw new DdrError('USAGE', `a router (process ${pid}) runs on spool folder ${config.spool.dir}, but ${routerStatusUrl(config.status)} did not answer with the console's API: its dead letters are its own`, {
      hint: 'turn status.console on for that router (the dead-letter API lives there), point this command at its status port (status.port, DDR_STATUS_PORT), or stop the router first',
    })
  }
}

async function viaSpool(config: DdrConfig, options: DeadLettersOptions, filter: DeadLetterFilter): Promise<DeadLettersResult> {
  const lock = holdSpool(config)
  try {
    return await inSpool(config, options, filter)
  } finally {
    lock?.release()
  }
}

async function inSpool(config: DdrConfig, options: DeadLettersOptions, filter: DeadLetterFilter): Promise<DeadLettersResult> {
  const spool = new Spool(config.spool.dir, config.spool)
  const letters = existsSync(spool.deadLetterDir) ? (await spool.listDeadLetters()).filter((letter) => matchesDeadLetter(letter, filter)) : []
  const rows = letters.map(rowOf)
  if (options.action === 'list') return {via: 'spool', deadLetters: rows}
  const ids = options.all ? letters.map((letter) => letter.id) : (options.ids ?? [])
  // A spool that never had a queue (only dead letters copied in) gets one; the router reads it at start.
  if (options.action === 'retry') await mkdir(spool.queueDir, {recursive: true})
  const results: Array<{id: string; outcome: string}> = []
  for (const id of ids) {
    if (options.action === 'retry') results.push({id, outcome: (await spool.requeueDeadLetter(id)) === undefined ? 'not found' : 'queued for the next start'})
    else results.push({id, outcome: (await spool.discardDeadLetter(id)) ? 'discarded' : 'not found'})
  }

  return {via: 'spool', deadLetters: rows, results}
}

export function formatDeadLetters(result: DeadLettersResult): string {
  if (result.results !== undefined) {
    const lines = result.results.map((r) => `${r.id}: ${r.outcome}`)
    if (lines.length === 0) lines.push('no dead letter matched')
    lines.push(result.via === 'router' ? '(through the running router)' : '(no router answered: done in the spool folder; retried ones are delivered when the router starts)')
    return lines.join('\n')
  }

  if (result.deadLetters.length === 0) return `no dead letters${result.via === 'spool' ? ' (spool folder)' : ''}`
  const columns: Array<Column<DeadLetterRow>> = [
    {header: 'ID', value: (r) => r.id},
    {header: 'WHEN', value: (r) => r.at},
    {header: 'FROM', value: (r) => r.from ?? ''},
    {header: 'SIZE', value: (r) => formatBytes(r.bytes), align: 'right'},
    {header: 'STUDY', value: (r) => r.studyInstanceUid ?? ''},
    {header: 'REASON', value: (r) => r.reason ?? ''},
  ]
  return formatTable(result.deadLetters, columns)
}
