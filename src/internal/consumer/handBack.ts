/**
 * The messages a stopping consumer gives back to the server.
 *
 * When the consumer stops, no message is started any more; the messages not
 * started are handed back (nak) once the pull is closed (a nak while it is
 * open would have the server deliver them here again), newest first:
 * nats-server 2.9 delivers the last delivered message twice when it is
 * nak'ed after others.
 *
 * @internal
 */
import type { JsMsg } from "@nats-io/jetstream"

const nakNewestFirst = (msgs: ReadonlyArray<JsMsg>) => {
  const sorted = [...msgs].sort((a, b) => b.info.deliverySequence - a.info.deliverySequence)
  for (const msg of sorted) msg.nak()
}

/** Whether the consumer is stopping, and what it holds to give back once its pull is closed. */
export class HandBack {
  /** No message is started any more. */
  stopping = false
  private pullClosed = false
  private readonly held: Array<JsMsg> = []

  /** Give messages back: at once if the pull is closed, else when it closes. */
  giveBack(msgs: ReadonlyArray<JsMsg>): void {
    if (this.pullClosed) nakNewestFirst(msgs)
    else this.held.push(...msgs)
  }

  /** The pull is closed: give back what was held. */
  closePull(): void {
    this.pullClosed = true
    nakNewestFirst(this.held.splice(0))
  }
}
