import {readFile, stat} from 'node:fs/promises'
import path from 'node:path'

import type {Backend} from '../backends/backend.js'
import type {BackendConfig, DdrConfig} from '../config/schema.js'
import {readDatasetFromFile} from '../dicom/dataset-reader.js'
import {Tag} from '../dicom/tags.js'
import {DdrError} from '../errors.js'
import {silentLogger} from '../output/logger.js'
import {BackendState} from './backend-state.js'
import {Placer} from './router.js'

/** What `ddr route --explain FILE` prints: the rule and the backend a file would get, nothing sent. */
export interface RouteExplainResult {
  file: string
  sopInstanceUid: string
  sopClassUid: string
  studyInstanceUid: string | null
  modality: string | null
  callingAeTitle: string
  calledAeTitle: string
  /** The rule that matched, or null when none did (default placement). */
  rule: string | null
  /** Set when the rule drops the instance: the sender would be refused with 0xC000 and this reason. */
  drop: string | null
  /** The backend that would store it, then the failover order. */
  backend: string | null
  order: string[]
  mirrors: string[]
  why: string
}

/** Placement works on BackendState; explaining never talks to a backend. */
class OfflineBackend implements Backend {
  constructor(readonly config: BackendConfig) {}

  async store(): Promise<never> {
    throw new DdrError('BACKEND_UNREACHABLE', 'route --explain never sends')
  }

  async echo(): Promise<number> {
    return 0
  }

  async close(): Promise<void> {}
}

/**
 * Which rule and backend a Part 10 file would get, with the router's own placement code
 * (Placer.place) and rule engine. Every backend is taken as healthy and idle, and a study the
 * router already placed goes to its remembered home (spool.dir/affinity.jsonl), as it would live.
 */
export async function explainRoute(config: DdrConfig, file: string, options: {callingAeTitle?: string; calledAeTitle?: string} = {}): Promise<RouteExplainResult> {
  const wanted = [Tag.SOPClassUID, Tag.SOPInstanceUID, Tag.Modality, Tag.PatientID, Tag.StudyInstanceUID, Tag.SeriesInstanceUID]
  const read = await readDatasetFromFile(file, wanted)
  const values = read.values
  const size = (await stat(file)).size
  const backends = config.backends.map((b) => new BackendState(new OfflineBackend(b)))
  const router = new Placer(backends, {
    policy: config.routing.policy,
    affinity: config.routing.affinity,
    logger: silentLogger,
    rules: config.rules,
  })
  // Read, never opened as the router's map: that would compact (rewrite) a file a running router appends to.
  if (router.affinity !== undefined && instanceStudy(values) !== undefined) {
    const remembered = await rememberedHome(path.join(path.resolve(config.spool.dir), 'affinity.jsonl'), instanceStudy(values)!)
    if (remembered !== undefined) router.affinity.set(instanceStudy(values)!, remembered)
  }

  const instance = {
    sopClassUid: values.get(Tag.SOPClassUID) ?? read.meta.mediaStorageSopClassUid ?? '',
    sopInstanceUid: values.get(Tag.SOPInstanceUID) ?? read.meta.mediaStorageSopInstanceUid ?? '',
    transferSyntaxUid: read.meta.transferSyntaxUid,
    studyInstanceUid: values.get(Tag.StudyInstanceUID),
    seriesInstanceUid: values.get(Tag.SeriesInstanceUID),
    patientId: values.get(Tag.PatientID),
    modality: values.get(Tag.Modality),
    callingAeTitle: options.callingAeTitle ?? 'STORESCU',
    calledAeTitle: options.calledAeTitle ?? config.listen.aeTitle,
    dataset: {path: file, offset: read.meta.datasetOffset, length: size - read.meta.datasetOffset},
  }
  const placement = router.place(instance, false)
  return {
    file,
    sopInstanceUid: instance.sopInstanceUid,
    sopClassUid: instance.sopClassUid,
    studyInstanceUid: instance.studyInstanceUid ?? null,
    modality: instance.modality ?? null,
    callingAeTitle: instance.callingAeTitle,
    calledAeTitle: instance.calledAeTitle,
    rule: placement.rule ?? null,
    drop: placement.drop ?? null,
    backend: placement.drop === undefined ? placement.order[0]?.name ?? null : null,
    order: placement.drop === undefined ? placement.order.map((b) => b.name) : [],
    mirrors: placement.mirrors ?? config.backends.filter((b) => b.mirror).map((b) => b.name),
    why: placement.why,
  }
}

function instanceStudy(values: Map<number, string>): string | undefined {
  return values.get(Tag.StudyInstanceUID) || undefined
}

/** The last home remembered for a study in an affinity file (absent file: none). */
async function rememberedHome(file: string, study: string): Promise<string | undefined> {
  const text = await readFile(file, 'utf8').catch(() => '')
  let home: string | undefined
  for (const line of text.split('\n')) {
    if (!line.includes(study)) continue
    try {
      const entry = JSON.parse(line) as {study?: unknown; backend?: unknown}
      if (entry.study === study && typeof entry.backend === 'string') home = entry.backend
    } catch {
      // a torn last line: skip it
    }
  }

  return home
}

/** Human lines for `ddr route --explain`. */
export function formatRouteExplain(result: RouteExplainResult): string {
  const lines = [
    `file      ${result.file}`,
    `instance  ${result.sopInstanceUid} (${result.modality ?? 'no modality'}, study ${result.studyInstanceUid ?? 'none'}) from ${result.callingAeTitle} to ${result.calledAeTitle}`,
    `rule      ${result.rule ?? 'none matched (default placement)'}`,
  ]
  if (result.drop === null) {
    lines.push(`backend   ${result.backend ?? 'none (no backend in its group)'}`, `failover  ${result.order.slice(1).join(', ') || 'none'}`, `mirrors   ${result.mirrors.join(', ') || 'none'}`)
  } else {
    lines.push(`dropped   refused with 0xC000: ${result.drop}`)
  }

  lines.push(`why       ${result.why}`)
  return lines.join('\n')
}
