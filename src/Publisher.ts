/**
 * The typed publisher: encodes data with the event's Schema, wraps it in the
 * envelope, sets the headers (`Nats-Msg-Id`, trace context, metadata) and
 * publishes to JetStream, retrying transient failures with a `Schedule`.
 *
 * @since 0.1.0
 */
import type { PubAck } from "@nats-io/jetstream"
import { headers as natsHeaders } from "@nats-io/nats-core"
import {
  Clock,
  Context,
  Data,
  DateTime,
  Duration,
  Effect,
  FiberRef,
  Layer,
  Metric,
  Option,
  ParseResult,
  Schedule,
  Schema
} from "effect"
import * as DeadLetter from "./DeadLetter.js"
import { retryOnFailure } from "./internal/retry.js"
import * as Envelope from "./Envelope.js"
import type * as Event from "./Event.js"
import { JetStream } from "./JetStream.js"
import * as Metrics from "./Metrics.js"
import * as NatsError from "./NatsError.js"
import * as Tracing from "./Tracing.js"

/**
 * Per-message metadata. Everything is optional: the correlation id comes
 * from the message being handled (or a new one), the causation id is that
 * message's id, the aggregate id comes from the event's `aggregateId`
 * function (or the message id).
 *
 * @since 0.1.0
 * @category models
 */
export interface Meta {
  readonly aggregateId?: string | undefined
  /** Aggregate version after this event (default 0 = unversioned). */
  readonly version?: number | undefined
  readonly correlationId?: string | undefined
  readonly causationId?: string | undefined
  readonly tenantId?: string | undefined
  /** A message id chosen by the caller, for idempotent re-publishing. */
  readonly id?: string | undefined
  /** Extra headers. */
  readonly headers?: Readonly<Record<string, string>> | undefined
}

/**
 * A fully built message, ready to publish (or to store in an outbox).
 *
 * @since 0.1.0
 * @category models
 */
export interface OutgoingMessage {
  readonly id: string
  readonly subject: string
  readonly headers: Readonly<Record<string, string>>
  /** The JSON envelope. */
  readonly payload: string
  readonly type: string
  readonly aggregateId: string
}

/**
 * What JetStream answered: the stream, the sequence, and whether the message
 * was a duplicate within the stream's duplicate window.
 *
 * @since 0.1.0
 * @category models
 */
export interface Ack {
  readonly id: string
  readonly stream: string
  readonly seq: number
  readonly duplicate: boolean
}

/**
 * A publish that could not be done: the data did not encode, or the server
 * kept failing (or refused) after the retries. Carries the envelope.
 *
 * @since 0.1.0
 * @category errors
 */
export class PublishError extends Data.TaggedError("PublishError")<{
  readonly reason: "Encode" | "Failed"
  readonly subject: string
  readonly messageId: string
  readonly message: string
  readonly envelope?: unknown
  /** Set when the message was kept in the dead-letter stream (see {@link layerWithDeadLetter}). */
  readonly deadLetterSeq?: number | undefined
  readonly cause: ParseResult.ParseError | NatsError.NatsError
}> {}

/**
 * Options of the publisher layer.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Retries of transient failures (timeouts, no responders, 503). Default: exponential from 100 ms, jittered, capped at 2 s, 6 retries. */
  readonly retry?: Schedule.Schedule<unknown, NatsError.NatsError> | undefined
  /** How many publishes `publishAll` keeps in flight (default 256). */
  readonly window?: number | undefined
  /** How long to wait for one PubAck (default 5 s). */
  readonly timeout?: Duration.DurationInput | undefined
  /** `source` written in every envelope (the service name). */
  readonly source?: string | undefined
}

/**
 * One entry of a batch for `publishAll`.
 *
 * @since 0.1.0
 * @category models
 */
export interface Entry<R> {
  readonly build: (source: string | undefined) => Effect.Effect<OutgoingMessage, PublishError, R>
}

/**
 * The default retry policy.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultRetry: Schedule.Schedule<unknown, NatsError.NatsError> = Schedule.exponential("100 millis").pipe(
  Schedule.jittered,
  Schedule.either(Schedule.spaced("2 seconds")),
  Schedule.intersect(Schedule.recurs(6))
)

/**
 * The publisher service.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Publisher } from "effect-nats"
 * import { InvoiceIssued } from "./events.js"
 *
 * const program = Effect.gen(function*() {
 *   const publisher = yield* Publisher.Publisher
 *   const ack = yield* publisher.publish(InvoiceIssued, { invoiceId: "inv-1", amount: 42 })
 *   yield* Effect.log(`stored as ${ack.stream}#${ack.seq}`)
 * })
 * ```
 *
 * @since 0.1.0
 * @category tags
 */
export class Publisher extends Context.Tag("effect-nats/Publisher")<Publisher, {
  /** Encode, wrap and publish one event; returns the PubAck. */
  readonly publish: <A, I, R>(
    event: Event.Event<string, A, I, R>,
    data: A,
    meta?: Meta
  ) => Effect.Effect<Ack, PublishError, R>
  /** Publish many, with at most `window` in flight; acks in input order. */
  readonly publishAll: <R>(entries: Iterable<Entry<R>>) => Effect.Effect<Array<Ack>, PublishError, R>
  /** Publish an already built message (outbox relay, dead-letter replay). */
  readonly publishMessage: (message: OutgoingMessage) => Effect.Effect<Ack, PublishError>
}>() {}

const encoders = new WeakMap<object, (u: unknown) => Effect.Effect<unknown, ParseResult.ParseError, unknown>>()

const encoderFor = <A, I, R>(
  event: Event.Event<string, A, I, R>
): (u: Envelope.Envelope<A>) => Effect.Effect<Envelope.Encoded<I>, ParseResult.ParseError, R> => {
  let encode = encoders.get(event)
  if (encode === undefined) {
    encode = Schema.encode(event.envelope) as (u: unknown) => Effect.Effect<unknown, ParseResult.ParseError, unknown>
    encoders.set(event, encode)
  }
  return encode as (u: Envelope.Envelope<A>) => Effect.Effect<Envelope.Encoded<I>, ParseResult.ParseError, R>
}

/**
 * Build the outgoing message for an event: envelope (id, timestamp from
 * `Clock`, correlation and causation from {@link Meta} or the message being
 * handled), JSON payload, and headers with the current trace context.
 *
 * @since 0.1.0
 * @category constructors
 */
export const build = <A, I, R>(
  event: Event.Event<string, A, I, R>,
  data: A,
  meta: Meta = {},
  source?: string
): Effect.Effect<OutgoingMessage, PublishError, R> =>
  Effect.gen(function*() {
    const now = yield* Clock.currentTimeMillis
    const parent = yield* FiberRef.get(Envelope.current)
    const id = meta.id ?? Envelope.makeId(now)
    const causation = Option.getOrUndefined(parent)
    const envelope: Envelope.Envelope<A> = {
      id,
      type: event.type,
      source,
      timestamp: DateTime.unsafeMake(now),
      correlationId: meta.correlationId ?? causation?.correlationId ?? id,
      causationId: meta.causationId ?? causation?.id,
      aggregateId: meta.aggregateId ?? event.aggregateId?.(data) ?? id,
      aggregateType: event.aggregate,
      version: meta.version ?? 0,
      tenantId: meta.tenantId ?? causation?.tenantId,
      schemaVersion: event.schemaVersion,
      data
    }
    const encoded = yield* encoderFor(event)(envelope).pipe(
      Effect.mapError((cause) =>
        new PublishError({
          reason: "Encode",
          subject: event.subject,
          messageId: id,
          envelope: { ...envelope, data: undefined },
          message: `cannot encode ${event.type}: ${ParseResult.TreeFormatter.formatErrorSync(cause)}`,
          cause
        })
      )
    )
    const span = yield* Effect.currentSpan.pipe(Effect.option)
    const h = Envelope.toHeaders(
      envelope,
      Option.isSome(span) ? { traceparent: Tracing.traceparent(span.value) } : undefined
    )
    const headers: Record<string, string> = {}
    for (const [k, v] of h) headers[k] = v[0] ?? ""
    if (meta.headers) Object.assign(headers, meta.headers)
    return {
      id,
      subject: event.subject,
      headers,
      payload: JSON.stringify(encoded),
      type: event.type,
      aggregateId: envelope.aggregateId
    }
  })

const encoder = new TextEncoder()

/**
 * Build the service.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}, deadLetter?: DeadLetter.DeadLetter["Type"]) =>
  Effect.gen(function*() {
    const js = yield* JetStream
    const retry = options.retry ?? defaultRetry
    const window = Math.max(1, options.window ?? 256)
    const timeout = Duration.toMillis(options.timeout ?? "5 seconds")
    const spanOptions = new Map<string, { readonly kind: "producer"; readonly attributes: Record<string, unknown>; readonly captureStackTrace: false }>()
    const spanFor = (subject: string) => {
      let o = spanOptions.get(subject)
      if (o === undefined) {
        o = {
          kind: "producer",
          captureStackTrace: false,
          attributes: {
            [Tracing.Attributes.system]: "nats",
            [Tracing.Attributes.destination]: subject,
            [Tracing.Attributes.operationType]: "publish",
            [Tracing.Attributes.operationName]: "publish"
          }
        }
        spanOptions.set(subject, o)
      }
      return o
    }

    const send = (message: OutgoingMessage): Effect.Effect<Ack, PublishError> => {
      const h = natsHeaders()
      for (const k in message.headers) h.set(k, message.headers[k]!)
      const payload = encoder.encode(message.payload)
      const attempt = Effect.tryPromise({
        try: () => js.client.publish(message.subject, payload, { msgID: message.id, headers: h, timeout }),
        catch: NatsError.fromCause("Publisher.publish", message.subject)
      })
      return attempt.pipe(
        (self) => retryOnFailure(self, { schedule: retry, while: NatsError.isTransient }),
        Effect.map((ack: PubAck): Ack => ({ id: message.id, stream: ack.stream, seq: ack.seq, duplicate: ack.duplicate })),
        Effect.tap(() => Metric.increment(Metrics.published)),
        Effect.tapError(() => Metric.increment(Metrics.publishFailed)),
        Effect.catchAll((cause) =>
          Effect.flatMap(
            deadLetter === undefined ? Effect.succeed(undefined) : deadLetter.send({
              subject: message.subject,
              headers: h,
              data: payload,
              reason: "PublishFailed",
              errorTag: cause._tag,
              errorMessage: cause.message,
              attempts: 1,
              id: `publish:${message.id}`
            }).pipe(Effect.orElseSucceed(() => undefined)),
            (deadLetterSeq) =>
              Effect.fail(
                new PublishError({
                  reason: "Failed",
                  subject: message.subject,
                  messageId: message.id,
                  envelope: message.payload,
                  deadLetterSeq,
                  message: `publish ${message.id} to ${message.subject} failed: ${cause.message}${
                    deadLetterSeq === undefined ? "" : ` (kept as dead letter ${deadLetterSeq})`
                  }`,
                  cause
                })
              )
          )
        )
      )
    }

    // spans only when a tracer records them (checked per call: tracing layers may be provided late)
    const traced = <A, E, R>(subject: string, self: Effect.Effect<A, E, R>) =>
      Effect.flatMap(Tracing.isRecording, (recording) =>
        recording ? Effect.withSpan(self, `publish ${subject}`, spanFor(subject)) : self)

    const publishMessage = (message: OutgoingMessage) =>
      traced(message.subject, Effect.tap(send(message), (ack) => Effect.annotateCurrentSpan(Tracing.Attributes.messageId, ack.id)))

    const publish = <A, I, R>(event: Event.Event<string, A, I, R>, data: A, meta?: Meta) =>
      traced(
        event.subject,
        build(event, data, meta, options.source).pipe(
          Effect.tap((message) => Effect.annotateCurrentSpan(Tracing.Attributes.messageId, message.id)),
          Effect.flatMap(send)
        )
      )

    const publishAll = <R>(entries: Iterable<Entry<R>>) =>
      Effect.forEach(entries, (entry) => Effect.flatMap(entry.build(options.source), publishMessage), { concurrency: window })

    return Publisher.of({ publish, publishAll, publishMessage })
  })

/**
 * An entry for `publishAll`.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Publisher } from "effect-nats"
 * import { InvoiceIssued } from "./events.js"
 *
 * const program = Effect.flatMap(Publisher.Publisher, (p) =>
 *   p.publishAll([1, 2, 3].map((n) => Publisher.entry(InvoiceIssued, { invoiceId: `inv-${n}`, amount: n }))))
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const entry = <A, I, R>(event: Event.Event<string, A, I, R>, data: A, meta?: Meta): Entry<R> => ({
  build: (source) => build(event, data, meta, source)
})

/**
 * The publisher layer; needs {@link JetStream}.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<Publisher, never, JetStream> =>
  Layer.effect(Publisher, make(options))

/**
 * A publisher that keeps a message it could not publish (after the retries)
 * in the dead-letter stream, with reason `PublishFailed`, so it can be
 * replayed later. The publish still fails with a {@link PublishError} whose
 * `deadLetterSeq` says where the message was kept.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerWithDeadLetter = (options: Options = {}): Layer.Layer<Publisher, never, JetStream | DeadLetter.DeadLetter> =>
  Layer.effect(Publisher, Effect.flatMap(DeadLetter.DeadLetter, (dlq) => make(options, dlq)))
