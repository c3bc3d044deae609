import { Effect } from "effect"

type Waiter<A> = (chunk: ReadonlyArray<A> | undefined) => void

/**
 * Items waiting for workers, and workers waiting for items: what a
 * consumer's workers take their messages from.
 *
 * `offer` is synchronous (called from the nats.js callback). A worker takes
 * its share of what is waiting, `ceil(waiting / workers)` (at most
 * `maxChunk`), and takes more as soon as it is done, without waiting, while
 * there are any. Waiting workers are woken one at a time, each in its own
 * microtask: after nats.js has delivered everything one socket read brought,
 * and after the workers already running have yielded. So fast handlers are
 * run by few workers, in long runs (their acks leave in few writes), while
 * handlers that wait (I/O) let the next worker wake up and take its share:
 * no worker holds more than its share of messages others could run.
 */
export class Inbox<A> {
  private items: Array<A> = []
  private head = 0
  private waiting: Array<Waiter<A>> = []
  private waitingReady: Array<(open: boolean) => void> = []
  private wakeScheduled = false
  private closed = false

  constructor(private readonly workers: number, private readonly maxChunk: number) {}

  offer(item: A): void {
    this.items.push(item)
    this.scheduleWake()
  }

  /** Up to one worker's share of the waiting items (at most `max`), or `undefined` when none are waiting. */
  poll(max: number = this.maxChunk): ReadonlyArray<A> | undefined {
    const size = this.items.length - this.head
    if (size === 0 || max < 1) return undefined
    const n = Math.min(max, Math.ceil(size / this.workers))
    const chunk = this.items.slice(this.head, this.head + n)
    this.head += n
    if (this.head === this.items.length) {
      this.items = []
      this.head = 0
    } else if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head)
      this.head = 0
    }
    return chunk
  }

  /** The next chunk, waiting for one if need be; `undefined` once the inbox is closed and empty. */
  readonly take: Effect.Effect<ReadonlyArray<A> | undefined> = Effect.suspend(() => {
    const chunk = this.poll()
    if (chunk !== undefined || this.closed) return Effect.succeed(chunk)
    return Effect.async<ReadonlyArray<A> | undefined>((resume) => {
      const waiter: Waiter<A> = (c) => resume(Effect.succeed(c))
      this.waiting.push(waiter)
      return Effect.sync(() => {
        this.waiting = this.waiting.filter((w) => w !== waiter)
      })
    })
  })

  /**
   * Wait until items are waiting (`true`), or the inbox is closed and empty
   * (`false`), without taking any: for a worker that must be ready before it
   * takes (a batch, once its transaction is open). An offer wakes one such
   * worker per waiting item, so a single item wakes one worker.
   */
  readonly ready: Effect.Effect<boolean> = Effect.suspend(() => {
    if (this.items.length > this.head) return Effect.succeed(true)
    if (this.closed) return Effect.succeed(false)
    return Effect.async<boolean>((resume) => {
      const waiter = (open: boolean) => resume(Effect.succeed(open))
      this.waitingReady.push(waiter)
      return Effect.sync(() => {
        this.waitingReady = this.waitingReady.filter((w) => w !== waiter)
      })
    })
  })

  /** No more offers: the workers take what is left, then get `undefined`. */
  close(): void {
    this.closed = true
    this.scheduleWake()
  }

  /** Remove and return every waiting item. */
  takeAll(): Array<A> {
    const left = this.items.slice(this.head)
    this.items = []
    this.head = 0
    return left
  }

  private scheduleWake(): void {
    if ((this.waiting.length > 0 || this.waitingReady.length > 0) && !this.wakeScheduled) {
      this.wakeScheduled = true
      queueMicrotask(this.wake)
    }
  }

  private readonly wake = (): void => {
    this.wakeScheduled = false
    const size = this.items.length - this.head
    if (this.waitingReady.length > 0 && (size > 0 || this.closed)) {
      const woken = this.closed ? this.waitingReady.splice(0) : this.waitingReady.splice(0, size)
      for (const waiter of woken) waiter(size > 0)
    }
    if (this.waiting.length === 0) return
    const chunk = this.poll()
    if (chunk === undefined && !this.closed) return
    this.waiting.shift()!(chunk)
    // the next waiter, once this one had its turn
    if (this.items.length > this.head || this.closed) this.scheduleWake()
  }
}
