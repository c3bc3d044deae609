import { Effect, type Schedule } from "effect"

interface RetryOptions<E, Out, R2> {
  readonly schedule: Schedule.Schedule<Out, E, R2>
  readonly while: (error: E) => boolean
  readonly onRetry?: Effect.Effect<void> | undefined
}

/**
 * What `Effect.retry(self, { schedule, while })` does after the first run of
 * `self` failed with `first`: the schedule sees `first` as it would have, so
 * delays and counts are the same. `onRetry` runs before each re-run. The hot
 * paths run their first attempt as it is and build the retry machinery only
 * after a failure.
 */
export const retryAfter = <A, E, R, Out, R2>(
  first: E,
  self: Effect.Effect<A, E, R>,
  options: RetryOptions<E, Out, R2>
): Effect.Effect<A, E, R | R2> => {
  if (!options.while(first)) return Effect.fail(first)
  let replayed = false
  const again = options.onRetry === undefined ? self : Effect.zipRight(options.onRetry, self)
  const attempt = Effect.suspend(() => {
    if (replayed) return again
    replayed = true
    return Effect.fail(first)
  })
  return Effect.retry(attempt, { schedule: options.schedule, while: options.while })
}
