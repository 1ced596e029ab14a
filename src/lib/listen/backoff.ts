/**
 * How long to wait before try number `tries` + 1: exponential from `baseMs`, capped at `maxMs`,
 * with jitter (50–100 %) so that instances that failed together do not retry together.
 */
export function backoffDelay(tries: number, baseMs: number, maxMs: number): number {
  const exponential = Math.min(maxMs, baseMs * 2 ** Math.min(Math.max(tries - 1, 0), 20))
  return exponential * (0.5 + Math.random() * 0.5)
}
