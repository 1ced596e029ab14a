import {DdrError} from '../errors.js'
import {type ConnectOptions, type ContextRequest, ScuAssociation} from '../dimse/scu.js'

export interface PoolOptions extends Omit<ConnectOptions, 'contexts'> {
  /** Most associations open at once towards this peer. */
  maxAssociations: number
  /** Idle associations are released after this long (below Orthanc's DicomScpTimeout of 30 s). */
  idleMs: number
}

const MAX_CONTEXTS = 127

function contextKey(context: ContextRequest): string {
  return `${context.abstractSyntax}|${context.transferSyntax}`
}

/**
 * Reused associations towards one peer. Each association proposes every (SOP class, transfer
 * syntax) pair seen so far, one context per pair, so the bytes go out in the syntax they came in.
 */
export class AssociationPool {
  private readonly idle: ScuAssociation[] = []
  private readonly idleSince = new Map<ScuAssociation, number>()
  private open = 0
  private readonly waiters: Array<() => void> = []
  private readonly known = new Map<string, ContextRequest>()
  private closed = false
  private readonly sweeper: NodeJS.Timeout

  constructor(private readonly options: PoolOptions) {
    this.sweeper = setInterval(() => this.sweep(), Math.max(250, Math.floor(options.idleMs / 2)))
    this.sweeper.unref()
  }

  get size(): number {
    return this.open
  }

  /** Runs `work` on an association that accepted `context`, returning the association to the pool after. */
  async with<T>(context: ContextRequest, work: (association: ScuAssociation) => Promise<T>): Promise<T> {
    const association = await this.acquire(context)
    try {
      return await work(association)
    } finally {
      this.releaseToPool(association)
    }
  }

  async close(): Promise<void> {
    this.closed = true
    clearInterval(this.sweeper)
    const all = this.idle.splice(0)
    await Promise.all(all.map((association) => association.release()))
  }

  private async acquire(context: ContextRequest): Promise<ScuAssociation> {
    if (this.closed) throw new DdrError('BACKEND_UNREACHABLE', `association pool for ${this.options.calledAeTitle} is closed`)
    if (!this.known.has(contextKey(context)) && this.known.size < MAX_CONTEXTS) this.known.set(contextKey(context), context)
    for (;;) {
      const index = this.idle.findIndex((a) => a.isIdle && a.supports(context.abstractSyntax, context.transferSyntax))
      if (index >= 0) {
        const [association] = this.idle.splice(index, 1)
        this.idleSince.delete(association)
        return association
      }

      if (this.idle.length > 0) {
        // No idle association speaks this syntax. The new one proposes every context seen so far,
        // so the idle ones are redundant: release them first, which also frees the slot of an SCP
        // that serves one association at a time.
        for (const stale of this.idle.splice(0)) {
          this.idleSince.delete(stale)
          await stale.release()
        }
      }

      if (this.open < this.options.maxAssociations) return this.connect(context)
      await new Promise<void>((resolve) => this.waiters.push(resolve))
    }
  }

  private async connect(context: ContextRequest): Promise<ScuAssociation> {
    this.open++
    let association: ScuAssociation
    try {
      const contexts = [context, ...[...this.known.values()].filter((c) => contextKey(c) !== contextKey(context))]
      association = await ScuAssociation.connect({...this.options, contexts})
    } catch (error) {
      this.open--
      this.wakeOne()
      throw error
    }

    association.once('close', () => {
      this.open--
      const index = this.idle.indexOf(association)
      if (index >= 0) this.idle.splice(index, 1)
      this.idleSince.delete(association)
      this.wakeOne()
    })
    if (!association.supports(context.abstractSyntax, context.transferSyntax)) {
      this.releaseToPool(association)
      throw new DdrError('BACKEND_REFUSED', `${association.peer} does not accept SOP class ${context.abstractSyntax} in transfer syntax ${context.transferSyntax}`)
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
