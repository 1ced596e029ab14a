export type LogLevel = 'debug' | 'info' | 'warn' | 'error'
export type LogFields = Record<string, string | number | boolean | undefined | null>

export interface LoggerOptions {
  debug?: boolean
  format?: 'text' | 'json'
  /** Where lines go: stderr by default (stdout is for results). */
  write?: (line: string) => void
}

/** One line per event: `time LEVEL event key=value ... message`, or JSON lines for log shippers. */
export class Logger {
  readonly debugEnabled: boolean
  private readonly format: 'text' | 'json'
  private readonly out: (line: string) => void

  constructor(options: LoggerOptions = {}) {
    this.debugEnabled = options.debug ?? false
    this.format = options.format ?? 'text'
    this.out = options.write ?? writeToStderr
  }

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

  private log(level: LogLevel, event: string, fields: LogFields, message?: string): void {
    const time = new Date().toISOString()
    if (this.format === 'json') {
      this.out(JSON.stringify({time, level, event, ...fields, ...(message === undefined ? {} : {message})}))
      return
    }

    const pairs = Object.entries(fields)
      .filter(([, v]) => v !== undefined && v !== null && v !== '')
      .map(([k, v]) => `${k}=${formatValue(v!)}`)
      .join(' ')
    this.out(`${time} ${level.toUpperCase().padEnd(5)} ${event}${pairs ? ` ${pairs}` : ''}${message ? ` - ${message}` : ''}`)
  }
}

let pending: string[] = []
let flushScheduled = false

function flushStderr(): void {
  flushScheduled = false
  if (pending.length === 0) return
  const text = pending.join('')
  pending = []
  process.stderr.write(text)
}

/**
 * Lines written in one turn of the event loop go out in one write: stderr on a pipe (systemd,
 * a log collector) is a blocking write per call on Linux, and the router logs per instance.
 * What is pending is written when the process exits.
 */
function writeToStderr(line: string): void {
  pending.push(`${line}\n`)
  if (flushScheduled) return
  flushScheduled = true
  setImmediate(flushStderr)
}

process.on('exit', flushStderr)

function formatValue(value: string | number | boolean): string {
  if (typeof value !== 'string') return String(value)
  return /[\s"=]/.test(value) ? JSON.stringify(value) : value
}

/** A logger that keeps nothing: for library use without output. */
export const silentLogger = new Logger({write: () => {}})
