/**
 * Handlers: what to do with one decoded event. A consumer routes each message
 * to the handler registered for its envelope `type`.
 *
 * A handler composes as a pipeline: `Handler.make(event, f).pipe(...)` with
 * per-handler policies (`retry`, `redelivery`, `onError`, which override the
 * consumer's) and middleware around each attempt (`timeout`,
 * `withConcurrency`, `circuitBreaker`, `rateLimit`, `filter`, `route`,
 * `recoverDefects`, `poison`, `instantAck`, or your own with `around`). A
 * middleware that needs a service adds it to the handler's `R`; one that adds
 * an error adds it to `E`, and `onError` maps errors to what happens to the
 * message (see {@link Disposition}).
 *
 * @since 0.1.0
 */
import type { Duration, ParseResult, RateLimiter, Schedule } from "effect"
import { Data, Effect, Either, Predicate, Schema } from "effect"
import { type Pipeable, pipeArguments } from "effect/Pipeable"
import * as Envelope from "./Envelope.js"
import * as Codec from "./internal/codec.js"
// the middleware (one file each) import this module back, and use it only when called
import * as CircuitBreaker from "./internal/middleware/circuitBreaker.js"
import * as Concurrency from "./internal/middleware/concurrency.js"
import * as Filter from "./internal/middleware/filter.js"
import * as InstantAck from "./internal/middleware/instantAck.js"
import * as Poison from "./internal/middleware/poison.js"
import * as RateLimit from "./internal/middleware/rateLimit.js"
import * as RecoverDefects from "./internal/middleware/recoverDefects.js"
import * as Timeout from "./internal/middleware/timeout.js"
import * as Event from "./Event.js"
import type { Delivery } from "./Middleware.js"

/**
 * A handler for one event type, with its own policies.
 *
 * @since 0.1.0
 * @category models
 */
export interface Handler<E, R> extends Pipeable {
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
  /** One attempt at handling a decoded envelope (the delivery carries the message: headers, `info`). */
  readonly handle: (envelope: Envelope.Envelope<unknown>, delivery: Delivery) => Effect.Effect<void, E, R>
  /** In-process retries, instead of the consumer's `retry`. */
  readonly retry?: Schedule.Schedule<unknown, unknown> | undefined
  /** Redelivery delays, instead of the consumer's `redelivery`. */
  readonly redelivery?: Schedule.Schedule<unknown, unknown> | undefined
  /** What a failure does to the message; `undefined`: the consumer's default (see {@link Disposition}). */
  readonly onError?: ((error: unknown) => Disposition | undefined) | undefined
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
    // an event that declares no schemaVersion reads every version (as it always did)
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
  return copy<E, R | RS>({
    type: event.type,
    event,
    decode,
    handle: handle as Handler<E, R>["handle"]
  })
}

const HandlerProto: Pipeable = {
  pipe() {
    return pipeArguments(this, arguments)
  }
}

/** A handler from its fields (pipeable). */
const copy = <E, R>(fields: Omit<Handler<E, R>, "pipe">): Handler<E, R> =>
  Object.assign(Object.create(HandlerProto) as Handler<E, R>, fields)

/**
 * What a failed attempt does to the message, once the handler's error is
 * known. The consumer maps every error through the handler's `onError`
 * (newest first), then its own `isPermanent`, exhaustively:
 *
 * - `Retry` (the default): in-process retries (`retry`), then `nak(delay)`
 *   with the `redelivery` delay, dead-lettered (`MaxDeliveries`) at the last
 *   delivery;
 * - `Ack`: acked, not retried (counted as skipped, reason `unhandled`);
 * - `Nak`: `nak(delay)` at once, without in-process retries;
 * - `DeadLetter`: dead-lettered at once (`Permanent`).
 *
 * @since 0.2.0
 * @category models
 */
export type Disposition =
  | { readonly _tag: "Retry" }
  | { readonly _tag: "Ack" }
  | { readonly _tag: "Nak"; readonly delay: Duration.DurationInput }
  | { readonly _tag: "DeadLetter" }

/**
 * Disposition constructors.
 *
 * @example
 * ```ts
 * import { Handler } from "effect-nats"
 *
 * const later = Handler.Disposition.nak("30 seconds")
 * ```
 *
 * @since 0.2.0
 * @category constructors
 */
export const Disposition = {
  retry: { _tag: "Retry" } as Disposition,
  ack: { _tag: "Ack" } as Disposition,
  deadLetter: { _tag: "DeadLetter" } as Disposition,
  nak: (delay: Duration.DurationInput): Disposition => ({ _tag: "Nak", delay })
} as const

/**
 * Write your own middleware: `f` receives one attempt of the handler (`run`),
 * the envelope and the delivery, and returns the attempt to make instead. A
 * service `f` uses shows in the handler's `R`, an error it adds in its `E`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Handler } from "effect-nats"
 * import { onIssued } from "./handlers.js"
 *
 * const timed = onIssued.pipe(Handler.around((run, envelope) =>
 *   Effect.withLogSpan(run, `handle ${envelope.type}`)))
 * ```
 *
 * @since 0.2.0
 * @category combinators
 */
export const around = <E, R, E2, R2>(
  f: (run: Effect.Effect<void, E, R>, envelope: Envelope.Envelope<unknown>, delivery: Delivery) => Effect.Effect<void, E2, R2>
) =>
(self: Handler<E, R>): Handler<E2, R | R2> =>
  copy<E2, R | R2>({
    ...fields(self),
    // the inner handler runs when the attempt runs (one that throws dies, as without middleware)
    handle: (envelope, delivery) => f(Effect.suspend(() => self.handle(envelope, delivery)), envelope, delivery)
  })

/** A handler's own fields (not its prototype's `pipe`). */
const fields = <E, R>(self: Handler<E, R>): Omit<Handler<E, R>, "pipe"> => ({
  type: self.type,
  event: self.event,
  decode: self.decode as Handler<E, R>["decode"],
  handle: self.handle,
  retry: self.retry,
  redelivery: self.redelivery,
  onError: self.onError
})

/**
 * In-process retries of this handler, instead of the consumer's `retry`.
 *
 * @example
 * ```ts
 * import { Schedule } from "effect"
 * import { Handler } from "effect-nats"
 * import { onIssued } from "./handlers.js"
 *
 * const patient = onIssued.pipe(Handler.retry(Schedule.spaced("200 millis").pipe(Schedule.intersect(Schedule.recurs(5)))))
 * ```
 *
 * @since 0.2.0
 * @category policies
 */
export const retry = (schedule: Schedule.Schedule<unknown, unknown>) => <E, R>(self: Handler<E, R>): Handler<E, R> =>
  copy<E, R>({ ...fields(self), retry: schedule })

/**
 * Redelivery delays of this handler (`nak(delay)` at the n-th delivery), instead of the consumer's `redelivery`.
 *
 * @example
 * ```ts
 * import { Schedule } from "effect"
 * import { Handler } from "effect-nats"
 * import { onIssued } from "./handlers.js"
 *
 * const slow = onIssued.pipe(Handler.redelivery(Schedule.spaced("1 minute")))
 * ```
 *
 * @since 0.2.0
 * @category policies
 */
export const redelivery = (schedule: Schedule.Schedule<unknown, unknown>) => <E, R>(self: Handler<E, R>): Handler<E, R> =>
  copy<E, R>({ ...fields(self), redelivery: schedule })

/**
 * Decide what a failure does to the message (see {@link Disposition}). `f`
 * returns `undefined` for errors it leaves to the policies set before it
 * (and then the consumer's). With `Match.valueTags` the mapping is checked
 * to be exhaustive.
 *
 * @example
 * ```ts
 * import { Data, Effect, Match } from "effect"
 * import { Handler } from "effect-nats"
 * import { InvoiceIssued } from "./events.js"
 *
 * class Declined extends Data.TaggedError("Declined")<{}> {}
 * class Busy extends Data.TaggedError("Busy")<{}> {}
 * declare const charge: Effect.Effect<void, Declined | Busy>
 *
 * const onIssued = Handler.make(InvoiceIssued, () => charge).pipe(
 *   Handler.onError(Match.valueTags({
 *     Declined: () => Handler.Disposition.deadLetter,
 *     Busy: () => Handler.Disposition.nak("10 seconds")
 *   }))
 * )
 * ```
 *
 * @since 0.2.0
 * @category policies
 */
export const onError = <E>(f: (error: E) => Disposition | undefined) => <R>(self: Handler<E, R>): Handler<E, R> => {
  const before = self.onError
  const mine = f as (error: unknown) => Disposition | undefined
  return copy<E, R>({
    ...fields(self),
    onError: before === undefined ? mine : (error) => mine(error) ?? before(error)
  })
}

/**
 * An attempt took longer than `duration`: it is interrupted and fails with
 * {@link HandlerTimeout}, which follows the retry / redelivery path (map it
 * with `onError` to do otherwise).
 *
 * @example
 * ```ts
 * import { Handler } from "effect-nats"
 * import { onIssued } from "./handlers.js"
 *
 * const bounded = onIssued.pipe(Handler.timeout("5 seconds"))
 * ```
 *
 * @since 0.2.0
 * @category middleware
 */
export const timeout: (duration: Duration.DurationInput) => <E, R>(self: Handler<E, R>) => Handler<E | HandlerTimeout, R> =
  Timeout.timeout

/**
 * At most `n` attempts of this handler at once in this process (a semaphore
 * shared by every consumer running this handler value), whatever the
 * consumer's `concurrency`. A worker waiting for a permit holds its message
 * (kept alive), so keep `n` for scarce resources, not as a general limit.
 *
 * @example
 * ```ts
 * import { Handler } from "effect-nats"
 * import { onIssued } from "./handlers.js"
 *
 * const oneAtATime = onIssued.pipe(Handler.withConcurrency(1))
 * ```
 *
 * @since 0.2.0
 * @category middleware
 */
export const withConcurrency: (n: number) => <E, R>(self: Handler<E, R>) => Handler<E, R> = Concurrency.withConcurrency

/**
 * Options of {@link circuitBreaker}.
 *
 * @since 0.2.0
 * @category models
 */
export interface CircuitBreakerOptions {
  /** Names the breaker in {@link CircuitOpen} and on the `Metrics.circuitState` gauge (attribute `breaker`). */
  readonly name: string
  /** Failures within `window` that open the circuit. */
  readonly maxFailures: number
  readonly window: Duration.DurationInput
  /** How long the circuit stays open before one attempt probes (half-open). */
  readonly resetAfter: Duration.DurationInput
  /** Which failures count (default: every failure and defect). */
  readonly isFailure?: ((error: unknown) => boolean) | undefined
}

/**
 * A circuit breaker around the handler. Closed, attempts run; `maxFailures`
 * failures within `window` open it. Open, attempts fail at once with
 * {@link CircuitOpen} and the message is nak'ed with the time left until
 * `resetAfter` (no in-process retries). Then one attempt probes (half-open;
 * others are nak'ed meanwhile): its success closes the circuit, its failure
 * opens it again. The state is the gauge `Metrics.circuitState` (0 closed, 1
 * half-open, 2 open), with the attribute `breaker`. Apply the same breaker
 * value to several handlers to share one circuit. Each nak while open uses
 * one of the message's deliveries (`maxDeliver`), so allow for `resetAfter`
 * when choosing them.
 *
 * @example
 * ```ts
 * import { Predicate } from "effect"
 * import { Handler } from "effect-nats"
 * import { onIssued } from "./handlers.js"
 *
 * const gateway = Handler.circuitBreaker({
 *   name: "payment-gateway",
 *   maxFailures: 5,
 *   window: "10 seconds",
 *   resetAfter: "30 seconds",
 *   isFailure: Predicate.isTagged("GatewayUnavailable")
 * })
 * const guarded = onIssued.pipe(gateway)
 * ```
 *
 * @since 0.2.0
 * @category middleware
 */
export const circuitBreaker: (options: CircuitBreakerOptions) => <E, R>(self: Handler<E, R>) => Handler<E | CircuitOpen, R> =
  CircuitBreaker.circuitBreaker

/**
 * Run each attempt through a `RateLimiter` (from `effect/RateLimiter`: token
 * bucket or fixed window), given as a value or as an effect, such as a
 * service's Tag: its requirements become the handler's. Waiting for a token
 * holds the worker and keeps the message alive.
 *
 * @example
 * ```ts
 * import { Context, Layer, RateLimiter } from "effect"
 * import { Handler } from "effect-nats"
 * import { onIssued } from "./handlers.js"
 *
 * class GatewayLimit extends Context.Tag("GatewayLimit")<GatewayLimit, RateLimiter.RateLimiter>() {}
 * const GatewayLimitLive = Layer.scoped(GatewayLimit, RateLimiter.make({ limit: 10, interval: "1 second" }))
 *
 * const throttled = onIssued.pipe(Handler.rateLimit(GatewayLimit)) // R includes GatewayLimit
 * ```
 *
 * @since 0.2.0
 * @category middleware
 */
export const rateLimit: <R2 = never>(
  limiter: RateLimiter.RateLimiter | Effect.Effect<RateLimiter.RateLimiter, never, R2>
) => <E, R>(self: Handler<E, R>) => Handler<E, R | R2> = RateLimit.rateLimit

/**
 * Handle only the messages `predicate` accepts (by an envelope field, such
 * as `tenantId`, or a header of `delivery.msg`); the others are acked
 * without running the handler.
 *
 * @example
 * ```ts
 * import { Handler } from "effect-nats"
 * import { onIssued } from "./handlers.js"
 *
 * const acmeOnly = onIssued.pipe(Handler.filter((envelope) => envelope.tenantId === "acme"))
 * const euOnly = onIssued.pipe(Handler.filter((_, delivery) => delivery.msg.headers?.get("Region") === "eu"))
 * ```
 *
 * @since 0.2.0
 * @category middleware
 */
export const filter: (
  predicate: (envelope: Envelope.Envelope<unknown>, delivery: Delivery) => boolean
) => <E, R>(self: Handler<E, R>) => Handler<E, R> = Filter.filter

/**
 * One handler for an event type that runs one of several, chosen per
 * message by `select` (an envelope field such as `tenantId`, or a header).
 * Every route handles the same event; a message without a route is acked
 * without handling. The routes' own policies apply to their attempts
 * (middleware), the returned handler's to the message (`retry`, `onError`, ...).
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Handler } from "effect-nats"
 * import { InvoiceIssued } from "./events.js"
 *
 * const byTenant = Handler.route((envelope) => envelope.tenantId, {
 *   acme: Handler.make(InvoiceIssued, (e) => Effect.log(`acme: ${e.data.invoiceId}`)),
 *   globex: Handler.make(InvoiceIssued, (e) => Effect.log(`globex: ${e.data.invoiceId}`))
 * })
 * ```
 *
 * @since 0.2.0
 * @category middleware
 */
export const route: <const Routes extends Readonly<Record<string, Any>>>(
  select: (envelope: Envelope.Envelope<unknown>, delivery: Delivery) => string | undefined,
  routes: Routes
) => Handler<Error<Routes[keyof Routes]>, Context<Routes[keyof Routes]>> = Filter.route

/**
 * Turn defects (a thrown exception, `Effect.die`) into a typed failure,
 * {@link HandlerDefect} by default, so `onError` can map them; without it
 * the consumer retries a defect as any failure.
 *
 * @example
 * ```ts
 * import { Handler } from "effect-nats"
 * import { onIssued } from "./handlers.js"
 *
 * const strict = onIssued.pipe(
 *   Handler.recoverDefects(),
 *   Handler.onError((e) => e._tag === "HandlerDefect" ? Handler.Disposition.deadLetter : undefined)
 * )
 * ```
 *
 * @since 0.2.0
 * @category middleware
 */
export const recoverDefects: {
  (): <E, R>(self: Handler<E, R>) => Handler<E | HandlerDefect, R>
  <E2>(f: (defect: unknown) => E2): <E, R>(self: Handler<E, R>) => Handler<E | E2, R>
} = RecoverDefects.recoverDefects

/**
 * Poison messages: failures `predicate` accepts are dead-lettered at once
 * (reason `Permanent`), never retried. Other failures keep the retry path,
 * and a message failing every delivery is dead-lettered at `maxDeliver`
 * (`MaxDeliveries`), as for every handler.
 *
 * @example
 * ```ts
 * import { Predicate } from "effect"
 * import { Handler } from "effect-nats"
 * import { onIssued } from "./handlers.js"
 *
 * const noRetryOnDecline = onIssued.pipe(Handler.poison(Predicate.isTagged("CardDeclined")))
 * ```
 *
 * @since 0.2.0
 * @category middleware
 */
export const poison: <E>(predicate: (error: E) => boolean) => <R>(self: Handler<E, R>) => Handler<E, R> = Poison.poison

/**
 * Fire and forget: ack the message before handling it. At-most-once: a
 * failure (logged, not retried) or a crash loses the message. For handlers
 * whose work may be lost (cache warming, notifications), to free the server
 * from tracking the message.
 *
 * @example
 * ```ts
 * import { Handler } from "effect-nats"
 * import { onIssued } from "./handlers.js"
 *
 * const fireAndForget = onIssued.pipe(Handler.instantAck)
 * ```
 *
 * @since 0.2.0
 * @category middleware
 */
export const instantAck: <E, R>(self: Handler<E, R>) => Handler<never, R> = InstantAck.instantAck

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
}> {
  /** The failure for a defect: its message is the error's name and message, else the defect as a string. */
  static fromDefect(defect: unknown): HandlerDefect {
    return new HandlerDefect({
      message: defect instanceof Error ? `${defect.name}: ${defect.message}` : String(defect),
      cause: defect
    })
  }
}

/**
 * An attempt of a handler ran longer than its `Handler.timeout`.
 *
 * @example
 * ```ts
 * import { Handler } from "effect-nats"
 * import { onIssued } from "./handlers.js"
 *
 * // a timeout is redelivered a minute later instead of retried at once
 * const patient = onIssued.pipe(
 *   Handler.timeout("5 seconds"),
 *   Handler.onError((e) => e._tag === "HandlerTimeout" ? Handler.Disposition.nak("1 minute") : undefined)
 * )
 * ```
 *
 * @since 0.2.0
 * @category errors
 */
export class HandlerTimeout extends Data.TaggedError("HandlerTimeout")<{
  readonly message: string
}> {}

/**
 * The handler's circuit breaker is open: the message is nak'ed with
 * `retryIn`, the time left until the breaker probes again.
 *
 * @example
 * ```ts
 * import { Handler } from "effect-nats"
 * import { onIssued } from "./handlers.js"
 *
 * // while the circuit is open, ack instead (the work may be skipped)
 * const skipWhileOpen = onIssued.pipe(
 *   Handler.circuitBreaker({ name: "search-index", maxFailures: 3, window: "1 minute", resetAfter: "1 minute" }),
 *   Handler.onError((e) => e._tag === "CircuitOpen" ? Handler.Disposition.ack : undefined)
 * )
 * ```
 *
 * @since 0.2.0
 * @category errors
 */
export class CircuitOpen extends Data.TaggedError("CircuitOpen")<{
  readonly breaker: string
  readonly retryIn: Duration.Duration
  readonly message: string
}> {}
