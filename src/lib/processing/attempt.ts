/**
 * One attempt of one module on one study, from the ledger's record to what would be stored: the
 * match, fresh folders, the instances, the module, result.json checked, the SR written, DDR_OUT's
 * DICOM checked. Storing is the caller's (the router's intake; `ddr process --dry-run` stores
 * nothing), so the outputs stay on disk until `folders.remove()`.
 */
import path from 'node:path'
import {writeFile} from 'node:fs/promises'

import type {ProcessingModuleConfig} from '../config/schema.js'
import type {StudyDetail} from '../ledger/types.js'
import {InstanceMatch} from '../routing/rules.js'
import {ModuleFailure, type ModuleResult, parseResult} from './contract.js'
import {type InputInstance, type InputSources, type RunFolders, gatherInputs, inputsDigest, ledgerInstance, makeRunFolders, makeTask, matchInstance, moduleInputs} from './inputs.js'
import {type OutputInstance, checkOutputFiles} from './outputs.js'
import {type AttemptOutput, runCommand, runHttp} from './runner.js'
import {type SrDocument, buildSr, readStudyHeader} from './sr-writer.js'

/** A compiled module: its config and its match. */
export class ProcessingModule {
  readonly match: InstanceMatch

  constructor(readonly config: ProcessingModuleConfig) {
    this.match = new InstanceMatch(config.match, `processing.modules[${config.name}]`)
  }

  get name(): string {
    return this.config.name
  }
}

/** What an attempt is given besides the module and the study. */
export interface AttemptContext {
  /** SOP Instance UIDs processing stored into the study: never inputs. */
  processingOutputs: ReadonlySet<string>
  sources: InputSources
  workDir?: string
  uidRoot?: string
  /** Which run of the module on the study, and which attempt of it (task.json; the SR's UIDs come from the run). */
  run: number
  attempt: number
  signal?: AbortSignal
}

/** How an attempt that did not fail ended. */
export type AttemptResult =
  | {skipped: true; reason: string; inputsDigest: string}
  | {
      skipped: false
      inputs: InputInstance[]
      inputsDigest: string
      result?: ModuleResult
      sr?: SrDocument
      /** What is to be stored into the study, the SR first. */
      outputs: OutputInstance[]
      output: AttemptOutput
      folders: RunFolders
    }

/**
 * Runs one attempt. Resolves `skipped` when no instance of the study matches the module; throws
 * ModuleFailure when the attempt failed (its folders are removed then; on success the caller
 * removes them once it has stored the outputs).
 */
export async function attemptModule(module: ProcessingModule, study: StudyDetail, context: AttemptContext): Promise<AttemptResult> {
  const instances = moduleInputs(study, context.processingOutputs)
  const digest = inputsDigest(instances, context.processingOutputs)
  if (instances.length === 0) return {skipped: true, reason: 'no stored instance to give it', inputsDigest: digest}
  // A match on header values the ledger holds is decided before anything is copied.
  if (!module.match.readsDataset && !instances.some((i) => module.match.test(ledgerInstance(study, i)))) {
    return {skipped: true, reason: 'no instance of the study matches', inputsDigest: digest}
  }

  const folders = await makeRunFolders(context.workDir, `${module.name}-${study.studyInstanceUid}`.slice(0, 80))
  try {
    let inputs: InputInstance[]
    try {
      inputs = await gatherInputs(instances, folders.inDir, context.sources)
    } catch (error) {
      throw error instanceof ModuleFailure ? error : new ModuleFailure('inputs', (error as Error).message)
    }

    if (module.match.readsDataset && !inputs.some((i) => module.match.test(matchInstance(study, i)))) {
      await folders.remove()
      return {skipped: true, reason: 'no instance of the study matches', inputsDigest: digest}
    }

    const config = module.config
    const task = makeTask(study, inputs, {module: module.name, settings: config.settings, run: context.run, attempt: context.attempt, output: config.output})
    const output = config.command === undefined ? await runHttp(config, task, inputs, context.signal) : await runCommand(config, folders, task, context.signal)
    const given = {sopInstanceUids: new Set(inputs.map((i) => i.sopInstanceUid)), seriesInstanceUids: new Set(inputs.flatMap((i) => (i.seriesInstanceUid === null ? [] : [i.seriesInstanceUid])))}
    if (output.resultText === undefined && config.output === 'sr') throw new ModuleFailure('invalid-result', 'the module wrote no DDR_OUT/result.json (output "sr" needs one)', output.stderr)
    let result: ModuleResult | undefined
    try {
      result = output.resultText === undefined ? undefined : parseResult(output.resultText, given, config.url === undefined ? 'DDR_OUT/result.json' : `the answer of ${config.url}`)
    } catch (error) {
      throw error instanceof ModuleFailure ? new ModuleFailure(error.kind, error.message, output.stderr) : error
    }

    const outputs: OutputInstance[] = []
    let sr: SrDocument | undefined
    if (config.output === 'sr' && result !== undefined) {
      sr = buildSr({
        module: module.name,
        title: config.title,
        result,
        header: await readStudyHeader(inputs[0].path),
        evidence: inputs.map((i) => ({sopInstanceUid: i.sopInstanceUid, sopClassUid: i.sopClassUid, seriesInstanceUid: i.seriesInstanceUid ?? ''})),
        seed: `${study.studyInstanceUid}/${module.name}/${context.run}`,
        uidRoot: context.uidRoot,
      })
      const file = path.join(folders.dir, 'sr.dcm')
      await writeFile(file, sr.part10)
      outputs.push({path: file, sopInstanceUid: sr.sopInstanceUid, sopClassUid: sr.dataset.SOPClassUID as string, kind: 'sr'})
    }

    if (config.output !== 'none') {
      try {
        outputs.push(...(await checkOutputFiles(folders.outDir, study, given.sopInstanceUids)))
      } catch (error) {
        throw error instanceof ModuleFailure ? new ModuleFailure(error.kind, error.message, output.stderr) : error
      }
    }

    return {skipped: false, inputs, inputsDigest: digest, result, sr, outputs, output, folders}
  } catch (error) {
    await folders.remove()
    throw error
  }
}
