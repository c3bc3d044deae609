/**
 * The per-message pipeline of a consumer, as composable middleware.
 *
 * A {@link Step} takes a {@link Delivery} and returns an {@link Outcome}
 * (ack, nak with a delay, or dead-letter); it may also fail, and a
 * middleware further out turns the failure into an outcome. A
 * {@link Middleware} wraps the next step. The default pipeline, outermost
 * first, is:
 *
 * ```
 * settle   ack / nak(delay) / dead-letter + term, from the outcome
 * trace    CONSUMER span `process <subject>`, parent from `traceparent`
 * decode   size and depth checks, JSON, route by type, Schema decode (errors: all)
 * retry    in-process retries (Schedule); then nak(delay) or dead-letter (the handler's policies first)
 * dedup    claim / commit / release (a no-op without a Dedup layer)
 * handler  the Handler for the event type (with the middleware it was piped through)
 * ```
 *
 * A consumer without a custom `pipeline` runs exactly these stages,
 * `compose(defaultPipeline(defaults(settings)), handle)`. The trace stage is
 * there only when a tracer records (decided once, when the consumer is
 * built: see `Tracing.isRecording`); without one, `defaults(settings).trace`
 * passes the step through as it is.
 *
 * @since 0.1.0
 */
import type { JsMsg } from "@nats-io/jetstream"
import {
  Cause,
  Chunk,
  Duration,
  Effect,
  Either,
  type Fiber,
  FiberRef,
  Metric,
  Option,
  ParseResult,
  Schedule
} from "effect"
import type * as DeadLetter from "./DeadLetter.js"
import * as Dedup from "./Dedup.js"
import * as Envelope from "./Envelope.js"
import type * as Event from "./Event.js"
import * as Causation from "./internal/causation.js"
import { currentPendingAcks } from "./internal/consumer/pendingAcks.js"
import * as Json from "./internal/json.js"
import * as Handler from "./Handler.js"
import { retryAfter } from "./internal/retry.js"
import { type MessagingSpan, messagingSpan, parentOf } from "./internal/spans.js"
import * as ParseIssues from "./internal/parseIssues.js"
import * as Metrics from "./Metrics.js"
import * as Tracing from "./Tracing.js"

/**
 * A message moving through the pipeline. `envelope` and `handler` are set by
 * the decode stage.
 *
 * @since 0.1.0
 * @category models
 */
export interface Delivery {
  /**
   * The JetStream message. Its metadata (`msg.info`: stream, consumer,
   * stream sequence, delivery count, ...) is parsed from the reply subject
   * when first read, so a stage that does not need it does not pay for it.
   */
  readonly msg: JsMsg
  /** `msg.subject`. */
  readonly subject: string
  readonly envelope?: Envelope.Envelope<unknown> | undefined
  readonly handler?: Handler.Any | undefined
}

/**
 * Why a message was dead-lettered.
 *
 * @since 0.1.0
 * @category models
 */
export type DeadLetterReason =
  | "Decode"
  | "UnknownType"
  | "TooLarge"
  | "TooDeep"
  | "Permanent"
  | "MaxDeliveries"
  | "Timeout"
  | "UnsupportedVersion"

/**
 * What to do with a message.
 *
 * @since 0.1.0
 * @category models
 */
export type Outcome =
  | { readonly _tag: "Ack"; readonly reason: "Handled" | "Duplicate" | "Unhandled" }
  | { readonly _tag: "Nak"; readonly delay: Duration.Duration; readonly reason: string }
  | {
    readonly _tag: "DeadLetter"
    readonly reason: DeadLetterReason
    readonly errorTag: string
    readonly message: string
  }

type AckOutcome = Extract<Outcome, { readonly _tag: "Ack" }>

/**
 * Outcome constructors.
 *
 * @since 0.1.0
 * @category constructors
 */
export const Outcome = {
  handled: { _tag: "Ack", reason: "Handled" } as Outcome & AckOutcome,
  duplicate: { _tag: "Ack", reason: "Duplicate" } as Outcome & AckOutcome,
  unhandled: { _tag: "Ack", reason: "Unhandled" } as Outcome & AckOutcome,
  nak: (delay: Duration.DurationInput, reason: string): Outcome => ({ _tag: "Nak", delay: Duration.decode(delay), reason }),
  deadLetter: (reason: DeadLetterReason, errorTag: string, message: string): Outcome => ({
    _tag: "DeadLetter",
    reason,
    errorTag,
    message
  })
} as const

/**
 * One stage of the pipeline.
 *
 * @since 0.1.0
 * @category models
 */
export type Step<R> = (delivery: Delivery) => Effect.Effect<Outcome, unknown, R>

/**
 * A middleware wraps the next step.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import type { Middleware } from "effect-nats"
 *
 * const logging: Middleware.Middleware = (next) => (delivery) =>
 *   Effect.tap(next(delivery), (outcome) => Effect.logDebug(`${delivery.subject}: ${outcome._tag}`))
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export interface Middleware<Req = never> {
  <R>(next: Step<R>): Step<R | Req>
}

/**
 * Everything the default middleware need to know.
 *
 * @since 0.1.0
 * @category models
 */
export interface Settings {
  readonly stream: string
  readonly durable: string
  readonly handlers: ReadonlyMap<string, Handler.Any>
  /** Deliveries allowed before dead-lettering. */
  readonly maxDeliver: number
  readonly retry: Schedule.Schedule<unknown, unknown>
  readonly redelivery: Schedule.Schedule<unknown, unknown>
  readonly isPermanent: (error: unknown) => boolean
  readonly unknownType: "ack" | "deadLetter"
  /** Larger payloads are dead-lettered (`TooLarge`) before they are parsed. */
  readonly maxMessageBytes: number
  /** Payloads nesting deeper are dead-lettered (`TooDeep`) before they are parsed (see `Limits`). */
  readonly maxDepth: number
  readonly ack: "fast" | "confirm"
  readonly termWithReason: boolean
  /** Create the per-message CONSUMER spans (see `Tracing.isRecording`). */
  readonly tracing: boolean
  readonly deadLetter: DeadLetter.DeadLetter["Type"]
  readonly dedup: Option.Option<Dedup.Dedup["Type"]>
}

const errorTag = (error: unknown): string =>
  typeof error === "object" && error !== null && "_tag" in error && typeof error._tag === "string"
    ? error._tag
    : error instanceof Error
    ? error.name
    : typeof error

const errorMessage = (error: unknown): string =>
  error instanceof Error || (typeof error === "object" && error !== null && "message" in error)
    ? String((error as { message: unknown }).message)
    : String(error)

/**
 * The redelivery delay for a delivery count, from the redelivery schedule,
 * computed without sleeping.
 *
 * @since 0.1.0
 * @category redelivery
 */
export const redeliveryDelay = (
  schedule: Schedule.Schedule<unknown, unknown>,
  deliveryCount: number
): Effect.Effect<Duration.Duration> =>
  Effect.map(
    Schedule.run(Schedule.delays(schedule), 0, Array.from({ length: Math.max(1, deliveryCount) }, () => undefined)),
    (delays) => Option.getOrElse(Chunk.last(delays), () => Duration.seconds(1))
  )

/**
 * Settle the message from the outcome: `ack()`, `nak(delay)`, or store a
 * dead letter and then `term()`. A failure that reaches this stage is nak'ed
 * with the redelivery delay; an interruption leaves the message unsettled
 * (the server redelivers it after `ack_wait`).
 *
 * @since 0.1.0
 * @category middleware
 */
export const settle = (settings: Settings): Middleware => (next) => (d) => {
  const self = next(d)
  // the fiber is taken here, not per outcome (one effect fewer per message). (Per-message callbacks are
  // methods on the hot paths: a bundler's `keepNames` renames every arrow function stored in a property.)
  return Effect.withFiberRuntime((fiber) =>
    Effect.matchCauseEffect(self, {
      onFailure(cause) {
        return Cause.isInterruptedOnly(cause)
          ? Effect.failCause(cause as Cause.Cause<never>)
          : Effect.flatMap(
            redeliveryDelay(settings.redelivery, d.msg.info.deliveryCount),
            (delay) => apply(settings, d, Outcome.nak(delay, Cause.pretty(cause)), fiber)
          )
      },
      onSuccess(outcome) {
        return apply(settings, d, outcome, fiber)
      }
    })
  )
}

/** Count an `Ack` outcome (with the fiber's metric labels, as `Metric.increment` would). */
const countAck = (fiber: Fiber.RuntimeFiber<unknown, unknown>, outcome: AckOutcome) => {
  const labels = fiber.getFiberRef(FiberRef.currentMetricLabels)
  if (outcome.reason === "Duplicate") Metrics.duplicatesSkipped.unsafeUpdate(1, labels)
  else if (outcome.reason === "Unhandled") Metrics.unhandled.unsafeUpdate(1, labels)
  Metrics.acked.unsafeUpdate(1, labels)
}

/** Ack the message (`ack()`, or `ackAck()` with `ack: "confirm"`) and count it; succeeds with the outcome. */
const ack = (
  settings: Settings,
  msg: JsMsg,
  outcome: AckOutcome,
  fiber: Fiber.RuntimeFiber<unknown, unknown>
): Effect.Effect<Outcome> => {
  if (settings.ack === "confirm") {
    return Effect.promise(() => msg.ackAck().catch(() => false)).pipe(
      Effect.zipRight(Effect.sync(() => {
        countAck(fiber, outcome)
        return outcome
      }))
    )
  }
  // ack() only queues the ack, nats.js writes the acks of a tick together
  msg.ack()
  countAck(fiber, outcome)
  return Effect.succeed(outcome)
}

/** Settle the message on the fiber that settles it; succeeds with the outcome. */
const apply = (
  settings: Settings,
  d: Delivery,
  outcome: Outcome,
  fiber: Fiber.RuntimeFiber<unknown, unknown>
): Effect.Effect<Outcome> => {
  switch (outcome._tag) {
    case "Ack": {
      // in a batch (see Dedup.Batch) the ack waits for the batch's commit
      const pending = fiber.getFiberRef(currentPendingAcks)
      if (pending !== undefined) {
        pending.add(d.msg, Effect.asVoid(Effect.suspend(() => ack(settings, d.msg, outcome, fiber))), settings.ack === "confirm")
        return Effect.succeed(outcome)
      }
      return ack(settings, d.msg, outcome, fiber)
    }
    case "Nak":
      return Effect.zipRight(
        Effect.sync(() => d.msg.nak(Duration.toMillis(outcome.delay))),
        Effect.as(Metric.increment(Metrics.redelivered), outcome)
      )
    case "DeadLetter":
      return settings.deadLetter.send({
        subject: d.subject,
        headers: d.msg.headers,
        data: d.msg.data,
        reason: outcome.reason,
        errorTag: outcome.errorTag,
        errorMessage: outcome.message,
        attempts: d.msg.info.deliveryCount,
        stream: d.msg.info.stream,
        consumer: d.msg.info.consumer,
        sequence: d.msg.info.streamSequence,
        storedAt: Math.floor(d.msg.info.timestampNanos / 1e6)
      }).pipe(
        Effect.zipRight(Effect.sync(() =>
          settings.termWithReason ? d.msg.term(`${outcome.reason}: ${outcome.message}`.slice(0, 256)) : d.msg.term()
        )),
        Effect.zipRight(Metric.increment(Metrics.deadLettered)),
        Effect.zipRight(Effect.logWarning(`dead-lettered ${d.subject}#${d.msg.info.streamSequence}: ${outcome.reason}: ${outcome.message}`)),
        Effect.catchAll((error) =>
          // the DLQ is unavailable: keep the message, it comes back later
          Effect.zipRight(
            Effect.logError(`cannot dead-letter ${d.subject}#${d.msg.info.streamSequence}, will retry: ${error.message}`),
            Effect.flatMap(redeliveryDelay(settings.redelivery, d.msg.info.deliveryCount), (delay) =>
              Effect.sync(() => d.msg.nak(Duration.toMillis(delay))))
          )
        ),
        Effect.as(outcome)
      )
  }
}

/**
 * Run the rest of the pipeline in a CONSUMER span `process <subject>`, child
 * of the producer's span when the message carries a `traceparent` header, else
 * the root of a new trace.
 *
 * @since 0.1.0
 * @category middleware
 */
export const trace = (settings: Settings): Middleware => {
  if (!settings.tracing) return (next) => next
  const spans = new Map<string, MessagingSpan>()
  const spanFor = (subject: string) => {
    let span = spans.get(subject)
    if (span === undefined) {
      span = messagingSpan("consumer", "process", subject, {
        [Tracing.Attributes.consumerGroup]: settings.durable,
        [Tracing.Attributes.stream]: settings.stream
      })
      spans.set(subject, span)
    }
    return span
  }
  return (next) => (d) => {
    const span = spanFor(d.subject)
    return Effect.withSpan(next(d), `process ${d.subject}`, {
      ...span,
      attributes: {
        ...span.attributes,
        [Tracing.Attributes.messageId]: d.msg.headers?.get(Envelope.HeaderNames.msgId) ?? "",
        [Tracing.Attributes.deliveryCount]: d.msg.info.deliveryCount,
        [Tracing.Attributes.streamSequence]: d.msg.info.streamSequence
      },
      // the producer's trace, else a new one (not the span the consumer was started in)
      ...parentOf(d.msg.headers)
    })
  }
}

/** A decoded message: its handler and envelope. */
interface Decoded {
  readonly handler: Handler.Any
  readonly envelope: Envelope.Envelope<unknown>
}

/** What the decode stage makes of a delivery: an outcome to settle at once, or its handler and envelope. */
type Decoding = Outcome | Decoded

const isOutcome = (decoding: Decoding): decoding is Outcome => "_tag" in decoding

/** The delivery as the stages after decode see it. */
const withEnvelope = (d: Delivery, decoded: Decoded): Delivery => ({
  msg: d.msg,
  subject: d.subject,
  envelope: decoded.envelope,
  handler: decoded.handler
})

type Undecodable = ParseResult.ParseError | Event.UnsupportedVersionError

const invalid = (type: string, error: Undecodable): Outcome =>
  error._tag === "UnsupportedVersionError"
    ? Outcome.deadLetter("UnsupportedVersion", error._tag, error.message)
    : Outcome.deadLetter("Decode", "ParseError", `${type}: ${ParseIssues.describe(error)}`)

/**
 * The decode stage as a plain function: size and depth checks, JSON, route by type,
 * Schema decode. An effect only when the handler's Schema decodes with one.
 */
const decodeDelivery = (settings: Settings, d: Delivery): Decoding | Effect.Effect<Decoding> => {
  const parsed = Json.parse(d.msg.data, settings.maxDepth, settings.maxMessageBytes)
  if (Either.isLeft(parsed)) {
    const { message, reason } = parsed.left
    return reason === "InvalidJson"
      ? Outcome.deadLetter("Decode", "InvalidJson", message)
      : Outcome.deadLetter(reason, reason, `payload refused: ${message}`)
  }
  const json = parsed.right
  const type = typeof json === "object" && json !== null && "type" in json && typeof json.type === "string"
    ? json.type
    : undefined
  if (type === undefined) {
    return Outcome.deadLetter("Decode", "NotAnEnvelope", "the payload is not an envelope (no string `type`)")
  }
  const handler = settings.handlers.get(type)
  if (handler === undefined) {
    return settings.unknownType === "ack"
      ? Outcome.unhandled
      : Outcome.deadLetter("UnknownType", "UnknownType", `no handler for event type "${type}"`)
  }
  // the handlers' own context is part of the consumer's requirements (see Consumer.make)
  const decoded = handler.decode(json) as Effect.Effect<Envelope.Envelope<unknown>, Undecodable>
  // a synchronous decode (the usual case) is an Either: no effect to run
  if (Either.isEither(decoded)) {
    const result = decoded as Either.Either<Envelope.Envelope<unknown>, Undecodable>
    return Either.isRight(result) ? { handler, envelope: result.right } : invalid(type, result.left)
  }
  return Effect.match(decoded, {
    onFailure: (error): Decoding => invalid(type, error),
    onSuccess: (envelope): Decoding => ({ handler, envelope })
  })
}

/**
 * Decode: refuse payloads over the size or depth limit (`TooLarge`,
 * `TooDeep`; checked on the bytes, before parsing), parse JSON, route by the envelope `type`,
 * decode with the handler's Schema (all errors). Failures are dead-lettered at
 * once with the reason; a type without a handler is acked (or dead-lettered,
 * per `unknownType`). The rest of the pipeline runs as the handling of this
 * envelope (its id and correlation id flow into what it publishes).
 *
 * @since 0.1.0
 * @category middleware
 */
export const decode = (settings: Settings): Middleware => (next) => {
  const proceed = (d: Delivery, decoding: Decoding) =>
    isOutcome(decoding)
      ? Effect.succeed(decoding)
      // the envelope is the causation (its id, correlation id and tenant)
      : Causation.withCausation(next(withEnvelope(d, decoding)), decoding.envelope)
  return (d) => {
    const decoding = decodeDelivery(settings, d)
    return Effect.isEffect(decoding) ? Effect.flatMap(decoding, (r) => proceed(d, r)) : proceed(d, decoding)
  }
}

/**
 * Retry the rest of the pipeline in process with the `retry` schedule
 * (defects count as failures). When retries are exhausted: a permanent error
 * or the last allowed delivery is dead-lettered; otherwise the message is
 * nak'ed with the delay the `redelivery` schedule gives at this delivery count.
 * The handler chosen by decode overrides `retry` and `redelivery` with its
 * own, and its `onError` decides first what an error does (see
 * `Handler.Disposition`): only `Retry` is retried in process.
 *
 * @since 0.1.0
 * @category middleware
 */
export const retry = (settings: Settings): Middleware => {
  const recover = recovery(settings)
  // one step while the handler succeeds; the retry machinery only after a failure (or defect)
  return (next) => (d) => Effect.catchAllCause(next(d), (cause) => recover(d, cause, next))
}

/**
 * What the retry stage does once `next` failed with `cause`: retry in
 * process, then give up with an outcome. An interruption is passed on.
 */
const recovery = (settings: Settings) => {
  const defectError = Handler.HandlerDefect.fromDefect
  // defects count as failures
  const asFailure = <A, R>(self: Effect.Effect<A, unknown, R>) =>
    Effect.catchAllDefect(self, (defect) => Effect.fail(defectError(defect)))
  const permanent = Handler.Disposition.deadLetter
  return <R>(d: Delivery, cause: Cause.Cause<unknown>, next: Step<R>): Effect.Effect<Outcome, unknown, R> => {
    const handler = d.handler
    const redelivery = handler?.redelivery ?? settings.redelivery
    // the handler's mapping first, then the consumer's
    const disposition = (error: unknown): Handler.Disposition =>
      handler?.onError?.(error) ?? (settings.isPermanent(error) ? permanent : Handler.Disposition.retry)
    const giveUp = (error: unknown): Effect.Effect<Outcome> => {
      const then = disposition(error)
      switch (then._tag) {
        case "Ack":
          return Effect.succeed(Outcome.unhandled)
        case "DeadLetter":
          return Effect.succeed(Outcome.deadLetter("Permanent", errorTag(error), errorMessage(error)))
        case "Nak":
        case "Retry": {
          if (d.msg.info.deliveryCount >= settings.maxDeliver) {
            return Effect.succeed(Outcome.deadLetter(
              "MaxDeliveries",
              errorTag(error),
              `failed ${d.msg.info.deliveryCount} deliveries; last error: ${errorMessage(error)}`
            ))
          }
          return then._tag === "Nak"
            ? Effect.succeed(Outcome.nak(then.delay, errorMessage(error)))
            : Effect.map(redeliveryDelay(redelivery, d.msg.info.deliveryCount), (delay) => Outcome.nak(delay, errorMessage(error)))
        }
      }
    }
    const defect = Cause.dieOption(cause)
    const failure = Option.isSome(defect) ? defect.pipe(Option.map(defectError)) : Cause.failureOption(cause)
    if (Option.isNone(failure)) return Effect.failCause(cause as Cause.Cause<never>)
    return retryAfter(failure.value, asFailure(next(d)), {
      schedule: handler?.retry ?? settings.retry,
      while: (error) => disposition(error)._tag === "Retry",
      onRetry: Metric.increment(Metrics.retried)
    }).pipe(Effect.catchAll(giveUp))
  }
}

/**
 * Dedup: claim the message's key; a committed key is a duplicate (acked, not
 * handled), a key claimed elsewhere is nak'ed for later; otherwise handle and
 * commit in the store's transaction, and release the claim on failure.
 *
 * @since 0.1.0
 * @category middleware
 */
export const dedup = (settings: Settings): Middleware => {
  if (Option.isNone(settings.dedup)) return (next) => next
  const store = settings.dedup.value
  return (next) => (d) => {
    if (d.envelope === undefined) return next(d)
    const key = store.key(d.envelope)
    return Effect.map(store.guard(key, next(d)), (r) => Dedup.isNotClaimed(r) ? notClaimed(r.claim, key) : r)
  }
}

/** The outcome of a claim that did not succeed: a duplicate, or a key held by another worker (retried later). */
const notClaimed = (claim: Exclude<Dedup.ClaimResult, "Claimed">, key: string): Outcome =>
  claim === "Duplicate" ? Outcome.duplicate : Outcome.nak(Duration.seconds(1), `key ${key} is being handled elsewhere`)

/**
 * The last step: run the handler chosen by the decode stage.
 *
 * @since 0.1.0
 * @category middleware
 */
export const handle: Step<never> = (d) => {
  if (d.handler === undefined || d.envelope === undefined) return Effect.succeed(Outcome.unhandled)
  const handler = d.handler
  const envelope = d.envelope
  return Effect.withFiberRuntime((fiber) => {
    const started = performance.now()
    return Effect.map(runHandler(handler, envelope, d), () => {
      // a successful handler's duration, with the fiber's metric labels
      Metrics.handlerDuration.unsafeUpdate(performance.now() - started, fiber.getFiberRef(FiberRef.currentMetricLabels))
      return Outcome.handled
    })
  })
}

/** The handler's effect for an envelope; a handler that throws instead of returning an effect dies with what it threw. */
const runHandler = (handler: Handler.Any, envelope: Envelope.Envelope<unknown>, d: Delivery): Effect.Effect<void, unknown> => {
  try {
    // the handlers' own context is part of the consumer's requirements (see Consumer.make)
    return handler.handle(envelope, d) as Effect.Effect<void, unknown>
  } catch (defect) {
    return Effect.die(defect)
  }
}

/**
 * The default middleware, by name.
 *
 * @since 0.1.0
 * @category models
 */
export interface Defaults {
  readonly settle: Middleware
  readonly trace: Middleware
  readonly decode: Middleware
  readonly retry: Middleware
  readonly dedup: Middleware
}

/**
 * The default middleware built from the settings.
 *
 * @since 0.1.0
 * @category constructors
 */
export const defaults = (settings: Settings): Defaults => ({
  settle: settle(settings),
  trace: trace(settings),
  decode: decode(settings),
  retry: retry(settings),
  dedup: dedup(settings)
})

/**
 * The default order, outermost first.
 *
 * @since 0.1.0
 * @category constructors
 */
export const defaultPipeline = (m: Defaults): ReadonlyArray<Middleware> => [
  m.settle,
  m.trace,
  m.decode,
  m.retry,
  m.dedup
]

/**
 * Compose middleware (outermost first) around a last step.
 *
 * @since 0.1.0
 * @category constructors
 */
export const compose = <Req, R>(middleware: ReadonlyArray<Middleware<Req>>, last: Step<R>): Step<R | Req> =>
  middleware.reduceRight<Step<R | Req>>((next, m) => m(next), last)
