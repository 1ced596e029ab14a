/**
 * Sends located instances somewhere, one sub-operation each: to a C-MOVE destination on its own
 * association, back over the requesting association (C-GET), or into a folder (ddr get). Each
 * instance goes in the transfer syntax its backend stores it in, byte for byte.
 */
import {mkdir, rename, writeFile} from 'node:fs/promises'
import path from 'node:path'
import type tls from 'node:tls'

import type {MoveDestinationConfig} from '../config/schema.js'
import {ScuAssociation} from '../dimse/scu.js'
import {clientTlsOptions} from '../dimse/tls.js'
import {formatStatus, isStored, statusKind} from '../dimse/status.js'
import type {SubOperations} from '../dimse/scp.js'
import type {FetchedInstance, InstanceSource, LocatedInstance} from './retrieve.js'

/** Where retrieved instances go. `store` resolves with a DICOM status, or rejects when it could not be tried. */
export interface RetrieveSink {
  store(instance: LocatedInstance, fetched: FetchedInstance): Promise<{status: number; errorComment?: string}>
  close(): Promise<void>
}

/** One instance that did not arrive, and why. */
export interface SubOperationFailure {
  sopInstanceUid: string
  backend: string
  why: string
}

export interface DeliveryResult {
  counts: SubOperations
  failures: SubOperationFailure[]
  cancelled: boolean
  bytes: number
}

/** How many instances are fetched ahead of the one being sent. */
const FETCH_AHEAD = 8

/**
 * Fetches the instances from their backends and hands each to the sink as it arrives, reporting
 * progress after each one; stops early (the rest counted as remaining) when `signal` aborts.
 * Never rejects.
 */
export async function deliverInstances(
  instances: readonly LocatedInstance[],
  source: InstanceSource,
  sink: RetrieveSink,
  options: {signal?: AbortSignal; onProgress?: (counts: SubOperations, done?: {instance: LocatedInstance; status?: number; why?: string}) => void} = {},
): Promise<DeliveryResult> {
  const counts: SubOperations = {remaining: instances.length, completed: 0, failed: 0, warning: 0}
  const failures: SubOperationFailure[] = []
  let bytes = 0
  try {
    for await (const {instance, fetched, why: fetchFailure} of source.fetchAll(instances, {signal: options.signal, ahead: FETCH_AHEAD})) {
      if (options.signal?.aborted) return {counts, failures, cancelled: true, bytes}
      let status: number | undefined
      let why = fetchFailure
      if (fetched !== undefined) {
        try {
          const answer = await sink.store(instance, fetched)
          status = answer.status
          if (!isStored(status)) why = `the destination answered ${formatStatus(status)}${answer.errorComment ? ` (${answer.errorComment})` : ''}`
          else bytes += fetched.dataset.length
        } catch (error) {
          why = (error as Error).message
        }
      }

      counts.remaining--
      if (why !== undefined) {
        counts.failed++
        failures.push({sopInstanceUid: instance.sopInstanceUid, backend: instance.backend, why})
      } else if (statusKind(status!) === 'warning') {
        counts.warning++
      } else {
        counts.completed++
      }

      options.onProgress?.({...counts}, {instance, status, why})
    }

    return {counts, failures, cancelled: counts.remaining > 0, bytes}
  } finally {
    await sink.close().catch(() => {})
  }
}

/**
 * A C-MOVE destination: one association, opened with a presentation context for each SOP class
 * and transfer syntax seen so far; an instance that needs another context opens a new association
 * that proposes all of them (a study rarely has more than two or three).
 */
export class MoveDestinationSink implements RetrieveSink {
  private association?: ScuAssociation
  private readonly contexts = new Map<string, {abstractSyntax: string; transferSyntax: string}>()
  private readonly tlsOptions?: tls.ConnectionOptions

  constructor(
    private readonly destination: MoveDestinationConfig,
    private readonly options: {callingAeTitle: string; moveOriginatorAeTitle: string; moveOriginatorMessageId: number; timeoutMs: number},
  ) {
    this.tlsOptions = destination.tls === undefined ? undefined : clientTlsOptions(destination.tls, `retrieve.destinations[${destination.aeTitle}].tls`)
  }

  async store(instance: LocatedInstance, fetched: FetchedInstance): Promise<{status: number; errorComment?: string}> {
    const key = `${fetched.sopClassUid}|${fetched.transferSyntaxUid}`
    if (!this.contexts.has(key)) {
      this.contexts.set(key, {abstractSyntax: fetched.sopClassUid, transferSyntax: fetched.transferSyntaxUid})
      await this.association?.release(2000).catch(() => {})
      this.association = undefined
    }

    if (this.association === undefined || !this.association.isOpen) {
      this.association = await ScuAssociation.connect({
        host: this.destination.host,
        port: this.destination.port,
        callingAeTitle: this.options.callingAeTitle,
        calledAeTitle: this.destination.aeTitle,
        contexts: [...this.contexts.values()],
        connectTimeoutMs: this.options.timeoutMs,
        requestTimeoutMs: this.options.timeoutMs,
        ...(this.tlsOptions === undefined ? {} : {tls: this.tlsOptions}),
      })
    }

    if (!this.association.supports(fetched.sopClassUid, fetched.transferSyntaxUid)) {
      throw new Error(`${this.association.peer} does not accept ${fetched.sopClassUid} in ${fetched.transferSyntaxUid}, the syntax ${instance.backend} stores it in (ddr does not transcode)`)
    }

    return this.association.store({
      sopClassUid: fetched.sopClassUid,
      sopInstanceUid: instance.sopInstanceUid,
      transferSyntaxUid: fetched.transferSyntaxUid,
      dataset: {buffer: fetched.dataset},
      moveOriginatorAeTitle: this.options.moveOriginatorAeTitle,
      moveOriginatorMessageId: this.options.moveOriginatorMessageId,
    })
  }

  async close(): Promise<void> {
    await this.association?.release(2000)
  }
}

/** ddr get: each instance's stored file, byte for byte, at <dir>/<PatientID>/<Study>/<Series>/<SOP>.dcm. */
export class FolderSink implements RetrieveSink {
  readonly written: string[] = []

  constructor(private readonly dir: string) {}

  /** Where an instance's file goes. Path separators and dots-only names in PatientID are made safe. */
  pathOf(instance: LocatedInstance): string {
    const safe = (part: string) => {
      const cleaned = part.replace(/[/\\\0]/g, '_').replace(/^\.+$/, '_')
      return cleaned === '' ? 'UNKNOWN' : cleaned
    }

    return path.join(this.dir, safe(instance.patientId), safe(instance.studyInstanceUid), safe(instance.seriesInstanceUid), `${safe(instance.sopInstanceUid)}.dcm`)
  }

  async store(instance: LocatedInstance, fetched: FetchedInstance): Promise<{status: number}> {
    const target = this.pathOf(instance)
    await mkdir(path.dirname(target), {recursive: true})
    const part = `${target}.part`
    await writeFile(part, fetched.file)
    await rename(part, target)
    this.written.push(target)
    return {status: 0}
  }

  async close(): Promise<void> {}
}
