/**
 * Effect steps applied at once when the effect before them is already done:
 * an `Exit`, or an `Either` (what a synchronous Schema codec returns, see
 * `codec.ts`). A path built with them stays a few plain function calls until
 * something waits, and then is the same path as an ordinary Effect.
 *
 * @internal
 */
import { Cause, Effect, Either, Exit } from "effect"

/** Is `self` already done (an `Exit` or an `Either`)? */
export const isDone = <A, E, R>(self: Effect.Effect<A, E, R>): boolean => Exit.isExit(self) || Either.isEither(self)

/** `Effect.flatMap`, applied at once when `self` is done. */
export const flatMap = <A, E, R, B, E2, R2>(
  self: Effect.Effect<A, E, R>,
  f: (a: A) => Effect.Effect<B, E2, R2>
): Effect.Effect<B, E | E2, R | R2> => {
  if (Either.isEither(self)) return self._tag === "Right" ? f(self.right as A) : self as Either.Either<never, E>
  if (!Exit.isExit(self)) return Effect.flatMap(self, f)
  return self._tag === "Success" ? f(self.value as A) : self as Exit.Exit<never, E>
}

/**
 * `Effect.matchEffect`, applied at once when `self` is done. (The handlers
 * are arguments, not an options object: on a request path they are closures
 * made per request, and arrow functions in an object literal get a name
 * assigned at creation under tsx's `keepNames`.)
 */
export const match = <A, E, R, B, E2, R2, C, E3, R3>(
  self: Effect.Effect<A, E, R>,
  onFailure: (e: E) => Effect.Effect<B, E2, R2>,
  onSuccess: (a: A) => Effect.Effect<C, E3, R3>
): Effect.Effect<B | C, E2 | E3, R | R2 | R3> => {
  if (Either.isEither(self)) return self._tag === "Right" ? onSuccess(self.right as A) : onFailure(self.left as E)
  if (!Exit.isExit(self)) return Effect.matchEffect(self, { onFailure, onSuccess })
  if (self._tag === "Success") return onSuccess(self.value as A)
  const cause = self.cause
  return cause._tag === "Fail" ? onFailure(cause.error as E) : self as Exit.Exit<never, never>
}

/** `Effect.matchCauseEffect`, applied at once when `self` is done (the handlers are arguments, as for {@link match}). */
export const matchCause = <A, E, R, B, E2, R2, C, E3, R3>(
  self: Effect.Effect<A, E, R>,
  onFailure: (cause: Cause.Cause<E>) => Effect.Effect<B, E2, R2>,
  onSuccess: (a: A) => Effect.Effect<C, E3, R3>
): Effect.Effect<B | C, E2 | E3, R | R2 | R3> => {
  if (Either.isEither(self)) return self._tag === "Right" ? onSuccess(self.right as A) : onFailure(Cause.fail(self.left as E))
  if (!Exit.isExit(self)) return Effect.matchCauseEffect(self, { onFailure, onSuccess })
  return self._tag === "Success" ? onSuccess(self.value as A) : onFailure(self.cause as Cause.Cause<E>)
}
