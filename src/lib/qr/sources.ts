/**
 * Who in the fleet can answer a query, and how: a DICOM backend (Orthanc or any SCP) is asked by
 * C-FIND on its own port, so matching (wildcards, date ranges, UID lists, return keys) is the
 * backend's own DICOM semantics, not a translation of them.
 */
import type {BackendConfig} from '../config/schema.js'
import {Identifier} from '../dicom/identifier.js'
import {CommandField} from '../dimse/command.js'
import {QueryModel} from '../dimse/scp.js'
import {IMPLICIT_VR_LITTLE_ENDIAN, ScuAssociation} from '../dimse/scu.js'
import {clientTlsOptions} from '../dimse/tls.js'
import {formatStatus} from '../dimse/status.js'
import {DdrError} from '../errors.js'
import {LedgerQuerySource, type StoredInstances} from './ledger-source.js'
import {QidoQuerySource} from './qido-source.js'
import type {QuerySource} from './types.js'

export type {QuerySource} from './types.js'

export const EXPLICIT_VR_LITTLE_ENDIAN = '1.2.840.10008.1.2.1'


/** A backend left out of fleet queries, and why. */
export interface Unqueryable {
  backend: string
  why: string
}

export interface QuerySourceOptions {
  /** Our AE title towards the backends. */
  callingAeTitle: string
  /** Connecting and each response may take this long. */
  timeoutMs: number
}

/** A C-FIND SCU towards one DICOM backend: one association per query. */
export class DimseQuerySource implements QuerySource {
  readonly name: string

  constructor(private readonly config: Extract<BackendConfig, {aeTitle: string}>, private readonly options: QuerySourceOptions) {
    this.name = config.name
  }

  async find(query: Identifier, options: {model: string; signal?: AbortSignal; onMatch: (match: Identifier) => void}): Promise<void> {
    const config = this.config
    const association = await ScuAssociation.connect({
      host: config.host,
      port: config.port,
      callingAeTitle: this.options.callingAeTitle,
      calledAeTitle: config.aeTitle,
      contexts: [
        {abstractSyntax: options.model, transferSyntax: EXPLICIT_VR_LITTLE_ENDIAN},
        {abstractSyntax: options.model, transferSyntax: IMPLICIT_VR_LITTLE_ENDIAN},
      ],
      connectTimeoutMs: this.options.timeoutMs,
      requestTimeoutMs: this.options.timeoutMs,
      ...(config.tls === undefined ? {} : {tls: clientTlsOptions(config.tls, `backends[${config.name}].tls`)}),
    })
    try {
      const syntax = association.supports(options.model, EXPLICIT_VR_LITTLE_ENDIAN) ? EXPLICIT_VR_LITTLE_ENDIAN : IMPLICIT_VR_LITTLE_ENDIAN
      if (!association.supports(options.model, syntax)) {
        throw new DdrError('BACKEND_REFUSED', `${association.peer} does not answer C-FIND in this information model (${options.model})`, {
          hint: config.type === 'dimse' ? undefined : "Orthanc answers C-FIND only to known modalities or with DicomAlwaysAllowFind: add ddr's AE title to its DicomModalities",
        })
      }

      const response = await association.query(CommandField.cFindRq, options.model, syntax, query.encode(syntax), {
        signal: options.signal,
        onPending: (pending) => {
          if (pending.dataset !== undefined) options.onMatch(Identifier.decode(pending.dataset, syntax, `C-FIND answer of ${config.name}`))
        },
      })
      if (response.status !== 0 && !(options.signal?.aborted && response.status === 0xfe00)) {
        throw new DdrError('BACKEND_REFUSED', `${association.peer} answered the C-FIND with ${formatStatus(response.status)}${response.errorComment ? ` (${response.errorComment})` : ''}`, {
          hint: response.status === 0xa700 || response.status === 0xc000 || (response.status & 0xf000) === 0xa000 ? "Orthanc refuses C-FIND from unknown AE titles unless DicomAlwaysAllowFind is true: add ddr's AE title to its DicomModalities" : undefined,
        })
      }
    } finally {
      await association.release(1000).catch(() => {})
    }
  }
}

/** The information model to use towards backends for a level: Patient Root answers PATIENT, Study Root the rest. */
export function findModelFor(requestModel: string): string {
  return requestModel === QueryModel.patientRootFind || requestModel === QueryModel.patientRootMove || requestModel === QueryModel.patientRootGet ? QueryModel.patientRootFind : QueryModel.studyRootFind
}

/**
 * The backends that can answer queries, and those that cannot (with why): a DICOM backend by
 * C-FIND, a DICOMweb backend by QIDO-RS, a folder backend from the study ledger and its files
 * (when `stored` is given: the ledger is there).
 */
export function querySources(backends: readonly BackendConfig[], options: QuerySourceOptions & {stored?: StoredInstances}): {sources: QuerySource[]; unqueryable: Unqueryable[]} {
  const sources: QuerySource[] = []
  const unqueryable: Unqueryable[] = []
  for (const backend of backends) {
    if (backend.aeTitle !== undefined) sources.push(new DimseQuerySource(backend as Extract<BackendConfig, {aeTitle: string}>, options))
    else if (backend.type === 'dicomweb') sources.push(new QidoQuerySource(backend, {timeoutMs: options.timeoutMs}))
    else if (options.stored !== undefined) sources.push(new LedgerQuerySource(backend, options.stored))
    else unqueryable.push({backend: backend.name, why: 'a folder backend is answered from the study ledger, and there is none (studies.enabled, store-and-forward)'})
  }

  return {sources, unqueryable}
}
