import type {DdrConfig, RoutingRule} from '../config/schema.js'
import type {ReceivedInstance} from '../dicom/received-instance.js'
import {Status} from '../dimse/status.js'
import type {Logger} from '../output/logger.js'
import {AffinityMap, rendezvousOrder} from './affinity.js'
import type {BackendState} from './backend-state.js'
import {PolicyChooser} from './policy.js'
import {type RuleDecision, RuleEngine} from './rules.js'

export interface PlacerOptions {
  policy: DdrConfig['routing']['policy']
  affinity: boolean
  /** File that remembers study → backend across restarts (undefined: memory only). */
  affinityFile?: string
  logger: Logger
  /** Routing rules (first match wins); backends with `mirror: true` get copies whatever the rules. */
  rules?: RoutingRule[]
}

export interface Placement {
  order: BackendState[]
  why: string
  /** The rule that matched, if any. */
  rule?: string
  /** Set when a rule drops the instance: the reason the sender is given. */
  drop?: string
  /** Backends that get a copy once the primary stored it. */
  mirrors?: string[]
}

/** The answer for an instance a rule drops: a permanent refusal (see docs/routing-rules.md). */
export const DROP_STATUS = Status.cannotUnderstand

/**
 * Routing decisions, and nothing else: which backends an instance goes to and in which order
 * (rules, study affinity, policy over the healthy backends), why, and whether a rule drops it.
 * It sends nothing and touches no spool: listen/delivery.ts acts on what it decides.
 */
export class Placer {
  readonly affinity: AffinityMap | undefined
  private readonly chooser: PolicyChooser
  readonly rules: RuleEngine

  constructor(readonly backends: BackendState[], private readonly options: PlacerOptions) {
    this.chooser = new PolicyChooser(options.policy)
    this.affinity = options.affinity ? new AffinityMap(options.affinityFile) : undefined
    this.rules = new RuleEngine(options.rules ?? [], backends.map((b) => b.backend.config))
  }

  /** What the rules say about an instance: its rule, backend group, drop reason and mirrors. */
  decide(instance: Parameters<RuleEngine['decide']>[0]): RuleDecision {
    return this.rules.decide(instance)
  }

  /**
   * Why a rule drops this instance, or undefined. For the receive path: in store-and-forward mode
   * the listener can refuse a dropped instance before acknowledging it (otherwise it is
   * acknowledged and then goes to dead-letter with this reason, see listen/delivery.ts).
   */
  dropReason(instance: Parameters<RuleEngine['decide']>[0]): string | undefined {
    return this.rules.empty ? undefined : this.rules.decide(instance).drop
  }

  /**
   * Where an instance goes, and in which order the others are tried; sends nothing. With `commit`,
   * a new study's home is remembered at once, so the instances of a study that arrive while its
   * first one is still in flight follow it instead of being placed again.
   */
  place(instance: Parameters<RuleEngine['decide']>[0], commit = false): Placement {
    if (this.rules.empty) return this.placeAmong(this.backends, instance, commit)
    const decision = this.rules.decide(instance)
    const group = decision.backends === undefined ? undefined : new Set(decision.backends)
    const candidates = this.backends.filter((b) => !b.backend.config.mirror && (group === undefined || group.has(b.name)))
    const placement = this.placeAmong(candidates, instance, commit && decision.drop === undefined)
    const why = decision.rule === undefined ? placement.why : `rule ${decision.rule}, ${placement.why}`
    if (decision.drop !== undefined) return {...placement, why: `rule ${decision.rule} drops it: ${decision.drop}`, rule: decision.rule, drop: decision.drop, mirrors: []}
    return {...placement, why, rule: decision.rule, mirrors: decision.mirrors}
  }

  private placeAmong(backends: BackendState[], instance: Pick<ReceivedInstance, 'studyInstanceUid' | 'sopInstanceUid'>, commit: boolean): Placement {
    const healthy = backends.filter((b) => b.healthy)
    const study = instance.studyInstanceUid
    if (this.affinity !== undefined && study) {
      const remembered = this.affinity.get(study)
      const home = healthy.find((b) => b.name === remembered)
      if (home !== undefined) {
        const {order} = this.chooser.order(study, healthy.filter((b) => b !== home))
        return {order: [home, ...order], why: 'study affinity'}
      }

      const placed = this.chooser.order(study, healthy)
      const why = remembered === undefined ? `new study, ${placed.why}` : `study's backend ${remembered} is ${backends.some((b) => b.name === remembered) ? 'down' : 'not in this rule\'s group'}, ${placed.why}`
      if (commit && placed.order.length > 0) this.affinity.set(study, placed.order[0].name)
      return {order: placed.order, why}
    }

    return this.chooser.order(instance.sopInstanceUid, healthy)
  }

  /** Logs the inputs of a placement decision (debug mode only). */
  explain(instance: ReceivedInstance, placement: Placement): void {
    const log = this.options.logger
    if (!log.debugEnabled) return
    log.debug('decision', {
      sop: instance.sopInstanceUid,
      study: instance.studyInstanceUid,
      why: placement.why,
      candidates: placement.order.map((b) => `${b.name}:${b.loadScore.toFixed(2)}`).join(',') || 'none',
      loads: this.backends.map((b) => `${b.name}(${b.health},inflight=${b.inFlight},lat=${b.latencyMs.toFixed(1)}ms,stored=${b.storedInstances ?? '?'})`).join(' '),
    })
  }

  /** Remembers where a study's instances went (study affinity), once one of them is stored there. */
  remember(studyInstanceUid: string | undefined, backend: string): void {
    if (studyInstanceUid && this.affinity !== undefined) this.affinity.set(studyInstanceUid, backend)
  }

  /**
   * What this router proposes as a new study's home when routers share a ledger (ledger/cluster.ts
   * StudyClaims): `preferred`, the load policy's choice, is what it claims; `rendezvous`, which
   * every router that sees the same healthy backends computes alike, is what it uses while the
   * claim cannot be confirmed (two routers that each used their own load choice would split the
   * study). Undefined when a rule drops the instance or no backend can take it.
   */
  claimProposal(instance: Parameters<RuleEngine['decide']>[0] & {studyInstanceUid: string}): {preferred: string; rendezvous: string} | undefined {
    const placement = this.place(instance, false)
    if (placement.drop !== undefined || placement.order.length === 0) return undefined
    const preferred = placement.order[0]
    return {preferred: preferred.name, rendezvous: (rendezvousOrder(instance.studyInstanceUid, placement.order)[0] ?? preferred).name}
  }

  /**
   * Whether a study's home (its study affinity) went down less than CLAIMED_HOME_GRACE_MS ago.
   * With a shared ledger its instances wait for it rather than fail over at once: routers see a
   * backend go down and come back at slightly different moments, and one that failed over while
   * the others did not would split the study. After the grace they fail over as on one router.
   */
  homeBrieflyDown(studyInstanceUid: string, now = Date.now()): boolean {
    const home = this.affinity?.get(studyInstanceUid)
    const state = home === undefined ? undefined : this.backends.find((b) => b.name === home)
    return state !== undefined && !state.healthy && now - state.lastChange < CLAIMED_HOME_GRACE_MS
  }
}

/** How long an instance of a claimed study waits for its home to come back before it fails over (Placer.homeBrieflyDown). */
export const CLAIMED_HOME_GRACE_MS = 30_000
