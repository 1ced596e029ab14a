import http from 'node:http'
import type {AddressInfo} from 'node:net'

import type {BackendConfig} from '../../../src/lib/config/schema.js'
import {validateConfig} from '../../../src/lib/config/validate.js'
import {ExitCode} from '../../../src/lib/errors.js'
import {planPurge, purgeBackends, purgeExitCode} from '../../../src/lib/orthanc/purge.js'

/**
 * The paths a real Orthanc 1.10 never takes (it has bulk delete and deletes what it is asked to),
 * against a small fake Orthanc REST API: an Orthanc without /tools/bulk-delete, a patient Orthanc
 * refuses to delete, an Orthanc that goes away mid-purge.
 */
interface FakeOrthanc {
  url: string
  patients: Map<string, number>
  requests: string[]
  close(): Promise<void>
}

async function startFakeOrthanc(options: {patients: number; instancesPerPatient?: number; bulkDelete?: boolean; refuse?: string[]; dieAfterDeletes?: number; auth?: string}): Promise<FakeOrthanc> {
  const patients = new Map<string, number>()
  for (let index = 0; index < options.patients; index++) patients.set(`patient-${index}`, options.instancesPerPatient ?? 2)
  const requests: string[] = []
  let deletes = 0
  const server = http.createServer((request, response) => {
    let body = ''
    request.setEncoding('utf8').on('data', (chunk: string) => (body += chunk))
    request.on('end', () => {
      const route = `${request.method} ${request.url}`
      requests.push(route)
      const json = (status: number, value: unknown) => response.writeHead(status, {'content-type': 'application/json'}).end(JSON.stringify(value))
      if (options.auth !== undefined && request.headers.authorization !== `Basic ${Buffer.from(options.auth).toString('base64')}`) return json(401, {Message: 'Unauthorized'})
      const remove = (id: string): boolean => {
        if (options.refuse?.includes(id)) return false
        patients.delete(id)
        deletes++
        if (options.dieAfterDeletes !== undefined && deletes >= options.dieAfterDeletes) setImmediate(() => server.closeAllConnections())
        return true
      }

      if (options.dieAfterDeletes !== undefined && deletes >= options.dieAfterDeletes) return request.socket.destroy()
      if (route === 'GET /statistics') {
        const instances = [...patients.values()].reduce((sum, n) => sum + n, 0)
        return json(200, {CountPatients: patients.size, CountStudies: patients.size, CountSeries: patients.size, CountInstances: instances, TotalDiskSize: String(instances * 1000), TotalDiskSizeMB: 0})
      }

      if (route === 'GET /patients') return json(200, [...patients.keys()])
      if (route === 'POST /tools/bulk-delete' && options.bulkDelete !== false) {
        const ids = (JSON.parse(body) as {Resources: string[]}).Resources
        if (ids.some((id) => options.refuse?.includes(id))) return json(500, {Message: 'Internal error', Details: 'cannot delete'})
        ids.forEach(remove)
        return json(200, {})
      }

      const match = /^DELETE \/patients\/([^/]+)$/.exec(route)
      if (match && patients.has(match[1])) return remove(match[1]) ? json(200, {RemainingAncestor: null}) : json(500, {Message: 'Internal error', Details: 'disk is read-only'})
      json(404, {Message: 'Unknown resource'})
    })
  })
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`
  return {
    url,
    patients,
    requests,
    close: () => {
      server.closeAllConnections()
      return new Promise((resolve) => server.close(() => resolve()))
    },
  }
}

/** A backend as config validation makes it (defaults filled in). */
const backend = (name: string, url: string | undefined, extra: Partial<BackendConfig> = {}): BackendConfig =>
  validateConfig({backends: [{name, port: 1, aeTitle: name.toUpperCase(), url, ...extra}]}, 'test').backends[0]

describe('purge against a fake Orthanc', () => {
  const fakes: FakeOrthanc[] = []
  const start = async (options: Parameters<typeof startFakeOrthanc>[0]) => {
    const fake = await startFakeOrthanc(options)
    fakes.push(fake)
    return fake
  }

  afterAll(async () => {
    await Promise.all(fakes.map((f) => f.close()))
  })

  it('deletes in batches through /tools/bulk-delete', async () => {
    const fake = await start({patients: 25})
    const result = await purgeBackends(await planPurge([backend('bulk', fake.url)]), {batchSize: 10})
    expect(result.backends[0]).toMatchObject({state: 'purged', before: {instances: 50, patients: 25}, deleted: {patients: 25, instances: 50}, failed: 0, remaining: 0})
    expect(fake.requests.filter((r) => r === 'POST /tools/bulk-delete')).toHaveLength(3)
    expect(fake.requests.some((r) => r.startsWith('DELETE'))).toBe(false)
    expect(purgeExitCode(result)).toBe(ExitCode.ok)
  })

  it('falls back to one DELETE per patient on an Orthanc without bulk delete', async () => {
    const fake = await start({patients: 5, bulkDelete: false})
    const result = await purgeBackends(await planPurge([backend('old', fake.url)]), {batchSize: 2})
    expect(result.backends[0]).toMatchObject({state: 'purged', deleted: {patients: 5, instances: 10}, remaining: 0})
    // One 404 teaches it: no more bulk requests after the first.
    expect(fake.requests.filter((r) => r === 'POST /tools/bulk-delete')).toHaveLength(1)
    expect(fake.requests.filter((r) => r.startsWith('DELETE /patients/'))).toHaveLength(5)
  })

  it('a patient Orthanc refuses to delete: partial (exit 4), the others deleted, the refusal reported', async () => {
    const fake = await start({patients: 6, refuse: ['patient-3']})
    const result = await purgeBackends(await planPurge([backend('stubborn', fake.url)]), {batchSize: 4})
    expect(result.backends[0]).toMatchObject({state: 'partial', deleted: {patients: 5, instances: 10}, failed: 1, remaining: 2})
    expect(result.backends[0].errors[0]).toMatch(/DELETE http:\/\/127\.0\.0\.1:\d+\/patients\/patient-3 failed: HTTP 500 \(Internal error: disk is read-only\)/)
    expect([...fake.patients.keys()]).toEqual(['patient-3'])
    expect(result.failed).toBe(1)
    expect(purgeExitCode(result)).toBe(ExitCode.partial)
  })

  it('an Orthanc that goes away mid-purge: unreachable (exit 3); another backend is still purged', async () => {
    const dying = await start({patients: 10, dieAfterDeletes: 3, bulkDelete: false})
    const healthy = await start({patients: 3})
    const result = await purgeBackends(await planPurge([backend('dying', dying.url), backend('healthy', healthy.url)]))
    expect(result.backends[0].state).toBe('unreachable')
    expect(result.backends[0].errors.join('\n')).toMatch(/ECONNRESET|ECONNREFUSED|socket hang up|closed/i)
    expect(result.backends[1]).toMatchObject({state: 'purged', remaining: 0})
    expect(purgeExitCode(result)).toBe(ExitCode.peer)
  })

  it('uses the credentials from config; wrong ones are reported, not thrown, and touch nothing', async () => {
    const fake = await start({patients: 2, auth: 'ddr:secret'})
    const wrong = await planPurge([backend('locked', fake.url, {username: 'ddr', password: 'wrong'})])
    expect(wrong.entries[0]).toMatchObject({state: 'refused'})
    expect(wrong.entries[0].error).toMatch(/HTTP 401 .*DDR_BACKEND_<NAME>_PASSWORD/)
    const result = await purgeBackends(wrong)
    expect(result.backends[0]).toMatchObject({state: 'refused', deleted: {instances: 0}})
    expect(purgeExitCode(result)).toBe(ExitCode.peer)
    // The refused backend keeps its patients, and was asked nothing after the plan's one question.
    expect({patients: fake.patients.size, requests: fake.requests}).toEqual({patients: 2, requests: ['GET /statistics']})

    const ok = await purgeBackends(await planPurge([backend('locked', fake.url, {username: 'ddr', password: 'secret'})]))
    expect(ok.backends[0]).toMatchObject({state: 'purged', deleted: {instances: 4}})
    expect(fake.patients.size).toBe(0)
  })

  it('a backend without a url is skipped, not a failure', async () => {
    const plan = await planPurge([backend('plain-scp', undefined)])
    const result = await purgeBackends(plan)
    expect(result.backends[0]).toMatchObject({state: 'skipped', url: null})
    expect(purgeExitCode(result)).toBe(ExitCode.ok)
  })
})
