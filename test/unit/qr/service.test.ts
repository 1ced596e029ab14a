import type {SubOperations} from '../../../src/lib/dimse/scp.js'
import type {BackendConfig} from '../../../src/lib/config/schema.js'
import {SopClass, TransferSyntax} from '../../../src/lib/dicom/uids.js'
import {PROGRESS_INTERVAL_MS, expectedContexts, pacedProgress, sopClassesByBackend} from '../../../src/lib/qr/service.js'
import type {LocatedInstance} from '../../../src/lib/qr/types.js'

const counts = (done: number): SubOperations => ({remaining: 500 - done, completed: done, failed: 0, warning: 0})

describe('pacedProgress: Pending C-MOVE/C-GET responses', () => {
  it('sends the first at once, then at most one per interval with the latest counts', () => {
    let clock = 0
    const sent: SubOperations[] = []
    const progress = pacedProgress((c) => sent.push(c), PROGRESS_INTERVAL_MS, () => clock)
    // 500 sub-operations, one each millisecond.
    for (let done = 1; done <= 500; done++) {
      progress(counts(done))
      clock++
    }

    expect(sent.map((c) => c.completed)).toEqual([1, 101, 201, 301, 401])
    expect(sent[1]).toEqual({remaining: 399, completed: 101, failed: 0, warning: 0})
  })

  it('sends each one when sub-operations are further apart than the interval', () => {
    let clock = 0
    const sent: number[] = []
    const progress = pacedProgress((c) => sent.push(c.completed), 100, () => clock)
    for (let done = 1; done <= 3; done++) {
      progress(counts(done))
      clock += 250
    }

    expect(sent).toEqual([1, 2, 3])
  })
})

describe('expectedContexts: what a C-MOVE destination is offered before the first instance', () => {
  const located = (sop: string, more: Partial<LocatedInstance>): LocatedInstance => ({sopInstanceUid: sop, seriesInstanceUid: '1.2', studyInstanceUid: '1.1', patientId: 'P', backend: 'pacs', ...more})
  const backends = [{name: 'pacs', type: 'dimse', transferSyntaxes: [TransferSyntax.JPEGBaseline8Bit, TransferSyntax.ImplicitVRLittleEndian, TransferSyntax.ExplicitVRLittleEndian]}] as unknown as BackendConfig[]

  it("each SOP class the locate learned, in the backend's likely syntaxes; nothing for an instance of unknown class", () => {
    const contexts = expectedContexts(sopClassesByBackend([located('1', {sopClassUids: [SopClass.CTImageStorage, SopClass.BasicTextSRStorage]}), located('2', {sopClassUid: SopClass.CTImageStorage}), located('3', {})]), backends)
    expect(contexts.map((c) => `${c.abstractSyntax} ${c.transferSyntax}`)).toEqual([
      `${SopClass.CTImageStorage} ${TransferSyntax.ExplicitVRLittleEndian}`,
      `${SopClass.CTImageStorage} ${TransferSyntax.ImplicitVRLittleEndian}`,
      `${SopClass.CTImageStorage} ${TransferSyntax.JPEGBaseline8Bit}`,
      `${SopClass.BasicTextSRStorage} ${TransferSyntax.ExplicitVRLittleEndian}`,
      `${SopClass.BasicTextSRStorage} ${TransferSyntax.ImplicitVRLittleEndian}`,
      `${SopClass.BasicTextSRStorage} ${TransferSyntax.JPEGBaseline8Bit}`,
    ])
    expect(expectedContexts(sopClassesByBackend([located('3', {})]), backends)).toEqual([])
  })
})
