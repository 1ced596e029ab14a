import type {RoutingPolicy} from '../config/schema.js'
import {rendezvousOrder} from './affinity.js'
import type {BackendState} from './backend-state.js'

/**
 * Orders the healthy backends for a new placement (a new study, or an instance without affinity):
 * the first is the choice, the rest are the failover order.
 */
export class PolicyChooser {
  private roundRobin = 0

  constructor(readonly policy: RoutingPolicy) {}

  order(key: string, candidates: BackendState[]): {order: BackendState[]; why: string} {
    if (candidates.length <= 1) return {order: candidates, why: candidates.length === 1 ? 'only healthy backend' : 'no healthy backend'}
    const hashed = rendezvousOrder(key, candidates)
    switch (this.policy) {
      case 'round-robin': {
        const start = this.roundRobin++ % candidates.length
        const first = candidates[start]
        return {order: [first, ...hashed.filter((b) => b !== first)], why: 'round-robin'}
      }

      case 'weighted': {
        // Smooth weighted round-robin: over time each backend gets its share of weight.
        const total = candidates.reduce((sum, b) => sum + b.weight, 0)
        for (const b of candidates) b.currentWeight += b.weight
        const first = candidates.reduce((best, b) => (b.currentWeight > best.currentWeight ? b : best))
        first.currentWeight -= total
        return {order: [first, ...hashed.filter((b) => b !== first)], why: `weighted (weight ${first.weight} of ${total})`}
      }

      default: {
        // least-loaded: the rendezvous choice (the same in every router process) while it is idle
        // or not clearly busier than the least-loaded backend; storage balance breaks near-ties.
        const preferred = hashed[0]
        if (preferred.inFlight === 0) return {order: hashed, why: 'least-loaded (rendezvous choice is idle)'}
        const best = [...candidates].sort((a, b) => adjustedScore(a, candidates) - adjustedScore(b, candidates))[0]
        if (best === preferred || adjustedScore(preferred, candidates) <= adjustedScore(best, candidates) * 1.5 + 1) {
          return {order: hashed, why: 'least-loaded (rendezvous choice within load margin)'}
        }

        return {order: [best, ...hashed.filter((b) => b !== best)], why: 'least-loaded (rendezvous choice busier)'}
      }
    }
  }
}

/** Load score nudged by how full the backend is compared with the others (Orthanc /statistics). */
export function adjustedScore(backend: BackendState, all: BackendState[]): number {
  const perWeight = all.filter((b) => b.storedInstances !== undefined && b.weight > 0).map((b) => b.storedInstances! / b.weight)
  if (backend.storedInstances === undefined || perWeight.length < 2) return backend.loadScore
  const mean = perWeight.reduce((s, v) => s + v, 0) / perWeight.length
  if (mean <= 0) return backend.loadScore
  const imbalance = Math.max(-1, Math.min(1, (backend.storedInstances / Math.max(backend.weight, 1e-6) - mean) / mean))
  return backend.loadScore * (1 + 0.5 * imbalance)
}
