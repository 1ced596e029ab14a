#!/usr/bin/env node
// ddr benchmarks: every figure is measured against a reference in the same run (dcmtk's
// storescu/storescp, a direct send into Orthanc) or is an absolute figure (CPU, memory, latency).
// Run with `npm run bench` (builds first); `--help` lists the options. What each figure measures
// and its target: bench/lib/figures.mjs. A full run writes bench/results/<date>-<sha>.json and
// docs/benchmarks.md (made from it); every run writes bench/out/latest.json and latest.md.
import {execFileSync, spawn} from 'node:child_process'
import {mkdirSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync} from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import {fileURLToPath} from 'node:url'

import {BENCHMARKS_DOC, benchmarksDocFromFiles, RESULTS_DIR, renderTable} from './lib/docs.mjs'
import {figureSpec} from './lib/figures.mjs'
import {GROUPS, parseBenchArgs, usage} from './lib/options.mjs'
import {errorFigure, makeFigure, ratioRound, RESULTS_SCHEMA, round2, writeResultsFile} from './lib/results.mjs'

let options
try {
  options = parseBenchArgs(process.argv.slice(2))
} catch (error) {
  process.stderr.write(`${error.message}\n`)
  process.exit(2)
}

if (options.help) {
  process.stdout.write(usage())
  process.exit(0)
}

const {writeSyntheticStudies} = await import('../dist/lib/dicom/synthetic.js')
const {readMetaHeader} = await import('../dist/lib/dicom/part10.js')
const {ScuAssociation} = await import('../dist/lib/dimse/scu.js')
const {OrthancClient} = await import('../dist/lib/orthanc/client.js')
const {ORTHANC_BINARY, startOrthanc, stopOrthanc} = await import('../dist/lib/stack/orthanc-process.js')

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const {quick} = options
const want = (group) => options.only === null || options.only.includes(group)
const work = path.join(os.tmpdir(), `ddr-bench-${process.pid}`)
const env = {...process.env, TCP_NODELAY: '1'}
const cleanups = []
const figures = []
const workloads = []
/** Seconds each group of figures took, setting up and checking included. */
const durations = {}

const ROUNDS = quick ? 1 : 3
const MB = 1024 * 1024
const sizes = quick
  ? {small: 210, big: 60, huge: 50 * MB, many: 600, p5PerSender: 25, cpuSmall: 200, cpuBig: 30, warmSmall: 100, warmBig: 10, retrieve: 100}
  : {small: 600, big: 200, huge: 200 * MB, many: 3000, p5PerSender: 100, cpuSmall: 500, cpuBig: 60, warmSmall: 200, warmBig: 20, retrieve: 500}
const P5_SENDERS = 8
/** /proc/<pid>/stat counts CPU time in these. */
const CLOCK_TICKS = Number(execFileSync('getconf', ['CLK_TCK'], {encoding: 'utf8'}).trim())

function log(message) {
  process.stderr.write(`${message}\n`)
}

function freePort() {
  return new Promise((resolve, reject) => {
    const server = net.createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const {port} = server.address()
      server.close(() => resolve(port))
    })
  })
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

async function waitFor(what, check, timeoutMs = 120_000, pollMs = 20) {
  const deadline = Date.now() + timeoutMs
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await sleep(pollMs)
  }
}

/** Runs a command to its end; resolves with its stdout. */
function run(command, commandArgs) {
  return new Promise((resolve, reject) => {
    const child = spawn(command, commandArgs, {env, stdio: ['ignore', 'pipe', 'pipe']})
    let stdout = ''
    let stderr = ''
    child.stdout.on('data', (chunk) => (stdout += chunk))
    child.stderr.on('data', (chunk) => (stderr += chunk))
    child.on('error', reject)
    child.on('close', (code) => (code === 0 ? resolve(stdout) : reject(new Error(`${command} exited ${code}: ${stderr.slice(-500)}`))))
  })
}

async function timed(fn) {
  const started = performance.now()
  await fn()
  return (performance.now() - started) / 1000
}

/** A stop function that runs once, however often it is called (per round and again at the end). */
function once(stop) {
  let done
  return () => (done ??= stop())
}

/**
 * Stops Orthancs without waiting: Orthanc takes about 3 s to exit after SIGTERM, mostly asleep,
 * so the next round need not wait for it; the group's end waits for every stop.
 */
function stopLater(...servers) {
  for (const server of servers) server.stop().catch(() => {})
}

/** storescp on a free port, writing what it receives into dir (or discarding it without one). */
async function storescp(dir) {
  const port = await freePort()
  if (dir) mkdirSync(dir, {recursive: true})
  const storeArgs = dir ? ['-od', dir] : ['--ignore']
  // --fork: one process per association, so a router's pooled association never blocks the reference run
  const child = spawn('storescp', ['--fork', ...storeArgs, '+xa', '-aet', 'BENCHSCP', String(port)], {env, stdio: 'ignore'})
  await waitFor('storescp', async () => run('echoscu', ['-aec', 'BENCHSCP', '127.0.0.1', String(port)]).then(() => true, () => false), 10_000)
  const stop = once(async () => {
    child.kill('SIGTERM')
    await new Promise((resolve) => (child.exitCode !== null ? resolve() : child.once('exit', resolve)))
  })
  cleanups.push(stop)
  return {port, aeTitle: 'BENCHSCP', dir, stop}
}

let orthancCount = 0
async function orthanc(name, extra) {
  orthancCount++
  const dir = path.join(work, `orthanc-${orthancCount}-${name}`)
  const info = await startOrthanc({name, aeTitle: name.toUpperCase().slice(0, 16), dicomPort: await freePort(), httpPort: await freePort(), dir, ...(extra ? {extra} : {})})
  const client = new OrthancClient({url: info.url})
  const stop = once(async () => {
    client.close()
    await stopOrthanc(dir)
  })
  cleanups.push(stop)
  return {...info, client, stop, count: async () => (await client.statistics()).CountInstances}
}

/** `ddr listen` as its own process (so its RSS and CPU are its own), in front of the given backends. */
async function router(name, backends, {spool = true, ledger = true, retrieve, ledgerUrl, routerName, workers = 1} = {}) {
  const dir = path.join(work, `router-${name}`)
  mkdirSync(dir, {recursive: true})
  const port = await freePort()
  const statusPort = await freePort()
  const config = path.join(dir, 'ddr.config.json')
  writeFileSync(
    config,
    JSON.stringify({
      listen: {host: '127.0.0.1', port, aeTitle: 'DDR_BENCH', workers},
      status: {host: '127.0.0.1', port: statusPort},
      spool: {dir: path.join(dir, 'spool'), enabled: spool},
      studies: {enabled: ledger},
      ...(ledgerUrl ? {ledger: {url: ledgerUrl, routerName}} : {}),
      ...(retrieve ? {retrieve} : {}),
      backends: backends.map((b) => ({name: b.name, ...(b.type ? {type: b.type} : {}), host: '127.0.0.1', port: b.dicomPort ?? b.port, aeTitle: b.aeTitle, url: b.url})),
    }),
  )
  // DDR_BENCH_ROUTER_NODE_ARGS="--cpu-prof --cpu-prof-dir=/tmp/prof" profiles the router processes.
  const nodeArgs = (process.env.DDR_BENCH_ROUTER_NODE_ARGS ?? '').split(' ').filter(Boolean)
  const child = spawn(process.execPath, [...nodeArgs, path.join(root, 'bin/run.js'), 'listen', '--config', config], {stdio: ['ignore', 'ignore', 'pipe']})
  let stderr = ''
  child.stderr.on('data', (chunk) => (stderr = (stderr + chunk).slice(-20_000)))
  const status = async () => {
    try {
      return await (await fetch(`http://127.0.0.1:${statusPort}/status`)).json()
    } catch {
      return undefined
    }
  }

  const stop = once(async () => {
    child.kill('SIGTERM')
    await new Promise((resolve) => (child.exitCode !== null ? resolve() : child.once('exit', resolve)))
  })
  cleanups.push(stop)
  await waitFor(`router ${name}`, async () => (await status()) !== undefined, 30_000)
  return {
    port,
    statusPort,
    aeTitle: 'DDR_BENCH',
    status,
    stop,
    logTail: () => stderr.split('\n').slice(-5).join('\n'),
    /** CPU time (user + system, all threads) the router process and its workers (listen --workers) have used so far, in ms. */
    cpuMs: () => [child.pid, ...childPids(child.pid)].reduce((sum, pid) => sum + processCpuMs(pid), 0),
    /** Peak resident set size so far (VmHWM), in MB. */
    peakRssMb: () => Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${child.pid}/status`, 'utf8'))[1]) / 1024,
    // Polled every 5 ms: the router's own count of backend Success responses, cheap to ask (a
    // poll of Orthanc's statistics costs it a database query and measures in 20 ms steps).
    drained: () => waitFor(`router ${name} to drain`, async () => {
      const s = await status()
      return s !== undefined && s.queueDepth === 0
    }, 120_000, 5),
  }
}

/** CPU time (user + system, all threads) of one process so far, in ms; 0 once it is gone. */
function processCpuMs(pid) {
  let stat
  try {
    stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
  } catch {
    return 0
  }

  const fields = stat.split(') ')[1].split(' ')
  // utime and stime are fields 14 and 15 of stat(5); fields[0] here is field 3 (state)
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLOCK_TICKS
}

/** The child processes of a process (the workers of `ddr listen --workers`). */
function childPids(pid) {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(/\s+/).filter(Boolean).map(Number)
  } catch {
    return []
  }
}

function storescuFiles(target, files) {
  return run('storescu', ['-aec', target.aeTitle, '127.0.0.1', String(target.port ?? target.dicomPort), ...files])
}

const paths = (instances) => instances.map((i) => i.path)

/** Arrival check: instances held by these Orthancs together (each is fresh, or `before` says what it held). */
async function orthancArrival(where, servers, expected, before = 0) {
  let held = 0
  for (const server of servers) held += await server.count()
  return {where, expected, arrived: held - before}
}

/**
 * Arrival check for a storescp folder: how many of the instances are there (storescp names a file
 * after its SOP Instance UID, e.g. CT.1.2.3); then empties the folder for the next leg.
 */
function scpArrival(where, dir, instances) {
  const names = readdirSync(dir)
  const received = new Set(names.map((name) => name.slice(name.indexOf('.') + 1)))
  const arrived = instances.filter((i) => received.has(i.sopInstanceUid)).length
  for (const name of names) rmSync(path.join(dir, name), {force: true, recursive: true})
  return {where, expected: instances.length, arrived}
}

/** Waits until the Orthancs hold `expected` more than `before` (or the time is up); returns the arrival check. */
async function awaitOrthancs(where, servers, expected, before, timeoutMs = 120_000) {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const arrival = await orthancArrival(where, servers, expected, before)
    if (arrival.arrived >= expected || Date.now() > deadline) return arrival
    await sleep(50)
  }
}

/** Writes a workload of synthetic CT instances and notes it for the results file. */
async function workload(name, {studies, instancesPerStudy, pixelBytes, note}) {
  const instances = await writeSyntheticStudies(path.join(work, name), {studies, instancesPerStudy, pixelBytes, prefix: name.toUpperCase()})
  const bytesEach = statSync(instances[0].path).size
  const existing = workloads.find((w) => w.name === name.replace(/-\d+$/, ''))
  if (existing) existing.instances += instances.length
  else workloads.push({name: name.replace(/-\d+$/, ''), instances: instances.length, bytesEach, ...(note ? {note} : {})})
  return instances
}

function lazy(make) {
  let value
  return () => (value ??= make())
}

const smallSet = lazy(() => workload('small', {studies: 6, instancesPerStudy: sizes.small / 6, pixelBytes: 40 * 1024}))
const bigSet = lazy(() => workload('big', {studies: 5, instancesPerStudy: sizes.big / 5, pixelBytes: 512 * 1024}))

/** Adds a figure (its target from figures.mjs) and logs it. */
function addFigure(id, workloadText, rounds, extra = {}) {
  const spec = figureSpec(id)
  const figure = makeFigure({id, title: `${spec.name}, ${workloadText}`, kind: spec.kind, unit: spec.unit, better: spec.better, target: spec.target, rounds, ...extra})
  figures.push(figure)
  const values = rounds.map((r) => r.value.toFixed(2)).join(' / ')
  const outcome = figure.value === null ? `FAILED: ${figure.failure}` : `${figure.value} ${spec.unit === 'ratio' ? '' : `${spec.unit} `}(rounds ${values}), target ${spec.target ?? '-'}: ${figure.status}`
  log(`${id} ${figure.title}: ${outcome}`)
}

/**
 * Runs one group of figures; if it throws, each of its figures not yet added is recorded as an
 * error with the message, and the bench goes on. Servers the group started are stopped after it.
 */
async function group(name, fn) {
  if (!want(name)) return
  const started = Date.now()
  const mark = cleanups.length
  try {
    await fn()
  } catch (error) {
    log(`${name} could not be measured: ${error.stack ?? error}`)
    for (const id of GROUPS[name]) {
      if (!figures.some((f) => f.id === id)) {
        const spec = figureSpec(id)
        figures.push(errorFigure({id, title: spec.name, kind: spec.kind, unit: spec.unit, better: spec.better, target: spec.target}, String(error.message ?? error)))
      }
    }
  } finally {
    const mine = cleanups.splice(mark)
    await Promise.all(mine.map((cleanup) => cleanup().catch(() => {})))
    durations[name] = Math.round((Date.now() - started) / 1000)
    log(`${name} took ${durations[name]} s`)
  }
}

function percentile(values, p) {
  const sorted = [...values].sort((a, b) => a - b)
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]
}

/** Sends files one by one on one association, timing each C-STORE response (Success latency at the sender). */
async function successLatencies(target, files) {
  const first = readMetaHeader(readFileSync(files[0]))
  const association = await ScuAssociation.connect({host: '127.0.0.1', port: target.port, callingAeTitle: 'LATENCY', calledAeTitle: target.aeTitle, contexts: [{abstractSyntax: first.mediaStorageSopClassUid, transferSyntax: first.transferSyntaxUid}]})
  const latencies = []
  for (const file of files) {
    const bytes = readFileSync(file)
    const meta = readMetaHeader(bytes)
    const started = performance.now()
    const response = await association.store({sopClassUid: meta.mediaStorageSopClassUid, sopInstanceUid: meta.mediaStorageSopInstanceUid, transferSyntaxUid: meta.transferSyntaxUid, dataset: {buffer: bytes.subarray(meta.datasetOffset)}})
    latencies.push(performance.now() - started)
    if (response.status !== 0) throw new Error(`status 0x${response.status.toString(16)} for ${file}`)
  }

  await association.release()
  return latencies
}

const p1 = () => group('P1', async () => {
  const small = await smallSet()
  const n = small.length
  log(`P1 end-to-end: storescu -> ddr -> two Orthanc (all stored) vs storescu -> one Orthanc, ${ROUNDS} rounds on fresh servers`)
  const spoolRounds = []
  const passRounds = []
  const ledgerRounds = []
  for (let round = 1; round <= ROUNDS; round++) {
    const reference = await orthanc(`reference${round}`)
    const direct = await timed(() => storescuFiles(reference, paths(small)))
    const directArrival = await orthancArrival('the reference Orthanc', [reference], n)
    const [a, b] = await Promise.all([orthanc(`alpha${round}`), orthanc(`beta${round}`)])
    const ddr = await router(`p1-${round}`, [a, b])
    let accepted = 0
    const cpuBefore = ddr.cpuMs()
    const routed = await timed(async () => {
      accepted = await timed(() => storescuFiles(ddr, paths(small)))
      await ddr.drained()
    })
    const cpuPerInstance = (ddr.cpuMs() - cpuBefore) / n
    const routedArrival = await orthancArrival("ddr's two Orthancs", [a, b], n)
    // The same with the study ledger off: P1L is the ledger's cost on this path (same run, fresh servers).
    const [c, d] = await Promise.all([orthanc(`epsilon${round}`), orthanc(`zeta${round}`)])
    const ddrNoLedger = await router(`p1-noledger-${round}`, [c, d], {ledger: false})
    const withoutLedger = await timed(async () => {
      await storescuFiles(ddrNoLedger, paths(small))
      await ddrNoLedger.drained()
    })
    const noLedgerArrival = await orthancArrival("the two Orthancs of ddr without ledger", [c, d], n)
    await ddrNoLedger.stop()
    const [e, f] = await Promise.all([orthanc(`gamma${round}`), orthanc(`delta${round}`)])
    const ddrPass = await router(`p1-pass-${round}`, [e, f], {spool: false})
    const passThrough = await timed(() => storescuFiles(ddrPass, paths(small)))
    const passArrival = await orthancArrival("the two Orthancs of ddr --no-spool", [e, f], n)
    spoolRounds.push({...ratioRound(direct, routed, [directArrival, routedArrival]), senderDone: accepted, routerCpuMsPerInstance: cpuPerInstance})
    passRounds.push(ratioRound(direct, passThrough, [directArrival, passArrival]))
    ledgerRounds.push(ratioRound(withoutLedger, routed, [noLedgerArrival, routedArrival]))
    log(`P1 round ${round}: direct ${direct.toFixed(2)} s, ddr spool ${routed.toFixed(2)} s (ledger off: ${withoutLedger.toFixed(2)} s; sender done after ${accepted.toFixed(2)} s, router CPU ${cpuPerInstance.toFixed(2)} ms per instance, JIT warm-up included), ddr --no-spool ${passThrough.toFixed(2)} s`)
    await Promise.all([ddr.stop(), ddrPass.stop()])
    stopLater(reference, a, b, c, d, e, f)
  }

  addFigure('P1', `${n} x 40 KB`, spoolRounds)
  addFigure('P1b', `${n} x 40 KB`, passRounds)
  addFigure('P1L', `${n} x 40 KB`, ledgerRounds)
})

const p2 = () => group('P2', async () => {
  const [small, big] = [await smallSet(), await bigSet()]
  log(`P2 router overhead: storescu -> ddr -> storescp vs storescu -> storescp (storescp writing files, as it does by default), ${ROUNDS} rounds`)
  const scp = await storescp(path.join(work, 'p2-received'))
  const ddr = await router('p2', [{name: 'scp', port: scp.port, aeTitle: scp.aeTitle}], {spool: false})
  const spooled = await router('p2-spool', [{name: 'scp', port: scp.port, aeTitle: scp.aeTitle}])
  const small2 = []
  const big2 = []
  const spool2 = []
  for (let round = 1; round <= ROUNDS; round++) {
    const direct = await timed(() => storescuFiles(scp, paths(small)))
    const directArrival = scpArrival('storescp, from storescu', scp.dir, small)
    const routed = await timed(() => storescuFiles(ddr, paths(small)))
    small2.push(ratioRound(direct, routed, [directArrival, scpArrival('storescp, from ddr --no-spool', scp.dir, small)]))
    const directBig = await timed(() => storescuFiles(scp, paths(big)))
    const directBigArrival = scpArrival('storescp, from storescu', scp.dir, big)
    const routedBig = await timed(() => storescuFiles(ddr, paths(big)))
    big2.push(ratioRound(directBig, routedBig, [directBigArrival, scpArrival('storescp, from ddr --no-spool', scp.dir, big)]))
    const spoolTime = await timed(async () => {
      await storescuFiles(spooled, paths(small))
      await spooled.drained()
    })
    spool2.push(ratioRound(direct, spoolTime, [directArrival, scpArrival('storescp, from ddr with spool', scp.dir, small)]))
  }

  addFigure('P2', `${small.length} x 40 KB`, small2)
  addFigure('P2b', `${big.length} x 512 KB`, big2)
  addFigure('P2c', `${small.length} x 40 KB`, spool2)
})

const p4 = () => group('P4', async () => {
  const small = await smallSet()
  log('P4 ddr send vs storescu: into storescp on one association, and into Orthanc with --concurrency 4 (whole processes)')
  const ddrSend = async (target, files, extra = []) =>
    JSON.parse(await run(process.execPath, [path.join(root, 'bin/run.js'), 'send', '--host', '127.0.0.1', '--port', String(target.port ?? target.dicomPort), '--called-ae', target.aeTitle, '--json', ...extra, ...files]))
  const scp = await storescp(path.join(work, 'p4-received'))
  /** One round of storescu vs ddr send into storescp: [whole process round, without start-up round]. */
  const intoScp = async (instances) => {
    const reference = await timed(() => storescuFiles(scp, paths(instances)))
    const referenceArrival = scpArrival('storescp, from storescu', scp.dir, instances)
    let result
    const whole = await timed(async () => (result = await ddrSend(scp, paths(instances))))
    const sendArrival = scpArrival('storescp, from ddr send', scp.dir, instances)
    return [ratioRound(reference, whole, [referenceArrival, sendArrival]), ratioRound(reference, result.durationMs / 1000, [referenceArrival, sendArrival])]
  }

  const one = []
  const inProcess = []
  for (let round = 1; round <= ROUNDS; round++) {
    const [whole, withoutStartUp] = await intoScp(small)
    one.push(whole)
    inProcess.push(withoutStartUp)
  }

  addFigure('P4', `${small.length} x 40 KB`, one)
  addFigure('P4c', `${small.length} x 40 KB`, inProcess)
  const four = []
  for (let round = 1; round <= ROUNDS; round++) {
    const [reference, target] = await Promise.all([orthanc(`p4-reference${round}`), orthanc(`p4-target${round}`)])
    const direct = await timed(() => storescuFiles(reference, paths(small)))
    const sent = await timed(() => ddrSend(target, paths(small), ['--concurrency', '4']))
    four.push(ratioRound(direct, sent, [await orthancArrival('the Orthanc of storescu', [reference], small.length), await orthancArrival('the Orthanc of ddr send', [target], small.length)]))
    stopLater(reference, target)
  }

  addFigure('P4b', `${small.length} x 40 KB`, four)
  const scaleStarted = Date.now()
  const many = await workload('many', {studies: 10, instancesPerStudy: sizes.many / 10, pixelBytes: 40 * 1024})
  const scale = []
  for (let round = 1; round <= ROUNDS; round++) scale.push((await intoScp(many))[0])
  addFigure('P4-3000', `${many.length} x 40 KB`, scale)
  log(`P4-3000 took ${((Date.now() - scaleStarted) / 1000).toFixed(0)} s of P4's time`)
})

const p5 = () => group('P5', async () => {
  const instances = await workload('p5', {studies: P5_SENDERS, instancesPerStudy: sizes.p5PerSender, pixelBytes: 40 * 1024, note: `${P5_SENDERS} senders, one study each`})
  const perSender = Array.from({length: P5_SENDERS}, (_, s) => paths(instances.slice(s * sizes.p5PerSender, (s + 1) * sizes.p5PerSender)))
  const n = instances.length
  const allSenders = (target) => Promise.all(perSender.map((files) => storescuFiles(target, files)))
  log(`P5 ${P5_SENDERS} storescu at once x ${sizes.p5PerSender} instances: straight into one Orthanc vs through ddr into two, ${ROUNDS} rounds on fresh servers`)
  const rounds = []
  for (let round = 1; round <= ROUNDS; round++) {
    const direct = async () => {
      const reference = await orthanc(`p5-reference${round}`)
      const time = await timed(() => allSenders(reference))
      const arrival = await orthancArrival('the reference Orthanc', [reference], n)
      stopLater(reference)
      return [time, arrival]
    }
    const routed = async () => {
      const [a, b] = await Promise.all([orthanc(`p5-alpha${round}`), orthanc(`p5-beta${round}`)])
      const ddr = await router(`p5-${round}`, [a, b])
      const time = await timed(async () => {
        await allSenders(ddr)
        await ddr.drained()
      })
      const arrival = await orthancArrival("ddr's two Orthancs", [a, b], n)
      await ddr.stop()
      stopLater(a, b)
      return [time, arrival]
    }
    // The order alternates, so a machine that slows down (or warms up) during a round favours neither side.
    let directResult
    let routedResult
    if (round % 2 === 1) {
      directResult = await direct()
      routedResult = await routed()
    } else {
      routedResult = await routed()
      directResult = await direct()
    }

    rounds.push(ratioRound(directResult[0], routedResult[0], [directResult[1], routedResult[1]]))
    log(`P5 round ${round}: direct ${directResult[0].toFixed(2)} s, through ddr ${routedResult[0].toFixed(2)} s`)
  }

  addFigure('P5', `${P5_SENDERS} senders x ${sizes.p5PerSender} x 40 KB`, rounds)
})

const cluster = () => group('CL', async () => {
  const {startPostgres, stopPostgres} = await import('../dist/lib/stack/postgres-process.js')
  const {startHaproxy, stopHaproxy} = await import('../dist/lib/stack/haproxy.js')
  const instances = await workload('cluster', {studies: P5_SENDERS, instancesPerStudy: sizes.p5PerSender, pixelBytes: 40 * 1024, note: `${P5_SENDERS} senders, one study each`})
  const perSender = Array.from({length: P5_SENDERS}, (_, s) => paths(instances.slice(s * sizes.p5PerSender, (s + 1) * sizes.p5PerSender)))
  const n = instances.length
  const allSenders = (target) => Promise.all(perSender.map((files) => storescuFiles(target, files)))
  // One PostgreSQL for all rounds (a fresh database each round), as a site runs one.
  const pgDir = path.join(work, 'cluster-postgres')
  mkdirSync(pgDir, {recursive: true})
  const pg = await startPostgres({dir: pgDir, port: await freePort(), startTimeoutMs: 60_000})
  cleanups.push(once(async () => void (await stopPostgres(pgDir, {mode: 'fast'}))))
  log(`CL ${P5_SENDERS} storescu at once x ${sizes.p5PerSender} instances into two Orthancs: through one router (its embedded SQLite ledger) vs through three routers behind HAProxy sharing a PostgreSQL ledger, ${ROUNDS} rounds on fresh servers`)
  const rounds = []
  for (let round = 1; round <= ROUNDS; round++) {
    const one = async () => {
      const [a, b] = await Promise.all([orthanc(`cl-one-a${round}`), orthanc(`cl-one-b${round}`)])
      const ddr = await router(`cl-one-${round}`, [a, b])
      const cpuBefore = ddr.cpuMs()
      const time = await timed(async () => {
        await allSenders(ddr)
        await ddr.drained()
      })
      const cpuMs = ddr.cpuMs() - cpuBefore
      const arrival = await orthancArrival('two Orthancs behind one router', [a, b], n)
      await ddr.stop()
      stopLater(a, b)
      return [time, arrival, cpuMs / n]
    }
    const three = async () => {
      const [a, b] = await Promise.all([orthanc(`cl-three-a${round}`), orthanc(`cl-three-b${round}`)])
      const database = `round${round}`
      execFileSync('psql', ['-h', pgDir, '-p', String(pg.port), '-U', 'postgres', '-d', 'postgres', '-c', `CREATE DATABASE ${database} OWNER ${pg.user}`], {stdio: 'ignore'})
      const url = pg.url.replace(/\/[^/]+$/, `/${database}`)
      const routers = await Promise.all([1, 2, 3].map((r) => router(`cl-three-${round}-${r}`, [a, b], {ledgerUrl: url, routerName: `router-${r}`})))
      const haproxyDir = path.join(work, `cl-haproxy-${round}`)
      mkdirSync(haproxyDir, {recursive: true})
      const proxy = await startHaproxy({dir: haproxyDir, host: '127.0.0.1', port: await freePort(), servers: routers.map((r, i) => ({name: `router-${i + 1}`, host: '127.0.0.1', port: r.port, checkPort: r.statusPort}))})
      const stopProxy = once(async () => void (await stopHaproxy(haproxyDir, {soft: false})))
      cleanups.push(stopProxy)
      const cpuBefore = routers.map((r) => r.cpuMs())
      const time = await timed(async () => {
        await allSenders({port: proxy.port, aeTitle: 'DDR_BENCH'})
        await Promise.all(routers.map((r) => r.drained()))
      })
      const cpuMs = routers.reduce((sum, r, i) => sum + r.cpuMs() - cpuBefore[i], 0)
      const arrival = await orthancArrival('two Orthancs behind three routers', [a, b], n)
      await stopProxy()
      await Promise.all(routers.map((r) => r.stop()))
      stopLater(a, b)
      return [time, arrival, cpuMs / n]
    }
    // The order alternates, as in P5.
    let oneResult
    let threeResult
    if (round % 2 === 1) {
      oneResult = await one()
      threeResult = await three()
    } else {
      threeResult = await three()
      oneResult = await one()
    }

    rounds.push({...ratioRound(oneResult[0], threeResult[0], [oneResult[1], threeResult[1]]), referenceCpuMsPerInstance: round2(oneResult[2]), ddrCpuMsPerInstance: round2(threeResult[2])})
    log(`CL round ${round}: one router ${oneResult[0].toFixed(2)} s (${oneResult[2].toFixed(2)} ms CPU per instance), three behind HAProxy ${threeResult[0].toFixed(2)} s (${threeResult[2].toFixed(2)} ms CPU per instance, all three routers)`)
  }

  addFigure('CL3', `${P5_SENDERS} senders x ${sizes.p5PerSender} x 40 KB`, rounds)
})

const workersGroup = () => group('W', async () => {
  const instances = await workload('workers', {studies: P5_SENDERS, instancesPerStudy: sizes.p5PerSender, pixelBytes: 40 * 1024, note: `${P5_SENDERS} senders, one study each`})
  const perSender = Array.from({length: P5_SENDERS}, (_, s) => paths(instances.slice(s * sizes.p5PerSender, (s + 1) * sizes.p5PerSender)))
  const n = instances.length
  const allSenders = (target, files = perSender) => Promise.all(files.map((list) => storescuFiles(target, list)))
  // Every process warms up first (each worker compiles the same code: a cold start would count that twice).
  const warmPerSender = Math.round(sizes.p5PerSender / 2)
  const warm = await workload('workers-warm', {studies: P5_SENDERS, instancesPerStudy: warmPerSender, pixelBytes: 40 * 1024, note: 'warm-up before each W2 measurement'})
  const warmPerSenderFiles = Array.from({length: P5_SENDERS}, (_, s) => paths(warm.slice(s * warmPerSender, (s + 1) * warmPerSender)))
  log(`W ${P5_SENDERS} storescu at once x ${sizes.p5PerSender} instances into two storescp (after ${warm.length} to warm up): through ddr listen --workers 1 vs --workers 2, ${ROUNDS} rounds on fresh servers`)
  const rounds = []
  for (let round = 1; round <= ROUNDS; round++) {
    const measure = async (workers) => {
      const dirs = ['a', 'b'].map((side) => path.join(work, `w${workers}-${round}-${side}`))
      const scps = await Promise.all(dirs.map((dir) => storescp(dir)))
      const ddr = await router(`w${workers}-${round}`, scps.map((scp, i) => ({...scp, name: `scp-${i + 1}`, type: 'dimse'})), {workers})
      // Done when both destinations hold every instance, counted from their folders: polling the
      // router's /status every 5 ms (ddr.drained) would cost the primary and each worker an HTTP
      // request per poll and count it as their CPU, twice over with two workers.
      const held = () => dirs.reduce((sum, dir) => sum + readdirSync(dir).length, 0)
      await allSenders(ddr, warmPerSenderFiles)
      await waitFor(`${warm.length} warm-up instances at the two storescp`, () => held() >= warm.length, 120_000, 5)
      await ddr.drained()
      for (const dir of dirs) for (const name of readdirSync(dir)) rmSync(path.join(dir, name), {force: true, recursive: true})
      const cpuBefore = ddr.cpuMs()
      const time = await timed(async () => {
        await allSenders(ddr)
        await waitFor(`${n} instances at the two storescp`, () => held() >= n, 120_000, 5)
      })
      const cpuMs = ddr.cpuMs() - cpuBefore
      await ddr.drained()
      await ddr.stop()
      await Promise.all(scps.map((scp) => scp.stop()))
      // Each instance on one of the two destinations: the arrivals of both, together.
      const arrivals = dirs.map((dir) => scpArrival(`storescp ${path.basename(dir)}`, dir, instances))
      const arrival = {where: `the two storescp behind ddr --workers ${workers}`, expected: n, arrived: arrivals.reduce((sum, a) => sum + a.arrived, 0)}
      return [time, arrival, cpuMs / n]
    }
    // The order alternates, as in P5.
    let one
    let two
    if (round % 2 === 1) {
      one = await measure(1)
      two = await measure(2)
    } else {
      two = await measure(2)
      one = await measure(1)
    }

    rounds.push({...ratioRound(one[0], two[0], [one[1], two[1]]), referenceCpuMsPerInstance: round2(one[2]), ddrCpuMsPerInstance: round2(two[2])})
    log(`W round ${round}: --workers 1 ${one[0].toFixed(2)} s (${one[2].toFixed(2)} ms CPU per instance), --workers 2 ${two[0].toFixed(2)} s (${two[2].toFixed(2)} ms CPU per instance, primary and workers)`)
  }

  addFigure('W2', `${P5_SENDERS} senders x ${sizes.p5PerSender} x 40 KB`, rounds)
})

const qr = () => group('QR', async () => {
  const instances = await workload('retrieve', {studies: 1, instancesPerStudy: sizes.retrieve, pixelBytes: 40 * 1024, note: 'one study, retrieved by C-MOVE'})
  const study = instances[0].studyInstanceUid
  const scp = await storescp(path.join(work, 'qr-received'))
  // The Orthanc that holds the study moves it itself (the reference) or gives its files to ddr.
  const extra = {DicomAlwaysAllowMove: true, DicomModalities: {viewer: [scp.aeTitle, '127.0.0.1', scp.port]}}
  const [holder, other] = await Promise.all([orthanc('qr-holder', extra), orthanc('qr-other', extra)])
  await storescuFiles(holder, paths(instances))
  const held = await orthancArrival('the holding Orthanc', [holder], instances.length)
  if (held.arrived !== instances.length) throw new Error(`only ${held.arrived} of ${instances.length} instances reached the holding Orthanc`)
  const ddr = await router('qr', [holder, other], {retrieve: {destinations: [{aeTitle: scp.aeTitle, host: '127.0.0.1', port: scp.port}]}})
  const move = (target) => run('movescu', ['-S', '-aec', target.aeTitle, '-aem', scp.aeTitle, '-k', 'QueryRetrieveLevel=STUDY', '-k', `StudyInstanceUID=${study}`, '127.0.0.1', String(target.port ?? target.dicomPort)])
  log(`QR C-MOVE of a ${instances.length}-instance study into storescp: straight from Orthanc vs through ddr (in front of that Orthanc and an empty one), ${ROUNDS} rounds`)
  const rounds = []
  for (let round = 1; round <= ROUNDS; round++) {
    const direct = async () => [await timed(() => move(holder)), scpArrival('storescp, moved by Orthanc', scp.dir, instances)]
    const routed = async () => [await timed(() => move(ddr)), scpArrival('storescp, moved by ddr', scp.dir, instances)]
    // The order alternates, as in P5.
    let byOrthanc
    let byDdr
    if (round % 2 === 1) {
      byOrthanc = await direct()
      byDdr = await routed()
    } else {
      byDdr = await routed()
      byOrthanc = await direct()
    }

    rounds.push(ratioRound(byOrthanc[0], byDdr[0], [byOrthanc[1], byDdr[1]]))
    log(`QR round ${round}: Orthanc ${byOrthanc[0].toFixed(2)} s, through ddr ${byDdr[0].toFixed(2)} s`)
  }

  addFigure('QR-move', `one study of ${instances.length} x 40 KB`, rounds)
})

const cpu = () => group('CPU', async () => {
  log(`CPU: router CPU per instance in steady state (spool on, two Orthancs), ${ROUNDS} windows of fresh instances after a warm-up`)
  const [a, b] = await Promise.all([orthanc('cpu-alpha'), orthanc('cpu-beta')])
  const ddr = await router('cpu', [a, b])
  let held = 0
  /** Sends the instances and waits until both Orthancs hold them (polled over REST, not asking the router); returns the CPU window. */
  const window = async (instances, where) => {
    const before = ddr.cpuMs()
    await storescuFiles(ddr, paths(instances))
    const arrival = await awaitOrthancs(where, [a, b], instances.length, held)
    // A tenth of a second more: the work that follows the last Success (spool release, the ledger's batched commit) belongs to these instances.
    await sleep(100)
    const cpuMs = ddr.cpuMs() - before
    held += arrival.arrived
    const megabytes = instances.reduce((sum, i) => sum + statSync(i.path).size, 0) / MB
    return {cpuMs, instances: instances.length, megabytes, arrivals: [arrival]}
  }

  const warm = await workload('warm-up', {studies: 2, instancesPerStudy: sizes.warmSmall / 2, pixelBytes: 40 * 1024, note: 'before the CPU windows'})
  const warmBig = await workload('warm-up-big', {studies: 1, instancesPerStudy: sizes.warmBig, pixelBytes: 512 * 1024, note: 'before the CPU windows'})
  await window(warm, 'warm-up')
  await window(warmBig, 'warm-up')
  const small = []
  const big = []
  for (let round = 1; round <= ROUNDS; round++) {
    const fresh = await workload(`cpu-40k-${round}`, {studies: 5, instancesPerStudy: sizes.cpuSmall / 5, pixelBytes: 40 * 1024, note: 'fresh each round'})
    const w = await window(fresh, "ddr's two Orthancs")
    small.push({...w, value: w.cpuMs / w.instances})
    const freshBig = await workload(`cpu-512k-${round}`, {studies: 2, instancesPerStudy: sizes.cpuBig / 2, pixelBytes: 512 * 1024, note: 'fresh each round'})
    const wb = await window(freshBig, "ddr's two Orthancs")
    big.push({...wb, value: wb.cpuMs / wb.megabytes})
    log(`CPU round ${round}: ${small.at(-1).value.toFixed(2)} ms per 40 KB instance, ${big.at(-1).value.toFixed(2)} ms per MB of 512 KB instances (clock tick ${(1000 / CLOCK_TICKS).toFixed(0)} ms)`)
  }

  addFigure('CPU-40k', `${sizes.cpuSmall} instances a round`, small)
  addFigure('CPU-512k', `${sizes.cpuBig} instances a round`, big)
})

const p3 = () => group('P3', async () => {
  const big = await bigSet()
  log('P3 memory: peak RSS of ddr listen routing one huge instance and the big set')
  const scp = await storescp(path.join(work, 'p3-received'))
  const ddr = await router('p3', [{name: 'scp', port: scp.port, aeTitle: scp.aeTitle}])
  const huge = await workload('huge', {studies: 1, instancesPerStudy: 1, pixelBytes: sizes.huge})
  const idleMb = ddr.peakRssMb()
  await storescuFiles(ddr, paths(huge))
  await ddr.drained()
  const afterHugeMb = ddr.peakRssMb()
  const hugeArrival = scpArrival('storescp, the huge instance', scp.dir, huge)
  await storescuFiles(ddr, paths(big))
  await ddr.drained()
  const afterBigMb = ddr.peakRssMb()
  const bigArrival = scpArrival('storescp, the big set', scp.dir, big)
  log(`P3 peak RSS: idle ${idleMb.toFixed(0)} MB, after ${(sizes.huge / MB).toFixed(0)} MB instance ${afterHugeMb.toFixed(0)} MB, after big set ${afterBigMb.toFixed(0)} MB`)
  addFigure('P3', `${(sizes.huge / MB).toFixed(0)} MB, then ${big.length} x 512 KB`, [{value: afterBigMb, idleMb, afterHugeMb, afterBigMb, arrivals: [hugeArrival, bigArrival]}])
})

const lat = () => group('LAT', async () => {
  const sample = (await smallSet()).slice(0, quick ? 100 : 300)
  log('Success latency at the sender, spool on and off (one association, 40 KB instances)')
  for (const spool of [true, false]) {
    const o = await orthanc(`lat-${spool ? 'spool' : 'pass'}`)
    const ddr = await router(`lat-${spool}`, [o], {spool})
    const latencies = await successLatencies(ddr, paths(sample))
    await ddr.drained()
    const arrival = await orthancArrival('the Orthanc behind ddr', [o], sample.length)
    const p50 = percentile(latencies, 50)
    const p99 = percentile(latencies, 99)
    addFigure(spool ? 'LAT-spool' : 'LAT-pass', `${sample.length} x 40 KB, one at a time`, [{value: p50, p99: round2(p99), arrivals: [arrival]}])
    await ddr.stop()
    stopLater(o)
  }
})

function gitState() {
  const git = (...gitArgs) => execFileSync('git', ['-C', root, ...gitArgs], {encoding: 'utf8'})
  const sha = git('rev-parse', '--short', 'HEAD').trim()
  // What a run writes is not a change to what it measured.
  const ours = ['bench/results/', BENCHMARKS_DOC, 'bench/out/']
  const changed = git('status', '--porcelain=v1', '--untracked-files=all')
    .split('\n')
    .filter(Boolean)
    .map((line) => line.slice(3).replace(/^.* -> /, ''))
    .filter((file) => !ours.some((own) => file.startsWith(own)))
  return {sha, dirty: changed.length > 0, changed: changed.slice(0, 30)}
}

function versionOf(command, commandArgs, pattern) {
  try {
    return pattern.exec(execFileSync(command, commandArgs, {encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore']}))?.[1] ?? null
  } catch {
    return null
  }
}

function machine(loadAtStart) {
  let distribution = os.type()
  try {
    distribution = /^PRETTY_NAME="?([^"\n]*)"?/m.exec(readFileSync('/etc/os-release', 'utf8'))?.[1] ?? distribution
  } catch {
    // not every system has /etc/os-release: the kernel's name below says enough
  }

  return {
    cpuModel: os.cpus()[0]?.model ?? 'unknown',
    cores: os.cpus().length,
    memoryGiB: round2(os.totalmem() / 1024 ** 3),
    os: `${distribution}, ${os.type()} ${os.release()} ${os.arch()}`,
    loadAverage: {start: loadAtStart, end: os.loadavg().map(round2)},
  }
}

async function main() {
  const startedAt = new Date().toISOString()
  const loadAtStart = os.loadavg().map(round2)
  const versions = {
    node: process.version,
    ddr: {version: JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')).version, ...gitState()},
    orthanc: versionOf(ORTHANC_BINARY, ['--version'], /Orthanc\s+(\d[\w.]*)/),
    dcmtk: versionOf('storescu', ['--version'], /storescu (v[\d.]+(?: \d{4}-\d{2}-\d{2})?)/),
  }
  rmSync(work, {recursive: true, force: true})
  mkdirSync(work, {recursive: true})
  log(`ddr ${versions.ddr.sha}${versions.ddr.dirty ? ' (uncommitted changes)' : ''}; workloads in ${work} (${quick ? 'quick' : 'full'}); ${options.record ? 'recorded in bench/results' : 'not recorded (bench/out only)'}`)
  await p1()
  await p2()
  await p4()
  await p5()
  await cluster()
  await workersGroup()
  await qr()
  await cpu()
  await p3()
  await lat()

  const finishedAt = new Date().toISOString()
  const results = {
    schema: RESULTS_SCHEMA,
    startedAt,
    finishedAt,
    durationSeconds: round2((Date.parse(finishedAt) - Date.parse(startedAt)) / 1000),
    options: {quick, only: options.only, rounds: ROUNDS},
    groupSeconds: durations,
    machine: machine(loadAtStart),
    versions,
    workloads,
    figures,
  }
  const out = path.join(root, 'bench/out')
  mkdirSync(out, {recursive: true})
  writeFileSync(path.join(out, 'latest.json'), `${JSON.stringify(results, null, 2)}\n`)
  writeFileSync(path.join(out, 'latest.md'), benchmarksDocFromFiles({root, from: 'bench/out/latest.json', out: 'bench/out/latest.md'}).text)
  if (options.record) {
    const file = writeResultsFile(path.join(root, RESULTS_DIR), results)
    writeFileSync(path.join(root, BENCHMARKS_DOC), benchmarksDocFromFiles({root}).text)
    log(`recorded ${path.relative(root, file)}; wrote ${BENCHMARKS_DOC} from it (commit both with the change they measured)`)
  } else {
    log('not recorded (--quick, --only or --no-record): bench/out/latest.json and latest.md only')
  }

  process.stdout.write(`\n${results.durationSeconds.toFixed(0)} s; ${quick ? 'quick' : 'full'} workloads\n\n${renderTable(results)}\n`)
  if (figures.some((f) => f.status === 'failed' || f.status === 'error')) {
    log('some figures failed (an instance did not arrive) or could not be measured: see the table')
    process.exitCode = 1
  }
}

try {
  await main()
} finally {
  const started = Date.now()
  await Promise.all(cleanups.map((cleanup) => cleanup().catch(() => {})))
  rmSync(work, {recursive: true, force: true})
  log(`cleaned up in ${((Date.now() - started) / 1000).toFixed(1)} s`)
}
