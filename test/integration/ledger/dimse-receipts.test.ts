import {mkdir, mkdtemp, rm} from 'node:fs/promises'
import os from 'node:os'
import path from 'node:path'

import {type SyntheticInstance, writeSyntheticStudies} from '../../helpers/datasets.js'
import {type Storescp, startStorescp, storescu} from '../../helpers/dcmtk.js'
import {type TestOrthanc, startTestOrthanc} from '../../helpers/orthanc.js'
import {type TestRouter, startTestRouter} from '../../helpers/router.js'
import {waitFor} from '../../helpers/wait.js'

/** Receipts from DICOM backends that have no REST API: asked by C-FIND (issue #16 with #17's C-FIND). */
describe('receipts from plain DICOM backends', () => {
  let orthanc: TestOrthanc
  let scp: Storescp
  let workDir: string
  let study: SyntheticInstance[]
  const routers: TestRouter[] = []

  beforeAll(async () => {
    workDir = await mkdtemp(path.join(os.tmpdir(), 'ddr-dimse-receipts-'))
    await mkdir(path.join(workDir, 'scp'))
    ;[orthanc, scp] = await Promise.all([startTestOrthanc({name: 'plain', aeTitle: 'PLAIN'}), startStorescp({dir: path.join(workDir, 'scp'), aeTitle: 'STORESCP', extraArgs: ['--fork']})])
    study = await writeSyntheticStudies(path.join(workDir, 'in'), {studies: 1, instancesPerStudy: 4, pixelBytes: 2048, prefix: 'RCPT'})
  })

  afterAll(async () => {
    for (const router of routers) await router.stop()
    await orthanc?.stop()
    await scp?.stop()
    if (workDir) await rm(workDir, {recursive: true, force: true})
  })

  it('verifies an Orthanc configured without url by C-FIND, and repairs an instance deleted behind its back', async () => {
    // No url: the router knows only the DICOM port, so C-FIND is the only way to ask.
    const router = await startTestRouter([{name: 'plain', aeTitle: orthanc.aeTitle, dicomPort: orthanc.dicomPort}], {studies: {stableSeconds: 1}})
    routers.push(router)
    const sent = await storescu(['-aec', router.aeTitle, '127.0.0.1', String(router.port), ...study.map((i) => i.path)])
    expect(sent.code).toBe(0)
    const uid = study[0].studyInstanceUid
    await waitFor('the C-FIND receipt', () => router.logs.some((l) => l.includes('receipt-verified') && l.includes(uid)), 20_000)

    const victim = study[2].sopInstanceUid
    await orthanc.client.deleteInstance((await orthanc.client.lookupInstance(victim))!)
    const receipt = await router.service.ledger!.verifyAndRepair(uid, 20_000)
    expect(receipt).toMatchObject({state: 'verified'})
    expect(router.logs.some((l) => l.includes('receipt-repairing') && l.includes(uid))).toBe(true)
    expect(await orthanc.client.lookupInstance(victim)).toBeDefined()
  })

  it('calls a C-STORE SCP that does not answer C-FIND unverifiable, not unreachable', async () => {
    const router = await startTestRouter([{name: 'scp', aeTitle: scp.aeTitle, dicomPort: scp.port, config: {type: 'dimse'}}], {studies: {stableSeconds: 1}})
    routers.push(router)
    const other = await writeSyntheticStudies(path.join(workDir, 'in2'), {studies: 1, instancesPerStudy: 2, pixelBytes: 2048, prefix: 'RCPT2'})
    expect((await storescu(['-aec', router.aeTitle, '127.0.0.1', String(router.port), ...other.map((i) => i.path)])).code).toBe(0)
    await waitFor('the receipt', () => router.logs.some((l) => l.includes('receipt-') && l.includes(other[0].studyInstanceUid)), 20_000).catch((error) => {
      throw new Error(`${error.message}: ${router.logs.filter((l) => !l.includes('association')).slice(-15).join('\n')}`)
    })
    expect(router.logs.some((l) => l.includes('receipt-unverifiable') && l.includes(other[0].studyInstanceUid))).toBe(true)
  })
})
