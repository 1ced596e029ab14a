/** DIMSE status codes (PS3.7 annex C and PS3.4 B.2.3) that the router produces or reads. */
export const Status = {
  success: 0x0000,
  /** Warnings: stored, with a remark. */
  coercionOfDataElements: 0xb000,
  elementsDiscarded: 0xb006,
  dataSetDoesNotMatchSopClassWarning: 0xb007,
  /** Refused: out of resources (transient: a sender may retry later). */
  outOfResources: 0xa700,
  /** Error: data set does not match SOP class. */
  dataSetDoesNotMatchSopClass: 0xa900,
  /** Error: cannot understand. */
  cannotUnderstand: 0xc000,
  processingFailure: 0x0110,
  /** Query/retrieve (PS3.4 C.4): matches are pending; a cancelled operation; sub-operations with failures. */
  pending: 0xff00,
  pendingWithWarnings: 0xff01,
  cancel: 0xfe00,
  subOperationsCompleteWithFailures: 0xb000,
  moveDestinationUnknown: 0xa801,
  identifierDoesNotMatchSopClass: 0xa900,
  unableToProcess: 0xc000,
  noSuchSopClass: 0x0118,
  unrecognizedOperation: 0x0211,
  sopClassNotSupported: 0x0122,
} as const

export type StatusKind = 'success' | 'warning' | 'refused' | 'error' | 'failure'

/** How a status reads: success and warnings mean the instance was stored. */
export function statusKind(status: number): StatusKind {
  if (status === 0) return 'success'
  if ((status & 0xf000) === 0xb000 || status === 0x0107 || status === 0x0116) return 'warning'
  if ((status & 0xff00) === 0xa700 || (status & 0xf000) === 0xa000) return (status & 0xff00) === 0xa700 ? 'refused' : 'error'
  if ((status & 0xf000) === 0xc000) return 'error'
  return 'failure'
}

/** A query/retrieve response that more responses follow. */
export function isPending(status: number): boolean {
  return status === 0xff00 || status === 0xff01
}

/** True when the peer stored the instance (success or warning). */
export function isStored(status: number): boolean {
  const kind = statusKind(status)
  return kind === 'success' || kind === 'warning'
}

/** True when trying again later (or elsewhere) may succeed: out of resources. */
export function isTransientRefusal(status: number): boolean {
  return statusKind(status) === 'refused'
}

export function formatStatus(status: number): string {
  return `0x${status.toString(16).padStart(4, '0').toUpperCase()}`
}
