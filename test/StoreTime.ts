/**
 * Time in the store conformance suites. Every case runs on the `TestClock`:
 * the stores, the relay and the consumer read time through Effect's `Clock`,
 * so leases, retention, poll intervals and retry schedules follow it on every
 * backend. The in-memory transport's timers (duplicate window, nak delays,
 * ack_wait) follow it too; a real server's (nats-server, a database) do not.
 *
 * - `advance(d)`: the toolkit's time moves `d` (`TestClock.adjust`), on every backend.
 * - `elapse(d)`: the server's time moves too: in memory the same; on a real
 *   server also `d` of real time (the JetStream duplicate window, a lease on
 *   the database's clock, in-flight messages).
 * - `until(check)`: time passes, 10 ms at a time, until `check` holds. In
 *   memory that is `TestClock` time only (each step runs what is due and lets
 *   in-flight work finish: no real time passes); on a real server both clocks
 *   step.
 */
import { InMemoryNats } from "@effect-nats/testing"
import { Clock, Duration, Effect, Option, TestClock } from "effect"

const live = Clock.make()
const step = Duration.millis(10)

/** Is the server on the TestClock (the in-memory transport)? */
const inMemory = Effect.map(Effect.serviceOption(InMemoryNats.InMemoryNats), Option.isSome)

/** The toolkit's time (Effect `Clock`) moves `d`. */
export const advance = (d: Duration.DurationInput): Effect.Effect<void> => TestClock.adjust(d)

/** The toolkit's and the server's time move `d` (at once: real time on a real server). */
export const elapse = (d: Duration.DurationInput): Effect.Effect<void> =>
  Effect.flatMap(inMemory, (memory) =>
    memory
      ? TestClock.adjust(d)
      : Effect.zipRight(TestClock.adjust(d), Effect.sleep(d).pipe(Effect.withClock(live)), { concurrent: true }))

/** Let time pass until `check` holds; dies once `within` of TestClock time has passed (on a real server, about as much real time). */
export const until = <E, R>(check: Effect.Effect<boolean, E, R>, within: Duration.DurationInput = "10 seconds") =>
  Effect.gen(function*() {
    const start = yield* Clock.currentTimeMillis
    const limit = Duration.toMillis(within)
    while (!(yield* check)) {
      if ((yield* Clock.currentTimeMillis) - start >= limit) {
        return yield* Effect.dieMessage(`condition not met within ${Duration.format(within)}`)
      }
      yield* elapse(step)
    }
  })
