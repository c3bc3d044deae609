import { Effect, type Schedule } from "effect"

/**
 * `Effect.retry(self, { schedule, while })` with a fast path: the first
 * attempt runs as it is, and the retry machinery is only built after it
 * fails. The schedule then sees that first failure as `Effect.retry` would,
 * so delays and counts are the same. `onRetry` runs before each re-run.
 */
export const retryOnFailure = <A, E, R, Out, R2>(
  self: Effect.Effect<A, E, R>,
  options: {
    readonly schedule: Schedule.Schedule<Out, E, R2>
    readonly while: (error: E) => boolean
    readonly onRetry?: Effect.Effect<void> | undefined
  }
): Effect.Effect<A, E, R | R2> =>
  Effect.catchAll(self, (first) => {
    if (!options.while(first)) return Effect.fail(first)
    let replayed = false
    const again = options.onRetry === undefined ? self : Effect.zipRight(options.onRetry, self)
    const attempt = Effect.suspend(() => {
      if (replayed) return again
      replayed = true
      return Effect.fail(first)
    })
    return Effect.retry(attempt, { schedule: options.schedule, while: options.while })
  })
