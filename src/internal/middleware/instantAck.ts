import { Cause, Effect } from "effect"
import * as Handler from "../../Handler.js"

/** `Handler.instantAck`: ack, then handle; a failure is logged (the message is gone: at-most-once). */
export const instantAck = <E, R>(self: Handler.Handler<E, R>): Handler.Handler<never, R> =>
  self.pipe(Handler.around((run, envelope, delivery) =>
    Effect.zipRight(
      Effect.sync(() => delivery.msg.ack()),
      Effect.catchAllCause(run, (cause) =>
        Cause.isInterruptedOnly(cause)
          ? Effect.failCause(cause as Cause.Cause<never>)
          : Effect.logWarning(`${envelope.type} ${envelope.id} failed after its instant ack: ${Cause.pretty(cause)}`))
    )
  ))
