/**
 * The typed publisher: encodes data with the event's Schema, wraps it in the
 * envelope, sets the headers (`Nats-Msg-Id`, trace context, metadata) and
 * publishes to JetStream, retrying transient failures with a `Schedule`.
 *
 * @since 0.1.0
 */
import type { PubAck } from "@nats-io/jetstream"
import type { MsgHdrs } from "@nats-io/nats-core"
import {
  Context,
  Data,
  DateTime,
  Duration,
  Effect,
  Either,
  Exit,
  Fiber,
  FiberId,
  FiberRef,
  Layer,
  Metric,
  ParseResult,
  Runtime,
  Schedule,
  Schema
} from "effect"
import * as DeadLetter from "./DeadLetter.js"
import * as Envelope from "./Envelope.js"
import type * as Event from "./Event.js"
import * as Codec from "./internal/codec.js"
import { type FiberContext, fiberContext } from "./internal/fiberContext.js"
import { fromRecord } from "./internal/headers.js"
import { publisherFor } from "./internal/jetstreamPublish.js"
import { pipelined } from "./internal/publishPipelined.js"
import { retryAfter } from "./internal/retry.js"
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
 * One entry of a batch for `publishAll` (see {@link entry}).
 *
 * @since 0.1.0
 * @category models
 */
export interface Entry<R> {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  readonly event: Event.Event<string, any, any, R>
  readonly data: unknown
  readonly meta?: Meta | undefined
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

const encoders = new WeakMap<object, Codec.Codec<unknown, unknown>>()

/** The envelope encoder of an event, compiled once. */
const encoderFor = <R>(event: Event.Event<string, unknown, unknown, R>): Codec.Codec<unknown, R> => {
  let encode = encoders.get(event)
  if (encode === undefined) {
    encode = Codec.encoder(event.envelope as Schema.Schema<unknown, unknown, unknown>)
    encoders.set(event, encode)
  }
  return encode as Codec.Codec<unknown, R>
}

/** A build that is done (`Either`), or that needs the effectful encoder (`Effect`). Both are effects. */
type Built<R> = Either.Either<OutgoingMessage, PublishError> | Effect.Effect<OutgoingMessage, PublishError, R>

const buildWith = <R>(
  context: FiberContext,
  event: Event.Event<string, unknown, unknown, R>,
  data: unknown,
  meta: Meta,
  source: string | undefined
): Built<R> => {
  const now = context.clock.unsafeCurrentTimeMillis()
  const causation = context.causation
  const id = meta.id ?? Envelope.makeId(now)
  const envelope: Envelope.Envelope<unknown> = {
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
  const encodeError = (cause: ParseResult.ParseError) =>
    new PublishError({
      reason: "Encode",
      subject: event.subject,
      messageId: id,
      envelope: { ...envelope, data: undefined },
      message: `cannot encode ${event.type}: ${ParseResult.TreeFormatter.formatErrorSync(cause)}`,
      cause
    })
  const message = (encoded: unknown): OutgoingMessage => {
    const headers = Envelope.headerRecord(
      envelope,
      context.span === undefined ? undefined : { traceparent: Tracing.traceparent(context.span) }
    )
    if (meta.headers) Object.assign(headers, meta.headers)
    return {
      id,
      subject: event.subject,
      headers,
      payload: JSON.stringify(encoded),
      type: event.type,
      aggregateId: envelope.aggregateId
    }
  }
  const encoded = encoderFor(event)(envelope)
  const done = Codec.sync(encoded)
  if (done !== undefined) return Either.isRight(done) ? Either.right(message(done.right)) : Either.left(encodeError(done.left))
  return encoded.pipe(Effect.mapError(encodeError), Effect.map(message))
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
  Effect.flatMap(fiberContext, (context) => buildWith(context, event as Event.Event<string, unknown, unknown, R>, data, meta, source))

const encoder = new TextEncoder()

/** A message as nats.js takes it. */
interface Prepared {
  readonly message: OutgoingMessage
  readonly headers: MsgHdrs
  readonly payload: Uint8Array
}

const prepare = (message: OutgoingMessage): Prepared => {
  const headers = fromRecord(message.headers)
  // JetStream dedup: the message id is the msgID (built messages carry it already)
  if (message.headers[Envelope.HeaderNames.msgId] !== message.id) headers.set(Envelope.HeaderNames.msgId, message.id)
  return { message, headers, payload: encoder.encode(message.payload) }
}

const toAck = (id: string, ack: PubAck): Ack => ({ id, stream: ack.stream, seq: ack.seq, duplicate: ack.duplicate })

/**
 * Build the service.
 *
 * Without a recording tracer, `publishAll` keeps its window of publishes in
 * flight with plain promises (no fiber per message): the next message is
 * built (Schema encode, synchronous when the Schema allows) and sent as soon
 * as an ack frees a place, so nats.js writes the publishes of one tick
 * together. Only a message whose publish failed goes through the Effect retry
 * path (and the dead-letter stream, with {@link layerWithDeadLetter}).
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
    const source = options.source
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

    const publishJs = publisherFor(js.client)
    const publishNow = (p: Prepared): Promise<PubAck> => publishJs(p.message.subject, p.payload, p.headers, timeout)

    const attempt = (p: Prepared) =>
      Effect.tryPromise({ try: () => publishNow(p), catch: NatsError.fromCause("Publisher.publish", p.message.subject) })

    /** After a failed publish: retry transient failures with the Schedule, then fail (and dead-letter, if configured). */
    const recover = (p: Prepared, first: NatsError.NatsError): Effect.Effect<PubAck, PublishError> =>
      retryAfter(first, attempt(p), { schedule: retry, while: NatsError.isTransient }).pipe(
        Effect.tapError(() => Metric.increment(Metrics.publishFailed)),
        Effect.catchAll((cause) =>
          Effect.flatMap(
            deadLetter === undefined ? Effect.succeed(undefined) : deadLetter.send({
              subject: p.message.subject,
              headers: p.headers,
              data: p.payload,
              reason: "PublishFailed",
              errorTag: cause._tag,
              errorMessage: cause.message,
              attempts: 1,
              id: `publish:${p.message.id}`
            }).pipe(Effect.orElseSucceed(() => undefined)),
            (deadLetterSeq) =>
              Effect.fail(
                new PublishError({
                  reason: "Failed",
                  subject: p.message.subject,
                  messageId: p.message.id,
                  envelope: p.message.payload,
                  deadLetterSeq,
                  message: `publish ${p.message.id} to ${p.message.subject} failed: ${cause.message}${
                    deadLetterSeq === undefined ? "" : ` (kept as dead letter ${deadLetterSeq})`
                  }`,
                  cause
                })
              )
          )
        )
      )

    const acked = (p: Prepared, self: Effect.Effect<PubAck, PublishError>): Effect.Effect<Ack, PublishError> =>
      Effect.map(self, (ack) => toAck(p.message.id, ack)).pipe(Effect.tap(() => Metric.increment(Metrics.published)))

    const send = (message: OutgoingMessage): Effect.Effect<Ack, PublishError> => {
      const p = prepare(message)
      return acked(p, Effect.catchAll(attempt(p), (first) => recover(p, first)))
    }

    // spans only when a tracer records them (checked per call: tracing layers may be provided late)
    const traced = <A, E, R>(subject: string, self: Effect.Effect<A, E, R>) =>
      Effect.withSpan(self, `publish ${subject}`, spanFor(subject))

    const annotated = (message: OutgoingMessage) =>
      Effect.zipRight(Effect.annotateCurrentSpan(Tracing.Attributes.messageId, message.id), send(message))

    const publishMessage = (message: OutgoingMessage) =>
      Effect.flatMap(fiberContext, (context) =>
        context.recording ? traced(message.subject, annotated(message)) : send(message))

    // `publishMessage` with plain promises (what `send` does), for the outbox relay's window
    pipelined.set(publishMessage, (runtime, labels) => (message, done, track) => {
      let p: Prepared
      try {
        p = prepare(message)
      } catch (defect) {
        // what `publishMessage` would die with (e.g. a header nats.js refuses)
        return done(Exit.die(defect))
      }
      publishNow(p).then(
        (ack) => {
          Metrics.published.unsafeUpdate(1, labels)
          done(Exit.succeed(toAck(message.id, ack)))
        },
        (cause) => {
          const fiber = Runtime.runFork(runtime)(
            acked(p, recover(p, NatsError.fromCause("Publisher.publish", message.subject)(cause)))
          )
          track(fiber)
          fiber.addObserver(done)
        }
      )
    })

    const publish = <A, I, R>(event: Event.Event<string, A, I, R>, data: A, meta: Meta = {}) => {
      const buildIn = (context: FiberContext) =>
        buildWith(context, event as Event.Event<string, unknown, unknown, R>, data, meta, source)
      return Effect.flatMap(fiberContext, (context) =>
        context.recording
          // built in the PRODUCER span: its traceparent goes with the message
          ? traced(event.subject, Effect.flatMap(Effect.flatMap(fiberContext, buildIn), annotated))
          : Effect.flatMap(buildIn(context), send))
    }

    /** The window of in-flight publishes, driven by the acks (see `make`). */
    const pump = <R>(context: FiberContext, entries: Iterable<Entry<R>>): Effect.Effect<Array<Ack>, PublishError, R> =>
      Effect.gen(function*() {
        const runtime = yield* Effect.runtime<R>()
        const labels = yield* FiberRef.get(FiberRef.currentMetricLabels)
        return yield* Effect.async<Array<Ack>, PublishError>((resume) => {
          const iterator = entries[Symbol.iterator]()
          const acks: Array<Ack> = []
          // fibers of the messages that needed effects: an effectful encode, or a retry after a failed publish
          const fibers = new Set<Fiber.RuntimeFiber<Ack, PublishError>>()
          let started = 0
          let settled = 0
          let exhausted = false
          let over = false
          const end = (exit: Exit.Exit<Array<Ack>, PublishError>) => {
            if (over) return
            over = true
            for (const fiber of fibers) fiber.unsafeInterruptAsFork(FiberId.none)
            resume(exit)
          }
          const settle = (index: number, ack: Ack) => {
            acks[index] = ack
            settled++
            next()
          }
          const fork = (index: number, effect: Effect.Effect<Ack, PublishError, R>) => {
            const fiber = Runtime.runFork(runtime)(effect)
            fibers.add(fiber)
            fiber.addObserver((exit) => {
              fibers.delete(fiber)
              if (over) return
              if (Exit.isSuccess(exit)) settle(index, exit.value)
              else end(exit as Exit.Exit<never, PublishError>)
            })
          }
          const start = (index: number, message: OutgoingMessage) => {
            const p = prepare(message)
            publishNow(p).then(
              (ack) => {
                if (over) return
                Metrics.published.unsafeUpdate(1, labels)
                settle(index, toAck(message.id, ack))
              },
              (cause) => {
                if (over) return
                fork(index, acked(p, recover(p, NatsError.fromCause("Publisher.publish", message.subject)(cause))))
              }
            )
          }
          const next = () => {
            try {
              while (!over && !exhausted && started - settled < window) {
                const item = iterator.next()
                if (item.done) {
                  exhausted = true
                  break
                }
                const index = started++
                const { data, event, meta } = item.value
                const built = buildWith(context, event, data, meta ?? {}, source)
                if (!Either.isEither(built)) fork(index, Effect.flatMap(built, send))
                else if (Either.isLeft(built)) return end(Exit.fail(built.left))
                else start(index, built.right)
              }
              if (exhausted && settled === started) end(Exit.succeed(acks))
            } catch (defect) {
              end(Exit.die(defect))
            }
          }
          next()
          return Effect.suspend(() => {
            over = true
            return Fiber.interruptAll(fibers)
          })
        })
      })

    const publishAll = <R>(entries: Iterable<Entry<R>>): Effect.Effect<Array<Ack>, PublishError, R> =>
      Effect.flatMap(fiberContext, (context) =>
        context.recording
          ? Effect.forEach(entries, (e) => publish(e.event, e.data, e.meta), { concurrency: window })
          : pump(context, entries))

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
export const entry = <A, I, R>(event: Event.Event<string, A, I, R>, data: A, meta?: Meta): Entry<R> => ({ event, data, meta })

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
