import { Effect } from "effect"
import * as Handler from "../../Handler.js"

/** `Handler.withConcurrency`: a semaphore of `n` permits around each attempt. */
export const withConcurrency = (n: number) => <E, R>(self: Handler.Handler<E, R>): Handler.Handler<E, R> => {
  const permits = Effect.unsafeMakeSemaphore(Math.max(1, n)).withPermits(1)
  return self.pipe(Handler.around(permits))
}
