/** Exit codes every ddr command uses: scripts rely on them. */
export const ExitCode = {
  ok: 0,
  unexpected: 1,
  usage: 2,
  peer: 3,
  partial: 4,
} as const
export type ExitCodeValue = (typeof ExitCode)[keyof typeof ExitCode]

/** Stable error codes: they appear in --json output and logs, so never rename one. */
export type DdrErrorCode =
  | 'ASSOCIATION_ABORTED'
  | 'ASSOCIATION_REJECTED'
  | 'BACKEND_REFUSED'
  | 'BACKEND_UNREACHABLE'
  | 'CONFIG_INVALID'
  | 'CONFIG_NOT_FOUND'
  | 'DEPENDENCY_MISSING'
  | 'INVALID_DICOM'
  | 'LEDGER_FAILED'
  | 'NOT_IMPLEMENTED'
  | 'PROTOCOL_ERROR'
  | 'ROUTER_UNREACHABLE'
  | 'STACK_FAILED'
  | 'TIMEOUT'
  | 'USAGE'

const defaultExit: Record<DdrErrorCode, ExitCodeValue> = {
  ASSOCIATION_ABORTED: ExitCode.peer,
  ASSOCIATION_REJECTED: ExitCode.peer,
  BACKEND_REFUSED: ExitCode.peer,
  BACKEND_UNREACHABLE: ExitCode.peer,
  CONFIG_INVALID: ExitCode.usage,
  CONFIG_NOT_FOUND: ExitCode.usage,
  DEPENDENCY_MISSING: ExitCode.usage,
  INVALID_DICOM: ExitCode.usage,
  LEDGER_FAILED: ExitCode.unexpected,
  NOT_IMPLEMENTED: ExitCode.usage,
  PROTOCOL_ERROR: ExitCode.peer,
  ROUTER_UNREACHABLE: ExitCode.peer,
  STACK_FAILED: ExitCode.unexpected,
  TIMEOUT: ExitCode.peer,
  USAGE: ExitCode.usage,
}

export interface DdrErrorOptions {
  exit?: ExitCodeValue
  hint?: string
  cause?: unknown
  /**
   * The peer broke off while one request was under way (abort, closed connection, stall, request
   * timeout), after the connection and association worked: about that request, not the peer's
   * reachability. The code stays the cause's (ASSOCIATION_ABORTED, TIMEOUT, ...).
   */
  duringRequest?: boolean
}

/** The one error type ddr throws on purpose: a stable code, a message naming the thing, and a hint. */
export class DdrError extends Error {
  override readonly name = 'DdrError'
  readonly code: DdrErrorCode
  readonly exit: ExitCodeValue
  readonly hint?: string
  readonly duringRequest: boolean

  constructor(code: DdrErrorCode, message: string, options: DdrErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : {cause: options.cause})
    this.code = code
    this.exit = options.exit ?? defaultExit[code]
    this.hint = options.hint
    this.duringRequest = options.duringRequest ?? false
  }
}

/** Whether an error says a peer broke off during one request (see DdrErrorOptions.duringRequest). */
export function isRequestInterruption(error: unknown): error is DdrError {
  return error instanceof DdrError && error.duringRequest
}

/** Whether an error is a DdrError with the given code. */
export function isDdrError(error: unknown, code?: DdrErrorCode): error is DdrError {
  return error instanceof DdrError && (code === undefined || error.code === code)
}

/** What `--json` prints for a DdrError: the same fields a script sees in the human message. */
export interface DdrErrorJson {
  error: {code: DdrErrorCode; message: string; hint?: string; exit: ExitCodeValue}
}

/** The `--json` form of a DdrError (stdout carries it, so a script reads the code, not the text). */
export function ddrErrorJson(error: DdrError): DdrErrorJson {
  return {error: {code: error.code, message: error.message, hint: error.hint, exit: error.exit}}
}

/**
 * The lines a command writes to stderr for an error it ends on: `error [CODE]: message`, the hint,
 * and with `debug` the cause (DdrError) or stack (anything else, reported as UNEXPECTED).
 */
export function formatErrorReport(error: Error, options: {debug?: boolean} = {}): string {
  if (error instanceof DdrError) {
    let text = `error [${error.code}]: ${error.message}\n`
    if (error.hint) text += `  hint: ${error.hint}\n`
    if (options.debug && error.cause) text += `  cause: ${String((error.cause as Error)?.stack ?? error.cause)}\n`
    return text
  }

  return `error [UNEXPECTED]: ${error.message}\n${options.debug ? `${error.stack}\n` : ''}`
}
