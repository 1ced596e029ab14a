import type {ContextRequest} from '../dimse/scu.js'

/** Presentation contexts one association may propose besides Verification (PS3.8: 128 in all). */
export const MAX_CONTEXTS_PER_ASSOCIATION = 127

/** One pair's key: "SOP class|transfer syntax". */
export function contextKey(context: ContextRequest): string {
  return `${context.abstractSyntax}|${context.transferSyntax}`
}

/**
 * Which presentation contexts an association proposes: one per (SOP class, transfer syntax) pair,
 * so every dataset goes out in the syntax it has, never transcoded. Pairs are kept in the order
 * they were first seen, in groups of at most MAX_CONTEXTS_PER_ASSOCIATION; an association
 * proposes the whole group of the pair it is opened for. Almost always there is one group, and
 * every association proposes every pair seen so far. A pair that no longer fits starts the next
 * group, so an association never proposes more than PS3.8 allows and none is left out.
 */
export class ContextPlan {
  private readonly groupOfKey = new Map<string, number>()
  private readonly groups: ContextRequest[][] = []

  /** Pairs known so far. */
  get size(): number {
    return this.groupOfKey.size
  }

  /** Adds a pair (once); returns the index of its group. */
  add(context: ContextRequest): number {
    const key = contextKey(context)
    let group = this.groupOfKey.get(key)
    if (group === undefined) {
      if (this.groups.length === 0 || this.groups.at(-1)!.length >= MAX_CONTEXTS_PER_ASSOCIATION) this.groups.push([])
      group = this.groups.length - 1
      this.groups[group].push({abstractSyntax: context.abstractSyntax, transferSyntax: context.transferSyntax})
      this.groupOfKey.set(key, group)
    }

    return group
  }

  /** The group a pair is in (undefined for a pair not added). */
  groupOf(context: ContextRequest): number | undefined {
    return this.groupOfKey.get(contextKey(context))
  }

  /** The contexts of one group, in the order they were added. */
  group(index: number): ContextRequest[] {
    return [...(this.groups[index] ?? [])]
  }

  /** Every group, in order: what associations opened one after the other propose. */
  allGroups(): ContextRequest[][] {
    return this.groups.map((group) => [...group])
  }
}
