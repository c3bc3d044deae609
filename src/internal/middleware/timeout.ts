import { Duration, Effect } from "effect"
import * as Handler from "../../Handler.js"

/** `Handler.timeout`: each attempt bounded; past it, interrupted and failed with `HandlerTimeout`. */
export const timeout = (duration: Duration.DurationInput) => {
  const limit = Duration.decode(duration)
  const onTimeout = () => new Handler.HandlerTimeout({ message: `handler timed out after ${Duration.format(limit)}` })
  return <E, R>(self: Handler.Handler<E, R>): Handler.Handler<E | Handler.HandlerTimeout, R> =>
    self.pipe(Handler.around((run) => Effect.timeoutFail(run, { duration: limit, onTimeout })))
}
