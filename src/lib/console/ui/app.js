// The ddr console: Preact + htm (no build step), uPlot for the chart. Every file is served by the
// router's status server; the data is the JSON API under /api/ (docs/console.md).
import {h, render} from './vendor/preact.mjs'
import {useEffect, useRef, useState, useCallback} from './vendor/hooks.mjs'
import htm from './vendor/htm.mjs'

const html = htm.bind(h)

// ---------------------------------------------------------------- helpers

const session = {authRequired: false, loggedIn: false, listeners: new Set()}
const sessionChanged = () => session.listeners.forEach((listener) => listener())

/** A JSON API call; throws an Error with the server's message (HTTP 207 is an answer, not an error). */
async function api(path, {method = 'GET', json, body} = {}) {
  const response = await fetch(path, {
    method,
    credentials: 'same-origin',
    headers: json === undefined ? undefined : {'content-type': 'application/json'},
    body: json === undefined ? body : JSON.stringify(json),
  })
  const value = await response.json().catch(() => ({}))
  if (response.status === 401) {
    session.loggedIn = false
    sessionChanged()
  }

  if (!response.ok && response.status !== 207) throw Object.assign(new Error(value.error || `HTTP ${response.status}`), {status: response.status})
  return value
}

const fmtBytes = (n) => {
  if (n === null || n === undefined) return '–'
  const units = ['B', 'KB', 'MB', 'GB', 'TB']
  let i = 0
  while (n >= 1024 && i < units.length - 1) {
    n /= 1024
    i++
  }
  return `${n < 10 && i > 0 ? n.toFixed(1) : Math.round(n)} ${units[i]}`
}
const fmtSeconds = (s) => (s === null || s === undefined ? '–' : s < 90 ? `${Math.round(s)} s` : s < 5400 ? `${Math.round(s / 60)} min` : `${(s / 3600).toFixed(1)} h`)
const fmtTime = (value) => (value ? new Date(value).toLocaleString() : '–')
/** A study's processing in one cell: "-" when no module ran, else each module and how it went. */
function processingText(runs) {
  if (!runs || runs.length === 0) return '–'
  return runs.map((p) => `${p.module}: ${p.state === 'failed' ? 'processing-failed' : p.state}`).join(', ')
}

const shortUid = (uid) => (uid && uid.length > 24 ? `…${uid.slice(-22)}` : uid || '–')
const dash = (v) => (v === null || v === undefined || v === '' ? '–' : v)

function useHashRoute() {
  const [route, setRoute] = useState(location.hash.slice(1) || '/fleet')
  useEffect(() => {
    const changed = () => setRoute(location.hash.slice(1) || '/fleet')
    window.addEventListener('hashchange', changed)
    return () => window.removeEventListener('hashchange', changed)
  }, [])
  return route
}

/**
 * Calls load now and every ms until deps change. load gets `current()`: false once deps have changed
 * (or the page is gone), so a late answer to an earlier query is not shown over the new one's.
 */
function usePolling(load, ms, deps = []) {
  useEffect(() => {
    let stopped = false
    const current = () => !stopped
    const tick = () => !stopped && load(current)
    tick()
    const timer = setInterval(tick, ms)
    return () => {
      stopped = true
      clearInterval(timer)
    }
  }, deps)
}

function ErrorLine({error}) {
  return error ? html`<p class="error" role="alert" data-test="error">${error}</p>` : null
}

// ---------------------------------------------------------------- fleet

function RateChart({series}) {
  const box = useRef(null)
  const chart = useRef(null)
  useEffect(() => {
    const width = () => Math.max(320, box.current.clientWidth || 800)
    chart.current = new window.uPlot(
      {
        width: width(),
        height: 220,
        scales: {x: {time: true}},
        series: [{}, {label: 'received/s', stroke: '#2563eb', width: 2}, {label: 'routed/s', stroke: '#16a34a', width: 2}, {label: 'failed/s', stroke: '#dc2626', width: 2}],
        axes: [{}, {label: 'instances per second', size: 60}],
      },
      [[], [], [], []],
      box.current,
    )
    const resize = () => chart.current.setSize({width: width(), height: 220})
    window.addEventListener('resize', resize)
    return () => {
      window.removeEventListener('resize', resize)
      chart.current.destroy()
    }
  }, [])
  useEffect(() => {
    if (chart.current && series) chart.current.setData([series.time, series.received, series.routed, series.failed])
  }, [series])
  return html`<div ref=${box} class="chart" data-test="rate-chart"></div>`
}

function Fleet() {
  const [data, setData] = useState(null)
  const [live, setLive] = useState(false)
  useEffect(() => {
    const source = new EventSource('/api/fleet/events')
    source.addEventListener('fleet', (event) => {
      setData(JSON.parse(event.data))
      setLive(true)
    })
    source.onerror = () => setLive(false)
    return () => source.close()
  }, [])
  if (data === null) return html`<p class="loading">waiting for the router…</p>`
  const {status, series} = data
  const spool = status.spool
  return html`
    <section>
      <h2>Fleet <span class=${`live ${live ? 'on' : 'off'}`} data-test="live">${live ? 'live' : 'reconnecting'}</span></h2>
      <div class="cards">
        <div class="card"><b data-test="received">${status.counters.received}</b><span>received</span></div>
        <div class="card"><b data-test="routed">${status.counters.routed}</b><span>routed</span></div>
        <div class="card"><b class=${status.counters.failed > 0 ? 'bad' : ''} data-test="failed">${status.counters.failed}</b><span>failed</span></div>
        <div class="card"><b data-test="queue-depth">${status.queueDepth}</b><span>waiting</span></div>
        ${spool
          ? html`<div class="card"><b>${fmtSeconds(spool.oldestAgeSeconds)}</b><span>oldest waiting</span></div>
              <div class="card"><b>${fmtBytes(spool.bytes)}</b><span>spooled</span></div>
              <div class="card"><a href="#/queue"><b class=${spool.deadLetters > 0 ? 'bad' : ''} data-test="dead-letters">${spool.deadLetters}</b></a><span>dead letters</span></div>`
          : html`<div class="card"><b>off</b><span>spool (pass-through)</span></div>`}
        <div class="card"><b>${status.associations}</b><span>associations</span></div>
        <div class="card"><b>${status.mirrors.pending}</b><span>mirror copies pending</span></div>
      </div>
      ${spool && spool.refusing ? html`<p class="error">refusing new instances: ${spool.refusing}</p>` : null}
      <h3>Rates, last hour</h3>
      <${RateChart} series=${series} />
      <h3>Backends</h3>
      <table data-test="backends">
        <thead><tr><th>backend</th><th>health</th><th>latency</th><th>in flight</th><th>load</th><th>routed</th><th>failed</th><th>stored instances</th><th>stored studies</th><th>disk</th></tr></thead>
        <tbody>
          ${status.backends.map(
            (b) => html`<tr data-test="backend-row" data-backend=${b.name}>
              <td><b>${b.name}</b><br /><small>${b.aeTitle ? `${b.aeTitle}@${b.host}:${b.port}` : b.url || ''}</small></td>
              <td><span class=${`pill ${b.healthy ? 'up' : 'down'}`}>${b.healthy ? 'up' : 'down'}</span>${b.healthReason ? html`<br /><small>${b.healthReason}</small>` : null}</td>
              <td>${b.latencyMs ? `${b.latencyMs} ms` : '–'}</td>
              <td data-test="in-flight">${b.inFlight}</td>
              <td>${b.score}</td>
              <td data-test="backend-routed">${b.routed}</td>
              <td>${b.failed}</td>
              <td data-test="stored-instances">${dash(b.storedInstances)}</td>
              <td>${dash(b.storedStudies)}</td>
              <td>${b.diskSizeMb === undefined ? '–' : `${b.diskSizeMb} MB`}</td>
            </tr>`,
          )}
        </tbody>
      </table>
      ${status.cluster ? html`<${Routers} cluster=${status.cluster} />` : null}
      <p class="meta">ddr ${status.version}, up ${fmtSeconds(status.uptimeSeconds)}, listening as ${status.listen.aeTitle} on port ${status.listen.port}; policy ${status.policy}${status.affinity ? ' with study affinity' : ''}</p>
    </section>`
}

/** The routers sharing this router's ledger (PostgreSQL), as their heartbeats say; silent after 15 s. */
function Routers({cluster}) {
  const claims = cluster.claims || {}
  return html`
    <h3>Routers</h3>
    ${cluster.ledgerUnreachableSince ? html`<p class="error">the shared ledger has not answered since ${cluster.ledgerUnreachableSince}: records wait in memory</p>` : null}
    <table data-test="routers">
      <thead><tr><th>router</th><th>state</th><th>heard</th><th>received</th><th>routed</th><th>failed</th><th>waiting</th><th>version</th></tr></thead>
      <tbody>
        ${cluster.routers.map((r) => {
          const silent = r.ageSeconds > 15
          const state = silent ? 'silent' : r.status.healthy ? 'up' : r.status.reasons.join('; ') || 'not ready'
          return html`<tr data-test="router-row" data-router=${r.name}>
            <td><b>${r.name}</b>${r.name === cluster.router ? ' (this one)' : ''}<br /><small>${r.address}</small></td>
            <td><span class=${`pill ${!silent && r.status.healthy ? 'up' : 'down'}`}>${state}</span></td>
            <td>${Math.round(r.ageSeconds)} s ago</td>
            <td>${r.status.received}</td>
            <td>${r.status.routed}</td>
            <td>${r.status.failed}</td>
            <td>${r.status.spoolDepth}</td>
            <td>${r.version}</td>
          </tr>`
        })}
      </tbody>
    </table>
    <p class="meta">study claims by this router: ${claims.claimed || 0} made, ${claims.followed || 0} followed another router's${claims.unconfirmed ? `, ${claims.unconfirmed} routed unconfirmed` : ''}${claims.conflicts ? `, ${claims.conflicts} conflicts` : ''}</p>`
}

// ---------------------------------------------------------------- studies

function Studies() {
  const [form, setForm] = useState({patient: '', accession: '', study: '', state: ''})
  const [result, setResult] = useState(null)
  const [error, setError] = useState('')
  // Only the latest search's answer is shown: the opening search may answer after the operator's.
  const latest = useRef(0)
  const search = useCallback(async (event) => {
    event?.preventDefault()
    const ticket = ++latest.current
    const query = new URLSearchParams(Object.entries(form).filter(([, v]) => v.trim() !== ''))
    try {
      const answer = await api(`/api/studies?${query}`)
      if (ticket !== latest.current) return
      setResult(answer)
      setError('')
    } catch (e) {
      if (ticket === latest.current) setError(e.message)
    }
  }, [form])
  useEffect(() => {
    search()
  }, [])
  const field = (name, label) => html`<label>${label}<input name=${name} value=${form[name]} onInput=${(e) => setForm({...form, [name]: e.target.value})} /></label>`
  return html`
    <section>
      <h2>Studies</h2>
      <form class="search" onSubmit=${search} data-test="study-search">
        ${field('patient', 'patient ID')} ${field('accession', 'accession')} ${field('study', 'study UID')}
        <label>state<select value=${form.state} onChange=${(e) => setForm({...form, state: e.target.value})}><option value="">any</option><option>receiving</option><option>stable</option></select></label>
        <button type="submit">search</button>
      </form>
      <${ErrorLine} error=${error} />
      ${result && !result.ledger ? html`<p>The study ledger is off (pass-through mode, or studies.enabled false).</p>` : null}
      ${result && result.ledger
        ? html`<table data-test="studies">
            <thead><tr><th>study</th><th>patient</th><th>accession</th><th>modalities</th><th>instances</th><th>size</th><th>backend</th><th>state</th><th>delivered</th><th>receipt</th><th>processing</th><th>last received</th></tr></thead>
            <tbody>
              ${result.studies.length === 0 ? html`<tr><td colspan="12">no study matches</td></tr>` : null}
              ${result.studies.map(
                (s) => html`<tr data-test="study-row">
                  <td><a href=${`#/studies/${s.studyInstanceUid}`} title=${s.studyInstanceUid}>${shortUid(s.studyInstanceUid)}</a></td>
                  <td>${dash(s.patientId)}</td><td>${dash(s.accessionNumber)}</td><td>${s.modalities.join(', ')}</td>
                  <td>${s.instances}</td><td>${fmtBytes(s.bytes)}</td><td>${dash(s.backends.join(', '))}</td><td>${s.state}</td>
                  <td class=${s.delivered.deadLetter > 0 ? 'bad' : ''}>${s.delivered.stored}/${s.instances}${s.delivered.deadLetter > 0 ? ` (${s.delivered.deadLetter} dead-letter)` : ''}</td>
                  <td>${s.receipt ? s.receipt.state : '–'}</td>
                  <td class=${(s.processing ?? []).some((p) => p.state === 'failed') ? 'bad' : ''} data-test="study-processing">${processingText(s.processing)}</td><td>${fmtTime(s.lastReceived)}</td>
                </tr>`,
              )}
            </tbody>
          </table>`
        : null}
    </section>`
}

function Study({uid}) {
  const [study, setStudy] = useState(null)
  const [error, setError] = useState('')
  usePolling((current) => api(`/api/studies/${uid}`).then((answer) => current() && setStudy(answer), (e) => current() && setError(e.message)), 3000, [uid])
  if (error) return html`<${ErrorLine} error=${error} />`
  if (study === null) return html`<p class="loading">loading…</p>`
  const r = study.receipt
  return html`
    <section data-test="study">
      <h2>Study <small>${study.studyInstanceUid}</small></h2>
      <dl class="facts">
        <dt>patient</dt><dd>${dash(study.patientId)}</dd><dt>accession</dt><dd>${dash(study.accessionNumber)}</dd><dt>date</dt><dd>${dash(study.studyDate)}</dd>
        <dt>state</dt><dd>${study.state}${study.stableAt ? ` since ${fmtTime(study.stableAt)}` : ''}${study.amendments > 0 ? `, ${study.amendments} amendment(s)` : ''}</dd>
        <dt>received</dt><dd>${study.instances} instances, ${fmtBytes(study.bytes)}, ${fmtTime(study.firstReceived)} – ${fmtTime(study.lastReceived)}</dd>
        <dt>delivered</dt><dd>${study.delivered.stored} stored on ${dash(study.backends.join(', '))}, ${study.delivered.queued} queued, ${study.delivered.deadLetter} in dead-letter</dd>
        <dt>receipt</dt><dd data-test="receipt">${r ? `${r.state} at ${fmtTime(r.checkedAt)}: ${r.found} of ${r.expected} found${r.missing.length ? `; missing ${r.missing.length}` : ''}` : 'not checked yet'}</dd>
        <dt>processing</dt><dd data-test="processing">${(study.processing ?? []).length === 0 ? 'no module ran' : study.processing.map((p) => html`<div class=${p.state === 'failed' ? 'bad' : ''}>${p.module}: ${p.state}${p.state === 'failed' ? ' (processing-failed)' : ''}, ${p.attempts} attempt(s)${p.detail ? html` <small>${p.detail}</small>` : null}</div>`)}</dd>
      </dl>
      <h3>Series</h3>
      <table><thead><tr><th>series</th><th>modality</th><th>instances</th></tr></thead>
        <tbody>${study.series.map((s) => html`<tr><td title=${s.seriesInstanceUid}>${shortUid(s.seriesInstanceUid)}</td><td>${dash(s.modality)}</td><td>${s.instances}</td></tr>`)}</tbody>
      </table>
      <h3>Instances</h3>
      <table data-test="instances"><thead><tr><th>SOP instance</th><th>from</th><th>received</th><th>status</th><th>backend</th><th>delivered</th><th>detail</th></tr></thead>
        <tbody>${study.instanceList.map(
          (i) => html`<tr data-test="instance-row" data-sop=${i.sopInstanceUid}><td title=${i.sopInstanceUid}>${shortUid(i.sopInstanceUid)}</td><td>${i.callingAeTitle}${i.remoteAddress ? html`<br /><small>${i.remoteAddress}</small>` : null}</td>
            <td>${fmtTime(i.receivedAt)}</td><td class=${i.status === 'dead-letter' ? 'bad' : ''} data-test="instance-status">${i.status}${i.amendment ? ' (amendment)' : ''}</td><td data-test="instance-backend">${dash(i.backend)}</td><td>${fmtTime(i.deliveredAt)}</td><td><small>${dash(i.detail)}</small></td></tr>`,
        )}</tbody>
      </table>
    </section>`
}

// ---------------------------------------------------------------- queue and dead letters

function Queue() {
  const [queue, setQueue] = useState(null)
  const [letters, setLetters] = useState(null)
  const [filter, setFilter] = useState({reason: '', study: ''})
  const [message, setMessage] = useState('')
  const [error, setError] = useState('')
  const query = new URLSearchParams(Object.entries(filter).filter(([, v]) => v.trim() !== ''))
  const load = (current = () => true) => {
    api('/api/queue?limit=200').then((answer) => current() && setQueue(answer), (e) => current() && setError(e.message))
    api(`/api/dead-letters?${query}`).then((answer) => current() && setLetters(answer), (e) => current() && setError(e.message))
  }
  usePolling(load, 3000, [filter.reason, filter.study])
  const act = async (what, run) => {
    try {
      setMessage(`${what}: ${JSON.stringify(await run())}`)
      setError('')
    } catch (e) {
      setError(`${what}: ${e.message}`)
    }
    load()
  }
  const bulkFilter = {reasonContains: filter.reason || undefined, study: filter.study || undefined}
  const filtered = filter.reason !== '' || filter.study !== ''
  const down = queue ? queue.backends.filter((b) => !b.healthy) : []
  return html`
    <section>
      <h2>Queue</h2>
      ${queue && !queue.spool ? html`<p>Pass-through mode: nothing waits in a spool.</p>` : null}
      ${down.length > 0 ? html`<p class="error">down: ${down.map((b) => `${b.name} (${b.healthReason || 'failing'})`).join('; ')} — their instances wait for them or fail over</p>` : null}
      ${queue
        ? html`<p data-test="queue-total">${queue.total} instance(s) waiting${queue.total > queue.entries.length ? ` (oldest ${queue.entries.length} shown)` : ''}</p>
            ${queue.entries.length > 0
              ? html`<table data-test="queue"><thead><tr><th>received</th><th>SOP instance</th><th>patient</th><th>from</th><th>state</th><th>tries</th><th>why it waits</th></tr></thead>
                  <tbody>${queue.entries.map(
                    (e) => html`<tr><td>${fmtTime(e.receivedAt)}</td><td title=${e.sopInstanceUid}>${shortUid(e.sopInstanceUid)}</td><td>${dash(e.patientId)}</td><td>${e.callingAeTitle}</td>
                      <td>${e.state}</td><td>${e.tries}</td>
                      <td>${e.state === 'backoff' ? `retry at ${new Date(e.notBefore).toLocaleTimeString()} after: ${e.lastProblem}` : e.state === 'sending' ? 'being sent' : queue.backends.every((b) => !b.healthy) ? 'no backend is up' : e.lastProblem ? `waiting for a free backend after: ${e.lastProblem}` : 'waiting for a free backend'}</td></tr>`,
                  )}</tbody></table>`
              : null}`
        : null}
      <h2>Dead letters</h2>
      <form class="search" onSubmit=${(e) => e.preventDefault()}>
        <label>reason contains<input value=${filter.reason} onInput=${(e) => setFilter({...filter, reason: e.target.value})} data-test="filter-reason" /></label>
        <label>study UID<input value=${filter.study} onInput=${(e) => setFilter({...filter, study: e.target.value})} /></label>
        <button type="button" data-test="retry-all" disabled=${!letters || letters.matched === 0}
          onClick=${() => confirm(`Retry ${letters.matched} dead letter(s)${filtered ? ' matching the filter' : ''}?`) && act('retry', () => api('/api/dead-letters/retry', {method: 'POST', json: filtered ? bulkFilter : {all: true}}))}>retry ${filtered ? 'matching' : 'all'}</button>
        <button type="button" class="danger" data-test="discard-all" disabled=${!letters || letters.matched === 0}
          onClick=${() => confirm(`Delete ${letters.matched} dead letter(s)${filtered ? ' matching the filter' : ''} for good?`) && act('discard', () => api('/api/dead-letters/discard', {method: 'POST', json: filtered ? bulkFilter : {all: true}}))}>discard ${filtered ? 'matching' : 'all'}</button>
      </form>
      <${ErrorLine} error=${error} />
      ${message ? html`<p class="note" data-test="action-result">${message}</p>` : null}
      ${letters && !letters.spool ? html`<p>Pass-through mode: refusals go back to the sender, nothing to dead-letter.</p>` : null}
      ${letters && letters.spool
        ? html`<p data-test="dead-letter-count">${letters.matched} of ${letters.total} dead letter(s)</p>
            <table data-test="dead-letters"><thead><tr><th>when</th><th>reason</th><th>status</th><th>sender</th><th>patient</th><th>study</th><th>tries</th><th></th></tr></thead>
              <tbody>${letters.deadLetters.map(
                (d) => html`<tr data-test="dead-letter-row" data-id=${d.id} data-sop=${d.sopInstanceUid}>
                  <td>${fmtTime(d.at)}</td>
                  <td><details><summary>${dash(d.reason)}</summary><small>${d.history.map((line) => html`<div>${line}</div>`)}<div>SOP ${dash(d.sopInstanceUid)} · ${fmtBytes(d.bytes)} · id ${d.id}</div></small></details></td>
                  <td>${dash(d.status)}</td><td>${dash(d.callingAeTitle)}</td><td>${dash(d.patientId)}</td>
                  <td>${d.studyInstanceUid ? html`<a href=${`#/studies/${d.studyInstanceUid}`}>${shortUid(d.studyInstanceUid)}</a>` : '–'}</td><td>${dash(d.tries)}</td>
                  <td class="actions"><button data-test="retry" onClick=${() => act('retry', () => api(`/api/dead-letters/${encodeURIComponent(d.id)}/retry`, {method: 'POST'}))}>retry</button>
                    <button class="danger" data-test="discard" onClick=${() => confirm('Delete this dead letter for good?') && act('discard', () => api(`/api/dead-letters/${encodeURIComponent(d.id)}`, {method: 'DELETE'}))}>discard</button></td>
                </tr>`,
              )}</tbody></table>`
        : null}
    </section>`
}

// ---------------------------------------------------------------- upload

/** Every File under a dropped item (folders walked), with its path as its name. */
async function filesOf(dataTransfer) {
  const entries = [...dataTransfer.items].map((item) => (item.webkitGetAsEntry ? item.webkitGetAsEntry() : null))
  if (entries.some((entry) => entry === null)) return [...dataTransfer.files].map((file) => ({file, name: file.name}))
  const out = []
  const walk = async (entry) => {
    if (entry.isFile) {
      const file = await new Promise((resolve, reject) => entry.file(resolve, reject))
      out.push({file, name: entry.fullPath.replace(/^\//, '')})
    } else if (entry.isDirectory) {
      const reader = entry.createReader()
      for (;;) {
        const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject))
        if (batch.length === 0) break
        for (const child of batch) await walk(child)
      }
    }
  }
  for (const entry of entries) await walk(entry)
  return out
}

/** One file to /api/upload, with progress (fetch has no upload progress: XMLHttpRequest does). */
function uploadOne(item, onProgress) {
  return new Promise((resolve) => {
    const form = new FormData()
    form.append('file', item.file, item.name)
    const request = new XMLHttpRequest()
    request.open('POST', '/api/upload?wait=15')
    request.upload.onprogress = (event) => event.lengthComputable && onProgress(event.loaded / event.total)
    request.onload = () => {
      let value = {}
      try {
        value = JSON.parse(request.responseText)
      } catch {
        // not JSON: the status says enough
      }
      if (request.status === 401) {
        session.loggedIn = false
        sessionChanged()
      }
      resolve({http: request.status, results: value.results ?? [], error: value.error})
    }
    request.onerror = () => resolve({http: 0, results: [], error: 'the connection broke off'})
    request.send(form)
  })
}

function Upload() {
  const [items, setItems] = useState([])
  const [over, setOver] = useState(false)
  const update = (index, change) => setItems((all) => all.map((item, i) => (i === index ? {...item, ...change} : item)))
  const start = async (picked) => {
    const base = items.length
    setItems((all) => [...all, ...picked.map((p) => ({name: p.name, size: p.file.size, progress: 0, state: 'waiting', results: []}))])
    let next = 0
    const worker = async () => {
      while (next < picked.length) {
        const index = next++
        update(base + index, {state: 'uploading'})
        const answer = await uploadOne(picked[index], (progress) => update(base + index, {progress}))
        update(base + index, {state: answer.http === 200 ? 'stored' : answer.http === 207 ? 'partly' : 'failed', progress: 1, results: answer.results, error: answer.error})
      }
    }
    await Promise.all([worker(), worker()])
  }
  const picked = (files) => start([...files].map((file) => ({file, name: file.webkitRelativePath || file.name})))
  return html`
    <section>
      <h2>Upload</h2>
      <div class=${`drop ${over ? 'over' : ''}`} data-test="drop"
        onDragOver=${(e) => {
          e.preventDefault()
          setOver(true)
        }}
        onDragLeave=${() => setOver(false)}
        onDrop=${async (e) => {
          e.preventDefault()
          setOver(false)
          start(await filesOf(e.dataTransfer))
        }}>
        <p>Drop DICOM files, folders or ZIP archives here</p>
        <label class="button">choose files<input type="file" multiple hidden data-test="file-input" onChange=${(e) => picked(e.target.files)} /></label>
        <label class="button">choose a folder<input type="file" webkitdirectory hidden onChange=${(e) => picked(e.target.files)} /></label>
        <p class="meta">Each instance goes through the router's intake like a C-STORE: checked, made durable in the spool, then routed.</p>
      </div>
      ${items.length > 0
        ? html`<table data-test="uploads"><thead><tr><th>file</th><th>size</th><th>progress</th><th>outcome</th></tr></thead>
            <tbody>${items.map(
              (item) => html`<tr data-test="upload-row" data-file=${item.name} data-state=${item.state}>
                <td>${item.name}</td><td>${fmtBytes(item.size)}</td>
                <td><progress max="1" value=${item.progress}></progress></td>
                <td>${item.error ? html`<span class="bad">${item.error}</span>` : null}
                  ${item.results.map(
                    (r) => html`<div data-test="upload-result" data-status=${r.status}>
                      <span class=${r.status === 'stored' ? 'good' : 'bad'}>${r.status}</span>
                      ${r.file !== item.name ? html` <small>${r.file}</small>` : null}
                      ${r.backend ? html` → <b data-test="upload-backend">${r.backend}</b>` : r.delivery === 'queued' ? ' (queued)' : r.delivery === 'dead-letter' ? html` <span class="bad">dead-letter</span>` : null}
                      ${r.reason ? html` <small>${r.reason}</small>` : null}
                      ${r.studyInstanceUid ? html` <a href=${`#/studies/${r.studyInstanceUid}`}>study</a>` : null}
                    </div>`,
                  )}
                  ${item.state === 'waiting' || item.state === 'uploading' ? item.state : null}</td>
              </tr>`,
            )}</tbody></table>`
        : null}
    </section>`
}

// ---------------------------------------------------------------- rules

function Rules() {
  const [result, setResult] = useState(null)
  const [error, setError] = useState('')
  const [aeTitle, setAeTitle] = useState('')
  const explain = async (file) => {
    const form = new FormData()
    form.append('file', file, file.name)
    try {
      setResult(await api(`/api/explain${aeTitle ? `?callingAeTitle=${encodeURIComponent(aeTitle)}` : ''}`, {method: 'POST', body: form}))
      setError('')
    } catch (e) {
      setResult(null)
      setError(e.message)
    }
  }
  return html`
    <section>
      <h2>Rules</h2>
      <div class="drop" data-test="explain-drop"
        onDragOver=${(e) => e.preventDefault()}
        onDrop=${(e) => {
          e.preventDefault()
          if (e.dataTransfer.files[0]) explain(e.dataTransfer.files[0])
        }}>
        <p>Drop one DICOM file: which rule and which backend would it get? Nothing is sent.</p>
        <label>as if sent by AE title <input value=${aeTitle} placeholder="STORESCU" onInput=${(e) => setAeTitle(e.target.value)} /></label>
        <label class="button">choose a file<input type="file" hidden data-test="explain-input" onChange=${(e) => e.target.files[0] && explain(e.target.files[0])} /></label>
      </div>
      <${ErrorLine} error=${error} />
      ${result
        ? html`<dl class="facts" data-test="explain">
            <dt>file</dt><dd>${result.file}</dd>
            <dt>instance</dt><dd>${result.sopInstanceUid} (${result.modality || 'no modality'}, study ${result.studyInstanceUid || 'none'}) from ${result.callingAeTitle} to ${result.calledAeTitle}</dd>
            <dt>rule</dt><dd data-test="explain-rule">${result.rule || 'none matched (default placement)'}</dd>
            ${result.drop === null
              ? html`<dt>backend</dt><dd data-test="explain-backend">${result.backend || 'none (no backend in its group)'}</dd><dt>failover</dt><dd>${result.order.slice(1).join(', ') || 'none'}</dd><dt>mirrors</dt><dd>${result.mirrors.join(', ') || 'none'}</dd>`
              : html`<dt>dropped</dt><dd class="bad">refused with 0xC000: ${result.drop}</dd>`}
            <dt>why</dt><dd>${result.why}</dd>
          </dl>`
        : null}
    </section>`
}

// ---------------------------------------------------------------- frame

function Login() {
  const [, redraw] = useState(0)
  const [token, setToken] = useState('')
  const [error, setError] = useState('')
  useEffect(() => {
    const listener = () => redraw((n) => n + 1)
    session.listeners.add(listener)
    return () => session.listeners.delete(listener)
  }, [])
  if (!session.authRequired) return html`<span class="meta">actions open on this loopback address</span>`
  if (session.loggedIn)
    return html`<button data-test="logout" onClick=${async () => {
      await api('/api/logout', {method: 'POST'})
      session.loggedIn = false
      sessionChanged()
    }}>log out</button>`
  return html`<form class="login" onSubmit=${async (e) => {
    e.preventDefault()
    try {
      await api('/api/login', {method: 'POST', json: {token}})
      session.loggedIn = true
      setToken('')
      setError('')
      sessionChanged()
    } catch (err) {
      setError(err.message)
    }
  }}><input type="password" placeholder="status token" autocomplete="current-password" value=${token} onInput=${(e) => setToken(e.target.value)} data-test="token" /><button type="submit">log in</button>${error ? html`<span class="bad">${error}</span>` : null}</form>`
}

function App() {
  const route = useHashRoute()
  const study = /^\/studies\/([0-9.]+)$/.exec(route)
  const page = study ? html`<${Study} uid=${study[1]} />` : route === '/studies' ? html`<${Studies} />` : route === '/queue' ? html`<${Queue} />` : route === '/upload' ? html`<${Upload} />` : route === '/rules' ? html`<${Rules} />` : html`<${Fleet} />`
  const link = (to, label) => html`<a href=${`#${to}`} class=${route === to || (to === '/studies' && study) ? 'active' : ''}>${label}</a>`
  return html`
    <header>
      <h1>ddr</h1>
      <nav>${link('/fleet', 'Fleet')} ${link('/studies', 'Studies')} ${link('/queue', 'Queue & dead letters')} ${link('/upload', 'Upload')} ${link('/rules', 'Rules')}</nav>
      <div class="session"><${Login} /></div>
    </header>
    <main>${page}</main>`
}

api('/api/session')
  .then((value) => {
    session.authRequired = value.authRequired
    session.loggedIn = value.loggedIn
  })
  .catch(() => undefined)
  .finally(() => {
    const root = document.getElementById('app')
    root.textContent = ''
    render(html`<${App} />`, root)
  })
