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
    if (this.waiting.length > 0 && !this.wakeScheduled) {
      this.wakeScheduled = true
      queueMicrotask(this.wake)
    }
  }

  private readonly wake = (): void => {
    this.wakeScheduled = false
    if (this.waiting.length === 0) return
    const chunk = this.poll()
    if (chunk === undefined && !this.closed) return
    this.waiting.shift()!(chunk)
    // the next waiter, once this one had its turn
    if (this.items.length > this.head || this.closed) this.scheduleWake()
  }
}
