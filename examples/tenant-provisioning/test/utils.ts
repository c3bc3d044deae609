import { type Duration, Effect, Schedule } from "effect"

/** Wait until `check` holds (live clock); dies after `timeout`. */
export const eventually = <E, R>(check: Effect.Effect<boolean, E, R>, timeout: Duration.DurationInput = "5 seconds") =>
  check.pipe(
    Effect.filterOrFail((ok) => ok, () => new Error("condition not met in time")),
    Effect.retry({ schedule: Schedule.spaced("20 millis") }),
    Effect.timeout(timeout),
    Effect.orDie,
    Effect.asVoid
  )
