import {EventEmitter} from 'node:events'
import {open} from 'node:fs/promises'
import net from 'node:net'
import tls from 'node:tls'

import {DdrError} from '../errors.js'
import {CommandField, CommandTag, type CommandSet, DATASET_FOLLOWS, NO_DATASET, commandNumber, commandString, decodeCommand, encodeCommand} from './command.js'
import {
  APPLICATION_CONTEXT,
  AbortReason,
  AbortSource,
  ContextResult,
  PduError,
  PduReader,
  PduType,
  type PresentationContextProposal,
  type RoleSelection,
  VERIFICATION_SOP_CLASS,
  decodeAbort,
  decodeAssociateAc,
  decodeAssociateRj,
  decodePData,
  encodeAbort,
  encodeAssociateRq,
  encodeReleaseRq,
} from './pdu.js'
import {type DatasetSource, datasetBuffers, datasetSourceLength} from '../dicom/received-instance.js'
import {transferSyntaxInfo} from '../dicom/uids.js'
import {Status, isPending} from './status.js'
import {maxFragment, writePdvList, writePdvs} from './wire.js'

export const IMPLICIT_VR_LITTLE_ENDIAN = '1.2.840.10008.1.2'

export interface ContextRequest {
  abstractSyntax: string
  transferSyntax: string
}

export interface ConnectOptions {
  host: string
  port: number
  callingAeTitle: string
  calledAeTitle: string
  /** One presentation context per (SOP class, transfer syntax): we send bytes as they are, never transcoded. */
  contexts: ContextRequest[]
  maxPduLength?: number
  connectTimeoutMs?: number
  /** No progress (bytes sent or a PDU received) for this long while a request is open: the association is aborted. */
  requestTimeoutMs?: number
  /** One C-STORE (sending the dataset and waiting for the answer) may take this long at most; then the association is aborted. */
  storeTimeoutMs?: number
  /** DICOM TLS (see tls.ts clientTlsOptions): the association starts once the handshake is done. */
  tls?: tls.ConnectionOptions
  /** The local address to connect from (a host with several addresses); default: the system's choice. */
  localAddress?: string
  /**
   * SCP/SCU role selection to propose (PS3.7 D.3.3.4): a C-GET SCU asks for the SCP role of the
   * storage SOP classes it wants to receive.
   */
  roleSelections?: RoleSelection[]
}

export type {DatasetSource}

export interface StoreInstance {
  sopClassUid: string
  sopInstanceUid: string
  transferSyntaxUid: string
  dataset: DatasetSource
  priority?: number
  moveOriginatorAeTitle?: string
  moveOriginatorMessageId?: number
}

/**
 * A C-STORE sub-operation the peer sends us while our C-GET runs: the dataset bytes exactly as
 * they arrived, in the transfer syntax of the presentation context they came on.
 */
export interface IncomingStore {
  messageId: number
  sopClassUid: string
  sopInstanceUid: string
  transferSyntaxUid: string
  dataset: Buffer
}

/** Takes one incoming C-STORE; its answer is the status the peer gets (a rejection answers 0xC000 with the message). */
export type IncomingStoreHandler = (store: IncomingStore) => Promise<{status: number; errorComment?: string}>

export interface DimseResponse {
  status: number
  errorComment?: string
  /** The whole response command (query/retrieve responses carry sub-operation counts). */
  command?: CommandSet
  /** The dataset that came with the response (a C-FIND match, a Failed SOP Instance UID List). */
  dataset?: Buffer
}

const READ_CHUNK = 256 * 1024
const PAD = Buffer.from([0])
/** Errors of a request already under way that mean "the peer broke off", not "our data is bad". */
const INTERRUPTION_CODES = new Set(['BACKEND_UNREACHABLE', 'ASSOCIATION_ABORTED', 'TIMEOUT', 'PROTOCOL_ERROR'])

function key(abstractSyntax: string, transferSyntax: string): string {
  return `${abstractSyntax}|${transferSyntax}`
}

/**
 * An association we requested (SCU side). One request at a time, as PS3.7 allows without
 * asynchronous operations; reuse it for many instances. Emits 'close' once, when it ends for any reason.
 */
export class ScuAssociation extends EventEmitter {
  private readonly reader: PduReader
  private readonly accepted = new Map<string, number>()
  /** Accepted presentation contexts by id: what an incoming C-STORE's context means. */
  private readonly acceptedById = new Map<number, ContextRequest>()
  /** Storage SOP classes whose SCP role the peer granted us (C-GET). */
  private readonly scpRoles = new Set<string>()
  /** The running C-GET's taker of incoming C-STORE sub-operations. */
  private storeHandler?: IncomingStoreHandler
  /** An incoming C-STORE whose dataset is still arriving. */
  private incoming?: {command: CommandSet; contextId: number; parts: Buffer[]}
  /** Incoming C-STOREs being handled (their answers go out in order). */
  private storesInHand = 0
  private storeAnswers: Promise<void> = Promise.resolve()
  private peerMaxPduLength = 0
  private messageId = 0
  private pending?: {messageId: number; resolve: (r: DimseResponse) => void; reject: (e: Error) => void; onPending?: (r: DimseResponse) => void}
  private commandParts: Buffer[] = []
  /** A response command whose dataset is still arriving. */
  private responseCommand?: CommandSet
  private datasetParts: Buffer[] = []
  private releasing?: {resolve: () => void}
  private lastActivity = Date.now()
  private timer?: NodeJS.Timeout
  /** The open request's deadline (see armDeadline); messageId -1 when no request is open. */
  private deadline?: {timeoutMs: number; what: string; messageId: number; timer: NodeJS.Timeout}
  private closedError?: Error
  private busy = false

  private constructor(private readonly socket: net.Socket, private readonly options: ConnectOptions) {
    super()
    this.reader = new PduReader(Math.max(options.maxPduLength ?? 262_144, 1 << 20))
  }

  /** Opens an association; rejects with a DdrError naming the peer on refusal, timeout or network error. */
  static connect(options: ConnectOptions): Promise<ScuAssociation> {
    const peer = `${options.calledAeTitle}@${options.host}:${options.port}`
    return new Promise((resolve, reject) => {
      const endpoint = {host: options.host, port: options.port, ...(options.localAddress === undefined ? {} : {localAddress: options.localAddress})}
      const socket = options.tls === undefined ? net.connect(endpoint) : tls.connect({...options.tls, ...endpoint})
      socket.setNoDelay(true)
      const association = new ScuAssociation(socket, options)
      const timer = setTimeout(() => {
        socket.destroy()
        reject(new DdrError('TIMEOUT', `no association with ${peer} within ${options.connectTimeoutMs ?? 10_000} ms`))
      }, options.connectTimeoutMs ?? 10_000)
      const fail = (error: Error) => {
        clearTimeout(timer)
        socket.destroy()
        reject(error instanceof DdrError ? error : new DdrError('BACKEND_UNREACHABLE', `cannot connect to ${peer}: ${error.message}`, {cause: error}))
      }

      socket.once('error', fail)
      socket.once(options.tls === undefined ? 'connect' : 'secureConnect', () => {
        const contexts: PresentationContextProposal[] = [{id: 1, abstractSyntax: VERIFICATION_SOP_CLASS, transferSyntaxes: [IMPLICIT_VR_LITTLE_ENDIAN]}]
        const seen = new Set([key(VERIFICATION_SOP_CLASS, IMPLICIT_VR_LITTLE_ENDIAN)])
        for (const context of options.contexts) {
          const k = key(context.abstractSyntax, context.transferSyntax)
          if (seen.has(k) || contexts.length >= 128) continue
          seen.add(k)
          contexts.push({id: contexts.length * 2 + 1, abstractSyntax: context.abstractSyntax, transferSyntaxes: [context.transferSyntax]})
        }

        socket.write(
          encodeAssociateRq({
            calledAeTitle: options.calledAeTitle,
            callingAeTitle: options.callingAeTitle,
            applicationContext: APPLICATION_CONTEXT,
            presentationContexts: contexts,
            userInformation: {maxPduLength: options.maxPduLength ?? 262_144, ...(options.roleSelections === undefined ? {} : {roleSelections: options.roleSelections})},
          }),
        )
        const onData = (chunk: Buffer) => {
          association.reader.push(chunk)
          let pdu
          try {
            pdu = association.reader.next()
          } catch (error) {
            fail(error as Error)
            return
          }

          if (pdu === undefined) return
          socket.off('data', onData)
          socket.off('error', fail)
          clearTimeout(timer)
          if (pdu.type === PduType.associateAc) {
            const ac = decodeAssociateAc(pdu.body)
            association.peerMaxPduLength = ac.userInformation.maxPduLength
            for (const result of ac.presentationContexts) {
              const proposal = contexts.find((c) => c.id === result.id)
              if (proposal && result.result === ContextResult.acceptance) {
                association.accepted.set(key(proposal.abstractSyntax, proposal.transferSyntaxes[0]), result.id)
                association.acceptedById.set(result.id, {abstractSyntax: proposal.abstractSyntax, transferSyntax: proposal.transferSyntaxes[0]})
              }
            }

            for (const role of ac.userInformation.roleSelections ?? []) if (role.scpRole) association.scpRoles.add(role.sopClassUid)

            association.start()
            resolve(association)
          } else if (pdu.type === PduType.associateRj) {
            const rj = decodeAssociateRj(pdu.body)
            socket.destroy()
            reject(
              new DdrError('ASSOCIATION_REJECTED', `${peer} rejected the association (result ${rj.result}, source ${rj.source}, reason ${rj.reason})`, {
                hint: rj.reason === 3 || rj.reason === 7 ? 'check the AE titles configured on both sides' : undefined,
              }),
            )
          } else {
            socket.destroy()
            reject(new DdrError('PROTOCOL_ERROR', `${peer} answered the association request with PDU type 0x${pdu.type.toString(16)}`))
          }
        }

        socket.on('data', onData)
      })
    })
  }

  get peer(): string {
    return `${this.options.calledAeTitle}@${this.options.host}:${this.options.port}`
  }

  get isOpen(): boolean {
    return this.closedError === undefined && this.releasing === undefined
  }

  get isIdle(): boolean {
    return this.isOpen && !this.busy
  }

  /** Whether the peer accepted this SOP class in exactly this transfer syntax. */
  supports(abstractSyntax: string, transferSyntax: string): boolean {
    return this.accepted.has(key(abstractSyntax, transferSyntax))
  }

  /** Whether the peer agreed that we act as SCP of this SOP class (role selection): it may send us C-STOREs of it. */
  grantedScpRole(sopClassUid: string): boolean {
    return this.scpRoles.has(sopClassUid)
  }

  acceptedContexts(): ContextRequest[] {
    return [...this.accepted.keys()].map((k) => {
      const [abstractSyntax, transferSyntax] = k.split('|')
      return {abstractSyntax, transferSyntax}
    })
  }

  async echo(): Promise<DimseResponse> {
    return this.request(VERIFICATION_SOP_CLASS, IMPLICIT_VR_LITTLE_ENDIAN, (contextId, messageId) => {
      const command = encodeCommand([
        [CommandTag.affectedSopClassUid, VERIFICATION_SOP_CLASS],
        [CommandTag.commandField, CommandField.cEchoRq],
        [CommandTag.messageId, messageId],
        [CommandTag.commandDataSetType, NO_DATASET],
      ])
      writePdvs(this.socket, contextId, true, command, this.peerMaxPduLength)
      return Promise.resolve()
    })
  }

  /**
   * C-FIND (or C-MOVE, whose pending responses carry counts): sends the identifier on the
   * model's context and calls onPending for every pending response (a C-FIND match comes with its
   * identifier in `dataset`); resolves with the final response. `signal` sends C-CANCEL.
   * C-GET: `onStore` takes each C-STORE sub-operation the peer sends meanwhile; the peer gets our
   * C-STORE-RSP once onStore resolved (so a slow taker slows the peer down, nothing piles up here).
   */
  async query(
    field: number,
    model: string,
    transferSyntax: string,
    identifier: Buffer,
    options: {onPending?: (response: DimseResponse) => void; signal?: AbortSignal; moveDestination?: string; onStore?: IncomingStoreHandler} = {},
  ): Promise<DimseResponse> {
    let cancel: (() => void) | undefined
    this.storeHandler = options.onStore
    try {
      return await this.request(
        model,
        transferSyntax,
        (contextId, messageId) => {
          const fields: Array<[number, number | string]> = [
            [CommandTag.affectedSopClassUid, model],
            [CommandTag.commandField, field],
            [CommandTag.messageId, messageId],
            [CommandTag.priority, 0],
            [CommandTag.commandDataSetType, DATASET_FOLLOWS],
          ]
          if (options.moveDestination !== undefined) fields.push([CommandTag.moveDestination, options.moveDestination])
          writePdvs(this.socket, contextId, true, encodeCommand(fields), this.peerMaxPduLength)
          writePdvs(this.socket, contextId, false, identifier, this.peerMaxPduLength)
          cancel = () => {
            const command = encodeCommand([
              [CommandTag.commandField, CommandField.cCancelRq],
              [CommandTag.messageIdBeingRespondedTo, messageId],
              [CommandTag.commandDataSetType, NO_DATASET],
            ])
            if (this.closedError === undefined) writePdvs(this.socket, contextId, true, command, this.peerMaxPduLength)
          }

          if (options.signal?.aborted) cancel()
          else options.signal?.addEventListener('abort', cancel, {once: true})
          return Promise.resolve()
        },
        undefined,
        options.onPending,
      )
    } finally {
      if (cancel !== undefined) options.signal?.removeEventListener('abort', cancel)
      this.storeHandler = undefined
    }
  }

  /** Sends one instance's dataset bytes unchanged and resolves with the peer's status (any status, success or not). */
  async store(instance: StoreInstance): Promise<DimseResponse> {
    const length = datasetSourceLength(instance.dataset)
    if (length % 2 === 1 && !transferSyntaxInfo(instance.transferSyntaxUid)?.deflated) {
      throw new DdrError('INVALID_DICOM', `the dataset of ${instance.sopInstanceUid} has an odd length (${length} bytes) in transfer syntax ${instance.transferSyntaxUid}: DICOM needs even lengths`)
    }

    return this.request(instance.sopClassUid, instance.transferSyntaxUid, async (contextId, messageId) => {
      const fields: Array<[number, number | string]> = [
        [CommandTag.affectedSopClassUid, instance.sopClassUid],
        [CommandTag.commandField, CommandField.cStoreRq],
        [CommandTag.messageId, messageId],
        [CommandTag.priority, instance.priority ?? 0],
        [CommandTag.commandDataSetType, 0x0000],
        [CommandTag.affectedSopInstanceUid, instance.sopInstanceUid],
      ]
      if (instance.moveOriginatorAeTitle) fields.push([CommandTag.moveOriginatorAeTitle, instance.moveOriginatorAeTitle])
      if (instance.moveOriginatorMessageId !== undefined) fields.push([CommandTag.moveOriginatorMessageId, instance.moveOriginatorMessageId])
      writePdvs(this.socket, contextId, true, encodeCommand(fields), this.peerMaxPduLength)
      await this.sendDataset(contextId, instance.dataset)
    }, this.options.storeTimeoutMs === undefined ? undefined : {timeoutMs: this.options.storeTimeoutMs, what: `the C-STORE of ${instance.sopInstanceUid}`})
  }

  /** Releases the association politely (A-RELEASE-RQ/RP); falls back to closing the socket. */
  async release(timeoutMs = 5000): Promise<void> {
    if (this.closedError !== undefined || this.releasing !== undefined) return
    await new Promise<void>((resolve) => {
      this.releasing = {resolve}
      this.socket.write(encodeReleaseRq())
      setTimeout(() => resolve(), timeoutMs).unref()
    })
    this.shutdown(new DdrError('ASSOCIATION_ABORTED', `association with ${this.peer} was released`))
  }

  abort(): void {
    if (this.closedError !== undefined) return
    this.socket.end(encodeAbort(AbortSource.serviceUser, AbortReason.notSpecified))
    this.shutdown(new DdrError('ASSOCIATION_ABORTED', `association with ${this.peer} was aborted by us`))
  }

  private start(): void {
    this.socket.on('data', (chunk: Buffer) => this.onData(chunk))
    this.socket.on('error', (error) => this.shutdown(new DdrError('BACKEND_UNREACHABLE', `connection to ${this.peer} failed: ${error.message}`, {cause: error})))
    this.socket.on('close', () => this.shutdown(new DdrError('BACKEND_UNREACHABLE', `connection to ${this.peer} closed`)))
  }

  /**
   * Sends one request and waits for its answer. A failure once the request is under way (the peer
   * aborts, closes, stalls or exceeds `deadline`) is a DdrError marked `duringRequest`: the
   * association worked, something about this request did not (callers tell that apart from a
   * peer they cannot reach at all).
   */
  private async request(
    abstractSyntax: string,
    transferSyntax: string,
    send: (contextId: number, messageId: number) => Promise<void>,
    deadline?: {timeoutMs: number; what: string},
    onPending?: (response: DimseResponse) => void,
  ): Promise<DimseResponse> {
    if (this.closedError !== undefined) throw this.closedError
    if (this.busy) throw new Error(`association with ${this.peer} is busy: one request at a time`)
    const contextId = this.accepted.get(key(abstractSyntax, transferSyntax))
    if (contextId === undefined) {
      throw new DdrError('BACKEND_REFUSED', `${this.peer} did not accept ${abstractSyntax} in transfer syntax ${transferSyntax}`)
    }

    this.busy = true
    this.messageId = (this.messageId % 0xffff) + 1
    const messageId = this.messageId
    const response = new Promise<DimseResponse>((resolve, reject) => {
      this.pending = {messageId, resolve, reject, onPending}
    })
    // Rejected by shutdown() while send() may still be running: observed below, never unhandled.
    response.catch(() => {})
    this.lastActivity = Date.now()
    this.armTimer()
    if (deadline !== undefined) this.armDeadline(deadline, messageId)

    try {
      await send(contextId, messageId)
      return await response
    } catch (error) {
      // The peer is left in the middle of a message: the association cannot carry another one.
      if (this.closedError === undefined) this.abort()
      if (!(error instanceof DdrError)) throw new DdrError('BACKEND_UNREACHABLE', `${this.peer}: ${(error as Error).message}`, {cause: error, duringRequest: true})
      if (!INTERRUPTION_CODES.has(error.code)) throw error
      throw new DdrError(error.code, error.message, {cause: error, hint: error.hint, duringRequest: true})
    } finally {
      this.busy = false
      this.pending = undefined
      if (this.deadline !== undefined) this.deadline.messageId = -1
    }
  }

  /** The no-progress check: one interval for the association's life (made at its first request), idle while no request is open. */
  private armTimer(): void {
    if (this.timer !== undefined) return
    const timeoutMs = this.options.requestTimeoutMs ?? 60_000
    this.timer = setInterval(() => {
      // An incoming C-STORE being taken (a C-GET's sub-operation waiting for its destination) is progress.
      if (this.storesInHand > 0) this.lastActivity = Date.now()
      if (this.busy && Date.now() - this.lastActivity > timeoutMs) {
        this.abort()
        this.closedError = new DdrError('TIMEOUT', `${this.peer} made no progress for ${timeoutMs} ms`)
        this.pending?.reject(this.closedError)
      }
    }, Math.min(1000, timeoutMs))
    this.timer.unref()
  }

  /**
   * Aborts the request `messageId` if it is still open after `deadline.timeoutMs`. One timer per
   * association, re-armed for each request (refresh, no new timer): a C-STORE is sent per
   * instance, and timers made and cleared per request cost more than the rest of its bookkeeping.
   */
  private armDeadline(deadline: {timeoutMs: number; what: string}, messageId: number): void {
    const current = this.deadline
    if (current !== undefined && current.timeoutMs === deadline.timeoutMs) {
      current.what = deadline.what
      current.messageId = messageId
      current.timer.refresh()
      return
    }

    if (current !== undefined) clearTimeout(current.timer)
    const state = {timeoutMs: deadline.timeoutMs, what: deadline.what, messageId, timer: undefined as unknown as NodeJS.Timeout}
    state.timer = setTimeout(() => {
      // Fired after its request ended (messageId -1) or for an earlier one: nothing to do.
      if (!this.busy || state.messageId < 0 || this.pending?.messageId !== state.messageId) return
      const error = new DdrError('TIMEOUT', `${this.peer} did not finish ${state.what} within ${state.timeoutMs} ms`)
      this.abort()
      this.closedError = error
      this.pending?.reject(error)
    }, deadline.timeoutMs)
    state.timer.unref()
    this.deadline = state
  }

  private async sendDataset(contextId: number, source: DatasetSource): Promise<void> {
    // PDV fragments must have even lengths (PS3.8 E.1). A deflated stream may end on an odd byte
    // and gets the pad byte PS3.5 A.5 asks for; any other odd dataset is malformed and is not sent
    // (the listener refuses such instances, so only a file given to `ddr send` can be one).
    const inMemory = datasetBuffers(source)
    if (inMemory !== undefined) {
      // Written as they are (fragments as they arrived included), no copy.
      const parts = datasetSourceLength(source) % 2 === 0 ? inMemory : [...inMemory, PAD]
      if (!writePdvList(this.socket, contextId, false, parts, this.peerMaxPduLength)) await this.drain()
      return
    }

    if (!('path' in source)) throw new Error('unreachable: a dataset in memory was sent above')

    const fragment = maxFragment(this.peerMaxPduLength)
    const chunkSize = Math.max(fragment, Math.floor(READ_CHUNK / fragment) * fragment)
    const file = await open(source.path, 'r')
    try {
      let sent = 0
      if (source.length === 0) writePdvs(this.socket, contextId, false, Buffer.alloc(0), this.peerMaxPduLength)
      while (sent < source.length) {
        if (this.closedError !== undefined) throw this.closedError
        const length = Math.min(chunkSize, source.length - sent)
        const last = sent + length === source.length
        const pad = last && source.length % 2 === 1 ? 1 : 0
        // Filled by the read (checked below): no need to zero it first; the pad byte is PS3.5's 0x00.
        const buffer = Buffer.allocUnsafe(length + pad)
        if (pad === 1) buffer[length] = 0
        const {bytesRead} = await file.read(buffer, 0, length, source.offset + sent)
        if (bytesRead !== length) throw new DdrError('INVALID_DICOM', `${source.path} is shorter than expected (read ${sent + bytesRead} of ${source.length} dataset bytes)`)
        sent += length
        this.lastActivity = Date.now()
        if (!writePdvs(this.socket, contextId, false, buffer, this.peerMaxPduLength, last)) await this.drain()
      }
    } finally {
      await file.close()
    }
  }

  private drain(): Promise<void> {
    return new Promise((resolve) => {
      const done = () => {
        this.socket.off('drain', done)
        this.socket.off('close', done)
        this.lastActivity = Date.now()
        resolve()
      }

      this.socket.once('drain', done)
      this.socket.once('close', done)
    })
  }

  private onData(chunk: Buffer): void {
    this.lastActivity = Date.now()
    this.reader.push(chunk)
    try {
      for (let pdu = this.reader.next(); pdu !== undefined; pdu = this.reader.next()) this.onPdu(pdu.type, pdu.body)
    } catch (error) {
      this.socket.end(encodeAbort(AbortSource.serviceUser, error instanceof PduError ? error.abortReason : AbortReason.notSpecified))
      this.shutdown(new DdrError('PROTOCOL_ERROR', `${this.peer} sent a malformed PDU: ${(error as Error).message}`))
    }
  }

  private onPdu(type: number, body: Buffer): void {
    switch (type) {
      case PduType.pData: {
        for (const pdv of decodePData(body)) {
          if (!pdv.isCommand && this.incoming !== undefined) {
            if (pdv.contextId !== this.incoming.contextId) throw new PduError(`dataset fragment on presentation context ${pdv.contextId}, the C-STORE was on ${this.incoming.contextId}`, AbortReason.unexpectedPdu)
            // Views into the received PDUs (fresh buffers from the socket), copied once when whole;
            // a dataset that came in one PDV (the usual case up to our maximum PDU length) is that view.
            this.incoming.parts.push(pdv.data)
            if (!pdv.isLast) continue
            const incoming = this.incoming
            this.incoming = undefined
            this.takeStore(incoming.command, incoming.contextId, incoming.parts.length === 1 ? incoming.parts[0] : Buffer.concat(incoming.parts))
            continue
          }

          if (!pdv.isCommand) {
            if (this.responseCommand === undefined) throw new PduError('dataset fragment without a response command', AbortReason.unexpectedPdu)
            this.datasetParts.push(Buffer.from(pdv.data))
            if (!pdv.isLast) continue
            const command = this.responseCommand
            const dataset = Buffer.concat(this.datasetParts)
            this.responseCommand = undefined
            this.datasetParts = []
            this.onResponse(command, dataset)
            continue
          }

          this.commandParts.push(pdv.data)
          if (!pdv.isLast) continue
          const command = decodeCommand(Buffer.concat(this.commandParts))
          this.commandParts = []
          if (commandNumber(command, CommandTag.commandField) === CommandField.cStoreRq) {
            if (commandNumber(command, CommandTag.commandDataSetType) === NO_DATASET) this.takeStore(command, pdv.contextId, undefined)
            else this.incoming = {command, contextId: pdv.contextId, parts: []}
            continue
          }

          if (commandNumber(command, CommandTag.commandDataSetType) !== NO_DATASET) this.responseCommand = command
          else this.onResponse(command, undefined)
        }

        break
      }

      case PduType.releaseRp: {
        this.releasing?.resolve()
        this.socket.end()
        break
      }

      case PduType.releaseRq: {
        // The peer wants to end it: we have nothing open (or it is breaking the protocol); answer and close.
        this.socket.end(Buffer.concat([Buffer.from([PduType.releaseRp, 0, 0, 0, 0, 4]), Buffer.alloc(4)]))
        this.shutdown(new DdrError('ASSOCIATION_ABORTED', `${this.peer} released the association`))
        break
      }

      case PduType.abort: {
        const {source, reason} = decodeAbort(body)
        this.socket.destroy()
        this.shutdown(new DdrError('ASSOCIATION_ABORTED', `${this.peer} aborted the association (source ${source}, reason ${reason})`))
        break
      }

      default: {
        throw new PduError(`unexpected PDU type 0x${type.toString(16)}`, AbortReason.unexpectedPdu)
      }
    }
  }

  /** One whole incoming C-STORE: handed to the running C-GET's taker, answered in arrival order. */
  private takeStore(command: CommandSet, contextId: number, dataset: Buffer | undefined): void {
    const messageId = commandNumber(command, CommandTag.messageId) ?? 0
    const context = this.acceptedById.get(contextId)
    const sopClassUid = commandString(command, CommandTag.affectedSopClassUid) ?? context?.abstractSyntax ?? ''
    const sopInstanceUid = commandString(command, CommandTag.affectedSopInstanceUid) ?? ''
    const handler = this.storeHandler
    const answer = async (): Promise<{status: number; errorComment?: string}> => {
      if (context === undefined) return {status: Status.cannotUnderstand, errorComment: `presentation context ${contextId} was not accepted`}
      if (dataset === undefined) return {status: Status.cannotUnderstand, errorComment: 'a C-STORE without a dataset'}
      if (handler === undefined) return {status: Status.cannotUnderstand, errorComment: 'no C-GET of ours is under way'}
      try {
        return await handler({messageId, sopClassUid, sopInstanceUid, transferSyntaxUid: context.transferSyntax, dataset})
      } catch (error) {
        return {status: Status.cannotUnderstand, errorComment: (error as Error).message}
      }
    }

    this.storesInHand++
    const outcome = answer()
    this.storeAnswers = this.storeAnswers.then(async () => {
      const {status, errorComment} = await outcome
      this.storesInHand--
      this.lastActivity = Date.now()
      if (this.closedError !== undefined) return
      const fields: Array<[number, number | string]> = [
        [CommandTag.affectedSopClassUid, sopClassUid],
        [CommandTag.commandField, CommandField.cStoreRsp],
        [CommandTag.messageIdBeingRespondedTo, messageId],
        [CommandTag.commandDataSetType, NO_DATASET],
        [CommandTag.status, status],
      ]
      if (sopInstanceUid !== '') fields.push([CommandTag.affectedSopInstanceUid, sopInstanceUid])
      if (errorComment && status !== 0) fields.push([CommandTag.errorComment, errorComment.slice(0, 64)])
      writePdvs(this.socket, contextId, true, encodeCommand(fields), this.peerMaxPduLength)
    }).catch(() => {})
  }

  private onResponse(command: CommandSet, dataset: Buffer | undefined): void {
    const respondedTo = commandNumber(command, CommandTag.messageIdBeingRespondedTo)
    if (this.pending === undefined || respondedTo !== this.pending.messageId) return
    const response: DimseResponse = {status: commandNumber(command, CommandTag.status) ?? 0xffff, errorComment: commandString(command, CommandTag.errorComment), command, dataset}
    if (isPending(response.status) && this.pending.onPending !== undefined) this.pending.onPending(response)
    else if (!isPending(response.status)) this.pending.resolve(response)
  }

  private shutdown(error: Error): void {
    if (this.closedError !== undefined) return
    this.closedError = error
    clearInterval(this.timer)
    if (this.deadline !== undefined) clearTimeout(this.deadline.timer)
    this.pending?.reject(error)
    this.pending = undefined
    this.releasing?.resolve()
    if (!this.socket.destroyed) this.socket.destroy()
    this.emit('close', error)
  }
}
