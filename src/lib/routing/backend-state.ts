import type {Backend} from '../backends/backend.js'
import {redactUrl} from '../output/redact.js'

export type Health = 'up' | 'down'

/** What the router knows about one backend right now: health, load, counters. */
export class BackendState {
  health: Health = 'up'
  healthReason = 'not checked yet'
  consecutiveFailures = 0
  consecutiveSuccesses = 0
  inFlight = 0
  /** Exponentially weighted mean of store latency (ms); a guess until the first store. */
  latencyMs = 5
  private latencySamples = 0
  echoMs?: number
  restMs?: number
  /** From Orthanc /statistics, polled in the background. */
  storedInstances?: number
  storedStudies?: number
  diskSizeMb?: number
  routed = 0
  failed = 0
  bytes = 0
  lastError?: string
  lastChange = Date.now()
  /** When a backend last stored an instance for us: proof of health that costs nothing. */
  lastStoredAt = 0
  /** Smooth weighted round-robin accumulator. */
  currentWeight = 0

  constructor(readonly backend: Backend) {}

  get name(): string {
    return this.backend.config.name
  }

  get weight(): number {
    return this.backend.config.weight
  }

  get healthy(): boolean {
    return this.health === 'up'
  }

  /** Expected wait for one more instance, per unit of weight: lower is better. */
  get loadScore(): number {
    const weight = this.weight > 0 ? this.weight : 1e-6
    return ((this.inFlight + 1) * Math.max(this.latencyMs, 0.5)) / weight
  }

  recordLatency(ms: number): void {
    this.latencyMs = this.latencySamples++ === 0 ? ms : this.latencyMs * 0.8 + ms * 0.2
  }

  /** A check or a delivery failed; after `threshold` in a row the backend is marked down. */
  markFailure(reason: string, threshold: number): boolean {
    this.lastError = reason
    this.consecutiveSuccesses = 0
    this.consecutiveFailures++
    if (this.health === 'up' && this.consecutiveFailures >= threshold) {
      this.health = 'down'
      this.healthReason = reason
      this.lastChange = Date.now()
      return true
    }

    return false
  }

  /** A check succeeded; after `threshold` in a row a down backend is marked up. */
  markSuccess(threshold: number): boolean {
    this.consecutiveFailures = 0
    this.consecutiveSuccesses++
    if (this.health === 'down' && this.consecutiveSuccesses >= threshold) {
      this.health = 'up'
      this.healthReason = 'ok'
      this.lastChange = Date.now()
      return true
    }

    if (this.health === 'up') this.healthReason = 'ok'
    return false
  }

  snapshot() {
    return {
      name: this.name,
      // /status keeps its shape: backends without a DICOM address say "", 0 and transport "rest", as before backends had types of their own.
      host: this.backend.config.host ?? '',
      port: this.backend.config.port ?? 0,
      aeTitle: this.backend.config.aeTitle ?? '',
      url: this.backend.config.url === undefined ? undefined : redactUrl(this.backend.config.url),
      transport: this.backend.config.transport ?? 'rest',
      weight: this.weight,
      healthy: this.healthy,
      healthReason: this.healthReason,
      inFlight: this.inFlight,
      latencyMs: round(this.latencyMs),
      echoMs: this.echoMs === undefined ? undefined : round(this.echoMs),
      restMs: this.restMs === undefined ? undefined : round(this.restMs),
      score: round(this.loadScore),
      routed: this.routed,
      failed: this.failed,
      bytes: this.bytes,
      storedInstances: this.storedInstances,
      storedStudies: this.storedStudies,
      diskSizeMb: this.diskSizeMb,
      lastError: this.lastError,
    }
  }
}

export type BackendSnapshot = ReturnType<BackendState['snapshot']>

function round(value: number): number {
  return Math.round(value * 100) / 100
}
