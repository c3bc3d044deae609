import { Effect, Equal, type Fiber, FiberRef, Hash, Option } from "effect"
import { globalValue } from "effect/GlobalValue"
import type { Causation } from "../Envelope.js"

/** The initial value of `current` (`Option.none()`, a single object). */
export const noCausation: Option.Option<Causation> = Option.none()

/** `Envelope.current`: the message being handled by the fiber. */
export const current: FiberRef.FiberRef<Option.Option<Causation>> = globalValue(
  Symbol.for("effect-nats/Envelope/current"),
  () => FiberRef.unsafeMake<Option.Option<Causation>>(noCausation)
)

/**
 * What `current` holds: compared by reference. (Setting a FiberRef compares
 * the old and new values, and hashing a plain object costs a WeakMap entry.)
 */
class CausationValue implements Causation, Equal.Equal {
  readonly id: string
  readonly correlationId: string
  readonly tenantId?: string | undefined
  constructor(causation: Causation) {
    this.id = causation.id
    this.correlationId = causation.correlationId
    if (causation.tenantId !== undefined) this.tenantId = causation.tenantId
  }
  [Equal.symbol](that: Equal.Equal): boolean {
    return this === that
  }
  [Hash.symbol](): number {
    return Hash.string(this.id)
  }
}

/** The value of `current` while `causation` is being handled. */
const handling = (causation: Causation): Option.Option<Causation> => Option.some(new CausationValue(causation))

/**
 * The effect that puts back the fiber's current value of `current`, once the
 * handling that is about to start ends. When it is the initial value (the
 * usual case), `current` is removed rather than set back: the fiber reads the
 * same value, and neither update has to compare the old value with the new
 * one (comparing `Option`s hashes them, which costs more than the rest).
 */
const restorer = (fiber: Fiber.RuntimeFiber<unknown, unknown>): Effect.Effect<void> => {
  const previous = fiber.getFiberRef(current)
  return previous === noCausation ? remove : FiberRef.set(current, previous)
}

const remove = FiberRef.delete(current)

/**
 * Run `self` as the handling of `causation` (`Envelope.withCausation`).
 *
 * The previous value is put back when `self` succeeds or fails, without an
 * uninterruptible region (which cost as much as the rest of this per
 * message): on an interrupted fiber, whose remaining work is its finalizers,
 * `current` may keep `causation`. Such a fiber goes on only to finalizers and
 * uninterruptible code that sees the interruption, never to the next message.
 */
export const withCausation = <A, E, R>(self: Effect.Effect<A, E, R>, causation: Causation): Effect.Effect<A, E, R> =>
  Effect.withFiberRuntime<A, E, R>((fiber) => {
    const restore = restorer(fiber)
    return Effect.zipRight(
      FiberRef.set(current, handling(causation)),
      // (methods, not arrow functions: a bundler's `keepNames` renames every arrow function stored in a property)
      Effect.matchCauseEffect(self, {
        onFailure(cause) {
          return Effect.zipRight(restore, Effect.failCause(cause))
        },
        onSuccess(a) {
          return Effect.as(restore, a)
        }
      })
    )
  })
