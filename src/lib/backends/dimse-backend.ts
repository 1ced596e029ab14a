import type tls from 'node:tls'

import type {DicomBackendConfig} from '../config/schema.js'
import {STORE_TIMEOUT_DEFAULT_MS} from '../config/validate.js'
import {DdrError} from '../errors.js'
import {type ContextRequest, type DimseResponse, IMPLICIT_VR_LITTLE_ENDIAN} from '../dimse/scu.js'
import {VERIFICATION_SOP_CLASS} from '../dimse/pdu.js'
import {clientTlsOptions} from '../dimse/tls.js'
import type {ReceivedInstance} from '../dicom/received-instance.js'
import type {OrthancClient} from '../orthanc/client.js'
import {AssociationPool} from './association-pool.js'
import type {Backend, BackendCheck, CheckOptions} from './backend.js'
import {askOrthanc, emptyCheck, hasOrthancStatistics, roundMs} from './check.js'

export interface DimseBackendOptions {
  callingAeTitle: string
  requestTimeoutMs?: number
  /** How long to wait for an association (default 5 s). */
  connectTimeoutMs?: number
  /** The longest one C-STORE may take (default: the config's storeTimeoutMs); null: no limit while it makes progress. */
  storeTimeoutMs?: number | null
  /** DICOM TLS options already read (`ddr send` reads its --tls files itself, naming the flag); default: from the config's `tls`. */
  tls?: tls.ConnectionOptions
  /** Pairs to propose from the first association on (`ddr send` knows every file's before it starts). */
  contexts?: readonly ContextRequest[]
}

const VERIFICATION_CONTEXT = {abstractSyntax: VERIFICATION_SOP_CLASS, transferSyntax: IMPLICIT_VR_LITTLE_ENDIAN}

/** Forwards instances over DIMSE C-STORE on reused associations, bytes unchanged. */
export class DimseBackend implements Backend {
  private readonly pool: AssociationPool
  /** Orthanc's REST API for /statistics (an Orthanc with a url), opened at the first check. */
  private statisticsClient?: OrthancClient

  constructor(readonly config: DicomBackendConfig, private readonly options: DimseBackendOptions) {
    const storeTimeoutMs = options.storeTimeoutMs === undefined ? (config.storeTimeoutMs ?? STORE_TIMEOUT_DEFAULT_MS) : options.storeTimeoutMs
    const tlsOptions = options.tls ?? (config.tls === undefined ? undefined : clientTlsOptions(config.tls, `backends[${config.name}].tls`))
    this.pool = new AssociationPool({
      host: config.host,
      port: config.port,
      calledAeTitle: config.aeTitle,
      callingAeTitle: options.callingAeTitle,
      maxAssociations: config.maxAssociations,
      idleMs: 15_000,
      requestTimeoutMs: options.requestTimeoutMs ?? 60_000,
      connectTimeoutMs: options.connectTimeoutMs ?? 5000,
      ...(storeTimeoutMs === null ? {} : {storeTimeoutMs}),
      ...(tlsOptions === undefined ? {} : {tls: tlsOptions}),
    })
    if (options.contexts !== undefined) this.pool.expect(options.contexts)
  }

  store(instance: ReceivedInstance): Promise<DimseResponse> {
    const context = {abstractSyntax: instance.sopClassUid, transferSyntax: instance.transferSyntaxUid}
    return this.pool.with(context, (association) =>
      association.store({
        sopClassUid: instance.sopClassUid,
        sopInstanceUid: instance.sopInstanceUid,
        transferSyntaxUid: instance.transferSyntaxUid,
        dataset: instance.dataset,
      }),
    )
  }

  /** C-ECHO on a pooled association (a new one only when none is idle), so it also works with SCPs that serve one association at a time. */
  async echo(timeoutMs: number): Promise<number> {
    const started = performance.now()
    const peer = `${this.config.aeTitle}@${this.config.host}:${this.config.port}`
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new DdrError('TIMEOUT', `no C-ECHO answer from ${peer} within ${timeoutMs} ms`)), timeoutMs)
    })
    try {
      const response = await Promise.race([this.pool.with(VERIFICATION_CONTEXT, (association) => association.echo()), timeout])
      if (response.status !== 0) throw new DdrError('BACKEND_REFUSED', `${peer} answered C-ECHO with status 0x${response.status.toString(16).padStart(4, '0')}`)
      return performance.now() - started
    } finally {
      clearTimeout(timer)
    }
  }

  /**
   * C-ECHO (unless passive), then, for an Orthanc with a url, its /statistics (after a GET /system
   * in a survey, so the timed request runs on a warm connection). A C-ECHO refused (association
   * rejected, a non-success status) is still an answer: the SCP is up but does not take us.
   */
  async check(options: CheckOptions): Promise<BackendCheck> {
    const check = emptyCheck()
    // One part after the other, so neither's timing includes the other's work.
    if (!options.passive) {
      try {
        check.echoMs = roundMs(await this.echo(options.timeoutMs))
        check.answered = true
      } catch (error) {
        if (error instanceof DdrError && (error.code === 'ASSOCIATION_REJECTED' || error.code === 'BACKEND_REFUSED')) check.answered = true
        check.problems.push(`C-ECHO: ${(error as Error).message}`)
      }
    }

    if (hasOrthancStatistics(this.config)) {
      // got loads in ~70 ms: `ddr send` over DIMSE never checks, so it does not pay for it.
      this.statisticsClient ??= (await import('../orthanc/client.js')).orthancClientFor(this.config, {timeoutMs: options.timeoutMs})
      await askOrthanc(this.statisticsClient, check, {system: options.survey === true})
    }

    return check
  }

  get openAssociations(): number {
    return this.pool.size
  }

  releaseIdle(): Promise<void> {
    return this.pool.releaseIdle()
  }

  close(): Promise<void> {
    this.statisticsClient?.close()
    return this.pool.close()
  }
}
