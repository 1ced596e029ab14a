import {formatStatus} from '../dimse/status.js'
import {DdrError} from '../errors.js'
import {redactUrl} from '../output/redact.js'
import {openChannel} from './channels.js'
import {type Delivery, type DeliveryReport, deliver, describeStatus} from './delivery.js'
import {discoverInputs} from './inputs.js'
import {prepareInput, type PrepareOutcome, type PreparedInstance} from './prepare.js'
import type {SendFailure, SendProgressEvent, SendResult, SendSkip, SendTarget, SendTargetSummary, SendWarning} from './types.js'

export interface SendOptions {
  target: SendTarget
  /** Associations (DIMSE) or uploads (REST) at once; default 1. */
  concurrency?: number
  /** Folder relative paths and globs are resolved from (default: the working directory). */
  cwd?: string
  /** Stops taking new files; the ones not sent are reported as failed ("interrupted"). */
  signal?: AbortSignal
  onProgress?: (event: SendProgressEvent) => void
  /** DIMSE: how long to wait for an association (default 10 s) and for progress on a request (default 60 s). */
  connectTimeoutMs?: number
  requestTimeoutMs?: number
}

// Reading headers is cheap, but a few files at once hide the latency of each open and read.
const INSPECT_CONCURRENCY = 8

/** The target as results show it: credentials left out. */
export function summarizeTarget(target: SendTarget): SendTargetSummary {
  if (target.protocol === 'rest') return {protocol: 'rest', url: redactUrl(target.url, {credentials: 'drop'}), ...(target.backend ? {backend: target.backend} : {})}
  if (target.protocol === 'stow') return {protocol: 'stow', url: redactUrl(target.url, {credentials: 'drop'}), backend: target.backend}
  if (target.protocol === 'folder') return {protocol: 'folder', path: target.path, backend: target.backend}
  const {host, port, calledAeTitle, callingAeTitle, backend} = target
  return {protocol: 'dimse', host, port, calledAeTitle, callingAeTitle, ...(backend ? {backend} : {})}
}

/** Where the target is, for messages: "DYNAMIC_DICOM_MW@localhost:11113" or the URL. */
export function describeTarget(target: SendTarget | SendTargetSummary): string {
  const name = target.backend ? `backend ${target.backend} ` : ''
  switch (target.protocol) {
    case 'rest': {
      return `${name}${redactUrl(target.url, {credentials: 'drop'})}`
    }

    case 'stow': {
      return `${name}(STOW-RS ${redactUrl(target.url, {credentials: 'drop'})})`
    }

    case 'folder': {
      return `${name}(folder ${target.path})`
    }

    default: {
      return `${name}${target.calledAeTitle}@${target.host}:${target.port}`
    }
  }
}

function failureOf(delivery: Delivery): SendFailure {
  const {instance} = delivery
  const base = {file: instance.item.name, sopInstanceUid: instance.sopInstanceUid}
  if (delivery.status !== undefined) {
    const comment = delivery.errorComment ? `: ${delivery.errorComment}` : ''
    return {...base, reason: `refused with status ${describeStatus(delivery.status)}${comment}`, status: formatStatus(delivery.status), ...(delivery.errorComment ? {errorComment: delivery.errorComment} : {})}
  }
  const error = delivery.error ?? new DdrError('BACKEND_REFUSED', 'not stored')
  return {...base, reason: error.message, code: error.code, ...(delivery.errorComment ? {errorComment: delivery.errorComment} : {}), ...(error.hint ? {hint: error.hint} : {})}
}

async function prepareAll(items: Awaited<ReturnType<typeof discoverInputs>>['items'], options: Pick<SendOptions, 'onProgress' | 'signal'>): Promise<PrepareOutcome[]> {
  const outcomes = new Array<PrepareOutcome>(items.length)
  const {onProgress, signal} = options
  let next = 0
  let scanned = 0
  const worker = async () => {
    for (let index = next++; index < items.length; index = next++) {
      outcomes[index] = signal?.aborted ? {kind: 'fail', reason: 'not read: interrupted', code: 'ASSOCIATION_ABORTED'} : await prepareInput(items[index], index)
      scanned++
      onProgress?.({phase: 'scan', scanned, total: items.length})
    }
  }
  await Promise.all(Array.from({length: Math.min(INSPECT_CONCURRENCY, items.length)}, () => worker()))
  return outcomes
}

/**
 * Sends files, folders, glob matches and ZIP entries to a DICOM receiver (C-STORE) or an Orthanc
 * REST API: the core of `ddr send`, usable without the CLI.
 *
 * Every input is read first (meta header, SOP class and instance, a check that it is not cut
 * short); non-DICOM files are skipped, bad DICOM files fail with the reason; then the rest is
 * sent as the files hold it. Throws DdrError (exit 3) only when the receiver cannot be reached at
 * all and nothing was sent; every other problem is in the result. Throws DdrError USAGE for an
 * argument that names nothing.
 */
export async function sendFiles(inputs: string[], options: SendOptions): Promise<SendResult> {
  const started = performance.now()
  const concurrency = Math.max(1, Math.floor(options.concurrency ?? 1))
  const discovered = await discoverInputs(inputs, {cwd: options.cwd})
  const failures: Array<SendFailure & {order: number}> = []
  const skips: Array<SendSkip & {order: number}> = []
  const warnings: Array<SendWarning & {order: number}> = []
  let sent = 0
  let bytes = 0
  try {
    const order = discovered.items.length
    discovered.problems.forEach((problem, index) => failures.push({order: order + index, file: problem.name, reason: problem.error.message.replace(`${problem.name}: `, ''), code: problem.error.code, hint: problem.error.hint}))

    const instances: PreparedInstance[] = []
    for (const [index, outcome] of (await prepareAll(discovered.items, options)).entries()) {
      const file = discovered.items[index].name
      if (outcome.kind === 'instance') instances.push(outcome.instance)
      else if (outcome.kind === 'skip') skips.push({order: index, file, reason: outcome.reason})
      else failures.push({order: index, file, reason: outcome.reason, ...(outcome.code ? {code: outcome.code} : {}), ...(outcome.hint ? {hint: outcome.hint} : {})})
    }

    const bytesTotal = instances.reduce((sum, instance) => sum + instance.item.size, 0)
    let done = 0
    let failedSoFar = 0
    const progress = () => options.onProgress?.({phase: 'send', done, failed: failedSoFar, total: instances.length, bytesDone: bytes, bytesTotal})
    const onDelivery = (delivery: Delivery) => {
      done++
      if (delivery.stored) {
        sent++
        bytes += delivery.instance.item.size
      } else {
        failedSoFar++
      }
      progress()
    }

    let report: DeliveryReport = {deliveries: [], connected: false}
    if (instances.length > 0) {
      progress()
      // Through the router's own Backend classes, one channel per kind of target (channels.ts).
      const {channel, order} = await openChannel(options.target, instances, {concurrency, connectTimeoutMs: options.connectTimeoutMs, requestTimeoutMs: options.requestTimeoutMs})
      report = await deliver(order, channel, {signal: options.signal, onDelivery})
    }

    if (instances.length > 0 && !report.connected && sent === 0 && report.connectionError !== undefined && !options.signal?.aborted) {
      const cause = report.connectionError
      throw new DdrError(cause.code, `${cause.message}; nothing was sent (${instances.length} DICOM file${instances.length === 1 ? '' : 's'} ready)`, {
        exit: 3,
        hint: cause.hint ?? (options.target.protocol === 'dimse' ? `is a DICOM receiver listening at ${options.target.host}:${options.target.port} with AE title ${options.target.calledAeTitle}? (--host, --port, --called-ae)` : undefined),
        cause,
      })
    }

    for (const delivery of report.deliveries) {
      const {instance} = delivery
      if (!delivery.stored) failures.push({order: instance.index, ...failureOf(delivery)})
      const remarks = [instance.warning, delivery.stored ? delivery.warning : undefined].filter((text): text is string => text !== undefined)
      if (delivery.stored && remarks.length > 0) {
        warnings.push({order: instance.index, file: instance.item.name, sopInstanceUid: instance.sopInstanceUid, message: remarks.join('; '), ...(delivery.status ? {status: formatStatus(delivery.status)} : {})})
      }
    }
  } finally {
    discovered.close()
  }

  const strip = <T extends {order: number}>(list: T[]): Array<Omit<T, 'order'>> =>
    list.sort((a, b) => a.order - b.order).map(({order: _order, ...rest}) => rest)
  return {
    target: summarizeTarget(options.target),
    files: discovered.items.length + discovered.problems.length,
    sent,
    failed: failures.length,
    skipped: skips.length,
    bytes,
    durationMs: Math.round(performance.now() - started),
    concurrency,
    failures: strip(failures),
    skips: strip(skips),
    warnings: strip(warnings),
  }
}
