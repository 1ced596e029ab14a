/**
 * Sends located instances somewhere, one sub-operation each: to a C-MOVE destination on its own
 * association, back over the requesting association (C-GET), or into a folder (ddr get). Each
 * instance goes in the transfer syntax its backend stores it in, byte for byte.
 */
import {mkdir, rename, writeFile} from 'node:fs/promises'
import path from 'node:path'
import type tls from 'node:tls'

import type {MoveDestinationConfig} from '../config/schema.js'
import {type ContextRequest, ScuAssociation} from '../dimse/scu.js'
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

/** At most this many presentation contexts are proposed ahead of the instances (open): well within an association's 128. */
const MAX_EXPECTED_CONTEXTS = 64

/**
 * A C-MOVE destination: one association, opened with a presentation context for each SOP class
 * and transfer syntax seen so far (and those `open` expects); an instance that needs another
 * context opens a new association that proposes the ones used so far and it (a study rarely has
 * more than two or three).
 */
export class MoveDestinationSink implements RetrieveSink {
  private association?: ScuAssociation
  /** The association `open` started, until the first instance takes it (undefined when it failed: the first store connects anew and says why). */
  private opening?: Promise<ScuAssociation | undefined>
  /** Proposed contexts; `used` once an instance needed one (only those are proposed again). */
  private readonly contexts = new Map<string, {abstractSyntax: string; transferSyntax: string; used: boolean}>()
  private readonly tlsOptions?: tls.ConnectionOptions

  constructor(
    private readonly destination: MoveDestinationConfig,
    private readonly options: {callingAeTitle: string; moveOriginatorAeTitle: string; moveOriginatorMessageId: number; timeoutMs: number},
  ) {
    this.tlsOptions = destination.tls === undefined ? undefined : clientTlsOptions(destination.tls, `retrieve.destinations[${destination.aeTitle}].tls`)
  }

  /**
   * Opens the association now, while the instances are still being located or fetched, proposing
   * the contexts they are expected to need (each SOP class in the syntaxes it is likely stored
   * in; at most MAX_EXPECTED_CONTEXTS): the first instance then finds it open. An instance that
   * needs another context opens a new one as usual; a failure here is the first store's to report.
   */
  open(expected: readonly ContextRequest[]): void {
    if (this.association !== undefined || this.opening !== undefined || expected.length === 0) return
    for (const context of expected.slice(0, MAX_EXPECTED_CONTEXTS)) this.contexts.set(`${context.abstractSyntax}|${context.transferSyntax}`, {...context, used: false})
    this.opening = this.connect().catch(() => undefined)
  }

  async store(instance: LocatedInstance, fetched: FetchedInstance): Promise<{status: number; errorComment?: string}> {
    if (this.opening !== undefined) {
      this.association = await this.opening
      this.opening = undefined
    }

    const key = `${fetched.sopClassUid}|${fetched.transferSyntaxUid}`
    const context = this.contexts.get(key)
    if (context === undefined) {
      // Proposed again: what instances used, and this one (not what was only expected).
      for (const [k, c] of this.contexts) if (!c.used) this.contexts.delete(k)
      this.contexts.set(key, {abstractSyntax: fetched.sopClassUid, transferSyntax: fetched.transferSyntaxUid, used: true})
      await this.association?.release(2000).catch(() => {})
      this.association = undefined
    } else {
      context.used = true
    }

    if (this.association === undefined || !this.association.isOpen) this.association = await this.connect()

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
    if (this.opening !== undefined) this.association = await this.opening
    await this.association?.release(2000)
  }

  private connect(): Promise<ScuAssociation> {
    return ScuAssociation.connect({
      host: this.destination.host,
      port: this.destination.port,
      callingAeTitle: this.options.callingAeTitle,
      calledAeTitle: this.destination.aeTitle,
      contexts: [...this.contexts.values()].map(({abstractSyntax, transferSyntax}) => ({abstractSyntax, transferSyntax})),
      connectTimeoutMs: this.options.timeoutMs,
      requestTimeoutMs: this.options.timeoutMs,
      ...(this.tlsOptions === undefined ? {} : {tls: this.tlsOptions}),
    })
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
