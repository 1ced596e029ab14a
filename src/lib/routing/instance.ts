import type {DatasetSource} from '../dimse/scu.js'
import type {JournalRecord} from '../spool/journal.js'

/** What routing knows about one received instance: where its bytes are, and the few header values it needs. */
export interface ReceivedInstance {
  /** Unique within this router process; names the spool file. */
  id: string
  sopClassUid: string
  sopInstanceUid: string
  transferSyntaxUid: string
  studyInstanceUid?: string
  seriesInstanceUid?: string
  patientId?: string
  modality?: string
  callingAeTitle: string
  calledAeTitle: string
  /** The Part 10 meta header we wrote in front of the received dataset. */
  metaHeader: Buffer
  /** The dataset bytes exactly as the sender sent them (a file slice when large or spooled). */
  dataset: DatasetSource
  /** The Part 10 file, when the instance is on disk in a file of its own. */
  path?: string
  /** The spool journal record holding it (small spooled instances). */
  journal?: JournalRecord
  datasetLength: number
  receivedAt: number
}
