import {EventEmitter} from 'node:events'
import net from 'node:net'
import tls from 'node:tls'

import {CommandField, CommandTag, type CommandSet, DATASET_FOLLOWS, NO_DATASET, commandNumber, commandString, decodeCommand, encodeCommand} from './command.js'
import {
  APPLICATION_CONTEXT,
  AbortReason,
  AbortSource,
  type AssociateRequest,
  ContextResult,
  PduError,
  PduReader,
  PduType,
  type PresentationContextResult,
  type RoleSelection,
  RejectReason,
  RejectResult,
  RejectSource,
  VERIFICATION_SOP_CLASS,
  decodeAssociateRq,
  decodePData,
  encodeAbort,
  encodeAssociateAc,
  encodeAssociateRj,
  encodeReleaseRp,
} from './pdu.js'
import {datasetBuffer} from '../dicom/received-instance.js'
import {transferSyntaxInfo} from '../dicom/uids.js'
import type {DimseResponse, StoreInstance} from './scu.js'
import {Status, isPending} from './status.js'
import {writePdvs} from './wire.js'
import {type ProxiedPeer, readProxyHeader} from './proxy-protocol.js'

const STORAGE_PREFIX = '1.2.840.10008.5.1.4.1.1.'

/** Query/retrieve information models (PS3.4 C.6): Patient Root and Study Root, FIND/MOVE/GET. */
export const QueryModel = {
  patientRootFind: '1.2.840.10008.5.1.4.1.2.1.1',
  patientRootMove: '1.2.840.10008.5.1.4.1.2.1.2',
  patientRootGet: '1.2.840.10008.5.1.4.1.2.1.3',
  studyRootFind: '1.2.840.10008.5.1.4.1.2.2.1',
  studyRootMove: '1.2.840.10008.5.1.4.1.2.2.2',
  studyRootGet: '1.2.840.10008.5.1.4.1.2.2.3',
} as const

export type QueryKind = 'find' | 'move' | 'get'

const QUERY_KIND_OF: Record<string, QueryKind> = {
  [QueryModel.patientRootFind]: 'find',
  [QueryModel.studyRootFind]: 'find',
  [QueryModel.patientRootMove]: 'move',
  [QueryModel.studyRootMove]: 'move',
  [QueryModel.patientRootGet]: 'get',
  [QueryModel.studyRootGet]: 'get',
}

const QUERY_FIELD: Record<QueryKind, {rq: number; rsp: number}> = {
  find: {rq: CommandField.cFindRq, rsp: CommandField.cFindRsp},
  move: {rq: CommandField.cMoveRq, rsp: CommandField.cMoveRsp},
  get: {rq: CommandField.cGetRq, rsp: CommandField.cGetRsp},
}

/** Identifiers are small: a query longer than this is not one. */
const MAX_IDENTIFIER_BYTES = 1 << 20
/** Identifiers are exchanged in the uncompressed little endian syntaxes only. */
const QUERY_TRANSFER_SYNTAXES = ['1.2.840.10008.1.2.1', '1.2.840.10008.1.2']

export interface AssociationInfo {
  id: number
  callingAeTitle: string
  calledAeTitle: string
  remoteAddress: string
  remotePort: number
}

export interface StoreRequest {
  association: AssociationInfo
  messageId: number
  sopClassUid: string
  sopInstanceUid: string
  transferSyntaxUid: string
  priority: number
}

export interface StoreOutcome {
  status: number
  errorComment?: string
}

/** Receives one instance's dataset bytes exactly as they arrive, then says how storing went. */
export interface StoreSink {
  /** Returns false when the caller should wait for waitDrain() before writing more. */
  write(chunk: Buffer): boolean
  waitDrain(): Promise<void>
  /** All bytes are in: store or deliver, then resolve with the status for the sender. Must not reject. */
  finish(): Promise<StoreOutcome>
  /** The association died before the dataset was complete: drop what was written. */
  abort(reason: string): void
}

/** A C-FIND, C-MOVE or C-GET request with its identifier (still encoded, in `transferSyntaxUid`). */
export interface QueryRequest {
  association: AssociationInfo
  kind: QueryKind
  messageId: number
  /** The information model's SOP class (Patient Root or Study Root). */
  sopClassUid: string
  transferSyntaxUid: string
  priority: number
  identifier: Buffer
  /** C-MOVE: where the instances go. */
  moveDestination?: string
  /** Aborted when the requester sends C-CANCEL or the association ends. */
  signal: AbortSignal
}

/** C-MOVE and C-GET sub-operation counts (PS3.7 9.1.4 and 9.1.3). */
export interface SubOperations {
  remaining: number
  completed: number
  failed: number
  warning: number
}

/** How a query handler answers while it works. */
export interface QueryResponder {
  /** C-FIND: one match, sent at once with status Pending; the identifier is in the request's transfer syntax. */
  match(identifier: Buffer): void
  /** C-MOVE and C-GET: a Pending response with the sub-operation counts. */
  progress(counts: SubOperations): void
  /**
   * C-GET: one C-STORE sub-operation over the requesting association, in the instance's own
   * transfer syntax (a context the requester proposed for it). Resolves with the requester's status.
   */
  store(instance: StoreInstance): Promise<DimseResponse>
  /** C-GET: whether the requester accepted this SOP class in this transfer syntax (with the SCP role). */
  canStore(sopClassUid: string, transferSyntaxUid: string): boolean
}

/** The final response of a query/retrieve operation. */
export interface QueryOutcome {
  status: number
  errorComment?: string
  counts?: SubOperations
  /** C-MOVE/C-GET with failures: the Failed SOP Instance UID List (0008,0058) goes back in a dataset. */
  failedSopInstanceUids?: string[]
}

export type AssociationDecision = {accept: true} | {accept: false; result: number; source: number; reason: number; why: string}

export interface ScpOptions {
  aeTitle: string
  /** Largest PDU we accept (announced to the peer). */
  maxPduLength?: number
  /** Transfer syntaxes we accept, in no particular order; the sender's preference order is kept. */
  transferSyntaxes: string[]
  maxAssociations?: number
  /** No A-ASSOCIATE-RQ within this time after connecting: the connection is closed (ARTIM). */
  artimTimeoutMs?: number
  /** No PDU for this long while we are not working on a request: the association is aborted. */
  idleTimeoutMs?: number
  /** Extra checks on who may associate (calling AE allow-lists and the like). */
  checkAssociation?: (request: AssociateRequest, remoteAddress: string) => AssociationDecision
  /** Called for every C-STORE-RQ; the returned sink gets the dataset bytes. */
  beginStore: (request: StoreRequest) => StoreSink
  /**
   * A C-STORE dataset beyond this many bytes: the sink is aborted, the rest of the dataset is read
   * and dropped (nothing buffered), and the sender gets A700. The association stays usable.
   */
  maxInstanceBytes?: number
  /** DICOM TLS (see tls.ts): the listener speaks TLS only; the handshake must end within artimTimeoutMs. */
  tls?: tls.TlsOptions
  /**
   * Every connection starts with a PROXY protocol header (v1 or v2, from HAProxy's send-proxy-v2):
   * the client it names is the association's remote address (allow-lists, logs, receipts). A
   * connection without a valid header within artimTimeoutMs is closed ('proxyError'). With `tls`,
   * the handshake follows the header.
   */
  proxyProtocol?: boolean
  /**
   * Query/retrieve: the information models to accept (QueryModel values) and the handler that
   * answers C-FIND, C-MOVE and C-GET. Without it those contexts are refused. The handler must not
   * reject: its outcome is the final response.
   */
  query?: {models: string[]; handle: (request: QueryRequest, responder: QueryResponder) => Promise<QueryOutcome>}
}

/** A presentation context we did not accept, and why ('contextRejected' event). */
export interface ContextRejection {
  info: AssociationInfo
  contextId: number
  abstractSyntax: string
  /** The transfer syntaxes the sender proposed, in its order. */
  transferSyntaxes: string[]
  reason: 'abstractSyntax' | 'transferSyntax'
}

export interface AssociationSummary extends AssociationInfo {
  stored: number
  failed: number
  bytes: number
  durationMs: number
  /** How it ended: released, aborted by the peer, aborted by us (with why), or the connection closed. */
  ending: string
}

/**
 * A DICOM C-STORE/C-ECHO service class provider (PS3.8 upper layer, PS3.7 DIMSE) that streams every
 * dataset byte-for-byte into a sink. Events: 'association' (AssociationInfo), 'associationEnd'
 * (AssociationSummary), 'rejected' ({remoteAddress, callingAeTitle, why}), 'protocolError' ({info, message}),
 * 'instanceRefused' ({info, sopInstanceUid, status, why}), 'contextRejected' (ContextRejection), 'tlsError' ({remoteAddress, message}),
 * 'proxyError' ({remoteAddress, message}: a connection without a valid PROXY header, with proxyProtocol).
 */
export class DimseServer extends EventEmitter {
  private readonly server: net.Server | tls.Server
  private readonly sockets = new Set<net.Socket>()
  private readonly handlers = new Set<ScpAssociation>()
  private nextId = 1

  constructor(readonly options: ScpOptions) {
    super()
    if (options.proxyProtocol === true) {
      this.server = net.createServer((socket) => this.onProxiedConnection(socket))
    } else if (options.tls === undefined) {
      this.server = net.createServer((socket) => this.onConnection(socket))
    } else {
      const server = tls.createServer({handshakeTimeout: options.artimTimeoutMs ?? 30_000, ...options.tls}, (socket) => this.onConnection(socket))
      // Nagle off before the handshake too; the association handler sets it again on the TLS socket.
      server.on('connection', (socket: net.Socket) => socket.setNoDelay(true))
      server.on('tlsClientError', (error, socket) => {
        this.emit('tlsError', {remoteAddress: socket.remoteAddress ?? '', message: error.message})
        socket.destroy()
      })
      this.server = server
    }

    // Connections that never associate hold a reader and timers too: bound them, beyond the
    // association limit (which answers a transient A-ASSOCIATE-RJ) the kernel connection is dropped.
    this.server.maxConnections = (options.maxAssociations ?? 64) * 2 + 16
  }

  get activeAssociations(): number {
    return this.handlers.size
  }

  listen(port: number, host = '0.0.0.0'): Promise<number> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject)
      this.server.listen(port, host, () => {
        this.server.off('error', reject)
        resolve((this.server.address() as net.AddressInfo).port)
      })
    })
  }

  /** Stops accepting connections; open associations go on until their peers end them (draining). */
  stopAccepting(): void {
    if (this.server.listening) this.server.close()
  }

  /** Stops accepting connections; waits for open associations to end, aborting them after graceMs. */
  async close(graceMs = 30_000): Promise<void> {
    const closed = new Promise<void>((resolve) => (this.server.listening ? this.server.close(() => resolve()) : resolve()))
    const deadline = Date.now() + graceMs
    while (this.handlers.size > 0 && Date.now() < deadline) {
      for (const handler of this.handlers) handler.closeWhenIdle()
      await new Promise((resolve) => setTimeout(resolve, 50))
    }

    for (const socket of this.sockets) socket.destroy()
    await closed
  }

  private onConnection(socket: net.Socket, peer?: ProxiedPeer): void {
    socket.setNoDelay(true)
    this.sockets.add(socket)
    socket.once('close', () => this.sockets.delete(socket))
    const handler = new ScpAssociation(this, socket, this.nextId++, peer)
    this.handlers.add(handler)
    socket.once('close', () => this.handlers.delete(handler))
  }

  /** A connection through a load balancer: its PROXY header first, then (with TLS) the handshake, then the association. */
  private onProxiedConnection(socket: net.Socket): void {
    socket.setNoDelay(true)
    this.sockets.add(socket)
    socket.once('close', () => this.sockets.delete(socket))
    socket.on('error', () => {}) // 'close' follows
    const timeoutMs = this.options.artimTimeoutMs ?? 30_000
    readProxyHeader(socket, timeoutMs).then(
      (peer) => {
        if (socket.destroyed) return
        const tlsOptions = this.options.tls
        if (tlsOptions === undefined) {
          this.onConnection(socket, peer)
          socket.resume()
          return
        }

        const secure = new tls.TLSSocket(socket, {isServer: true, secureContext: tls.createSecureContext(tlsOptions), requestCert: tlsOptions.requestCert, rejectUnauthorized: tlsOptions.rejectUnauthorized})
        const timer = setTimeout(() => secure.destroy(new Error(`TLS handshake not done within ${timeoutMs} ms`)), timeoutMs)
        const refused = (error: Error) => {
          clearTimeout(timer)
          this.emit('tlsError', {remoteAddress: peer?.address ?? socket.remoteAddress ?? '', message: error.message})
          secure.destroy()
          socket.destroy()
        }

        secure.once('error', refused)
        // 'secure': a server-side TLSSocket's handshake is done (tls.Server waits for the same event).
        secure.once('secure', () => {
          clearTimeout(timer)
          secure.off('error', refused)
          this.onConnection(secure, peer ?? {address: socket.remoteAddress ?? '', port: socket.remotePort ?? 0})
        })
        socket.resume()
      },
      (error: Error) => {
        this.emit('proxyError', {remoteAddress: socket.remoteAddress ?? '', message: error.message})
        socket.destroy()
      },
    )
  }

  /** @internal */
  canAcceptAnother(): boolean {
    return this.handlers.size <= (this.options.maxAssociations ?? 64)
  }
}

interface ActiveStore {
  request: StoreRequest
  contextId: number
  sink: StoreSink
  bytes: number
  /** Deflated datasets may end on an odd byte (PS3.5 A.5); every other fragment must be even. */
  deflated: boolean
}

/** A C-STORE refused before its dataset is complete: the rest is read and dropped, then this is answered. */
interface RefusedStore {
  request: StoreRequest
  contextId: number
  status: number
  errorComment: string
}

class ScpAssociation {
  private readonly reader: PduReader
  private readonly startedAt = Date.now()
  private state: 'awaitRequest' | 'established' | 'closing' | 'closed' = 'awaitRequest'
  private info: AssociationInfo
  private peerMaxPduLength = 0
  private readonly contexts = new Map<number, PresentationContextResult & {abstractSyntax: string}>()
  private commandParts: Buffer[] = []
  private command?: {set: CommandSet; contextId: number}
  private store?: ActiveStore
  private discardDataset = false
  /** A dataset being dropped (too large, odd fragment, command that does not fit its context): answered once its last fragment is in. */
  private refusedStore?: RefusedStore
  /** A C-FIND/C-MOVE/C-GET whose identifier is still arriving. */
  private identifier?: {kind: QueryKind; set: CommandSet; contextId: number; parts: Buffer[]; bytes: number}
  /** Running query operations by message id, for C-CANCEL. */
  private readonly queries = new Map<number, AbortController>()
  /** C-GET sub-operations waiting for the requester's C-STORE-RSP, by message id. */
  private readonly outgoing = new Map<number, {resolve: (r: DimseResponse) => void; reject: (e: Error) => void}>()
  private outgoingMessageId = 0
  /** Storage SOP classes for which the requester took the SCP role (C-GET). */
  private readonly scpRoles = new Set<string>()
  private queue: Promise<void> = Promise.resolve()
  private busy = false
  private releaseRequested = false
  private stats = {stored: 0, failed: 0, bytes: 0}
  private ending = 'connection closed'
  private readonly artim: NodeJS.Timeout

  /** `peer`: the client a PROXY header named (else the socket's own address). */
  constructor(private readonly server: DimseServer, private readonly socket: net.Socket | tls.TLSSocket, id: number, peer?: ProxiedPeer) {
    const options = server.options
    this.reader = new PduReader(options.maxPduLength ?? 262_144)
    this.info = {id, callingAeTitle: '', calledAeTitle: '', remoteAddress: peer?.address ?? socket.remoteAddress ?? '', remotePort: peer?.port ?? socket.remotePort ?? 0}
    this.artim = setTimeout(() => this.abort('no A-ASSOCIATE-RQ within the ARTIM timeout', AbortReason.notSpecified), options.artimTimeoutMs ?? 30_000)
    socket.setTimeout(options.idleTimeoutMs ?? 300_000, () => {
      if (!this.busy) this.abort('idle timeout', AbortReason.notSpecified)
    })
    socket.on('data', (chunk: Buffer) => this.onData(chunk))
    socket.on('error', () => {}) // 'close' follows and does the cleanup
    socket.once('close', () => this.onClose())
  }

  closeWhenIdle(): void {
    if (this.state === 'awaitRequest' || (!this.busy && this.store === undefined && this.state === 'established')) {
      this.abort('router shutting down', AbortReason.notSpecified)
    }
  }

  private onData(chunk: Buffer): void {
    if (this.state === 'closed') return
    this.reader.push(chunk)
    try {
      for (let pdu = this.reader.next(); pdu !== undefined; pdu = this.reader.next()) {
        this.onPdu(pdu.type, pdu.body)
        if ((this.state as string) === 'closed') return
      }
    } catch (error) {
      const reason = error instanceof PduError ? error.abortReason : AbortReason.notSpecified
      this.abort(`protocol error: ${(error as Error).message}`, reason)
    }
  }

  private onPdu(type: number, body: Buffer): void {
    if (type === PduType.abort) {
      this.ending = 'aborted by peer'
      this.store?.sink.abort('peer sent A-ABORT')
      this.store = undefined
      this.close()
      return
    }

    if (this.state === 'awaitRequest') {
      if (type !== PduType.associateRq) throw new PduError(`expected A-ASSOCIATE-RQ, got PDU type 0x${type.toString(16)}`, AbortReason.unexpectedPdu)
      clearTimeout(this.artim)
      this.onAssociateRequest(decodeAssociateRq(body))
      return
    }

    if (type === PduType.pData) {
      for (const pdv of decodePData(body)) this.onPdv(pdv.contextId, pdv.isCommand, pdv.isLast, pdv.data)
      return
    }

    if (type === PduType.releaseRq) {
      this.releaseRequested = true
      this.enqueue(async () => {
        this.ending = 'released'
        this.socket.end(encodeReleaseRp())
        this.state = 'closing'
      })
      return
    }

    throw new PduError(`unexpected PDU type 0x${type.toString(16)} on an established association`, AbortReason.unexpectedPdu)
  }

  private onAssociateRequest(request: AssociateRequest): void {
    const options = this.server.options
    this.info = {...this.info, callingAeTitle: request.callingAeTitle, calledAeTitle: request.calledAeTitle}
    this.peerMaxPduLength = request.userInformation.maxPduLength
    const reject = (result: number, source: number, reason: number, why: string) => {
      this.server.emit('rejected', {remoteAddress: this.info.remoteAddress, callingAeTitle: request.callingAeTitle, why})
      this.ending = `rejected: ${why}`
      this.state = 'closing'
      this.socket.end(encodeAssociateRj({result, source, reason}))
    }

    if (request.applicationContext !== APPLICATION_CONTEXT) {
      reject(RejectResult.permanent, RejectSource.serviceUser, RejectReason.applicationContextNotSupported, `application context ${request.applicationContext}`)
      return
    }

    if (!this.server.canAcceptAnother()) {
      reject(RejectResult.transient, RejectSource.serviceProviderPresentation, RejectReason.localLimitExceeded, 'too many associations')
      return
    }

    const decision = options.checkAssociation?.(request, this.info.remoteAddress) ?? {accept: true}
    if (!decision.accept) {
      reject(decision.result, decision.source, decision.reason, decision.why)
      return
    }

    const accepted = new Set(options.transferSyntaxes)
    const queryModels = new Set(options.query?.models ?? [])
    const queryTransferSyntaxes = new Set(QUERY_TRANSFER_SYNTAXES)
    const results = request.presentationContexts.map((proposal) => {
      const isQuery = queryModels.has(proposal.abstractSyntax)
      const abstractOk = isQuery || proposal.abstractSyntax === VERIFICATION_SOP_CLASS || proposal.abstractSyntax.startsWith(STORAGE_PREFIX)
      const transferSyntax = proposal.transferSyntaxes.find((ts) => (isQuery ? queryTransferSyntaxes : accepted).has(ts))
      let result: number = ContextResult.acceptance
      if (!abstractOk) result = ContextResult.abstractSyntaxNotSupported
      else if (transferSyntax === undefined) result = ContextResult.transferSyntaxesNotSupported
      const context = {id: proposal.id, result, transferSyntax: transferSyntax ?? proposal.transferSyntaxes[0] ?? '1.2.840.10008.1.2', abstractSyntax: proposal.abstractSyntax}
      if (result === ContextResult.acceptance) this.contexts.set(proposal.id, context)
      return context
    })
    // C-GET: the requester asks to be the SCP of storage classes; we agree for those we offer it.
    const roleSelections: RoleSelection[] = []
    if (queryModels.has(QueryModel.studyRootGet) || queryModels.has(QueryModel.patientRootGet)) {
      for (const role of request.userInformation.roleSelections ?? []) {
        if (!role.scpRole || !role.sopClassUid.startsWith(STORAGE_PREFIX)) continue
        this.scpRoles.add(role.sopClassUid)
        roleSelections.push({sopClassUid: role.sopClassUid, scuRole: false, scpRole: true})
      }
    }

    this.socket.write(
      encodeAssociateAc({
        calledAeTitle: request.calledAeTitle,
        callingAeTitle: request.callingAeTitle,
        applicationContext: APPLICATION_CONTEXT,
        presentationContexts: results,
        userInformation: {maxPduLength: options.maxPduLength ?? 262_144, roleSelections},
      }),
    )
    this.state = 'established'
    this.server.emit('association', this.info)
    for (const [index, context] of results.entries()) {
      if (context.result === ContextResult.acceptance) continue
      const proposal = request.presentationContexts[index]
      this.server.emit('contextRejected', {
        info: this.info,
        contextId: proposal.id,
        abstractSyntax: proposal.abstractSyntax,
        transferSyntaxes: proposal.transferSyntaxes,
        reason: context.result === ContextResult.abstractSyntaxNotSupported ? 'abstractSyntax' : 'transferSyntax',
      } satisfies ContextRejection)
    }
  }

  private onPdv(contextId: number, isCommand: boolean, isLast: boolean, data: Buffer): void {
    if (isCommand) {
      if (this.store !== undefined) throw new PduError('command fragment received while a dataset was still arriving', AbortReason.unexpectedPdu)
      this.commandParts.push(data)
      if (!isLast) return
      const set = decodeCommand(this.commandParts.length === 1 ? this.commandParts[0] : Buffer.concat(this.commandParts))
      this.commandParts = []
      this.onCommand(set, contextId)
      return
    }

    if (this.identifier !== undefined) {
      const pending = this.identifier
      if (contextId !== pending.contextId) throw new PduError(`identifier fragment on presentation context ${contextId}, command was on ${pending.contextId}`)
      pending.parts.push(Buffer.from(data))
      pending.bytes += data.length
      if (pending.bytes > MAX_IDENTIFIER_BYTES) throw new PduError(`query identifier longer than ${MAX_IDENTIFIER_BYTES} bytes`)
      if (isLast) {
        this.identifier = undefined
        this.startQuery(pending.kind, pending.set, pending.contextId, Buffer.concat(pending.parts))
      }

      return
    }

    if (this.store !== undefined) {
      const store = this.store
      if (contextId !== store.contextId) throw new PduError(`dataset fragment on presentation context ${contextId}, command was on ${store.contextId}`)
      store.bytes += data.length
      const limit = this.server.options.maxInstanceBytes
      let refusal: {status: number; why: string; comment: string} | undefined
      if (limit !== undefined && store.bytes > limit) {
        refusal = {status: Status.outOfResources, why: `dataset larger than ${limit} bytes (listen.maxInstanceBytes)`, comment: 'instance exceeds the router size limit'}
      } else if (data.length % 2 === 1 && !(isLast && store.deflated)) {
        // PS3.8 annex E: fragments have even lengths; padding one ourselves would change the bytes.
        const why = `odd-length dataset fragment (${data.length} bytes) in ${store.request.transferSyntaxUid}`
        refusal = {status: Status.dataSetDoesNotMatchSopClass, why, comment: why}
      }

      if (refusal !== undefined) {
        store.sink.abort(refusal.why)
        this.store = undefined
        this.refuse(store.request, store.contextId, refusal.status, refusal.why, refusal.comment)
        this.discardDataset = true
        this.socket.resume()
        if (isLast) this.finishRefused()
        return
      }

      if (!store.sink.write(data)) {
        this.socket.pause()
        void store.sink.waitDrain().then(() => this.socket.resume())
      }

      if (isLast) {
        this.store = undefined
        this.enqueue(() => this.finishStore(store))
      }

      return
    }

    if (this.discardDataset) {
      if (isLast) {
        this.discardDataset = false
        if (this.refusedStore !== undefined) this.finishRefused()
      }

      return
    }

    throw new PduError('dataset fragment without a command', AbortReason.unexpectedPdu)
  }

  private onCommand(set: CommandSet, contextId: number): void {
    const field = commandNumber(set, CommandTag.commandField)
    const messageId = commandNumber(set, CommandTag.messageId) ?? 0
    const hasDataset = commandNumber(set, CommandTag.commandDataSetType) !== NO_DATASET
    const context = this.contexts.get(contextId)
    if (context === undefined) throw new PduError(`command on presentation context ${contextId}, which was not accepted`)

    if (field === CommandField.cEchoRq) {
      this.enqueue(async () => this.respond(contextId, CommandField.cEchoRsp, messageId, commandString(set, CommandTag.affectedSopClassUid) ?? VERIFICATION_SOP_CLASS, undefined, {status: Status.success}))
      return
    }

    if (field === CommandField.cStoreRq && hasDataset) {
      const request: StoreRequest = {
        association: this.info,
        messageId,
        sopClassUid: commandString(set, CommandTag.affectedSopClassUid) ?? context.abstractSyntax,
        sopInstanceUid: commandString(set, CommandTag.affectedSopInstanceUid) ?? '',
        transferSyntaxUid: context.transferSyntax,
        priority: commandNumber(set, CommandTag.priority) ?? 0,
      }
      this.busy = true
      const problem = !request.sopInstanceUid
        ? 'the C-STORE command has no Affected SOP Instance UID'
        : request.sopClassUid === context.abstractSyntax
          ? undefined
          : `Affected SOP Class UID ${request.sopClassUid} is not the presentation context's ${context.abstractSyntax}`
      if (problem !== undefined) {
        // Refused before any byte reaches a sink: read the dataset to its end and drop it.
        this.refuse(request, contextId, Status.cannotUnderstand, problem, problem)
        this.discardDataset = true
        return
      }

      this.store = {request, contextId, sink: this.server.options.beginStore(request), bytes: 0, deflated: transferSyntaxInfo(context.transferSyntax)?.deflated ?? false}
      return
    }

    if (field === CommandField.cCancelRq) {
      this.queries.get(commandNumber(set, CommandTag.messageIdBeingRespondedTo) ?? -1)?.abort()
      return
    }

    if (field === CommandField.cStoreRsp) {
      const respondedTo = commandNumber(set, CommandTag.messageIdBeingRespondedTo) ?? -1
      const waiting = this.outgoing.get(respondedTo)
      if (waiting === undefined) throw new PduError(`C-STORE-RSP for message ${respondedTo}, which we did not send`, AbortReason.unexpectedPdu)
      this.outgoing.delete(respondedTo)
      if (hasDataset) this.discardDataset = true
      waiting.resolve({status: commandNumber(set, CommandTag.status) ?? 0xffff, errorComment: commandString(set, CommandTag.errorComment)})
      return
    }

    const kind = QUERY_KIND_OF[context.abstractSyntax]
    if (kind !== undefined && field === QUERY_FIELD[kind].rq && hasDataset && this.server.options.query !== undefined) {
      this.busy = true
      this.identifier = {kind, set, contextId, parts: [], bytes: 0}
      return
    }

    // N-services and anything else are not ours: answer "unrecognized operation" and drop any dataset.
    if (hasDataset) this.discardDataset = true
    const sopClass = commandString(set, CommandTag.affectedSopClassUid) ?? context.abstractSyntax
    this.enqueue(async () => this.respond(contextId, ((field ?? 0) | 0x8000) & 0xffff, messageId, sopClass, undefined, {status: Status.unrecognizedOperation}))
  }

  private startQuery(kind: QueryKind, set: CommandSet, contextId: number, identifier: Buffer): void {
    const context = this.contexts.get(contextId)!
    const messageId = commandNumber(set, CommandTag.messageId) ?? 0
    const controller = new AbortController()
    this.queries.set(messageId, controller)
    const request: QueryRequest = {
      association: this.info,
      kind,
      messageId,
      sopClassUid: context.abstractSyntax,
      transferSyntaxUid: context.transferSyntax,
      priority: commandNumber(set, CommandTag.priority) ?? 0,
      identifier,
      moveDestination: commandString(set, CommandTag.moveDestination),
      signal: controller.signal,
    }
    const rsp = QUERY_FIELD[kind].rsp
    const responder: QueryResponder = {
      match: (dataset) => {
        if (!controller.signal.aborted) this.respondQuery(contextId, rsp, messageId, context.abstractSyntax, {status: Status.pending}, dataset)
      },
      progress: (counts) => {
        if (!controller.signal.aborted) this.respondQuery(contextId, rsp, messageId, context.abstractSyntax, {status: Status.pending, counts})
      },
      store: (instance) => this.sendStore(instance),
      canStore: (sopClassUid, transferSyntaxUid) => this.storeContext(sopClassUid, transferSyntaxUid) !== undefined,
    }
    // Queries run one at a time, in order with the other requests; C-CANCEL and C-STORE-RSP are read meanwhile.
    this.enqueue(async () => {
      const outcome = await this.server.options.query!.handle(request, responder)
      this.queries.delete(messageId)
      let dataset: Buffer | undefined
      if (outcome.failedSopInstanceUids !== undefined && outcome.failedSopInstanceUids.length > 0) {
        dataset = encodeFailedList(outcome.failedSopInstanceUids, context.transferSyntax)
      }

      this.respondQuery(contextId, rsp, messageId, context.abstractSyntax, outcome, dataset)
      this.busy = false
    })
  }

  /** The accepted context for storing this SOP class in this syntax towards the requester (C-GET). */
  private storeContext(sopClassUid: string, transferSyntaxUid: string): number | undefined {
    if (!this.scpRoles.has(sopClassUid)) return undefined
    for (const [id, context] of this.contexts) {
      if (context.abstractSyntax === sopClassUid && context.transferSyntax === transferSyntaxUid) return id
    }

    return undefined
  }

  private sendStore(instance: StoreInstance): Promise<DimseResponse> {
    const contextId = this.storeContext(instance.sopClassUid, instance.transferSyntaxUid)
    if (contextId === undefined) return Promise.reject(new Error(`the requester did not accept ${instance.sopClassUid} in ${instance.transferSyntaxUid} with the SCP role`))
    if (this.state !== 'established') return Promise.reject(new Error('the association has ended'))
    const dataset = datasetBuffer(instance.dataset)
    if (dataset === undefined) return Promise.reject(new Error('C-GET sub-operations send datasets held in memory'))
    this.outgoingMessageId = (this.outgoingMessageId % 0xffff) + 1
    const messageId = this.outgoingMessageId
    const response = new Promise<DimseResponse>((resolve, reject) => this.outgoing.set(messageId, {resolve, reject}))
    const command = encodeCommand([
      [CommandTag.affectedSopClassUid, instance.sopClassUid],
      [CommandTag.commandField, CommandField.cStoreRq],
      [CommandTag.messageId, messageId],
      [CommandTag.priority, 0],
      [CommandTag.commandDataSetType, 0x0000],
      [CommandTag.affectedSopInstanceUid, instance.sopInstanceUid],
      // No Move Originator fields: PS3.7 9.3.1.1 has them for C-MOVE's sub-operations only.
    ])
    writePdvs(this.socket, contextId, true, command, this.peerMaxPduLength)
    writePdvs(this.socket, contextId, false, dataset, this.peerMaxPduLength)
    return response
  }

  private respondQuery(contextId: number, field: number, messageId: number, sopClassUid: string, outcome: QueryOutcome, dataset?: Buffer): void {
    if (this.state !== 'established') return
    const fields: Array<[number, number | string]> = [
      [CommandTag.affectedSopClassUid, sopClassUid],
      [CommandTag.commandField, field],
      [CommandTag.messageIdBeingRespondedTo, messageId],
      [CommandTag.commandDataSetType, dataset === undefined ? NO_DATASET : DATASET_FOLLOWS],
      [CommandTag.status, outcome.status],
    ]
    if (outcome.counts !== undefined) {
      // Remaining is meaningful only while pending (PS3.7 C.4.2.1.6).
      if (isPending(outcome.status)) fields.push([CommandTag.numberOfRemainingSuboperations, outcome.counts.remaining])
      fields.push(
        [CommandTag.numberOfCompletedSuboperations, outcome.counts.completed],
        [CommandTag.numberOfFailedSuboperations, outcome.counts.failed],
        [CommandTag.numberOfWarningSuboperations, outcome.counts.warning],
      )
    }

    if (outcome.errorComment && outcome.status !== 0 && !isPending(outcome.status)) fields.push([CommandTag.errorComment, outcome.errorComment.slice(0, 64)])
    writePdvs(this.socket, contextId, true, encodeCommand(fields), this.peerMaxPduLength)
    if (dataset !== undefined) writePdvs(this.socket, contextId, false, dataset, this.peerMaxPduLength)
  }

  private refuse(request: StoreRequest, contextId: number, status: number, why: string, errorComment: string): void {
    this.server.emit('instanceRefused', {info: this.info, sopInstanceUid: request.sopInstanceUid, status, why})
    this.refusedStore = {request, contextId, status, errorComment}
  }

  private finishRefused(): void {
    const refused = this.refusedStore!
    this.refusedStore = undefined
    this.discardDataset = false
    this.enqueue(async () => {
      this.stats.failed++
      this.respond(refused.contextId, CommandField.cStoreRsp, refused.request.messageId, refused.request.sopClassUid, refused.request.sopInstanceUid, {status: refused.status, errorComment: refused.errorComment})
      this.busy = false
    })
  }

  private async finishStore(store: ActiveStore): Promise<void> {
    const outcome = await store.sink.finish()
    const ok = outcome.status === 0 || (outcome.status & 0xf000) === 0xb000
    if (ok) this.stats.stored++
    else this.stats.failed++
    this.stats.bytes += store.bytes
    this.respond(store.contextId, CommandField.cStoreRsp, store.request.messageId, store.request.sopClassUid, store.request.sopInstanceUid, outcome)
    this.busy = false
  }

  private respond(contextId: number, field: number, messageId: number, sopClassUid: string, sopInstanceUid: string | undefined, outcome: StoreOutcome): void {
    if (this.state !== 'established') return
    const fields: Array<[number, number | string]> = [
      [CommandTag.affectedSopClassUid, sopClassUid],
      [CommandTag.commandField, field],
      [CommandTag.messageIdBeingRespondedTo, messageId],
      [CommandTag.commandDataSetType, NO_DATASET],
      [CommandTag.status, outcome.status],
    ]
    if (sopInstanceUid) fields.push([CommandTag.affectedSopInstanceUid, sopInstanceUid])
    if (outcome.errorComment && outcome.status !== 0) fields.push([CommandTag.errorComment, outcome.errorComment.slice(0, 64)])
    writePdvs(this.socket, contextId, true, encodeCommand(fields), this.peerMaxPduLength)
  }

  private enqueue(task: () => Promise<void>): void {
    this.queue = this.queue.then(task).catch((error: Error) => this.abort(`internal error: ${error.message}`, AbortReason.notSpecified))
  }

  private abort(why: string, reason: number): void {
    if (this.state === 'closed') return
    this.ending = `aborted: ${why}`
    this.server.emit('protocolError', {info: this.info, message: why})
    this.store?.sink.abort(why)
    this.store = undefined
    if (!this.socket.destroyed) this.socket.end(encodeAbort(AbortSource.serviceProvider, reason))
    setTimeout(() => this.socket.destroy(), 1000).unref()
    this.close()
  }

  private close(): void {
    if (this.state === 'closed') return
    this.endQueries()
    this.state = 'closed'
    clearTimeout(this.artim)
    if (!this.releaseRequested) this.socket.end()
  }

  private endQueries(): void {
    for (const controller of this.queries.values()) controller.abort()
    for (const waiting of this.outgoing.values()) waiting.reject(new Error('the association ended before the requester answered the C-STORE'))
    this.outgoing.clear()
  }

  private onClose(): void {
    clearTimeout(this.artim)
    this.endQueries()
    if (this.store !== undefined) {
      this.store.sink.abort('connection closed mid-dataset')
      this.store = undefined
    }

    const wasAssociated = this.info.callingAeTitle !== ''
    this.state = 'closed'
    if (wasAssociated) {
      this.server.emit('associationEnd', {...this.info, ...this.stats, durationMs: Date.now() - this.startedAt, ending: this.ending} satisfies AssociationSummary)
    }
  }
}

/** The Failed SOP Instance UID List (0008,0058, UI) as a one-element dataset. */
function encodeFailedList(uids: string[], transferSyntaxUid: string): Buffer {
  let value = Buffer.from(uids.join('\\'), 'latin1')
  if (value.length % 2 === 1) value = Buffer.concat([value, Buffer.from([0])])
  const explicit = transferSyntaxUid !== '1.2.840.10008.1.2'
  const header = Buffer.alloc(8)
  header.writeUInt16LE(0x0008, 0)
  header.writeUInt16LE(0x0058, 2)
  if (explicit && value.length <= 0xffff) {
    header.write('UI', 4, 'latin1')
    header.writeUInt16LE(value.length, 6)
  } else {
    header.writeUInt32LE(value.length, 4)
  }

  return Buffer.concat([header, value])
}
