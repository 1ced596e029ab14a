export type LogLevel = 'debug' | 'info' | 'warn' | 'error'
export type LogFields = Record<string, string | number | boolean | undefined | null>

export interface LoggerOptions {
  debug?: boolean
  format?: 'text' | 'json'
  /** Where lines go: stderr by default (stdout is for results). */
  write?: (line: string) => void
  /** Fields every line starts with (a worker of `ddr listen --workers`: its index). */
  context?: LogFields
}

/** One line per event: `time LEVEL event key=value ... message`, or JSON lines for log shippers. */
export class Logger {
  readonly debugEnabled: boolean
  private readonly format: 'text' | 'json'
  private readonly out: (line: string, urgent: boolean) => void

  constructor(options: LoggerOptions = {}) {
    this.debugEnabled = options.debug ?? false
    this.format = options.format ?? 'text'
    this.out = options.write ?? writeToStderr
    this.context = options.context
  }

  private readonly context?: LogFields

  debug(event: string, fields: LogFields = {}, message?: string): void {
    if (this.debugEnabled) this.log('debug', event, fields, message)
  }

  info(event: string, fields: LogFields = {}, message?: string): void {
    this.log('info', event, fields, message)
  }

  warn(event: string, fields: LogFields = {}, message?: string): void {
    this.log('warn', event, fields, message)
  }

  error(event: string, fields: LogFields = {}, message?: string): void {
    this.log('error', event, fields, message)
  }

  private log(level: LogLevel, event: string, given: LogFields, message?: string): void {
    const time = isoNow()
    const fields = this.context === undefined ? given : {...this.context, ...given}
    if (this.format === 'json') {
      this.out(JSON.stringify({time, level, event, ...fields, ...(message === undefined ? {} : {message})}), level === 'warn' || level === 'error')
      return
    }

    // Built in one pass (the router logs every instance): `time LEVEL event key=value ... - message`.
    let line = `${time} ${LEVEL_TEXT[level]} ${event}`
    for (const key in fields) {
      const value = fields[key]
      if (value === undefined || value === null || value === '') continue
      line += ` ${key}=${formatValue(value)}`
    }

    if (message) line += ` - ${message}`
    this.out(line, level === 'warn' || level === 'error')
  }
}

const LEVEL_TEXT: Record<LogLevel, string> = {debug: 'DEBUG', info: 'INFO ', warn: 'WARN ', error: 'ERROR'}

let lastMs = 0
let lastIso = ''

/** The time as ISO 8601, formatted once per millisecond. */
function isoNow(): string {
  const now = Date.now()
  if (now !== lastMs) {
    lastMs = now
    lastIso = new Date(now).toISOString()
  }

  return lastIso
}

let pending: string[] = []
let pendingBytes = 0
let flushTimer: NodeJS.Timeout | undefined

/** Lines wait at most this long, or until this much is pending. */
const FLUSH_AFTER_MS = 25
const FLUSH_BYTES = 16 * 1024

function flushStderr(): void {
  if (flushTimer !== undefined) clearTimeout(flushTimer)
  flushTimer = undefined
  if (pending.length === 0) return
  const text = pending.join('')
  pending = []
  pendingBytes = 0
  process.stderr.write(text)
}

/**
 * Log lines go out together, at most 25 ms late: stderr on a pipe (systemd, a log collector) is
 * a blocking write per call on Linux that wakes the reader, ~0.2 ms each, and the router logs
 * every instance. Warnings and errors flush at once (with what came before them); what is
 * pending is written when the process exits.
 */
function writeToStderr(line: string, urgent = false): void {
  pending.push(`${line}\n`)
  pendingBytes += line.length + 1
  if (urgent || pendingBytes >= FLUSH_BYTES) flushStderr()
  else flushTimer ??= setTimeout(flushStderr, FLUSH_AFTER_MS).unref()
}

process.on('exit', flushStderr)

function formatValue(value: string | number | boolean): string {
  if (typeof value !== 'string') return String(value)
  return /[\s"=]/.test(value) ? JSON.stringify(value) : value
}

/** A logger that keeps nothing: for library use without output. */
export const silentLogger = new Logger({write: () => {}})
