/**
 * The hold of an ordered consumer (`orderBy: "aggregate"`): a message that
 * ends nak'ed (to be redelivered) holds its aggregate, and the later messages
 * of that aggregate are parked until it is handled, dead-lettered or termed.
 * One per worker inbox: every message of an aggregate, its redeliveries too,
 * is routed to the same inbox, so the worker of that inbox owns the hold.
 *
 * Parked messages stay unacknowledged, kept alive with `working()` by the
 * keep-alive loop: they are bounded by the consumer's `max_ack_pending`. A
 * hold whose message does not come back (it went to another instance of the
 * durable) expires after its redelivery delay plus `ack_wait`: its parked
 * messages are then handed back to the server (nak) in order.
 *
 * @internal
 */
import type { JsMsg } from "@nats-io/jetstream"
import { Duration } from "effect"
import type { Outcome } from "../../Middleware.js"

/** The aggregate of a message (its `Aggregate-Id` header), if it has one. */
export const aggregateOf = (msg: JsMsg): string | undefined => msg.headers?.get("Aggregate-Id") || undefined

interface Held {
  /** Stream sequence of the held message; `undefined` once dead-lettered with `onDeadLetter: "block"`. */
  readonly seq: number | undefined
  readonly parked: Array<JsMsg>
  /** When the hold expires if its message has not come back (ms, `performance.now()`). */
  until: number
}

/** The holds of one worker inbox. */
export class AggregateHold {
  private readonly held = new Map<string, Held>()

  constructor(private readonly ackWait: number, private readonly block: boolean) {}

  /** Whether `msg` may run now; if not, it is parked behind its aggregate's held message. */
  admit(msg: JsMsg): boolean {
    if (this.held.size === 0) return true
    const aggregate = aggregateOf(msg)
    const held = aggregate === undefined ? undefined : this.held.get(aggregate)
    if (held === undefined || (held.seq !== undefined && held.seq === msg.seq)) return true
    held.parked.push(msg)
    return false
  }

  /**
   * `msg` ran and ended with `outcome` (`undefined`: settled outside the
   * pipeline, a nak or a dead letter). Returns the parked messages released
   * by it, in stream order, to run next.
   */
  settled(msg: JsMsg, outcome: Outcome | "Nak" | "DeadLetter"): ReadonlyArray<JsMsg> {
    const tag = typeof outcome === "string" ? outcome : outcome._tag
    // nothing held and nothing to hold: the common case, without reading the headers
    if (tag !== "Nak" && this.held.size === 0) return []
    const aggregate = aggregateOf(msg)
    if (aggregate === undefined) return []
    const held = this.held.get(aggregate)
    if (tag === "Nak") {
      const delay = typeof outcome === "string" ? 0 : Duration.toMillis((outcome as { delay: Duration.Duration }).delay)
      const until = performance.now() + delay + this.ackWait
      // a message that is not the head (a batch handing back all it ran) comes back and parks behind it
      if (held === undefined) this.held.set(aggregate, { seq: msg.seq, parked: [], until })
      else if (held.seq === msg.seq) held.until = until
      return []
    }
    if (held === undefined || held.seq !== msg.seq) return []
    if (tag === "DeadLetter" && this.block) {
      this.held.set(aggregate, { seq: undefined, parked: held.parked, until: Infinity })
      return []
    }
    this.held.delete(aggregate)
    return held.parked.sort((a, b) => a.seq - b.seq)
  }

  /**
   * Keep the parked messages alive; hand back those whose hold expired.
   * `stalled`: how long this process could not run since the last call (it
   * postpones every expiry: the held message may have been waiting for us).
   */
  keepAlive(now: number, stalled = 0): void {
    for (const [aggregate, held] of this.held) {
      held.until += stalled
      if (now > held.until) {
        this.held.delete(aggregate)
        for (const msg of held.parked.sort((a, b) => a.seq - b.seq)) msg.nak()
      } else {
        for (const msg of held.parked) msg.working()
      }
    }
  }

  /** Every parked message, removed (the consumer is stopping: they are handed back). */
  takeAll(): Array<JsMsg> {
    const all = [...this.held.values()].flatMap((held) => held.parked.sort((a, b) => a.seq - b.seq))
    this.held.clear()
    return all
  }
}
