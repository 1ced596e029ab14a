import {closeSync, openSync, readSync} from 'node:fs'

import {type ContextRequest, type DatasetSource, ScuAssociation} from '../dimse/scu.js'
import {formatStatus, statusKind} from '../dimse/status.js'
import {sopClassName, transferSyntaxInfo} from '../dicom/uids.js'
import {DdrError} from '../errors.js'
import {answeredDelivery, asDdrError, type DeliveryOptions, type DeliveryReport, interruptedError, WorkQueue} from './delivery.js'
import type {PreparedInstance} from './prepare.js'
import {clientTlsOptions} from '../dimse/tls.js'
import type {DimseSendTarget} from './target.js'
import type {SendTarget} from './types.js'

/** Presentation contexts one association may propose besides Verification (PS3.8: 128 in all). */
export const MAX_CONTEXTS_PER_ASSOCIATION = 127

export interface DimseDeliveryOptions extends DeliveryOptions {
  connectTimeoutMs?: number
  requestTimeoutMs?: number
  maxPduLength?: number
}

function pairKey(instance: PreparedInstance): string {
  return `${instance.sopClassUid}|${instance.transferSyntaxUid}`
}

/**
 * Splits instances into groups whose (SOP class, transfer syntax) pairs fit in one association,
 * keeping the input order inside each group. Almost always one group.
 */
export function contextGroups(instances: PreparedInstance[]): Array<{contexts: ContextRequest[]; instances: PreparedInstance[]}> {
  const groupOfPair = new Map<string, number>()
  const groups: Array<{contexts: ContextRequest[]; instances: PreparedInstance[]}> = []
  for (const instance of instances) {
    const key = pairKey(instance)
    let group = groupOfPair.get(key)
    if (group === undefined) {
      if (groups.length === 0 || groups.at(-1)!.contexts.length >= MAX_CONTEXTS_PER_ASSOCIATION) groups.push({contexts: [], instances: []})
      group = groups.length - 1
      groups[group].contexts.push({abstractSyntax: instance.sopClassUid, transferSyntax: instance.transferSyntaxUid})
      groupOfPair.set(key, group)
    }
    groups[group].instances.push(instance)
  }
  return groups
}

/** Datasets up to this size are read ahead into memory while the previous instance is on the wire. */
const READ_AHEAD_MAX_BYTES = 1024 * 1024

async function datasetOf(instance: PreparedInstance): Promise<DatasetSource> {
  const {source} = instance.item
  if (source.kind === 'zip-entry') return {buffer: (await source.archive.read(source.entry)).subarray(instance.datasetOffset)}
  if (instance.datasetLength > READ_AHEAD_MAX_BYTES) return {path: source.path, offset: instance.datasetOffset, length: instance.datasetLength}
  // A synchronous read (at most 1 MB, usually from the page cache) while the previous instance is on the wire.
  const fd = openSync(source.path, 'r')
  try {
    const buffer = Buffer.allocUnsafe(instance.datasetLength)
    let filled = 0
    while (filled < buffer.length) {
      const bytesRead = readSync(fd, buffer, filled, buffer.length - filled, instance.datasetOffset + filled)
      if (bytesRead === 0) throw new DdrError('INVALID_DICOM', `${instance.item.name} is shorter than when it was read (${instance.datasetOffset + filled} of ${instance.datasetOffset + buffer.length} bytes)`)
      filled += bytesRead
    }
    return {buffer}
  } finally {
    closeSync(fd)
  }
}

type Work = {instance: PreparedInstance; attempts: number}
type Loaded = {work: Work; dataset: Promise<{source: DatasetSource} | {error: unknown}>}

function load(work: Work | undefined): Loaded | undefined {
  if (work === undefined) return undefined
  return {work, dataset: datasetOf(work.instance).then((source) => ({source}), (error: unknown) => ({error}))}
}

function peerOf(target: Extract<SendTarget, {protocol: 'dimse'}>): string {
  return `${target.calledAeTitle}@${target.host}:${target.port}`
}

/**
 * Sends prepared instances with C-STORE: `concurrency` associations take instances from one
 * queue in input order, each association carrying many instances. Every association proposes
 * exactly the (SOP class, transfer syntax) pairs of the instances it may carry, one context per
 * pair, so every dataset goes out as its file holds it: never parsed, decoded or transcoded
 * (files are streamed from disk). An instance whose association broke is tried once more on a
 * new association. Never throws for a refusal or a network failure: each instance's fate is in
 * the report.
 */
export async function deliverOverDimse(instances: PreparedInstance[], target: DimseSendTarget, options: DimseDeliveryOptions): Promise<DeliveryReport> {
  const report: DeliveryReport = {deliveries: [], connected: false}
  const peer = peerOf(target)
  // PEM files are read once, before the first association; a missing file is a usage error naming the flag.
  const tls = target.tls === undefined ? undefined : clientTlsOptions(target.tls, '--tls')
  for (const group of contextGroups(instances)) {
    const queue = new WorkQueue(group.instances, options.onDelivery)
    const worker = async (): Promise<void> => {
      let association: ScuAssociation | undefined
      // The next instance's dataset is read while the current one is on the wire. Nothing is
      // taken from the queue before the association stands: a receiver that serves one
      // association at a time (storescp) keeps extra workers waiting, and they must not sit on work.
      let next: Loaded | undefined
      try {
        for (;;) {
          if (options.signal?.aborted) return
          if (association === undefined || !association.isOpen) {
            if (next === undefined && queue.size === 0) return
            try {
              association = await ScuAssociation.connect({
                host: target.host,
                port: target.port,
                callingAeTitle: target.callingAeTitle,
                calledAeTitle: target.calledAeTitle,
                contexts: group.contexts,
                connectTimeoutMs: options.connectTimeoutMs,
                requestTimeoutMs: options.requestTimeoutMs,
                maxPduLength: options.maxPduLength,
                ...(tls === undefined ? {} : {tls}),
              })
              report.connected = true
            } catch (error) {
              report.connectionError = asDdrError(error)
              return
            }
          }

          const current = next ?? load(queue.take())
          next = undefined
          if (current === undefined) return
          const {work} = current
          const {instance} = work
          if (!association.supports(instance.sopClassUid, instance.transferSyntaxUid)) {
            const syntax = transferSyntaxInfo(instance.transferSyntaxUid)?.name ?? instance.transferSyntaxUid
            queue.record({
              instance,
              stored: false,
              error: new DdrError('BACKEND_REFUSED', `${peer} did not accept ${sopClassName(instance.sopClassUid) ?? `SOP class ${instance.sopClassUid}`} in ${syntax}`, {
                hint: 'ddr sends files in their own transfer syntax, never transcoded: let the receiver accept it, or convert the file first (dcmdjpeg, dcmconv)',
              }),
            })
            next = load(queue.take())
            continue
          }

          const loaded = await current.dataset
          if ('error' in loaded) {
            next = load(queue.take())
            queue.record({instance, stored: false, error: asDdrError(loaded.error, 'INVALID_DICOM')})
            continue
          }

          try {
            // store() puts the request on the wire before it first waits; the next dataset is
            // read after that, while the receiver works on this one.
            const storing = association.store({sopClassUid: instance.sopClassUid, sopInstanceUid: instance.sopInstanceUid, transferSyntaxUid: instance.transferSyntaxUid, dataset: loaded.source})
            next = load(queue.take())
            queue.record(answeredDelivery(instance, await storing))
          } catch (error) {
            const failure = asDdrError(error)
            // A file that changed under us is this file's problem; anything else broke the association.
            if (failure.code === 'INVALID_DICOM') {
              queue.record({instance, stored: false, error: failure})
              if (association.isOpen) association.abort()
            } else if (!queue.retry(work)) {
              queue.record({instance, stored: false, error: failure})
            }
            association = undefined
          }
        }
      } finally {
        if (next !== undefined) queue.giveBack(next.work)
        if (association?.isOpen) await association.release()
      }
    }

    await Promise.all(Array.from({length: Math.max(1, Math.min(options.concurrency, group.instances.length))}, () => worker()))
    if (queue.size > 0) {
      queue.failRemaining(options.signal?.aborted ? interruptedError() : notSent(report.connectionError, peer))
    }
    report.deliveries.push(...queue.deliveries)
  }

  return report
}

function notSent(cause: DdrError | undefined, peer: string): DdrError {
  return new DdrError(cause?.code ?? 'BACKEND_UNREACHABLE', `not sent: ${cause?.message ?? `no association with ${peer}`}`, {hint: cause?.hint, cause})
}

/** "refused with status 0xA700 (refused)": how a non-success status reads in results. */
export function describeStatus(status: number): string {
  return `${formatStatus(status)} (${statusKind(status)})`
}
