/** The shapes qr's files share: who answers a query, an instance located on a backend, and its bytes once fetched. */
import type {Identifier} from '../dicom/identifier.js'

/** One instance and the backend it will be fetched from. */
export interface LocatedInstance {
  sopInstanceUid: string
  seriesInstanceUid: string
  studyInstanceUid: string
  patientId: string
  backend: string
  /** The SOP class, when the locate query asked the backend for it (backends fetched by C-GET: their contexts are proposed per class). */
  sopClassUid?: string
  /** The SOP classes of its study on that backend (SOP Classes in Study), when its own was not asked: all are proposed for it. */
  sopClassUids?: readonly string[]
  /**
   * How many instances of its series the locate found on its backend, when every one of them is
   * fetched from that backend (a retrieval above IMAGE level): a C-GET may then ask for the
   * series instead of listing its SOP Instance UIDs.
   */
  seriesCount?: number
}

/** One instance's stored bytes: the Part 10 file, and where its dataset starts. */
export interface FetchedInstance {
  file: Buffer
  transferSyntaxUid: string
  sopClassUid: string
  /** The dataset bytes (a view into `file` when fetched as a file), exactly as stored. */
  dataset: Buffer
}

/** One backend that answers queries. */
export interface QuerySource {
  readonly name: string
  /**
   * Sends the query (in the given information model) and calls onMatch for each match; resolves
   * when the backend has answered all of them. Rejects with a DdrError naming the backend.
   */
  find(query: Identifier, options: {model: string; signal?: AbortSignal; onMatch: (match: Identifier) => void}): Promise<void>
}
