import net from 'node:net'

import {type AssociationDecision} from '../dimse/scp.js'
import {type AssociateRequest, RejectReason, RejectResult, RejectSource} from '../dimse/pdu.js'

/** Who may associate with the listener. Empty lists mean "anyone". */
export interface AccessPolicy {
  /** Our own AE title: with requireCalledAeTitle, the called AE title must be exactly this. */
  aeTitle: string
  allowedCallingAeTitles: string[]
  /** Exact IPv4/IPv6 addresses or CIDR blocks ("10.0.0.0/8", "fd00::/8"). */
  allowedAddresses: string[]
  requireCalledAeTitle: boolean
}

/** An IPv4 address seen through a dual-stack socket ("::ffff:10.1.2.3") as plain IPv4, so IPv4 entries match it. */
export function normalizeAddress(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address)
  return mapped ? mapped[1] : address
}

/** A matcher for exact addresses and CIDR blocks; entries must have passed addressEntryProblem(). */
export function addressMatcher(entries: string[]): (address: string) => boolean {
  const list = new net.BlockList()
  for (const entry of entries) {
    const [address, prefix] = entry.split('/')
    const type = net.isIP(address) === 6 ? 'ipv6' : 'ipv4'
    if (prefix === undefined) list.addAddress(normalizeAddress(address), type)
    else list.addSubnet(address, Number(prefix), type)
  }

  return (remote) => {
    const address = normalizeAddress(remote)
    const family = net.isIP(address)
    if (family === 0) return false
    return list.check(address, family === 6 ? 'ipv6' : 'ipv4')
  }
}

/**
 * The listener's association check (DimseServer's checkAssociation): address first, then calling
 * AE title (A-ASSOCIATE-RJ permanent, service user, reason 3), then called AE title (reason 7).
 * AE titles compare exactly (DICOM AE titles are case-sensitive), without padding spaces.
 */
export function createAssociationCheck(policy: AccessPolicy): (request: AssociateRequest, remoteAddress: string) => AssociationDecision {
  const callingAllowed = new Set(policy.allowedCallingAeTitles.map((ae) => ae.trim()))
  const addressAllowed = policy.allowedAddresses.length === 0 ? undefined : addressMatcher(policy.allowedAddresses)
  const ownAeTitle = policy.aeTitle.trim()
  const reject = (reason: number, why: string): AssociationDecision => ({accept: false, result: RejectResult.permanent, source: RejectSource.serviceUser, reason, why})
  return (request, remoteAddress) => {
    if (addressAllowed !== undefined && !addressAllowed(remoteAddress)) {
      return reject(RejectReason.noReasonGiven, `address ${normalizeAddress(remoteAddress)} is not in listen.allowedAddresses`)
    }

    if (callingAllowed.size > 0 && !callingAllowed.has(request.callingAeTitle.trim())) {
      return reject(RejectReason.callingAeNotRecognized, `calling AE title "${request.callingAeTitle}" is not in listen.allowedCallingAeTitles`)
    }

    if (policy.requireCalledAeTitle && request.calledAeTitle.trim() !== ownAeTitle) {
      return reject(RejectReason.calledAeNotRecognized, `called AE title "${request.calledAeTitle}" is not ours (${ownAeTitle}; listen.requireCalledAeTitle)`)
    }

    return {accept: true}
  }
}
