import { Effect, Either, type ParseResult, Schema } from "effect"

/**
 * A Schema decoder or encoder compiled once, synchronous when the Schema
 * allows it: the result is then an `Either` (an Effect that needs no run, so
 * a hot path can use it as it is, see `Either.isEither`); a Schema with an
 * async step or a service makes the synchronous run fail with a `Forbidden`
 * issue, and the effectful parser runs instead.
 */
export type Codec<A, R> = (u: unknown) => Effect.Effect<A, ParseResult.ParseError, R>

const compile = <A, R>(
  sync: (u: unknown) => Either.Either<A, ParseResult.ParseError>,
  effect: (u: unknown) => Effect.Effect<A, ParseResult.ParseError, R>
): Codec<A, R> =>
(u) => {
  const result = sync(u)
  return Either.isLeft(result) && result.left.issue._tag === "Forbidden" ? effect(u) : result
}

export const decoder = <A, I, R>(schema: Schema.Schema<A, I, R>, options?: { readonly errors?: "all" | "first" }): Codec<A, R> =>
  compile(Schema.decodeUnknownEither(schema as Schema.Schema<A, I>, options), Schema.decodeUnknown(schema, options))

export const encoder = <A, I, R>(schema: Schema.Schema<A, I, R>, options?: { readonly errors?: "all" | "first" }): Codec<I, R> =>
  compile(Schema.encodeUnknownEither(schema as Schema.Schema<A, I>, options), Schema.encodeUnknown(schema, options))

/** The synchronous result, if it is one. */
export const sync = <A, R>(self: Effect.Effect<A, ParseResult.ParseError, R>): Either.Either<A, ParseResult.ParseError> | undefined =>
  Either.isEither(self) ? (self as Either.Either<A, ParseResult.ParseError>) : undefined
