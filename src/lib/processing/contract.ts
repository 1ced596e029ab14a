/**
 * The contract between ddr and a processing module (docs/processing.md): what the module is given
 * (task.json beside the study's instances in DDR_IN), what it answers (result.json), and how an
 * attempt fails. Kept in one file so the documentation has one place to agree with.
 */
import {type Static, Type} from '@sinclair/typebox'
import {Value} from '@sinclair/typebox/value'

import {isValidUid} from '../dicom/uids.js'

/** The version of task.json and result.json this ddr writes and reads. */
export const CONTRACT_VERSION = 1

/** One instance the module is given: a file in DDR_IN. */
export interface TaskInstance {
  sopInstanceUid: string
  sopClassUid: string
  /** The file's name in DDR_IN (`<SOPInstanceUID>.dcm`). */
  file: string
  transferSyntaxUid: string
}

/** task.json: what a module needs to know about its study and run. */
export interface Task {
  version: typeof CONTRACT_VERSION
  module: string
  /** The module's `settings` from the configuration, as given. */
  settings: Record<string, unknown>
  study: {
    studyInstanceUid: string
    patientId: string | null
    accessionNumber: string | null
    studyDate: string | null
    modalities: string[]
  }
  /** The study's series with their instances; every file in DDR_IN is listed once. */
  series: Array<{seriesInstanceUid: string | null; modality: string | null; instances: TaskInstance[]}>
  /** The backend that holds the study (where its SR goes). */
  backend: string | null
  /** Which run of this module on this study (1, then one more per re-run), and which attempt of it. */
  run: number
  attempt: number
  output: 'sr' | 'dicom' | 'none'
}

const uid = () => Type.String({minLength: 1, maxLength: 64})

const FindingSchema = Type.Object(
  {
    label: Type.String({minLength: 1, maxLength: 1024}),
    code: Type.Optional(
      Type.Object(
        {
          value: Type.String({minLength: 1, maxLength: 16}),
          scheme: Type.String({minLength: 1, maxLength: 16}),
          meaning: Type.String({minLength: 1, maxLength: 64}),
        },
        {additionalProperties: false},
      ),
    ),
    probability: Type.Optional(Type.Number({minimum: 0, maximum: 1})),
    value: Type.Optional(Type.Number()),
    unit: Type.Optional(Type.String({minLength: 1, maxLength: 16})),
    seriesInstanceUid: Type.Optional(uid()),
    sopInstanceUid: Type.Optional(uid()),
  },
  {additionalProperties: false},
)

/** result.json, as a module writes it (or an HTTP module answers). */
export const ResultSchema = Type.Object(
  {
    findings: Type.Array(FindingSchema, {maxItems: 10_000}),
    summary: Type.Optional(Type.String({maxLength: 10_240})),
  },
  {additionalProperties: false},
)

export type Finding = Static<typeof FindingSchema>
export type ModuleResult = Static<typeof ResultSchema>

/**
 * Why an attempt failed: `exit` (non-zero exit, a signal, could not start), `timeout` (killed at
 * timeoutSeconds), `invalid-result` (result.json missing, not JSON, not the schema, or naming
 * instances it was not given), `invalid-output` (a DICOM file from DDR_OUT that is not Part 10 or
 * not of the study), `http` (an HTTP module answered an error or could not be reached), `inputs`
 * (the study's instances could not be gathered), `store` (the router did not take an output).
 */
export type FailureKind = 'exit' | 'timeout' | 'invalid-result' | 'invalid-output' | 'http' | 'inputs' | 'store'

/** A failed attempt: its kind, a reason that names the thing, and the end of the module's stderr. */
export class ModuleFailure extends Error {
  override readonly name = 'ModuleFailure'

  constructor(readonly kind: FailureKind, message: string, readonly stderr = '') {
    super(message)
  }

  /** The reason as recorded in the ledger and logged: the message, then the end of stderr. */
  get detail(): string {
    const tail = this.stderr.trim()
    return tail === '' ? `${this.kind}: ${this.message}` : `${this.kind}: ${this.message}; stderr: ${tail}`
  }
}

/**
 * Reads result.json's text: JSON, the schema (every problem named by its path), numbers that are
 * finite, a unit only with a value, and references only to instances and series the module was
 * given. Throws ModuleFailure `invalid-result` with the reason.
 */
export function parseResult(text: string, given: {sopInstanceUids: ReadonlySet<string>; seriesInstanceUids: ReadonlySet<string>}, source = 'result.json'): ModuleResult {
  let parsed: unknown
  try {
    parsed = JSON.parse(text)
  } catch (error) {
    throw new ModuleFailure('invalid-result', `${source} is not JSON: ${(error as Error).message}`)
  }

  const problems = [...Value.Errors(ResultSchema, parsed)].slice(0, 5).map((e) => `${e.path || '/'} ${e.message.toLowerCase()}`)
  if (problems.length > 0) throw new ModuleFailure('invalid-result', `${source} does not follow the contract: ${problems.join('; ')}`)
  const result = parsed as ModuleResult
  for (const [index, finding] of result.findings.entries()) {
    const where = `${source} findings[${index}]`
    if (finding.value !== undefined && !Number.isFinite(finding.value)) throw new ModuleFailure('invalid-result', `${where}.value is not a finite number`)
    if (finding.unit !== undefined && finding.value === undefined) throw new ModuleFailure('invalid-result', `${where} has a unit but no value`)
    if (finding.sopInstanceUid !== undefined && !given.sopInstanceUids.has(finding.sopInstanceUid)) {
      throw new ModuleFailure('invalid-result', `${where}.sopInstanceUid ${finding.sopInstanceUid} is not one of the instances the module was given`)
    }

    if (finding.seriesInstanceUid !== undefined && !given.seriesInstanceUids.has(finding.seriesInstanceUid)) {
      throw new ModuleFailure('invalid-result', `${where}.seriesInstanceUid ${finding.seriesInstanceUid} is not one of the series the module was given`)
    }

    for (const key of ['sopInstanceUid', 'seriesInstanceUid'] as const) {
      const value = finding[key]
      if (value !== undefined && !isValidUid(value)) throw new ModuleFailure('invalid-result', `${where}.${key} "${value}" is not a valid UID`)
    }
  }

  return result
}
