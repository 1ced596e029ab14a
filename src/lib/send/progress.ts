import {formatDecimalBytes, formatElapsed} from '../output/units.js'
import type {SendProgressEvent} from './types.js'

/** How progress is shown: a live listr2 display, a plain line now and then (logs, CI), or nothing (--json). */
export type ProgressMode = 'tty' | 'lines' | 'quiet'

export interface SendProgress {
  update(event: SendProgressEvent): void
  /** Ends the display; pass the error when the send failed as a whole. */
  finish(error?: Error): Promise<void>
}

/** 'tty' on an interactive terminal, 'lines' otherwise, 'quiet' for --json. */
export function progressMode(options: {json: boolean}): ProgressMode {
  if (options.json) return 'quiet'
  // listr2 lays out by stdout's width: without one (some pseudo-terminals) it cannot draw.
  return process.stderr.isTTY && process.stdout.isTTY && (process.stdout.columns ?? 0) >= 40 ? 'tty' : 'lines'
}

const LINE_INTERVAL_MS = 2000
const TITLE_INTERVAL_MS = 100

/** "120/500 files, 4.7/19.5 MB, 230 files/s, ETA 2 s". */
export function describeSendProgress(event: Extract<SendProgressEvent, {phase: 'send'}>, elapsedMs: number): string {
  const seconds = Math.max(elapsedMs, 1) / 1000
  const parts = [`${event.done}/${event.total} files`, `${formatDecimalBytes(event.bytesDone)}/${formatDecimalBytes(event.bytesTotal)}`]
  if (event.done > 0) {
    parts.push(`${Math.round(event.done / seconds)} files/s`)
    const byteRate = event.bytesDone / seconds
    // Failed files move the count but not the bytes: estimate from files when nothing was stored yet.
    const remainingMs = byteRate > 0 ? ((event.bytesTotal - event.bytesDone) / byteRate) * 1000 : ((event.total - event.done) / (event.done / seconds)) * 1000
    if (event.done < event.total) parts.push(`ETA ${formatElapsed(remainingMs)}`)
  }
  if (event.failed > 0) parts.push(`${event.failed} failed`)
  return parts.join(', ')
}

function deferred(): {promise: Promise<void>; resolve: () => void; reject: (error: Error) => void} {
  let resolve!: () => void
  let reject!: (error: Error) => void
  const promise = new Promise<void>((res, rej) => {
    resolve = res
    reject = rej
  })
  return {promise, resolve, reject}
}

/**
 * Progress for `ddr send`, on stderr (stdout carries the result). listr2 is loaded only for a
 * terminal: scripts and --json runs do not pay for it at start-up.
 */
export async function createSendProgress(mode: ProgressMode, target: string, write: (line: string) => void = (line) => process.stderr.write(`${line}\n`)): Promise<SendProgress> {
  if (mode === 'quiet') return {update() {}, finish: async () => {}}
  return mode === 'tty' ? listrProgress(target, await import('listr2')) : lineProgress(target, write)
}

function lineProgress(target: string, write: (line: string) => void): SendProgress {
  let sendStarted: number | undefined
  let lastLine = 0
  let scanAnnounced = false
  return {
    update(event) {
      const now = performance.now()
      if (event.phase === 'scan') {
        if (!scanAnnounced) write(`reading ${event.total} file${event.total === 1 ? '' : 's'}`)
        scanAnnounced = true
        return
      }
      if (sendStarted === undefined) {
        sendStarted = now
        lastLine = now
        write(`sending ${event.total} DICOM file${event.total === 1 ? '' : 's'} (${formatDecimalBytes(event.bytesTotal)}) to ${target}`)
        return
      }
      if (now - lastLine >= LINE_INTERVAL_MS && event.done < event.total) {
        lastLine = now
        write(`sent ${describeSendProgress(event, now - sendStarted)}`)
      }
    },
    finish: async () => {},
  }
}

function listrProgress(target: string, {Listr, ListrLogger, ProcessOutput}: typeof import('listr2')): SendProgress {
  const scanDone = deferred()
  const sendDone = deferred()
  let scanTitle: ((title: string) => void) | undefined
  let sendTitle: ((title: string) => void) | undefined
  let sendStarted: number | undefined
  let lastTitle = 0
  let sawSend = false
  const listr = new Listr(
    [
      {
        title: 'Reading files',
        task: async (_context, task) => {
          scanTitle = (title) => (task.title = title)
          await scanDone.promise
        },
      },
      {
        title: `Sending to ${target}`,
        task: async (_context, task) => {
          sendTitle = (title) => (task.title = title)
          await sendDone.promise
          if (!sawSend) task.skip('no DICOM files to send')
        },
      },
    ],
    {
      renderer: 'default',
      rendererOptions: {logger: new ListrLogger({processOutput: new ProcessOutput(process.stderr, process.stderr)})},
      registerSignalListeners: false,
      fallbackRendererCondition: false,
    },
  )
  const running = listr.run().catch(() => {}) // the error is reported by the command, once

  return {
    update(event) {
      const now = performance.now()
      if (event.phase === 'scan') {
        if (event.scanned === event.total || now - lastTitle >= TITLE_INTERVAL_MS) {
          lastTitle = now
          scanTitle?.(`Reading files: ${event.scanned}/${event.total}`)
        }
        return
      }
      if (!sawSend) {
        sawSend = true
        sendStarted = now
        scanDone.resolve()
      }
      if (event.done === event.total || now - lastTitle >= TITLE_INTERVAL_MS) {
        lastTitle = now
        sendTitle?.(`Sending to ${target}: ${describeSendProgress(event, now - sendStarted!)}`)
      }
    },
    async finish(error) {
      scanDone.resolve()
      if (error) sendDone.reject(error)
      else sendDone.resolve()
      await running
    },
  }
}

/** Runs `work` with its progress shown, and ends the display whether it succeeds or throws. */
export async function withProgress<T>(progress: SendProgress, work: (onProgress: (event: SendProgressEvent) => void) => Promise<T>): Promise<T> {
  let result: T
  try {
    result = await work((event) => progress.update(event))
  } catch (error) {
    await progress.finish(error as Error)
    throw error
  }
  await progress.finish()
  return result
}
