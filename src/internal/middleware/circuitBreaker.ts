import { Cause, Clock, Duration, Effect, Exit, Metric, Predicate } from "effect"
import * as Handler from "../../Handler.js"
import * as Metrics from "../../Metrics.js"

/** The gauge's values. */
const Closed = 0
const HalfOpen = 1
const Open = 2

/**
 * `Handler.circuitBreaker`: one circuit per call, shared by the handlers it
 * is applied to. Time is the Clock's (`TestClock` in tests).
 */
export const circuitBreaker = (options: Handler.CircuitBreakerOptions) => {
  const window = Duration.toMillis(options.window)
  const resetAfter = Duration.toMillis(options.resetAfter)
  const isFailure = options.isFailure ?? (() => true)
  const gauge = Metric.tagged(Metrics.circuitState, Metrics.MetricAttributes.breaker, options.name)
  let state = Closed
  let failures: Array<number> = [] // when the failures of the window happened, oldest first
  let openedAt = 0

  const become = (next: number) => {
    state = next
    return Metric.set(gauge, next)
  }
  const open = (now: number) => {
    openedAt = now
    failures = []
    return become(Open)
  }
  // when the probe is due (while a probe runs: in a second at most), not sooner than 100 ms (a redelivery
  // that comes a little early is not bounced back at once, each bounce costs a delivery)
  const rejected = (now: number) =>
    new Handler.CircuitOpen({
      breaker: options.name,
      retryIn: Duration.millis(Math.max(100, state === HalfOpen ? Math.min(resetAfter, 1000) : openedAt + resetAfter - now)),
      message: `circuit ${options.name} is open`
    })
  // what an attempt's exit does to the circuit
  const record = (exit: Exit.Exit<void, unknown>, probe: boolean) =>
    Effect.flatMap(Clock.currentTimeMillis, (now) => {
      if (Exit.isSuccess(exit)) return probe || state !== Closed ? (failures = [], become(Closed)) : Effect.void
      if (Cause.isInterruptedOnly(exit.cause)) {
        // an interrupted probe decides nothing: the next attempt probes
        return probe ? (openedAt = now - resetAfter, become(Open)) : Effect.void
      }
      const failure = Cause.failureOption(exit.cause)
      if (failure._tag === "Some" && !isFailure(failure.value)) return probe ? become(Closed) : Effect.void
      if (probe) return open(now)
      if (state !== Closed) return Effect.void
      failures = failures.filter((at) => at > now - window)
      failures.push(now)
      return failures.length >= options.maxFailures ? open(now) : Effect.void
    })

  const guard = <E, R>(run: Effect.Effect<void, E, R>): Effect.Effect<void, E | Handler.CircuitOpen, R> =>
    Effect.flatMap(Clock.currentTimeMillis, (now): Effect.Effect<void, E | Handler.CircuitOpen, R> => {
      if (state === HalfOpen || (state === Open && now < openedAt + resetAfter)) return Effect.fail(rejected(now))
      const probe = state === Open
      return Effect.zipRight(
        probe ? become(HalfOpen) : Effect.void,
        Effect.onExit(run, (exit) => record(exit, probe))
      )
    })

  const nakWhileOpen = (error: unknown): Handler.Disposition | undefined =>
    Predicate.isTagged(error, "CircuitOpen")
      ? Handler.Disposition.nak((error as Handler.CircuitOpen).retryIn)
      : undefined

  return <E, R>(self: Handler.Handler<E, R>): Handler.Handler<E | Handler.CircuitOpen, R> =>
    self.pipe(Handler.around(guard<E, R>), Handler.onError<E | Handler.CircuitOpen>(nakWhileOpen))
}
