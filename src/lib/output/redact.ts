/** What stands in for a secret in logs and printed config. */
export const REDACTED = '***'

/** What {@link redactUrl} does with a URL's user:password@. */
export interface RedactUrlOptions {
  /**
   * `mask` (default): replaced by `***@`, for logs and JSON output, where a reader should see that
   * credentials are set; a URL without them is shown as written. `drop`: removed, and the URL
   * normalised, for messages and for comparing two URLs whatever credentials they carry.
   */
  credentials?: 'mask' | 'drop'
}

/**
 * A URL safe to print, its user:password@ masked or dropped (see {@link RedactUrlOptions}); a URL
 * it rewrites loses its trailing slashes. Text that does not parse as a URL loses what stands
 * between `//` and `@` too, so a typo never prints a password.
 */
export function redactUrl(url: string, options: RedactUrlOptions = {}): string {
  const mask = (options.credentials ?? 'mask') === 'mask'
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    return url.replace(/\/\/[^/@]*@/, mask ? `//${REDACTED}@` : '//')
  }

  if (mask && parsed.username === '' && parsed.password === '') return url
  parsed.username = mask ? REDACTED : ''
  parsed.password = ''
  return parsed.toString().replace(/\/+$/, '')
}
