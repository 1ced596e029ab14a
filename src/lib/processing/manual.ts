/**
 * `ddr process`: a module run by hand on a study the ledger knows. Through the running router (its
 * status server), so that the outputs are stored through the router's intake like any; or, with
 * `dryRun`, here, storing nothing and showing the SR that would be written.
 */
import path from 'node:path'

import type {DdrConfig} from '../config/schema.js'
import {DdrError} from '../errors.js'
import {ledgerLabel, openLedgerStore} from '../ledger/ledger.js'
import type {ProcessingRunState} from '../ledger/processing-runs.js'
import {colorEnabled, painter} from '../output/table.js'
import {callRouter, isRouterNotRunning, routerStatusUrl} from '../status/client.js'
import {ProcessingModule, attemptModule} from './attempt.js'
import {ModuleFailure, type ModuleResult} from './contract.js'
import type {ProcessOutcome} from './service.js'

/** One module's run by hand. */
export interface ProcessRun {
  module: string
  state: ProcessingRunState
  /** Why it failed or was skipped, or what it stored. */
  detail: string | null
  result?: ModuleResult
  /** Stored into the study (through the router): the SR first. */
  outputs: string[]
  /** --dry-run: the SR that would be written (its dataset as dcmjs names its attributes). */
  sr?: {sopInstanceUid: string; seriesInstanceUid: string; dataset: Record<string, unknown>}
  /** --dry-run: the DICOM files the module wrote to DDR_OUT that would be stored. */
  dicom?: Array<{file: string; sopInstanceUid: string}>
}

/** `ddr process --json`. */
export interface ProcessResult {
  studyInstanceUid: string
  /** `router`: the running router ran it and stored its outputs; `dry-run`: run here, nothing stored. */
  by: 'router' | 'dry-run'
  runs: ProcessRun[]
}

export interface ProcessOptions {
  /** Only this module (default: every configured one; those that do not match are skipped). */
  module?: string
  dryRun?: boolean
}

type ProcessConfig = Pick<DdrConfig, 'ledger' | 'spool' | 'status' | 'backends' | 'processing' | 'listen'>

/** Runs modules on a study by hand (see the file's summary). Throws DdrError USAGE, ROUTER_UNREACHABLE. */
export async function processStudy(config: ProcessConfig, studyInstanceUid: string, options: ProcessOptions = {}): Promise<ProcessResult> {
  const modules = config.processing.modules
  if (options.module !== undefined && !modules.some((m) => m.name === options.module)) {
    throw new DdrError('USAGE', `no processing module named ${options.module} in ${modules.length === 0 ? 'the config (processing.modules is empty)' : `the config (${modules.map((m) => m.name).join(', ')})`}`)
  }

  if (modules.length === 0) throw new DdrError('USAGE', 'no processing modules are configured', {hint: 'add processing.modules to the config (docs/processing.md)'})
  return options.dryRun ? dryRun(config, studyInstanceUid, options.module) : throughRouter(config, studyInstanceUid, options.module)
}

async function dryRun(config: ProcessConfig, studyInstanceUid: string, only: string | undefined): Promise<ProcessResult> {
  // The SQLite file or the shared PostgreSQL ledger, read only.
  const store = await openLedgerStore(config, {readonly: true})
  try {
    const study = await store.study(studyInstanceUid)
    if (study === undefined) throw notInLedger(studyInstanceUid, store.file)
    const runs: ProcessRun[] = []
    for (const config_ of config.processing.modules.filter((m) => only === undefined || m.name === only)) {
      const module = new ProcessingModule(config_)
      const before = await store.processing.get(studyInstanceUid, module.name)
      try {
        const attempted = await attemptModule(module, study, {
          processingOutputs: await store.processing.outputsOf(studyInstanceUid),
          sources: {kept: (sop) => store.kept(sop), backends: config.backends, callingAeTitle: config.listen.aeTitle},
          workDir: config.processing.workDir,
          uidRoot: config.processing.uidRoot,
          run: (before?.run ?? 0) + 1,
          attempt: 1,
        })
        if (attempted.skipped) {
          runs.push({module: module.name, state: 'skipped', detail: attempted.reason, outputs: []})
          continue
        }

        try {
          const dicom = attempted.outputs.filter((o) => o.kind === 'dicom').map((o) => ({file: path.relative(attempted.folders.outDir, o.path), sopInstanceUid: o.sopInstanceUid}))
          runs.push({
            module: module.name,
            state: 'done',
            detail: `${attempted.result === undefined ? 'no result.json' : `${attempted.result.findings.length} finding(s)`}; nothing stored (dry run)`,
            ...(attempted.result === undefined ? {} : {result: attempted.result}),
            outputs: [],
            ...(attempted.sr === undefined ? {} : {sr: {sopInstanceUid: attempted.sr.sopInstanceUid, seriesInstanceUid: attempted.sr.seriesInstanceUid, dataset: attempted.sr.dataset}}),
            ...(dicom.length === 0 ? {} : {dicom}),
          })
        } finally {
          await attempted.folders.remove()
        }
      } catch (error) {
        if (!(error instanceof ModuleFailure)) throw error
        runs.push({module: module.name, state: 'failed', detail: error.detail, outputs: []})
      }
    }

    return {studyInstanceUid, by: 'dry-run', runs}
  } finally {
    await store.close()
  }
}

/** POST /studies/UID/process on the router's status server (http or https, as status.tls says); waits as long as the modules may take. */
async function throughRouter(config: ProcessConfig, studyInstanceUid: string, only: string | undefined): Promise<ProcessResult> {
  const where = routerStatusUrl(config.status)
  const query = only === undefined ? '' : `?module=${encodeURIComponent(only)}`
  // No timeout: a module may take longer than any fixed one (fetch gave up after 300 s).
  const answer = await callRouter(config, 'POST', `/studies/${studyInstanceUid}/process${query}`, {withToken: true}).catch((error: DdrError) => {
    throw new DdrError('ROUTER_UNREACHABLE', `${error.message} (status.host, status.port)`, {
      hint: isRouterNotRunning(error)
        ? 'ddr process stores what a module writes through the running router: start `ddr listen` with this config, or use --dry-run to see the SR without storing it'
        : error.hint,
      cause: error,
    })
  })

  const body = answer.body as {runs?: ProcessOutcome[]; error?: string; code?: string}
  if (answer.statusCode === 404) throw notInLedger(studyInstanceUid, ledgerLabel(config))
  if (answer.statusCode === 405) throw new DdrError('USAGE', `the router at ${where} runs no processing modules (its processing.modules is empty)`, {hint: 'configure the modules in the config `ddr listen` uses, and restart it'})
  if (answer.statusCode !== 200 || body.runs === undefined) {
    if (body.code === 'USAGE') throw new DdrError('USAGE', body.error ?? 'the router refused the request')
    throw new DdrError('ROUTER_UNREACHABLE', `the router at ${where} answered HTTP ${answer.statusCode}: ${body.error ?? 'no runs'}`)
  }

  return {
    studyInstanceUid,
    by: 'router',
    runs: body.runs.map((r) => ({module: r.module, state: r.state, detail: r.detail, ...(r.result === undefined ? {} : {result: r.result}), outputs: r.outputs})),
  }
}

function notInLedger(studyInstanceUid: string, file: string): DdrError {
  return new DdrError('USAGE', `study ${studyInstanceUid} is not in the ledger ${file}`, {hint: '`ddr studies` lists the studies it holds'})
}

/** One content item of the SR as a line: value type, concept name, value. */
function contentLines(items: unknown, depth: number, lines: string[]): void {
  if (!Array.isArray(items)) return
  for (const item of items as Array<Record<string, any>>) {
    const name = item.ConceptNameCodeSequence?.[0]?.CodeMeaning
    const value =
      item.TextValue ??
      item.UID ??
      item.ConceptCodeSequence?.[0]?.CodeMeaning ??
      (item.MeasuredValueSequence?.[0] === undefined ? undefined : `${item.MeasuredValueSequence[0].NumericValue} ${item.MeasuredValueSequence[0].MeasurementUnitsCodeSequence?.[0]?.CodeValue ?? ''}`.trim()) ??
      item.ReferencedSOPSequence?.[0]?.ReferencedSOPInstanceUID
    lines.push(`${'  '.repeat(depth)}${`${item.RelationshipType ?? ''} ${item.ValueType}`.trim()}${name === undefined ? '' : ` "${name}"`}${value === undefined ? '' : ` = ${value}`}`)
    contentLines(item.ContentSequence, depth + 1, lines)
  }
}

/** What `ddr process` prints: each module's outcome; with --dry-run, the SR's content tree. */
export function formatProcessResult(result: ProcessResult): string {
  const paint = painter(colorEnabled())
  const lines: string[] = []
  for (const run of result.runs) {
    const state = run.state === 'done' ? paint.green(run.state) : run.state === 'failed' ? paint.red(run.state) : run.state
    lines.push(`${run.module}: ${state}${run.detail === null ? '' : ` - ${run.detail}`}`)
    if (run.sr !== undefined) {
      const d = run.sr.dataset as Record<string, any>
      lines.push(`  SR ${run.sr.sopInstanceUid} (series ${run.sr.seriesInstanceUid}) in study ${String(d.StudyInstanceUID)}, patient ${String(d.PatientID)}`)
      const evidence = (d.CurrentRequestedProcedureEvidenceSequence?.[0]?.ReferencedSeriesSequence ?? []) as Array<{ReferencedSOPSequence: unknown[]}>
      lines.push(`  evidence: ${evidence.reduce((n, s) => n + s.ReferencedSOPSequence.length, 0)} instance(s) in ${evidence.length} series`)
      const tree: string[] = [`CONTAINER "${String(d.ConceptNameCodeSequence?.[0]?.CodeMeaning)}"`]
      contentLines(d.ContentSequence, 1, tree)
      lines.push(...tree.map((line) => `  ${line}`))
    }

    for (const file of run.dicom ?? []) lines.push(`  would store DDR_OUT/${file.file} (${file.sopInstanceUid})`)
  }

  return lines.join('\n')
}
