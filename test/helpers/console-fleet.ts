import {mkdtemp, rm} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {makeTestDicom, storescu} from './dcmtk.js'
import {type TestOrthanc, startTestOrthanc} from './orthanc.js'
import {type TestRouter, startTestRouter} from './router.js'

/** The patient whose instances go to the full Orthanc (a rule). */
export const FULL_PATIENT = 'FULLPAT'
export const CONSOLE_TOKEN = 'console-test-token-0123456789'

export interface ConsoleFleet {
  /** `orthanc1`: holds one protected patient and may hold no more (MaximumPatientCount 1): it answers A700 until space is freed. */
  full: TestOrthanc
  /** `orthanc2`: takes everything else. */
  open: TestOrthanc
  router: TestRouter
  /** http://127.0.0.1:PORT of the router's status server. */
  url: string
  dir: string
  /** Unprotects the full Orthanc's patient, so it can recycle it and store a new one. */
  freeSpace(): Promise<void>
  close(): Promise<void>
}

/**
 * Two real Orthancs behind a router whose status server serves the console. A rule sends patient
 * FULLPAT to `orthanc1`, which is full (its one patient protected): a real refusal (A700) that,
 * with spool.maxAttempts 1, makes a real dead letter; freeSpace() lets a retry through.
 */
export async function startConsoleFleet(options: {token?: string} = {}): Promise<ConsoleFleet> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'ddr-console-'))
  const started: Array<{stop(): Promise<void>}> = []
  try {
    const [full, open] = await Promise.all([startTestOrthanc({name: 'orthanc1', aeTitle: 'ORTHANC1', extra: {MaximumPatientCount: 1}}), startTestOrthanc({name: 'orthanc2', aeTitle: 'ORTHANC2'})])
    started.push(full, open)
    const keep = await makeTestDicom(path.join(dir, 'keep.dcm'), {patientId: 'KEEP'})
    const sent = await storescu(['-aec', full.aeTitle, '127.0.0.1', String(full.dicomPort), keep.file])
    if (sent.code !== 0) throw new Error(`storescu to the full Orthanc: ${sent.stderr}`)
    const [patient] = await full.client.patients()
    const protect = async (on: boolean) => {
      const response = await fetch(`${full.url}/patients/${patient}/protected`, {method: 'PUT', body: on ? '1' : '0'})
      if (!response.ok) throw new Error(`Orthanc PUT protected: HTTP ${response.status}`)
    }

    await protect(true)
    const router = await startTestRouter(
      [
        {name: 'orthanc1', aeTitle: full.aeTitle, dicomPort: full.dicomPort, url: full.url},
        {name: 'orthanc2', aeTitle: open.aeTitle, dicomPort: open.dicomPort, url: open.url},
      ],
      {
        spool: {maxAttempts: 1},
        studies: {stableSeconds: 60},
        status: options.token === undefined ? {} : {token: options.token},
        rules: [
          {name: 'full-pacs', match: {tags: {PatientID: {equals: FULL_PATIENT}}}, action: {backends: ['orthanc1']}},
          {name: 'everything-else', match: {}, action: {backends: ['orthanc2']}},
        ],
      },
    )
    return {
      full,
      open,
      router,
      url: `http://127.0.0.1:${router.service.statusPort}`,
      dir,
      freeSpace: () => protect(false),
      async close() {
        await router.stop()
        await Promise.all([full.stop(), open.stop()])
        await rm(dir, {recursive: true, force: true})
      },
    }
  } catch (error) {
    await Promise.all(started.map((s) => s.stop()))
    await rm(dir, {recursive: true, force: true})
    throw error
  }
}
