/**
 * Effect steps applied at once when the effect before them is already done:
 * an `Exit`, or an `Either` (what a synchronous Schema codec returns, see
 * `codec.ts`). A path built with them stays a few plain function calls until
 * something waits, and then is the same path as an ordinary Effect.
 *
 * @internal
 */
import { Effect, Either, Exit } from "effect"

/** Is `self` already done (an `Exit` or an `Either`)? */
export const isDone = <A, E, R>(self: Effect.Effect<A, E, R>): boolean => Exit.isExit(self) || Either.isEither(self)

/** The result of `self`, if it is already known. */
export const done = <A, E, R>(self: Effect.Effect<A, E, R>): Exit.Exit<A, E> | undefined =>
  Exit.isExit(self)
    ? self as Exit.Exit<A, E>
    : Either.isEither(self)
    ? (self._tag === "Right" ? Exit.succeed(self.right as A) : Exit.fail(self.left as E))
    : undefined

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

/** `Effect.exit`, applied at once when `self` is done. */
export const exit = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<Exit.Exit<A, E>, never, R> => {
  const result = done(self)
  return result === undefined ? Effect.exit(self) : Exit.succeed(result)
}
