import {createHash} from 'node:crypto'
import {appendFileSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync} from 'node:fs'
import path from 'node:path'

/**
 * Weighted rendezvous (highest random weight) hashing: every router process computes the same
 * order of backends for a study, with no shared state; removing a backend moves only its studies.
 * Score = -weight / ln(h) with h uniform in (0,1) from SHA-256(study, backend).
 */
export function rendezvousOrder<T extends {name: string; weight: number}>(key: string, backends: T[]): T[] {
  const scored = backends
    .filter((b) => b.weight > 0)
    .map((backend) => {
      const digest = createHash('sha256').update(key).update('\0').update(backend.name).digest()
      const h = (digest.readUIntBE(0, 6) + 0.5) / 2 ** 48
      return {backend, score: -backend.weight / Math.log(h)}
    })
  scored.sort((a, b) => b.score - a.score || a.backend.name.localeCompare(b.backend.name))
  return scored.map((s) => s.backend)
}

/**
 * Remembered study → backend choices, persisted as an append-only JSON-lines file so that a
 * restarted router keeps sending a study where it already went. Compacted at start.
 */
export class AffinityMap {
  private readonly map = new Map<string, string>()
  private readonly order: string[] = []

  constructor(private readonly file: string | undefined, private readonly maxEntries = 200_000) {
    if (file === undefined) return
    mkdirSync(path.dirname(file), {recursive: true})
    if (existsSync(file)) {
      for (const line of readFileSync(file, 'utf8').split('\n')) {
        if (line.trim() === '') continue
        try {
          const entry = JSON.parse(line) as {study: string; backend: string}
          if (typeof entry.study === 'string' && typeof entry.backend === 'string') this.remember(entry.study, entry.backend, false)
        } catch {
          // a torn last line after a crash: skip it
        }
      }

      this.compact()
    }
  }

  get size(): number {
    return this.map.size
  }

  get(study: string): string | undefined {
    return this.map.get(study)
  }

  set(study: string, backend: string): void {
    if (this.map.get(study) === backend) return
    this.remember(study, backend, true)
  }

  private remember(study: string, backend: string, persist: boolean): void {
    if (!this.map.has(study)) this.order.push(study)
    this.map.set(study, backend)
    if (this.order.length > this.maxEntries) this.map.delete(this.order.shift()!)
    if (persist && this.file !== undefined) appendFileSync(this.file, `${JSON.stringify({study, backend})}\n`)
  }

  private compact(): void {
    if (this.file === undefined) return
    const temp = `${this.file}.tmp`
    writeFileSync(temp, this.order.map((study) => `${JSON.stringify({study, backend: this.map.get(study)})}\n`).join(''))
    renameSync(temp, this.file)
  }
}
