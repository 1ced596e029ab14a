import {DdrError} from '../errors.js'
import {VERIFICATION_SOP_CLASS} from '../dimse/pdu.js'
import {type ConnectOptions, type ContextRequest, IMPLICIT_VR_LITTLE_ENDIAN, ScuAssociation} from '../dimse/scu.js'
import {sopClassName, transferSyntaxInfo} from '../dicom/uids.js'
import {ContextPlan, contextKey} from './context-plan.js'

export interface PoolOptions extends Omit<ConnectOptions, 'contexts'> {
  /** Most associations open at once towards this peer. */
  maxAssociations: number
  /** Idle associations are released after this long (below Orthanc's DicomScpTimeout of 30 s). */
  idleMs: number
}

/** Every association proposes Verification (ScuAssociation adds it): it is never part of the plan. */
const VERIFICATION_KEY = contextKey({abstractSyntax: VERIFICATION_SOP_CLASS, transferSyntax: IMPLICIT_VR_LITTLE_ENDIAN})

/** The refusal of an instance whose SOP class and transfer syntax the peer did not accept, in names a person reads. */
function notAccepted(peer: string, context: ContextRequest): DdrError {
  const syntax = transferSyntaxInfo(context.transferSyntax)?.name ?? context.transferSyntax
  return new DdrError('BACKEND_REFUSED', `${peer} did not accept ${sopClassName(context.abstractSyntax) ?? `SOP class ${context.abstractSyntax}`} in ${syntax}`)
}

/**
 * Reused associations towards one peer: the one place ddr decides which presentation contexts
 * to propose (the router's DIMSE backends and `ddr send` both go through it). Each association
 * proposes one context per (SOP class, transfer syntax) pair seen so far, or made known up front
 * with expect() (see ContextPlan), so the bytes go out in the syntax they came in. A pair an open
 * association proposed and the peer did not accept is refused at once, without asking again.
 */
export class AssociationPool {
  private readonly idle: ScuAssociation[] = []
  private readonly idleSince = new Map<ScuAssociation, number>()
  /** Every open association, busy or idle, with the contexts it proposed. */
  private readonly proposed = new Map<ScuAssociation, Set<string>>()
  private open = 0
  private readonly waiters: Array<() => void> = []
  private readonly plan = new ContextPlan()
  /** The plan group the latest association proposed (what a Verification-only request reuses). */
  private lastGroup = 0
  private closed = false
  private readonly sweeper: NodeJS.Timeout

  constructor(private readonly options: PoolOptions) {
    this.sweeper = setInterval(() => this.sweep(), Math.max(250, Math.floor(options.idleMs / 2)))
    this.sweeper.unref()
  }

  get size(): number {
    return this.open
  }

  /** Makes pairs known before their first instance, so the first association already proposes them all. */
  expect(contexts: readonly ContextRequest[]): void {
    for (const context of contexts) if (contextKey(context) !== VERIFICATION_KEY) this.plan.add(context)
  }

  /**
   * Runs `work` on an association that accepted `context`, returning the association to the pool
   * after. With an idle association at hand, `work` starts before this returns (a C-STORE's bytes
   * are on their way while the caller reads the next file).
   */
  with<T>(context: ContextRequest, work: (association: ScuAssociation) => Promise<T>): Promise<T> {
    const ready = this.closed ? undefined : this.takeIdle(context)
    if (ready !== undefined) return this.run(ready, work)
    return this.acquire(context).then((association) => this.run(association, work))
  }

  /** Releases every idle association now (busy ones go on): a peer that serves one association at a time can then take the next. */
  async releaseIdle(): Promise<void> {
    const all = this.idle.splice(0)
    for (const association of all) this.idleSince.delete(association)
    await Promise.all(all.map((association) => association.release()))
  }

  async close(): Promise<void> {
    this.closed = true
    clearInterval(this.sweeper)
    await this.releaseIdle()
  }

  private run<T>(association: ScuAssociation, work: (association: ScuAssociation) => Promise<T>): Promise<T> {
    let result: Promise<T>
    try {
      result = work(association)
    } catch (error) {
      result = Promise.reject(error)
    }

    return result.finally(() => this.releaseToPool(association))
  }

  private takeIdle(context: ContextRequest): ScuAssociation | undefined {
    const index = this.idle.findIndex((a) => a.isIdle && a.supports(context.abstractSyntax, context.transferSyntax))
    if (index < 0) return undefined
    const [association] = this.idle.splice(index, 1)
    this.idleSince.delete(association)
    return association
  }

  /** The refusal, when an open association proposed `context` and the peer did not accept it (asking again would not help). */
  private refusedBy(context: ContextRequest): DdrError | undefined {
    const key = contextKey(context)
    for (const [association, keys] of this.proposed) {
      if (keys.has(key) && association.isOpen && !association.supports(context.abstractSyntax, context.transferSyntax)) return notAccepted(association.peer, context)
    }

    return undefined
  }

  private async acquire(context: ContextRequest): Promise<ScuAssociation> {
    if (this.closed) throw new DdrError('BACKEND_UNREACHABLE', `association pool for ${this.options.calledAeTitle} is closed`)
    if (contextKey(context) !== VERIFICATION_KEY) this.plan.add(context)
    for (;;) {
      const ready = this.takeIdle(context)
      if (ready !== undefined) return ready
      const refusal = this.refusedBy(context)
      if (refusal !== undefined) throw refusal
      if (this.idle.length > 0) {
        // No idle association speaks this syntax. The new one proposes every context of its
        // group, so the idle ones are redundant: release them first, which also frees the slot of
        // an SCP that serves one association at a time.
        await this.releaseIdle()
      }

      if (this.open < this.options.maxAssociations) return this.connect(context)
      await new Promise<void>((resolve) => this.waiters.push(resolve))
    }
  }

  private async connect(context: ContextRequest): Promise<ScuAssociation> {
    this.open++
    const group = contextKey(context) === VERIFICATION_KEY ? this.lastGroup : this.plan.groupOf(context)!
    const contexts = this.plan.group(group)
    let association: ScuAssociation
    try {
      association = await ScuAssociation.connect({...this.options, contexts})
    } catch (error) {
      this.open--
      this.wakeOne()
      throw error
    }

    this.lastGroup = group
    this.proposed.set(association, new Set([VERIFICATION_KEY, ...contexts.map((c) => contextKey(c))]))
    association.once('close', () => {
      this.open--
      const index = this.idle.indexOf(association)
      if (index >= 0) this.idle.splice(index, 1)
      this.idleSince.delete(association)
      this.proposed.delete(association)
      this.wakeOne()
    })
    if (!association.supports(context.abstractSyntax, context.transferSyntax)) {
      this.releaseToPool(association)
      throw notAccepted(association.peer, context)
    }

    return association
  }

  private releaseToPool(association: ScuAssociation): void {
    if (association.isOpen && !this.closed) {
      this.idle.push(association)
      this.idleSince.set(association, Date.now())
    } else if (association.isOpen) {
      void association.release()
    }

    this.wakeOne()
  }

  private wakeOne(): void {
    this.waiters.shift()?.()
  }

  private sweep(): void {
    const now = Date.now()
    for (const association of [...this.idle]) {
      if (now - (this.idleSince.get(association) ?? now) >= this.options.idleMs) {
        this.idle.splice(this.idle.indexOf(association), 1)
        this.idleSince.delete(association)
        void association.release()
      }
    }
  }
}
