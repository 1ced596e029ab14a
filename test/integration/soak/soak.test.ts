import {mkdtemp, rm, writeFile} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'
import {setTimeout as sleep} from 'node:timers/promises'

import {writeSyntheticStudies} from '../../helpers/datasets.js'
import {storescu} from '../../helpers/dcmtk.js'
import {type RouterChild, hostileConnection, hostilePayload, memoryOf, prng, startRouterChild, validAssociateRq} from '../../helpers/hostile.js'
import {type TestOrthanc, startTestOrthanc} from '../../helpers/orthanc.js'
import {freePort} from '../../helpers/ports.js'
import {waitFor} from '../../helpers/wait.js'

// The soak: the compiled `ddr listen` (its own process, whose RSS is sampled) under 8 storescu
// senders for DDR_SOAK_SECONDS (60 in `npm test`; `npm run soak` runs 10 minutes, see
// docs/reliability.md), one of its two Orthanc backends restarted every 20 s, and malformed
// associations in between. Then: the router never died, its RSS slope stayed under the bound, and
// every instance a sender got Success for is on exactly one backend once the spool drained.
const SECONDS = Number(process.env.DDR_SOAK_SECONDS ?? 60)
const SENDERS = 8
const RESTART_EVERY_MS = 20_000
/** How long the restarted backend stays down: long enough for the router to notice and fail over. */
const DOWN_MS = 2_000
const SAMPLE_EVERY_MS = 2_000
/**
 * Samples before this are warm-up: code compiled, the heap and allocator arenas growing to their
 * working size. On this machine RSS climbs from ~140 to ~185 MB over the first 40 to 50 s (until
 * V8's first full collections), drops a few MB, and then stays within a few MB for minutes.
 */
const WARM_UP_MS = Math.min(60_000, (SECONDS * 1000) / 3)
/**
 * The RSS bound, MB per minute after warm-up: 45 MB over the measured window, at least 5 MB/min.
 * A flat router still moves by up to ~45 MB at once (the end of the warm-up climb under a loaded
 * machine, a heap growth step): over a window of W minutes that alone fits a slope of up to 45/W.
 * A leak that matters grows with the work: keeping the received instances would add the data rate,
 * 40 to 65 MB/min here (9 × 8 KB + a 200 KB instance every fourth association, 8 senders). So
 * the 60 s run in `npm test` (window 40 s: 67 MB/min) catches only a gross leak, about all the
 * data received; the 10-minute `npm run soak` (window 9 min: 5 MB/min) catches one of a tenth of it.
 */
const MAX_SLOPE_MB_PER_MIN = Math.max(5, 45 / ((SECONDS * 1000 - WARM_UP_MS) / 60_000))
const AE_TITLE = 'DDR_SOAK'


/** Least-squares slope of y over x. */
function slope(points: Array<{x: number; y: number}>): number {
  const n = points.length
  const meanX = points.reduce((sum, p) => sum + p.x, 0) / n
  const meanY = points.reduce((sum, p) => sum + p.y, 0) / n
  const covariance = points.reduce((sum, p) => sum + (p.x - meanX) * (p.y - meanY), 0)
  const variance = points.reduce((sum, p) => sum + (p.x - meanX) ** 2, 0)
  return variance === 0 ? 0 : covariance / variance
}

/** Every SOP Instance UID an Orthanc holds (one POST /tools/find). */
async function heldUids(orthanc: TestOrthanc): Promise<string[]> {
  const response = await fetch(`${orthanc.url}/tools/find`, {method: 'POST', body: JSON.stringify({Level: 'Instance', Query: {}, Expand: true})})
  if (!response.ok) throw new Error(`${orthanc.name}: POST /tools/find answered HTTP ${response.status}`)
  const found = (await response.json()) as Array<{MainDicomTags?: {SOPInstanceUID?: string}}>
  return found.map((instance) => instance.MainDicomTags?.SOPInstanceUID).filter((uid): uid is string => uid !== undefined)
}

describe(`soak: ${SECONDS} s of 8 senders, a backend restarted every 20 s and malformed associations (ddr listen, compiled CLI)`, () => {
  let workDir: string
  let steady: TestOrthanc
  let flaky: TestOrthanc
  let router: RouterChild
  let listenPort: number
  let statusPort: number
  /** Log lines of the router at level ERROR, or that name a crash (the child's output, all of it). */
  const errors: string[] = []

  beforeAll(async () => {
    workDir = await mkdtemp(path.join(os.tmpdir(), 'ddr-soak-'))
    ;[steady, flaky] = await Promise.all([startTestOrthanc({name: 'steady', aeTitle: 'STEADY'}), startTestOrthanc({name: 'flaky', aeTitle: 'FLAKY'})])
    listenPort = await freePort()
    statusPort = await freePort()
    const config = path.join(workDir, 'ddr.config.json')
    await writeFile(
      config,
      JSON.stringify({
        listen: {host: '127.0.0.1', port: listenPort, aeTitle: AE_TITLE, artimTimeoutMs: 2000},
        status: {host: '127.0.0.1', port: statusPort},
        spool: {dir: path.join(workDir, 'spool'), retryBaseMs: 200, retryMaxMs: 2000},
        // Studies leave the ledger's "receiving" state (held in memory) 5 s after their last
        // instance instead of 60: the router reaches its working size within the first 20 s, and
        // receipts (the ledger asking the backends what they hold) run during the load too.
        studies: {stableSeconds: 5},
        health: {intervalMs: 1000, timeoutMs: 2000, failThreshold: 1, recoverThreshold: 1},
        backends: [steady, flaky].map((o) => ({name: o.name, host: '127.0.0.1', port: o.dicomPort, aeTitle: o.aeTitle, url: o.url})),
      }),
    )
    router = await startRouterChild(config)
    const scan = (chunk: string) => errors.push(...chunk.split('\n').filter((line) => /\bERROR\b/.test(line) || /internal error|uncaught|unhandled/i.test(line)))
    router.child.stdout.on('data', scan)
    router.child.stderr.on('data', scan)
  })

  afterAll(async () => {
    await router?.stop()
    await Promise.all([steady?.stop(), flaky?.stop()])
    if (workDir) await rm(workDir, {recursive: true, force: true})
  })

  it('keeps the router alive with flat memory and delivers every acknowledged instance exactly once', async () => {
    const pid = router.child.pid!
    const port = listenPort
    const seed = Date.now() % 1_000_000
    const random = prng(seed)
    const validRequest = validAssociateRq(AE_TITLE)
    const acknowledged = new Set<string>()
    const notAcknowledged: string[] = []
    let exit: string | undefined
    router.child.once('exit', (code, signal) => (exit = `exit ${code ?? signal} after ${Math.round((Date.now() - started) / 1000)} s`))

    const started = Date.now()
    let stopping = false
    let wake: () => void = () => {}
    const stopped = new Promise<void>((resolve) => (wake = resolve))
    const pause = (ms: number) => Promise.race([sleep(ms), stopped])
    const stats = {associations: 0, sent: 0, hostile: 0, restarts: 0}
    const samples: Array<{ms: number; rssKb: number}> = []

    const sender = async (index: number) => {
      for (let batch = 1; !stopping; batch++) {
        const dir = path.join(workDir, `sender-${index}`, `batch-${batch}`)
        const instances = await writeSyntheticStudies(dir, {studies: 1, instancesPerStudy: 9, pixelBytes: 8192, prefix: `SOAK${index}`})
        // Every fourth association also carries an instance above 128 KB: the spool's file-of-its-own path.
        if (batch % 4 === 0) instances.push(...(await writeSyntheticStudies(path.join(dir, 'large'), {studies: 1, instancesPerStudy: 1, pixelBytes: 200_000, prefix: `SOAKL${index}`})))
        const byPath = new Map(instances.map((instance) => [instance.path, instance.sopInstanceUid]))
        const result = await storescu(['-v', '-aec', AE_TITLE, '127.0.0.1', String(port), ...byPath.keys()], {timeoutMs: 120_000})
        // storescu -v: "Sending file: PATH" ... "Received Store Response (Success)" for each file in turn.
        let current: string | undefined
        for (const line of `${result.stdout}\n${result.stderr}`.split('\n')) {
          const sending = /Sending file: (.*)$/.exec(line)
          if (sending !== null) current = sending[1].trim()
          else if (current !== undefined && /Received Store Response \((Success|Warning)/.test(line)) {
            acknowledged.add(byPath.get(current)!)
            byPath.delete(current)
            current = undefined
          }
        }

        notAcknowledged.push(...[...byPath.keys()].map((file) => `${file}: storescu exit ${result.code}, ${result.stderr.split('\n').find((l) => l.startsWith('E:')) ?? ''}`))
        stats.associations++
        stats.sent += instances.length
        await rm(dir, {recursive: true, force: true})
      }
    }

    const attacker = async () => {
      while (!stopping) {
        await hostileConnection(port, hostilePayload(random, validRequest))
        stats.hostile++
        await pause(100 + random() * 400)
      }
    }

    // On the clock: a restart starts every 20 s (stop, 2 s down, start: ~5 to 8 s in all here).
    const restartMs: number[] = []
    const restarter = async () => {
      for (let due = RESTART_EVERY_MS; !stopping; due += RESTART_EVERY_MS) {
        await pause(Math.max(0, started + due - Date.now()))
        // None that would still be under way when the load ends.
        if (stopping || due > SECONDS * 1000 - 5000) break
        const begun = Date.now()
        await flaky.halt()
        stats.restarts++
        await sleep(DOWN_MS)
        await flaky.resume()
        restartMs.push(Date.now() - begun)
      }
    }

    const sampler = setInterval(() => {
      try {
        if (exit === undefined) samples.push({ms: Date.now() - started, rssKb: memoryOf(pid).rssKb})
      } catch {
        // gone between the check and the read: the exit handler records it
      }
    }, SAMPLE_EVERY_MS)
    const work = Promise.all([...Array.from({length: SENDERS}, (_, index) => sender(index)), attacker(), restarter()])
    await Promise.race([sleep(SECONDS * 1000), work])
    stopping = true
    wake()
    await work
    clearInterval(sampler)
    const loadSeconds = (Date.now() - started) / 1000
    expect({seed, exit}).toEqual({seed, exit: undefined})

    // The spool drains to the backends (both up again), then each acknowledged instance is looked up.
    const status = async () => (await fetch(`http://127.0.0.1:${statusPort}/status`)).json() as Promise<{queueDepth: number; spool: {depth: number; deadLetters: number}; counters: Record<string, number>}>
    await waitFor('the spool to drain', async () => {
      const now = await status()
      return now.queueDepth === 0 && now.spool.depth === 0
    }, 180_000, 500)
    const final = await status()
    const [onSteady, onFlaky] = await Promise.all([heldUids(steady), heldUids(flaky)])
    const holders = new Map<string, number>()
    for (const uid of [...onSteady, ...onFlaky]) holders.set(uid, (holders.get(uid) ?? 0) + 1)
    const missing = [...acknowledged].filter((uid) => !holders.has(uid))
    const twice = [...acknowledged].filter((uid) => (holders.get(uid) ?? 0) > 1)
    const afterWarmUp = samples.filter((sample) => sample.ms >= WARM_UP_MS)
    const slopeMbPerMin = slope(afterWarmUp.map((s) => ({x: s.ms / 60_000, y: s.rssKb / 1024})))

    const report = {
      seed,
      seconds: Math.round(loadSeconds),
      ...stats,
      acknowledged: acknowledged.size,
      notAcknowledged: notAcknowledged.length,
      onSteady: onSteady.length,
      onFlaky: onFlaky.length,
      routed: final.counters.routed,
      deadLetters: final.spool.deadLetters,
      rssMb: {first: Math.round(samples[0]?.rssKb / 1024), afterWarmUp: Math.round(afterWarmUp[0]?.rssKb / 1024), last: Math.round(samples.at(-1)!.rssKb / 1024), max: Math.round(Math.max(...samples.map((s) => s.rssKb)) / 1024)},
      rssSlopeMbPerMin: Math.round(slopeMbPerMin * 10) / 10,
      rssSlopeBound: Math.round(MAX_SLOPE_MB_PER_MIN * 10) / 10,
      restartMsMax: Math.max(0, ...restartMs),
      samplesAfterWarmUp: afterWarmUp.length,
      errorLines: errors.length,
    }
    console.log(`soak report: ${JSON.stringify(report)}\nsoak RSS MB every ${SAMPLE_EVERY_MS / 1000} s: ${samples.map((sample) => Math.round(sample.rssKb / 1024)).join(' ')}`)

    expect(errors.slice(0, 5)).toEqual([])
    expect(stats.restarts).toBeGreaterThanOrEqual(Math.floor(SECONDS / 20) - 1)
    expect(stats.hostile).toBeGreaterThan(SECONDS)
    expect(notAcknowledged.slice(0, 5)).toEqual([])
    expect(acknowledged.size).toBeGreaterThan(SECONDS * 5)
    expect({seed, missing: missing.slice(0, 5), missingCount: missing.length, twice: twice.slice(0, 5), twiceCount: twice.length}).toEqual({seed, missing: [], missingCount: 0, twice: [], twiceCount: 0})
    // Nothing on the backends that no sender sent (every UID is fresh).
    expect(holders.size).toBe(acknowledged.size)
    expect(final.spool.deadLetters).toBe(0)
    expect(afterWarmUp.length).toBeGreaterThanOrEqual(10)
    expect({seed, rssSlopeMbPerMin: report.rssSlopeMbPerMin, flat: slopeMbPerMin <= MAX_SLOPE_MB_PER_MIN}).toEqual({seed, rssSlopeMbPerMin: report.rssSlopeMbPerMin, flat: true})
  }, (SECONDS + 300) * 1000)
})
