import {createReadStream} from 'node:fs'

import got, {HTTPError, RequestError} from 'got'

import {DdrError} from '../errors.js'
import {orthancErrorDetail} from '../orthanc/client.js'
import {createHttpAgents, describeRequestFailure, destroyHttpAgents} from '../security/https.js'
import {redactUrl} from '../output/redact.js'
import {asDdrError, type DeliveryOptions, type DeliveryReport, interruptedError, WorkQueue} from './delivery.js'
import type {PreparedInstance} from './prepare.js'
import type {SendTarget} from './types.js'

export interface RestDeliveryOptions extends DeliveryOptions {
  /** Per-upload timeout (default 120 s). */
  timeoutMs?: number
}

/**
 * Uploads prepared instances to Orthanc with `POST /instances`, `concurrency` at a time: the
 * whole Part 10 file as it is (streamed from disk, or the ZIP entry's bytes). "AlreadyStored"
 * counts as stored, with a remark. Authentication failures and unreachable servers stop the
 * upload (every other file would fail the same way); Orthanc refusing one file fails that file.
 */
export async function deliverOverRest(instances: PreparedInstance[], target: Extract<SendTarget, {protocol: 'rest'}>, options: RestDeliveryOptions): Promise<DeliveryReport> {
  const report: DeliveryReport = {deliveries: [], connected: false}
  const parsed = new URL(target.url)
  const username = target.username ?? (parsed.username ? decodeURIComponent(parsed.username) : undefined)
  const password = target.password ?? (parsed.password ? decodeURIComponent(parsed.password) : undefined)
  const base = redactUrl(target.url, {credentials: 'drop'})
  const agents = createHttpAgents({https: target.https, field: target.backend === undefined ? 'https' : `backends.${target.backend}.https`, maxSockets: options.concurrency})
  const http = got.extend({
    prefixUrl: base,
    ...(username === undefined ? {} : {username}),
    ...(password === undefined ? {} : {password}),
    timeout: {request: options.timeoutMs ?? 120_000},
    retry: {limit: 0},
    agent: agents,
  })
  const queue = new WorkQueue(instances, options.onDelivery)
  let stop = false

  const worker = async (): Promise<void> => {
    for (let work = queue.take(); work !== undefined; work = queue.take()) {
      if (stop || options.signal?.aborted) {
        queue.giveBack(work)
        return
      }
      const {instance} = work
      const {source} = instance.item
      try {
        const body = source.kind === 'file' ? createReadStream(source.path) : await source.archive.read(source.entry)
        const answer = await http
          .post('instances', {body, headers: {'content-type': 'application/dicom', 'content-length': String(instance.item.size)}})
          .json<{ID?: string; Status?: string}>()
        report.connected = true
        if (answer.Status === 'Success' || answer.Status === 'AlreadyStored') {
          queue.record({instance, stored: true, warning: answer.Status === 'AlreadyStored' ? 'Orthanc already had this instance (kept its first copy)' : undefined})
        } else {
          queue.record({instance, stored: false, errorComment: answer.Status, error: new DdrError('BACKEND_REFUSED', `Orthanc answered status ${answer.Status ?? '(none)'}`)})
        }
      } catch (error) {
        if (error instanceof HTTPError) {
          const status = error.response.statusCode
          const detail = orthancErrorDetail(error.response.body)
          if (status === 401 || status === 403) {
            stop = true
            report.connectionError = new DdrError('BACKEND_REFUSED', `POST ${base}/instances: HTTP ${status} (not authorized)`, {
              hint: 'give the credentials with --rest NAME of a configured backend (DDR_BACKEND_<NAME>_USERNAME / DDR_BACKEND_<NAME>_PASSWORD) or in the URL',
              cause: error,
            })
            queue.giveBack(work)
            return
          }
          report.connected = true
          queue.record({instance, stored: false, errorComment: detail, error: new DdrError('BACKEND_REFUSED', `Orthanc refused it: HTTP ${status}${detail ? ` (${detail})` : ''}`)})
          continue
        }
        if (error instanceof RequestError || !(error instanceof DdrError)) {
          const {reason, tls} = describeRequestFailure(error)
          const hint =
            tls === 'untrusted'
              ? `give the CA that signs the server's certificate (or the self-signed certificate itself) with --ca FILE${target.backend === undefined ? '' : `, or as backends[].https.ca of backend ${target.backend}`}`
              : tls === 'handshake'
                ? 'check the URL scheme (https:// or http://) and port'
                : `is Orthanc running at ${base}?`
          const failure = new DdrError('BACKEND_UNREACHABLE', `POST ${base}/instances failed: ${reason}`, {hint, cause: error})
          if (!report.connected) {
            // Nothing got through yet: the server is not there, stop here.
            stop = true
            report.connectionError = failure
            queue.giveBack(work)
            return
          }
          if (!queue.retry(work)) queue.record({instance, stored: false, error: failure})
          continue
        }
        queue.record({instance, stored: false, error: asDdrError(error)})
      }
    }
  }

  try {
    await Promise.all(Array.from({length: Math.max(1, Math.min(options.concurrency, instances.length))}, () => worker()))
  } finally {
    destroyHttpAgents(agents)
  }
  if (queue.size > 0) {
    const cause = report.connectionError
    queue.failRemaining(options.signal?.aborted ? interruptedError() : new DdrError(cause?.code ?? 'BACKEND_UNREACHABLE', `not sent: ${cause?.message ?? 'upload stopped'}`, {hint: cause?.hint, cause}))
  }
  report.deliveries.push(...queue.deliveries)
  return report
}
