import {randomBytes, timingSafeEqual} from 'node:crypto'
import type http from 'node:http'

/** Who asked for an action, as the log records it. */
export interface Caller {
  /** The peer's address (the router sees no proxy headers: it trusts none). */
  address: string
  /** How the request was allowed: the bearer token, a console login, or nothing needed (loopback without status.token). */
  auth: 'token' | 'session' | 'loopback'
}

/** A refusal: the HTTP status and what to tell the client. */
export interface Refusal {
  status: 401 | 403
  error: string
  code: 'UNAUTHORIZED' | 'FORBIDDEN'
}

export const SESSION_COOKIE = 'ddr_session'
/** A console login lasts this long (ms). */
const SESSION_MS = 12 * 3600 * 1000

/** Whether a host name or address is this machine's loopback (127.0.0.0/8, ::1, localhost). */
export function isLoopbackHost(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, '').toLowerCase()
  return bare === 'localhost' || bare.endsWith('.localhost') || bare === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(bare) || bare === '::ffff:127.0.0.1'
}

/** The host name of a Host header ("127.0.0.1:11180", "[::1]:80", "router"), without its port. */
function hostName(header: string): string {
  const ipv6 = /^\[([^\]]+)\]/.exec(header)
  if (ipv6 !== null) return ipv6[1]
  return header.replace(/:\d+$/, '')
}

function sameSecret(given: string, expected: string): boolean {
  const a = Buffer.from(given)
  const b = Buffer.from(expected)
  return a.length === b.length && timingSafeEqual(a, b)
}

function cookie(request: http.IncomingMessage, name: string): string | undefined {
  for (const part of (request.headers.cookie ?? '').split(';')) {
    const [key, ...value] = part.trim().split('=')
    if (key === name) return value.join('=')
  }

  return undefined
}

/**
 * Who may do what on the console (docs/console.md, "Safety"). Reading is open on the bound
 * address; an action (upload, retry, discard: any request that is not GET or HEAD) must come from
 * the console's own origin, and, with a token configured, carry it (`Authorization: Bearer`) or the
 * session cookie of a console login. On a loopback server without a token every local process
 * may act, as it may write to the spool; a browser page from elsewhere may not: a cross-site
 * request (Origin or Sec-Fetch-Site says so) is refused, and so is a Host header that is not a
 * loopback name (a DNS-rebinding page would send its own name).
 */
export class ConsoleGuard {
  private readonly sessions = new Map<string, number>()

  private readonly cookieAttributes: string
  /** The session cookie's name: with TLS `__Host-` first, so the browser keeps it only if it is Secure, for this host alone, on path / (no sibling host can set or shadow it). */
  private readonly cookieName: string

  /**
   * @param bindHost status.host: loopback or not decides whether Host headers are checked
   * @param token status.token, when set
   * @param secure the console is served over TLS (status.tls): the session cookie is `Secure`, so a browser never sends it over plain HTTP
   */
  constructor(private readonly bindHost: string, private readonly token?: string, secure = false) {
    this.cookieAttributes = `HttpOnly;${secure ? ' Secure;' : ''} SameSite=Strict; Path=/`
    this.cookieName = secure ? `__Host-${SESSION_COOKIE}` : SESSION_COOKIE
  }

  /** Whether actions need the token (or a login). */
  get authRequired(): boolean {
    return this.token !== undefined
  }

  /** Why this request may not be served at all (DNS rebinding), or undefined. */
  hostProblem(request: http.IncomingMessage): Refusal | undefined {
    if (!isLoopbackHost(this.bindHost)) return undefined
    const host = request.headers.host
    if (host === undefined || isLoopbackHost(hostName(host))) return undefined
    return {status: 403, code: 'FORBIDDEN', error: `Host ${host} is not a loopback name: the console on ${this.bindHost} answers only to localhost or 127.0.0.1 (a page from another site may not read it)`}
  }

  /** The caller of an action, or why it is refused. */
  authorize(request: http.IncomingMessage): Caller | Refusal {
    const site = request.headers['sec-fetch-site']
    if (site !== undefined && site !== 'same-origin' && site !== 'none') return {status: 403, code: 'FORBIDDEN', error: `cross-site request refused (Sec-Fetch-Site: ${site}): actions come from the console's own pages or from scripts`}
    const origin = request.headers.origin
    if (origin !== undefined) {
      let originHost: string | undefined
      try {
        originHost = new URL(origin).host
      } catch {
        originHost = undefined
      }

      if (originHost === undefined || originHost !== request.headers.host) return {status: 403, code: 'FORBIDDEN', error: `cross-origin request refused (Origin ${origin}, Host ${request.headers.host ?? 'none'})`}
    }

    const address = request.socket.remoteAddress ?? 'unknown'
    if (this.token === undefined) return {address, auth: 'loopback'}
    const authorization = request.headers.authorization
    if (authorization !== undefined && /^Bearer\s+/i.test(authorization) && sameSecret(authorization.replace(/^Bearer\s+/i, ''), this.token)) return {address, auth: 'token'}
    if (this.hasSession(request)) return {address, auth: 'session'}
    return {status: 401, code: 'UNAUTHORIZED', error: 'this action needs the status token: log in on the console, or send Authorization: Bearer <status.token>'}
  }

  /** Whether the request carries a live console session. */
  hasSession(request: http.IncomingMessage): boolean {
    const id = cookie(request, this.cookieName)
    if (id === undefined) return false
    const expires = this.sessions.get(id)
    if (expires === undefined) return false
    if (expires < Date.now()) {
      this.sessions.delete(id)
      return false
    }

    return true
  }

  /** A Set-Cookie value for a new session when the token is right; undefined otherwise. */
  login(token: string): string | undefined {
    if (this.token === undefined || !sameSecret(token, this.token)) return undefined
    const now = Date.now()
    for (const [id, expires] of this.sessions) if (expires < now) this.sessions.delete(id)
    const id = randomBytes(32).toString('base64url')
    this.sessions.set(id, now + SESSION_MS)
    return `${this.cookieName}=${id}; ${this.cookieAttributes}; Max-Age=${SESSION_MS / 1000}`
  }

  /** Ends the request's session; the Set-Cookie value that clears it. */
  logout(request: http.IncomingMessage): string {
    const id = cookie(request, this.cookieName)
    if (id !== undefined) this.sessions.delete(id)
    return `${this.cookieName}=; ${this.cookieAttributes}; Max-Age=0`
  }
}

/** Whether a guard's answer is a refusal. */
export function isRefusal(value: Caller | Refusal): value is Refusal {
  return 'status' in value
}
