import type {RouterStatus} from '../status/server.js'

/** One sample of the router's counters. */
interface Sample {
  /** Epoch ms. */
  at: number
  received: number
  routed: number
  failed: number
  queueDepth: number
}

/** The fleet chart's data: per interval, instances per second (uPlot's column layout). */
export interface RateSeries {
  intervalSeconds: number
  /** Epoch seconds, the end of each interval. */
  time: number[]
  received: number[]
  routed: number[]
  failed: number[]
  /** Instances waiting (spool in store-and-forward, in flight in pass-through) at the end of each interval. */
  queued: number[]
}

/**
 * The last hour of the router's counters, sampled off the DICOM path (a timer reads the same
 * snapshot /status serves), so the console's chart starts with history instead of from the
 * moment the page opened.
 */
export class RateHistory {
  private readonly samples: Sample[] = []
  private readonly timer: NodeJS.Timeout
  private readonly capacity: number

  constructor(private readonly snapshot: () => RouterStatus, readonly intervalMs = 5000, keepMs = 3600 * 1000) {
    this.capacity = Math.ceil(keepMs / intervalMs) + 1
    this.sample()
    this.timer = setInterval(() => {
      try {
        this.sample()
      } catch {
        // a snapshot that failed leaves a gap in the chart, never an exception in a timer
      }
    }, intervalMs)
    this.timer.unref()
  }

  /** Takes a sample now (the timer does this every intervalMs). */
  sample(at = Date.now()): void {
    const status = this.snapshot()
    this.samples.push({
      at,
      received: status.counters.received,
      routed: status.counters.routed,
      failed: status.counters.failed,
      queueDepth: status.queueDepth,
    })
    if (this.samples.length > this.capacity) this.samples.splice(0, this.samples.length - this.capacity)
  }

  /** Rates between consecutive samples. */
  series(): RateSeries {
    const out: RateSeries = {intervalSeconds: this.intervalMs / 1000, time: [], received: [], routed: [], failed: [], queued: []}
    for (let i = 1; i < this.samples.length; i++) {
      const a = this.samples[i - 1]
      const b = this.samples[i]
      const seconds = Math.max(0.001, (b.at - a.at) / 1000)
      const rate = (n: number) => Math.round((Math.max(0, n) / seconds) * 100) / 100
      out.time.push(Math.round(b.at / 1000))
      out.received.push(rate(b.received - a.received))
      out.routed.push(rate(b.routed - a.routed))
      out.failed.push(rate(b.failed - a.failed))
      out.queued.push(b.queueDepth)
    }

    return out
  }

  close(): void {
    clearInterval(this.timer)
  }
}
