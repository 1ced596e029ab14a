import {existsSync} from 'node:fs'

import type {DdrConfig} from '../config/schema.js'
import {DdrError} from '../errors.js'
import {type Column, colorEnabled, formatTable, painter} from '../output/table.js'
import {formatBytes} from '../output/units.js'
import type {StoredInstances} from '../qr/ledger-source.js'
import {type RouterAnswer, callRouter, isRouterNotRunning, routerStatusUrl} from '../status/client.js'
import {compareHoldings, ledgerFile, ledgerLabel, openLedgerStore, receiptFromComparison} from './ledger.js'
import {SqliteLedgerStore} from './sqlite-store.js'
import type {Receipt, StudyDetail, StudyInstance, StudyQuery, StudySummary} from './types.js'

/** How one sender's instances of one modality arrive within their studies. */
export interface ArrivalGaps {
  callingAeTitle: string
  modality: string | null
  studies: number
  /** Pauses between consecutive instances of a study (amendments left out), in seconds. */
  gaps: {count: number; p50: number; p95: number; max: number}
  /** Late instances that re-opened a stable study, and the longest pause before one (seconds). */
  amendments: {count: number; longestGap: number | null}
  /** A stable timer that waits out every pause seen: the longest one plus a quarter, to 5 s. */
  suggestedStableSeconds: number
}

/** `ddr studies gaps --json`. */
export interface GapsResult {
  ledger: string
  since: string
  stableSeconds: number
  senders: ArrivalGaps[]
}

const quantile = (sorted: number[], q: number) => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]

/**
 * Per sender and modality, how long the pauses between instances of one study are, and how often
 * a late instance re-opened a study: what studies.stableSeconds should wait out.
 */
export async function arrivalGaps(config: Pick<DdrConfig, 'ledger' | 'spool' | 'studies' | 'listen'>, since: number): Promise<GapsResult> {
  const store = await openLedgerStore(config, {readonly: true})
  try {
    const groups = new Map<string, {callingAeTitle: string; modality: string | null; studies: Set<string>; gaps: number[]; amendments: number[]}>()
    for (const gap of await store.arrivalGaps(since)) {
      const key = `${gap.callingAeTitle}\u0000${gap.modality ?? ''}`
      const group = groups.get(key) ?? {callingAeTitle: gap.callingAeTitle, modality: gap.modality, studies: new Set<string>(), gaps: [], amendments: []}
      group.studies.add(gap.studyInstanceUid)
      ;(gap.amendment ? group.amendments : group.gaps).push(gap.gapMs / 1000)
      groups.set(key, group)
    }

    const senders = [...groups.values()].map((group): ArrivalGaps => {
      const sorted = [...group.gaps].sort((a, b) => a - b)
      const max = sorted.at(-1) ?? 0
      return {
        callingAeTitle: group.callingAeTitle,
        modality: group.modality,
        studies: group.studies.size,
        gaps: {count: sorted.length, p50: quantile(sorted, 0.5) ?? 0, p95: quantile(sorted, 0.95) ?? 0, max},
        amendments: {count: group.amendments.length, longestGap: group.amendments.length === 0 ? null : Math.max(...group.amendments)},
        suggestedStableSeconds: Math.max(5, Math.ceil((max * 1.25) / 5) * 5),
      }
    })
    senders.sort((a, b) => a.callingAeTitle.localeCompare(b.callingAeTitle) || (a.modality ?? '').localeCompare(b.modality ?? ''))
    return {ledger: store.file, since: new Date(since).toISOString(), stableSeconds: config.studies.stableSeconds, senders}
  } finally {
    store.close()
  }
}

/** The table `ddr studies gaps` prints. */
export function formatGaps(result: GapsResult): string {
  if (result.senders.length === 0) return `no studies received since ${result.since} in ${result.ledger}`
  const seconds = (n: number | null) => (n === null ? '-' : `${n < 10 ? n.toFixed(1) : Math.round(n)} s`)
  const columns: Array<Column<ArrivalGaps>> = [
    {header: 'SENDER', value: (g) => g.callingAeTitle},
    {header: 'MODALITY', value: (g) => g.modality ?? '-'},
    {header: 'STUDIES', value: (g) => String(g.studies), align: 'right'},
    {header: 'PAUSE P50', value: (g) => seconds(g.gaps.p50), align: 'right'},
    {header: 'P95', value: (g) => seconds(g.gaps.p95), align: 'right'},
    {header: 'MAX', value: (g) => seconds(g.gaps.max), align: 'right'},
    {header: 'AMENDMENTS', value: (g) => (g.amendments.count === 0 ? '0' : `${g.amendments.count} (after ${seconds(g.amendments.longestGap)})`), align: 'right'},
    {header: 'SUGGESTED', value: (g) => `${g.suggestedStableSeconds} s`, align: 'right'},
  ]
  return `${formatTable(result.senders, columns, {color: colorEnabled()})}\n\nstudies.stableSeconds is ${result.stableSeconds} s; SUGGESTED waits out the longest pause seen inside a study (plus a quarter).`
}

/** `ddr study UID --verify --json`. */
export interface VerifyResult {
  receipt: Receipt
  study: StudyDetail
  /** `router`: the running router checked and repaired from retention; `ledger`: no router answered, checked only. */
  by: 'router' | 'ledger'
}

/** `ddr studies --json`. */
export interface StudiesResult {
  ledger: string
  studies: StudySummary[]
}

/** "90s", "15m", "2h", "3d" (or an ISO date) as epoch ms, counting back from now. */
export function parseSince(text: string, now = Date.now()): number {
  const match = /^(\d+(?:\.\d+)?)\s*(s|m|h|d)$/.exec(text.trim())
  if (match !== null) return now - Number(match[1]) * {s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000}[match[2] as 's' | 'm' | 'h' | 'd']
  const date = Date.parse(text)
  if (Number.isNaN(date)) throw new DdrError('USAGE', `--since ${text}: not a duration (90s, 15m, 2h, 3d) or a date`, {hint: 'e.g. --since 2h'})
  return date
}

/**
 * The studies in the ledger a config names, newest first. Reads the file read-only, so it works
 * while the router writes it (SQLite's write-ahead log lets readers and the writer go on together).
 */
export async function listStudies(config: Pick<DdrConfig, 'ledger' | 'spool' | 'listen'>, query: StudyQuery): Promise<StudiesResult> {
  const store = await openLedgerStore(config, {readonly: true})
  try {
    return {ledger: store.file, studies: await store.studies(query)}
  } finally {
    await store.close()
  }
}

/**
 * What the ledger says each backend stored, for `ddr find` and `ddr get` to answer for folder
 * backends (read-only, beside a running router); undefined when the config has no folder backend
 * or no ledger was written. Close it when done.
 */
export function openStoredInstances(config: Pick<DdrConfig, 'ledger' | 'spool' | 'backends'>): (StoredInstances & {close(): void}) | undefined {
  if (!config.backends.some((backend) => backend.type === 'folder')) return undefined
  // Folder backends are answered from the SQLite ledger only for now (docs/query-retrieve.md).
  if (config.ledger.url !== undefined && !config.ledger.url.startsWith('sqlite:')) return undefined
  const file = ledgerFile(config)
  if (!existsSync(file)) return undefined
  const store = new SqliteLedgerStore(file, {readonly: true})
  return {storedOn: (backend, filter) => store.storedOn(backend, filter), close: () => store.close()}
}

/** One study from the ledger, with its series and instances; DdrError USAGE when it is not there. */
export async function showStudy(config: Pick<DdrConfig, 'ledger' | 'spool' | 'listen'>, studyInstanceUid: string): Promise<StudyDetail> {
  const store = await openLedgerStore(config, {readonly: true})
  try {
    const study = await store.study(studyInstanceUid)
    if (study === undefined) throw notInLedger(studyInstanceUid, store.file)
    return study
  } finally {
    await store.close()
  }
}

/**
 * Checks a study's receipt now. When the router runs (its status port answers) it asks the
 * backends, re-sends what is missing from retention, waits for those to be delivered and checks
 * again; otherwise the backends are asked from here and nothing can be repaired. Throws DdrError
 * BACKEND_UNREACHABLE when a backend does not answer, USAGE when the study is not in the ledger.
 */
export async function verifyStudy(config: Pick<DdrConfig, 'ledger' | 'spool' | 'status' | 'backends' | 'listen'>, studyInstanceUid: string): Promise<VerifyResult> {
  let answer: RouterAnswer | undefined
  try {
    answer = await callRouter(config, 'POST', `/studies/${studyInstanceUid}/verify`, {timeoutMs: 120_000, withToken: true})
  } catch (error) {
    // No router: check from here. One that answered but could not be talked to (TLS) is an error.
    if (!isRouterNotRunning(error)) throw error
  }

  if (answer !== undefined && answer.statusCode !== 405) {
    const body = answer.body as {receipt?: Receipt; study?: StudyDetail; error?: string; code?: string}
    if (answer.statusCode === 404) throw notInLedger(studyInstanceUid, ledgerLabel(config))
    if (answer.statusCode === 502) throw new DdrError('BACKEND_UNREACHABLE', body.error ?? `a backend did not answer for study ${studyInstanceUid}`)
    if (!answer.ok || body.receipt === undefined || body.study === undefined) throw new DdrError('BACKEND_REFUSED', `the router at ${routerStatusUrl(config.status)} answered HTTP ${answer.statusCode}: ${body.error ?? 'no receipt'}`)
    return {receipt: body.receipt, study: body.study, by: 'router'}
  }

  const store = await openLedgerStore(config, {readonly: true})
  try {
    const comparison = await compareHoldings(store, config.backends, studyInstanceUid, config.listen.aeTitle)
    const study = await store.study(studyInstanceUid)
    if (comparison === undefined || study === undefined) throw notInLedger(studyInstanceUid, store.file)
    return {receipt: receiptFromComparison(comparison, 0), study, by: 'ledger'}
  } finally {
    await store.close()
  }
}

function notInLedger(studyInstanceUid: string, file: string): DdrError {
  return new DdrError('USAGE', `study ${studyInstanceUid} is not in the ledger ${file}`, {hint: '`ddr studies` lists the studies it holds; studies leave it after studies.keepDays'})
}

/** The receipt line `ddr study --verify` prints first. */
export function formatReceipt(result: VerifyResult): string {
  const r = result.receipt
  const repaired = r.repaired > 0 ? `, ${r.repaired} re-sent from retention` : ''
  const missing = r.missing.length > 0 ? `; missing: ${r.missing.join(' ')}` : ''
  return `receipt    ${r.state}: ${r.found} of ${r.expected} instances found on the backend${repaired}${missing}${r.detail ? ` (${r.detail})` : ''}${result.by === 'ledger' ? ' [no router running: checked, not repaired]' : ''}`
}

/** A processing module gave up on the study (its retries used up). */
const processingFailed = (study: StudySummary) => study.processing.some((p) => p.state === 'failed')

const short = (uid: string) => (uid.length > 28 ? `…${uid.slice(-27)}` : uid)
const time = (iso: string) => iso.replace('T', ' ').replace(/\.\d+Z$/, 'Z')

/** The table `ddr studies` prints. */
export function formatStudies(result: StudiesResult): string {
  if (result.studies.length === 0) return `no studies in ${result.ledger}`
  const color = colorEnabled()
  const paint = painter(color)
  const columns: Array<Column<StudySummary>> = [
    {header: 'STUDY', value: (s) => short(s.studyInstanceUid)},
    {header: 'PATIENT', value: (s) => s.patientId ?? ''},
    {header: 'ACCESSION', value: (s) => s.accessionNumber ?? ''},
    {header: 'MODALITIES', value: (s) => s.modalities.join(',')},
    {header: 'INSTANCES', value: (s) => String(s.instances), align: 'right'},
    {header: 'SIZE', value: (s) => formatBytes(s.bytes), align: 'right'},
    {header: 'BACKEND', value: (s) => s.backend ?? '-'},
    {header: 'STATE', value: (s) => `${s.state}${processingFailed(s) ? ' processing-failed' : ''}`, paint: (s, text) => (processingFailed(s) ? paint.red(text) : s.state === 'stable' ? paint.green(text) : paint.yellow(text))},
    {header: 'DELIVERED', value: (s) => `${s.delivered.stored}/${s.instances}${s.delivered.deadLetter > 0 ? ` (${s.delivered.deadLetter} dead-letter)` : ''}`, paint: (s, text) => (s.delivered.deadLetter > 0 ? paint.red(text) : text)},
    {header: 'LAST RECEIVED', value: (s) => time(s.lastReceived)},
  ]
  return formatTable(result.studies, columns, {color})
}

/** The timeline `ddr study UID` prints. */
export function formatStudy(study: StudyDetail): string {
  const lines = [
    `study      ${study.studyInstanceUid}`,
    `patient    ${study.patientId ?? '-'}   accession ${study.accessionNumber ?? '-'}   date ${study.studyDate ?? '-'}`,
    `state      ${study.state}${study.stableAt ? ` since ${time(study.stableAt)}` : ''}${study.amendments > 0 ? `, ${study.amendments} amendment(s)` : ''}`,
    `received   ${study.instances} instances, ${formatBytes(study.bytes)}, ${time(study.firstReceived)} .. ${time(study.lastReceived)}`,
    `delivered  ${study.delivered.stored} stored on ${study.backend ?? '-'}, ${study.delivered.queued} queued, ${study.delivered.deadLetter} in dead-letter`,
    `receipt    ${study.receipt === null ? 'not checked yet' : `${study.receipt.state} at ${time(study.receipt.checkedAt)}: ${study.receipt.found} of ${study.receipt.expected} found`}`,
    ...study.processing.map((p) => `processing ${p.module}: ${p.state}${p.attempts > 1 ? ` after ${p.attempts} attempts` : ''}${p.detail ? ` (${p.detail})` : ''}`),
    '',
    ...study.series.map((s) => `series ${s.seriesInstanceUid ?? '(none)'}  ${s.modality ?? ''}  ${s.instances} instances`),
    '',
  ]
  const columns: Array<Column<StudyInstance>> = [
    {header: 'SOP INSTANCE', value: (i) => short(i.sopInstanceUid)},
    {header: 'FROM', value: (i) => i.callingAeTitle},
    {header: 'RECEIVED', value: (i) => time(i.receivedAt)},
    {header: 'STATUS', value: (i) => `${i.status}${i.amendment ? ' (amendment)' : ''}`},
    {header: 'BACKEND', value: (i) => i.backend ?? '-'},
    {header: 'DELIVERED', value: (i) => (i.deliveredAt === null ? '-' : time(i.deliveredAt))},
  ]
  return [...lines, formatTable(study.instanceList, columns, {color: colorEnabled()})].join('\n')
}
