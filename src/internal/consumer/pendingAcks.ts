/**
 * The acks of a batch (see `Dedup.Batch`). While a worker runs a batch, the
 * settle stage does not ack: it adds the ack here, and the worker sends them
 * all once the batch's transaction has committed, or gives the messages back
 * if it did not.
 *
 * @internal
 */
import type { JsMsg } from "@nats-io/jetstream"
import { Effect, FiberRef, GlobalValue } from "effect"

/** The acks of one batch, in the order its messages were settled. */
export class PendingAcks {
  /** The messages whose ack waits for the commit. */
  readonly msgs: Array<JsMsg> = []
  private readonly acks: Array<Effect.Effect<void>> = []
  /** Some ack waits for the server's reply (`ack: "confirm"`): send them concurrently. */
  private confirm = false

  add(msg: JsMsg, ack: Effect.Effect<void>, confirm: boolean): void {
    this.msgs.push(msg)
    this.acks.push(ack)
    this.confirm ||= confirm
  }

  /** Send the acks (after the commit). */
  readonly send: Effect.Effect<void> = Effect.suspend(() =>
    Effect.all(this.acks, { discard: true, concurrency: this.confirm ? "unbounded" : 1 })
  )
}

/** The batch the current fiber settles into; `undefined` outside a batch (ack at once). */
export const currentPendingAcks: FiberRef.FiberRef<PendingAcks | undefined> = GlobalValue.globalValue(
  Symbol.for("effect-nats/internal/PendingAcks"),
  () => FiberRef.unsafeMake<PendingAcks | undefined>(undefined)
)
