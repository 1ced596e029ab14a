/**
 * A run's inputs: fresh folders of its own (DDR_IN, DDR_OUT), the study's instances as received in
 * DDR_IN (from the ledger's retention store, else fetched back from the backend that holds them),
 * and task.json. The spool and the ledger are never handed to a module: it gets copies.
 */
import {createHash} from 'node:crypto'
import {mkdir, mkdtemp, rm, stat, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import type {BackendConfig} from '../config/schema.js'
import {readDatasetFromFile} from '../dicom/dataset-reader.js'
import {extractRetained, type RetentionLocation} from '../ledger/retention.js'
import type {StudyDetail, StudyInstance} from '../ledger/types.js'
import {InstanceFetcher} from '../qr/retrieve.js'
import type {RuleInstance} from '../routing/rules.js'
import {CONTRACT_VERSION, ModuleFailure, type Task, type TaskInstance} from './contract.js'

/** One instance in DDR_IN. */
export interface InputInstance extends TaskInstance {
  seriesInstanceUid: string | null
  modality: string | null
  callingAeTitle: string
  backend: string | null
  /** Its file in DDR_IN. */
  path: string
  datasetOffset: number
  datasetLength: number
}

/** A run's folders: `in` (DDR_IN) and `out` (DDR_OUT) under a fresh folder of its own. */
export interface RunFolders {
  dir: string
  inDir: string
  outDir: string
  remove(): Promise<void>
}

/** Makes a run's fresh folders under `workDir` (default: the system's temporary folder). */
export async function makeRunFolders(workDir: string | undefined, label: string): Promise<RunFolders> {
  const base = workDir ?? os.tmpdir()
  await mkdir(base, {recursive: true})
  const dir = await mkdtemp(path.join(base, `ddr-run-${label.replace(/[^A-Za-z0-9._-]/g, '_')}-`))
  const inDir = path.join(dir, 'in')
  const outDir = path.join(dir, 'out')
  await mkdir(inDir)
  await mkdir(outDir)
  return {dir, inDir, outDir, remove: () => rm(dir, {recursive: true, force: true})}
}

/** The instances of a study a module is given: those a backend stored, less what processing itself stored into it. */
export function moduleInputs(study: StudyDetail, processingOutputs: ReadonlySet<string>): StudyInstance[] {
  return study.instanceList.filter((i) => i.status === 'stored' && !processingOutputs.has(i.sopInstanceUid))
}

/**
 * Which instances a run saw, as one short digest: an amendment that brings new instances changes
 * it, processing's own outputs do not (they are left out). Instances still queued count (they are
 * on their way); dead letters do not.
 */
export function inputsDigest(instances: ReadonlyArray<Pick<StudyInstance, 'sopInstanceUid' | 'status'>>, processingOutputs: ReadonlySet<string>): string {
  const uids = instances
    .filter((i) => i.status !== 'dead-letter' && !processingOutputs.has(i.sopInstanceUid))
    .map((i) => i.sopInstanceUid)
    .sort()
  return createHash('sha256').update(uids.join('\n')).digest('hex').slice(0, 16)
}

/** Where an instance's copy can come from. */
export interface InputSources {
  /**
   * Where the ledger says this router kept a copy (retention), if it did. On a shared ledger a
   * study another router received has none here: its instances are fetched from the backend.
   */
  kept(sopInstanceUid: string): Promise<RetentionLocation | undefined> | RetentionLocation | undefined
  /** The configured backends, to fetch what retention no longer holds. */
  backends: readonly BackendConfig[]
  /** How long one fetch from a backend may take (ms). */
  fetchTimeoutMs?: number
  /** Our AE title towards a backend fetched by C-GET (listen.aeTitle). */
  callingAeTitle: string
}

/**
 * Copies each instance into `inDir` as `<SOPInstanceUID>.dcm`: the retention copy when it is
 * still there (and is the instance: a reused segment name is caught by its meta header), else the
 * backend's stored file. Throws ModuleFailure `inputs` naming the instance that could not be had.
 */
export async function gatherInputs(instances: readonly StudyInstance[], inDir: string, sources: InputSources): Promise<InputInstance[]> {
  let fetcher: InstanceFetcher | undefined
  const gathered: InputInstance[] = []
  for (const instance of instances) {
    const file = `${instance.sopInstanceUid}.dcm`
    const target = path.join(inDir, file)
    let read = await fromRetention(instance, await sources.kept(instance.sopInstanceUid), target)
    if (read === undefined) {
      if (instance.backend === null) throw new ModuleFailure('inputs', `instance ${instance.sopInstanceUid} is not in retention and no backend is recorded for it`)
      try {
        fetcher ??= new InstanceFetcher(sources.backends, {timeoutMs: sources.fetchTimeoutMs ?? 60_000, callingAeTitle: sources.callingAeTitle})
        const fetched = await fetcher.fetch({
          sopInstanceUid: instance.sopInstanceUid,
          seriesInstanceUid: instance.seriesInstanceUid ?? '',
          studyInstanceUid: '',
          patientId: '',
          backend: instance.backend,
        })
        await writeFile(target, fetched.file)
        read = await readBack(target)
      } catch (error) {
        throw new ModuleFailure('inputs', `instance ${instance.sopInstanceUid} is not in retention and could not be fetched from ${instance.backend}: ${(error as Error).message}`)
      }
    }

    gathered.push({
      sopInstanceUid: instance.sopInstanceUid,
      sopClassUid: read.sopClassUid ?? instance.sopClassUid,
      file,
      transferSyntaxUid: read.transferSyntaxUid,
      seriesInstanceUid: instance.seriesInstanceUid,
      modality: instance.modality,
      callingAeTitle: instance.callingAeTitle,
      backend: instance.backend,
      path: target,
      datasetOffset: read.datasetOffset,
      datasetLength: read.size - read.datasetOffset,
    })
  }

  return gathered
}

interface ReadBack {
  transferSyntaxUid: string
  sopClassUid?: string
  sopInstanceUid?: string
  datasetOffset: number
  size: number
}

async function readBack(file: string): Promise<ReadBack> {
  const {meta} = await readDatasetFromFile(file, [])
  return {transferSyntaxUid: meta.transferSyntaxUid, sopClassUid: meta.mediaStorageSopClassUid, sopInstanceUid: meta.mediaStorageSopInstanceUid, datasetOffset: meta.datasetOffset, size: (await stat(file)).size}
}

async function fromRetention(instance: StudyInstance, kept: RetentionLocation | undefined, target: string): Promise<ReadBack | undefined> {
  if (kept === undefined) return undefined
  try {
    await extractRetained(kept, target)
    const read = await readBack(target)
    if (read.sopInstanceUid === instance.sopInstanceUid) return read
  } catch {
    // evicted, or cut short: fetch it instead
  }

  await rm(target, {force: true})
  return undefined
}

/** What a module's match looks at for one gathered instance (tags beyond these are read from its file). */
export function matchInstance(study: Pick<StudyDetail, 'studyInstanceUid' | 'patientId'>, instance: InputInstance): RuleInstance {
  return {
    ...ledgerInstance(study, instance),
    transferSyntaxUid: instance.transferSyntaxUid,
    dataset: {path: instance.path, offset: instance.datasetOffset, length: instance.datasetLength},
  }
}

/** The same for an instance known only from the ledger (no bytes: a tag condition finds nothing). */
export function ledgerInstance(study: Pick<StudyDetail, 'studyInstanceUid' | 'patientId'>, instance: Pick<StudyInstance, 'sopClassUid' | 'sopInstanceUid' | 'callingAeTitle' | 'modality' | 'seriesInstanceUid'>): RuleInstance {
  return {
    sopClassUid: instance.sopClassUid,
    sopInstanceUid: instance.sopInstanceUid,
    callingAeTitle: instance.callingAeTitle,
    calledAeTitle: '',
    modality: instance.modality ?? undefined,
    studyInstanceUid: study.studyInstanceUid,
    seriesInstanceUid: instance.seriesInstanceUid ?? undefined,
    patientId: study.patientId ?? undefined,
    transferSyntaxUid: '',
  }
}

/** task.json for a run: the study, its series and the files in DDR_IN. */
export function makeTask(study: StudyDetail, inputs: readonly InputInstance[], run: {module: string; settings: Record<string, unknown>; run: number; attempt: number; output: Task['output']}): Task {
  const series = new Map<string | null, Task['series'][number]>()
  for (const input of inputs) {
    const entry = series.get(input.seriesInstanceUid) ?? {seriesInstanceUid: input.seriesInstanceUid, modality: input.modality, instances: []}
    entry.instances.push({sopInstanceUid: input.sopInstanceUid, sopClassUid: input.sopClassUid, file: input.file, transferSyntaxUid: input.transferSyntaxUid})
    series.set(input.seriesInstanceUid, entry)
  }

  return {
    version: CONTRACT_VERSION,
    module: run.module,
    settings: run.settings,
    study: {studyInstanceUid: study.studyInstanceUid, patientId: study.patientId, accessionNumber: study.accessionNumber, studyDate: study.studyDate, modalities: study.modalities},
    series: [...series.values()],
    backend: study.backend,
    run: run.run,
    attempt: run.attempt,
    output: run.output,
  }
}
