import { Effect, type RateLimiter } from "effect"
import * as Handler from "../../Handler.js"

/** `Handler.rateLimit`: each attempt waits for the limiter (a value, or an effect such as a service's Tag). */
export const rateLimit = <R2 = never>(
  limiter: RateLimiter.RateLimiter | Effect.Effect<RateLimiter.RateLimiter, never, R2>
) =>
<E, R>(self: Handler.Handler<E, R>): Handler.Handler<E, R | R2> =>
  self.pipe(Handler.around((run) =>
    Effect.isEffect(limiter)
      ? Effect.flatMap(limiter, (limit) => limit(run))
      : (limiter as RateLimiter.RateLimiter)(run)
  ))
