/**
 * A bounded hand-over from producers (fetches from several backends at once) to one consumer (the
 * sink, one instance at a time): a producer's push waits while the channel is full, so fetching
 * runs ahead of sending by at most `capacity` instances.
 */
export class Channel<T> implements AsyncIterable<T> {
  private readonly items: T[] = []
  private ended = false
  private cancelled = false
  private readonly waitingForRoom: Array<() => void> = []
  private waitingForItem?: () => void

  constructor(private readonly capacity: number) {}

  /** Resolves once the item is in (or at once, dropping it, when the consumer went away). */
  async push(item: T): Promise<void> {
    while (!this.cancelled && this.items.length >= this.capacity) await new Promise<void>((resolve) => this.waitingForRoom.push(resolve))
    if (this.cancelled) return
    this.items.push(item)
    this.wakeConsumer()
  }

  /** No more items will come: the consumer takes what is in and stops. */
  end(): void {
    this.ended = true
    this.wakeConsumer()
  }

  /** The consumer stops: what is in is dropped and waiting producers go on (their pushes are dropped too). */
  cancel(): void {
    this.cancelled = true
    this.items.length = 0
    for (const resolve of this.waitingForRoom.splice(0)) resolve()
    this.wakeConsumer()
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<T> {
    for (;;) {
      if (this.cancelled) return
      const item = this.items.shift()
      if (item !== undefined) {
        this.waitingForRoom.shift()?.()
        yield item
        continue
      }

      if (this.ended) return
      await new Promise<void>((resolve) => {
        this.waitingForItem = resolve
      })
    }
  }

  private wakeConsumer(): void {
    const wake = this.waitingForItem
    this.waitingForItem = undefined
    wake?.()
  }
}
