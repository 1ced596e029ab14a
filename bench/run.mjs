#!/usr/bin/env node
// ddr benchmarks: every figure is a ratio against a reference measured in the same run
// (dcmtk's storescu/storescp, a direct send into Orthanc). Run with `npm run bench` (builds first).
// Options: --quick (smaller workloads), --only P1,P2,... ; writes bench/out/latest.md and .json.
import {spawn} from 'node:child_process'
import {mkdirSync, readFileSync, rmSync, writeFileSync} from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import {fileURLToPath} from 'node:url'

import {writeSyntheticStudies} from '../dist/lib/dicom/synthetic.js'
import {readMetaHeader} from '../dist/lib/dicom/part10.js'
import {ScuAssociation} from '../dist/lib/dimse/scu.js'
import {OrthancClient} from '../dist/lib/orthanc/client.js'
import {startOrthanc, stopOrthanc} from '../dist/lib/stack/orthanc-process.js'

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..')
const args = process.argv.slice(2)
const quick = args.includes('--quick')
const only = args.find((a) => a.startsWith('--only='))?.slice(7).split(',')
const want = (id) => only === undefined || only.includes(id)
const work = path.join(os.tmpdir(), `ddr-bench-${process.pid}`)
const env = {...process.env, TCP_NODELAY: '1'}
const cleanups = []
const rows = []

const ROUNDS = quick ? 1 : 3
const sizes = quick ? {small: 200, big: 60, huge: 50 * 1024 * 1024} : {small: 600, big: 200, huge: 200 * 1024 * 1024}

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

/** storescp on a free port, discarding what it receives (--ignore) or writing it to dir. */
async function storescp(dir) {
  const port = await freePort()
  if (dir) mkdirSync(dir, {recursive: true})
  const storeArgs = dir ? ['-od', dir] : ['--ignore']
  // --fork: one process per association, so a router's pooled association never blocks the reference run
  const child = spawn('storescp', ['--fork', ...storeArgs, '+xa', '-aet', 'BENCHSCP', String(port)], {env, stdio: 'ignore'})
  await waitFor('storescp', async () => run('echoscu', ['-aec', 'BENCHSCP', '127.0.0.1', String(port)]).then(() => true, () => false), 10_000)
  const stop = async () => {
    child.kill('SIGTERM')
    await new Promise((resolve) => (child.exitCode !== null ? resolve() : child.once('exit', resolve)))
  }

  cleanups.push(stop)
  return {port, aeTitle: 'BENCHSCP', stop}
}

let orthancCount = 0
async function orthanc(name) {
  orthancCount++
  const dir = path.join(work, `orthanc-${orthancCount}-${name}`)
  const info = await startOrthanc({name, aeTitle: name.toUpperCase().slice(0, 16), dicomPort: await freePort(), httpPort: await freePort(), dir})
  const client = new OrthancClient({url: info.url})
  const stop = async () => {
    client.close()
    await stopOrthanc(dir)
  }

  cleanups.push(stop)
  return {...info, client, stop, count: async () => (await client.statistics()).CountInstances}
}

/** `ddr listen` as its own process (so its RSS is its own), in front of the given backends. */
async function router(name, backends, {spool = true, ledger = true} = {}) {
  const dir = path.join(work, `router-${name}`)
  mkdirSync(dir, {recursive: true})
  const port = await freePort()
  const statusPort = await freePort()
  const config = path.join(dir, 'ddr.config.json')
  writeFileSync(
    config,
    JSON.stringify({
      listen: {host: '127.0.0.1', port, aeTitle: 'DDR_BENCH'},
      status: {host: '127.0.0.1', port: statusPort},
      spool: {dir: path.join(dir, 'spool'), enabled: spool},
      studies: {enabled: ledger},
      backends: backends.map((b) => ({name: b.name, host: '127.0.0.1', port: b.dicomPort ?? b.port, aeTitle: b.aeTitle, url: b.url})),
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

  await waitFor(`router ${name}`, async () => (await status()) !== undefined, 30_000)
  const stop = async () => {
    child.kill('SIGTERM')
    await new Promise((resolve) => (child.exitCode !== null ? resolve() : child.once('exit', resolve)))
  }

  cleanups.push(stop)
  return {
    port,
    aeTitle: 'DDR_BENCH',
    status,
    stop,
    logTail: () => stderr.split('\n').slice(-5).join('\n'),
    /** CPU time (user + system) the router process has used so far, in seconds. */
    cpuSeconds: () => {
      const fields = readFileSync(`/proc/${child.pid}/stat`, 'utf8').split(') ')[1].split(' ')
      return (Number(fields[11]) + Number(fields[12])) / 100
    },
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

function storescuFiles(target, files) {
  return run('storescu', ['-aec', target.aeTitle, '127.0.0.1', String(target.port ?? target.dicomPort), ...files])
}

function record(id, what, reference, value, target, unit = 'ratio') {
  const ratio = unit === 'ratio' ? reference / value : value
  const met = unit === 'ratio' ? ratio >= target : value <= target
  rows.push({id, what, reference, value, ratio: Math.round(ratio * 100) / 100, target, met})
  log(`${id} ${what}: ${unit === 'ratio' ? `reference ${reference.toFixed(2)} s, ddr ${value.toFixed(2)} s, ratio ${ratio.toFixed(2)}` : `${value.toFixed(1)}`} (target ${unit === 'ratio' ? '>=' : '<='} ${target}) ${met ? 'MET' : 'MISSED'}`)
}

/** Records the median ratio of several [reference, ddr] rounds, with the range in the label. */
function recordMedian(id, what, rounds, target) {
  const ratios = rounds.map(([reference, value]) => reference / value).sort((x, y) => x - y)
  const median = ratios[Math.floor(ratios.length / 2)]
  const [reference, value] = rounds.find(([r, v]) => r / v === median)
  const label = `${what}; median of ${rounds.length}, ratios ${ratios.map((r) => r.toFixed(2)).join(' / ')}`
  record(id, label, reference, value, target)
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

async function main() {
  const started = Date.now()
  rmSync(work, {recursive: true, force: true})
  mkdirSync(work, {recursive: true})
  log(`generating workloads in ${work} (${quick ? 'quick' : 'full'})`)
  const small = (await writeSyntheticStudies(path.join(work, 'small'), {studies: 6, instancesPerStudy: sizes.small / 6, pixelBytes: 40 * 1024, prefix: 'SMALL'})).map((i) => i.path)
  const big = (await writeSyntheticStudies(path.join(work, 'big'), {studies: 5, instancesPerStudy: sizes.big / 5, pixelBytes: 512 * 1024, prefix: 'BIG'})).map((i) => i.path)

  if (want('P1')) {
    log(`P1 end-to-end: storescu -> ddr -> two Orthanc (all stored) vs storescu -> one Orthanc, ${ROUNDS} rounds on fresh servers`)
    const spoolRounds = []
    const passRounds = []
    const ledgerRounds = []
    for (let round = 1; round <= ROUNDS; round++) {
      const reference = await orthanc(`reference${round}`)
      const direct = await timed(() => storescuFiles(reference, small))
      const [a, b] = [await orthanc(`alpha${round}`), await orthanc(`beta${round}`)]
      const ddr = await router(`p1-${round}`, [a, b])
      let accepted = 0
      const cpuBefore = ddr.cpuSeconds()
      const routed = await timed(async () => {
        accepted = await timed(() => storescuFiles(ddr, small))
        await ddr.drained()
      })
      // Every instance must really be in the two Orthancs (checked outside the timing).
      const stored = (await a.count()) + (await b.count())
      if (stored !== small.length) throw new Error(`P1: the router said all were stored, the Orthancs hold ${stored} of ${small.length}`)
      // The same with the study ledger off: P1L is the ledger's cost on this path (same run, fresh servers).
      const [c, d] = [await orthanc(`epsilon${round}`), await orthanc(`zeta${round}`)]
      const ddrNoLedger = await router(`p1-noledger-${round}`, [c, d], {ledger: false})
      const withoutLedger = await timed(async () => {
        await storescuFiles(ddrNoLedger, small)
        await ddrNoLedger.drained()
      })
      const storedNoLedger = (await c.count()) + (await d.count())
      if (storedNoLedger !== small.length) throw new Error(`P1L: the router said all were stored, the Orthancs hold ${storedNoLedger} of ${small.length}`)
      ledgerRounds.push([withoutLedger, routed])
      await ddrNoLedger.stop()
      const ddrPass = await router(`p1-pass-${round}`, [await orthanc(`gamma${round}`), await orthanc(`delta${round}`)], {spool: false})
      const passThrough = await timed(() => storescuFiles(ddrPass, small))
      spoolRounds.push([direct, routed])
      passRounds.push([direct, passThrough])
      log(`P1 round ${round}: direct ${direct.toFixed(2)} s, ddr spool ${routed.toFixed(2)} s (ledger off: ${withoutLedger.toFixed(2)} s; sender done after ${accepted.toFixed(2)} s, router CPU ${((ddr.cpuSeconds() - cpuBefore) * 1000 / small.length).toFixed(2)} ms per instance), ddr --no-spool ${passThrough.toFixed(2)} s`)
      await Promise.all([ddr.stop(), ddrPass.stop()])
    }

    recordMedian('P1', `end-to-end, ${small.length} x 40 KB, spool on`, spoolRounds, 0.9)
    recordMedian('P1b', `end-to-end, ${small.length} x 40 KB, --no-spool`, passRounds, 0.9)
    recordMedian('P1L', `end-to-end, ${small.length} x 40 KB, spool on: study ledger on vs off`, ledgerRounds, 0.95)
  }

  if (want('P2')) {
    log(`P2 router overhead: storescu -> ddr -> storescp vs storescu -> storescp (storescp writing files, as it does by default), ${ROUNDS} rounds`)
    const scp = await storescp(path.join(work, 'p2-received'))
    const ddr = await router('p2', [{name: 'scp', port: scp.port, aeTitle: scp.aeTitle}], {spool: false})
    const spooled = await router('p2-spool', [{name: 'scp', port: scp.port, aeTitle: scp.aeTitle}])
    const small2 = []
    const big2 = []
    const spool2 = []
    for (let round = 1; round <= ROUNDS; round++) {
      const direct = await timed(() => storescuFiles(scp, small))
      small2.push([direct, await timed(() => storescuFiles(ddr, small))])
      big2.push([await timed(() => storescuFiles(scp, big)), await timed(() => storescuFiles(ddr, big))])
      spool2.push([direct, await timed(async () => {
        await storescuFiles(spooled, small)
        await spooled.drained()
      })])
    }

    recordMedian('P2', `router overhead, ${small.length} x 40 KB, --no-spool`, small2, 0.8)
    recordMedian('P2b', `router overhead, ${big.length} x 512 KB, --no-spool`, big2, 0.8)
    recordMedian('P2c', `router overhead, ${small.length} x 40 KB, spool on (until delivered)`, spool2, 0.8)
    await Promise.all([ddr.stop(), spooled.stop()])
  }

  if (want('P4')) {
    log('P4 ddr send vs storescu: into storescp on one association, and into Orthanc with --concurrency 4 (whole processes)')
    const ddrSend = (target, files, extra = []) =>
      run(process.execPath, [path.join(root, 'bin/run.js'), 'send', '--host', '127.0.0.1', '--port', String(target.port ?? target.dicomPort), '--called-ae', target.aeTitle, '--json', ...extra, ...files])
    const scp = await storescp(path.join(work, 'p4-received'))
    const one = []
    const inProcess = []
    for (let round = 1; round <= ROUNDS; round++) {
      const reference = await timed(() => storescuFiles(scp, small))
      let result
      const whole = await timed(async () => (result = JSON.parse(await ddrSend(scp, small))))
      if (result.sent !== small.length) throw new Error(`P4: ddr send sent ${result.sent} of ${small.length}`)
      one.push([reference, whole])
      // The same run without Node's and oclif's start-up: the time sendFiles itself reports.
      inProcess.push([reference, result.durationMs / 1000])
    }
    recordMedian('P4', `ddr send vs storescu, ${small.length} x 40 KB into storescp, one association`, one, 1)
    recordMedian('P4c', `as P4, ddr without process start-up (its --json durationMs)`, inProcess, 1)
    const four = []
    for (let round = 1; round <= ROUNDS; round++) {
      const reference = await orthanc(`p4-reference${round}`)
      const target = await orthanc(`p4-target${round}`)
      four.push([await timed(() => storescuFiles(reference, small)), await timed(() => ddrSend(target, small, ['--concurrency', '4']))])
    }

    recordMedian('P4b', `ddr send --concurrency 4 vs storescu (one association), ${small.length} x 40 KB into Orthanc`, four, 1)
  }

  if (want('P3')) {
    log('P3 memory: peak RSS of ddr listen routing one huge instance and the big set')
    const scp = await storescp()
    const ddr = await router('p3', [{name: 'scp', port: scp.port, aeTitle: scp.aeTitle}])
    const [huge] = await writeSyntheticStudies(path.join(work, 'huge'), {studies: 1, instancesPerStudy: 1, pixelBytes: sizes.huge, prefix: 'HUGE'})
    const baseline = ddr.peakRssMb()
    await storescuFiles(ddr, [huge.path])
    await ddr.drained()
    const afterHuge = ddr.peakRssMb()
    await storescuFiles(ddr, big)
    await ddr.drained()
    const afterBig = ddr.peakRssMb()
    log(`P3 peak RSS: idle ${baseline.toFixed(0)} MB, after ${(sizes.huge / 1024 / 1024).toFixed(0)} MB instance ${afterHuge.toFixed(0)} MB, after big set ${afterBig.toFixed(0)} MB`)
    rows.push({id: 'P3', what: `peak RSS (MB) routing a ${(sizes.huge / 1024 / 1024).toFixed(0)} MB instance and ${big.length} x 512 KB`, reference: baseline, value: afterBig, ratio: null, target: 150, met: afterBig <= 150})
    await ddr.stop()
  }

  if (want('LAT')) {
    log('Success latency at the sender, spool on and off (one association, 40 KB instances)')
    const sample = small.slice(0, quick ? 100 : 300)
    for (const spool of [true, false]) {
      const o = await orthanc(`lat-${spool ? 'spool' : 'pass'}`)
      const ddr = await router(`lat-${spool}`, [o], {spool})
      const latencies = await successLatencies(ddr, sample)
      await ddr.drained()
      const p50 = percentile(latencies, 50)
      const p99 = percentile(latencies, 99)
      log(`Success latency ${spool ? 'spool on ' : 'spool off'}: p50 ${p50.toFixed(2)} ms, p99 ${p99.toFixed(2)} ms`)
      rows.push({id: spool ? 'LAT-spool' : 'LAT-pass', what: `Success latency ${spool ? 'with spool (fsync)' : 'pass-through (Orthanc stored)'}, ms p50 / p99`, reference: p50, value: p99, ratio: null, target: null, met: null})
      await ddr.stop()
    }
  }

  const machine = `${os.cpus().length} x ${os.cpus()[0]?.model ?? 'cpu'}, ${(os.totalmem() / 1024 ** 3).toFixed(0)} GiB, node ${process.version}`
  const lines = [
    `| id | figure | reference | ddr | ratio | target | met |`,
    `| --- | --- | --- | --- | --- | --- | --- |`,
    ...rows.map((r) => `| ${r.id} | ${r.what} | ${fmt(r.reference)} | ${fmt(r.value)} | ${r.ratio ?? '-'} | ${r.target ?? '-'} | ${r.met === null ? '-' : r.met ? 'yes' : 'NO'} |`),
  ]
  const report = `Run ${new Date().toISOString()} on ${machine}; ${quick ? 'quick' : 'full'} workloads; ${((Date.now() - started) / 1000).toFixed(0)} s.\n\n${lines.join('\n')}\n`
  mkdirSync(path.join(root, 'bench/out'), {recursive: true})
  writeFileSync(path.join(root, 'bench/out/latest.md'), report)
  writeFileSync(path.join(root, 'bench/out/latest.json'), `${JSON.stringify({machine, rows}, null, 2)}\n`)
  process.stdout.write(`\n${report}`)
}

function fmt(value) {
  return typeof value === 'number' ? (Math.round(value * 100) / 100).toString() : '-'
}

try {
  await main()
} finally {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => {})
  rmSync(work, {recursive: true, force: true})
}
