import { Effect, FiberRef } from "effect"

/**
 * `Effect.locallyWith(self, ref, f)` in fewer steps (it runs once per
 * message or request): set, run, and restore the previous value when `self`
 * ends, whether it succeeds, fails or is interrupted.
 */
export const locallyWith = <A, E, R, V>(self: Effect.Effect<A, E, R>, ref: FiberRef.FiberRef<V>, f: (value: V) => V) =>
  Effect.withFiberRuntime<A, E, R>((fiber) => {
    const previous = fiber.getFiberRef(ref)
    return Effect.zipRight(FiberRef.set(ref, f(previous)), Effect.ensuring(self, FiberRef.set(ref, previous)))
  })
