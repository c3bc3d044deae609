/**
 * Handlers: what to do with one decoded event. A consumer routes each message
 * to the handler registered for its envelope `type`.
 *
 * @since 0.1.0
 */
import { Data, Effect, Either, type ParseResult, Predicate, Schema } from "effect"
import * as Envelope from "./Envelope.js"
import * as Codec from "./internal/codec.js"
import * as Event from "./Event.js"

/**
 * A handler for one event type.
 *
 * @since 0.1.0
 * @category models
 */
export interface Handler<E, R> {
  readonly type: string
  readonly event: Event.Any
  /**
   * Decode an untyped envelope (all errors reported), migrating data written
   * at a past `schemaVersion` to the current type; a version newer than the
   * event's (when it declares one) fails with {@link Event.UnsupportedVersionError}.
   */
  readonly decode: (
    u: unknown
  ) => Effect.Effect<Envelope.Envelope<unknown>, ParseResult.ParseError | Event.UnsupportedVersionError, R>
  readonly handle: (envelope: Envelope.Envelope<unknown>) => Effect.Effect<void, E, R>
}

/**
 * Any handler.
 *
 * @since 0.1.0
 * @category models
 */
export type Any = Handler<unknown, unknown>

/**
 * The error type of a handler (or a union of handlers).
 *
 * @since 0.1.0
 * @category type-level
 */
export type Error<H> = H extends Handler<infer E, infer _R> ? E : never

/**
 * The context a handler (or a union of handlers) needs.
 *
 * @since 0.1.0
 * @category type-level
 */
export type Context<H> = H extends Handler<infer _E, infer R> ? R : never

/**
 * Define the handler of an event. It receives the decoded, typed envelope.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Handler } from "effect-nats"
 * import { InvoiceIssued } from "./events.js"
 *
 * const onIssued = Handler.make(InvoiceIssued, (envelope) =>
 *   Effect.log(`invoice ${envelope.data.invoiceId}: ${envelope.data.amount}`))
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <Type extends string, A, I, RS, E, R>(
  event: Event.Event<Type, A, I, RS>,
  handle: (envelope: Envelope.Envelope<A>) => Effect.Effect<void, E, R>
): Handler<E, R | RS> => {
  // compiled once: synchronous when the Schema allows it (an Either, which the consumer uses without running an effect)
  const decodeEnvelope = Codec.decoder(event.envelope, { errors: "all" })
  // the data decoder of each version (to the current type); without past versions, the current one reads every version
  const versions = event.versions
  const current = versions[versions.length - 1]!.schemaVersion
  const decoders = new Map(versions.map((v) => [
    v.schemaVersion,
    Schema.decodeUnknownEither(v.toCurrent as Schema.Schema<A, unknown>, { errors: "all" })
  ]))
  const decodeCurrent = decoders.get(current)!
  const oldest = versions[0]!.schemaVersion
  const declared = event.schemaVersion !== undefined
  const decode = (
    u: unknown
  ): Effect.Effect<Envelope.Envelope<unknown>, ParseResult.ParseError | Event.UnsupportedVersionError, RS> => {
    const written = typeof u === "object" && u !== null && "schemaVersion" in u ? u.schemaVersion : undefined
    // an event that declares no schemaVersion reads any (as it always did)
    if (declared && typeof written === "number" && Number.isSafeInteger(written) && written > current) {
      return Either.left(
        new Event.UnsupportedVersionError({
          type: event.type,
          schemaVersion: written,
          current,
          message: `${event.type} schemaVersion ${written} is newer than this code reads (${current})`
        })
      )
    }
    // fast path: the metadata checked by hand (as the Schema does), the data by its Schema
    const metadata = Envelope.decodeMetadata(u)
    const decodeData = metadata === undefined
      ? undefined
      : versions.length === 1
      ? decodeCurrent
      : decoders.get(metadata.schemaVersion ?? oldest)
    if (metadata !== undefined && decodeData !== undefined) {
      const data = decodeData(metadata.data)
      if (Either.isRight(data)) {
        // a new object, only ours: its `data` (the last key) becomes the decoded data
        const decoded: { data: unknown } = metadata
        decoded.data = data.right
        return Either.right(metadata)
      }
    }
    // anything else: the envelope Schema (its errors name the envelope's fields)
    return decodeEnvelope(u)
  }
  return {
    type: event.type,
    event,
    decode,
    handle: handle as (envelope: Envelope.Envelope<unknown>) => Effect.Effect<void, E, R>
  }
}

/**
 * Marks a failure as permanent: the message is dead-lettered at once instead
 * of being retried.
 *
 * @since 0.1.0
 * @category errors
 */
export class PermanentError extends Data.TaggedError("PermanentError")<{
  readonly message: string
  readonly cause?: unknown
}> {}

/**
 * Make every failure of an effect permanent.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Handler } from "effect-nats"
 *
 * const validate = (amount: number) =>
 *   amount < 0 ? Effect.fail("negative amount") : Effect.void
 * const checked = Handler.permanent(validate(-1)) // dead-lettered, never retried
 * ```
 *
 * @since 0.1.0
 * @category combinators
 */
export const permanent = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, PermanentError, R> =>
  Effect.mapError(self, (cause) =>
    new PermanentError({
      message: Predicate.hasProperty(cause, "message") && typeof cause.message === "string"
        ? cause.message
        : String(cause),
      cause
    }))

/**
 * A defect (a thrown exception) raised by a handler, kept as a failure so it
 * is retried and, in the end, dead-lettered with its message.
 *
 * @since 0.1.0
 * @category errors
 */
export class HandlerDefect extends Data.TaggedError("HandlerDefect")<{
  readonly message: string
  readonly cause: unknown
}> {}
