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
  Layer,
  Metric,
  ParseResult,
  Schedule,
  Schema
} from "effect"
import * as DeadLetter from "./DeadLetter.js"
import * as Envelope from "./Envelope.js"
import type * as Event from "./Event.js"
import * as Codec from "./internal/codec.js"
import { type FiberContext, fiberContext } from "./internal/fiberContext.js"
import { fromRecord } from "./internal/headers.js"
import * as PublishWindow from "./internal/publishWindow.js"
import { retryAfter } from "./internal/retry.js"
import { type MessagingSpan, messagingSpan } from "./internal/spans.js"
import * as ParseIssues from "./internal/parseIssues.js"
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
 * What `publishMessages` did: the acks of the messages published (in the
 * order they were acked), and the first failure, if any.
 *
 * @since 0.1.0
 * @category models
 */
export interface Published {
  readonly acks: ReadonlyArray<Ack>
  readonly failure: PublishError | undefined
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
  /**
   * Retries of transient failures (timeouts, no responders, 503). Default:
   * exponential from 100 ms, jittered, capped at 1 s, for up to 15 s (a stream
   * leader's election takes 4-8 s, answered "no responders" meanwhile).
   */
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
  /** The event, its data type erased: {@link entry} pairs it with data of that type. */
  readonly event: Event.Event<string, unknown, unknown, R>
  readonly data: unknown
  readonly meta?: Meta | undefined
}

/**
 * The default retry policy: exponential from 100 ms, jittered, capped at 1 s,
 * for up to 15 s. It outlasts a stream leader's election on a cluster (4-8 s
 * on nats-server 2.9 after a node dies; the publish gets "no responders" or
 * times out meanwhile); every retry carries the same `Nats-Msg-Id`, so a
 * message stored by an attempt whose PubAck was lost is not stored twice.
 *
 * @example
 * ```ts
 * import { Schedule } from "effect"
 * import { Publisher } from "effect-nats"
 *
 * // the same shape with a longer outage budget
 * const PublisherLive = Publisher.layer({
 *   retry: Schedule.exponential("100 millis").pipe(Schedule.either(Schedule.spaced("1 second")), Schedule.upTo("60 seconds"))
 * })
 * ```
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultRetry: Schedule.Schedule<unknown, NatsError.NatsError> = Schedule.exponential("100 millis").pipe(
  Schedule.jittered,
  Schedule.either(Schedule.spaced("1 second")),
  Schedule.upTo("15 seconds")
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
  /**
   * Publish already built messages (the outbox relay's batches) in the
   * publisher's window: the messages of one aggregate (`aggregateId`) one
   * after another in the given order, at most `window` aggregates at a time
   * (default: the layer's `window`). A message that cannot be published
   * (after the retries) ends its aggregate's turn, so a later message of it
   * never overtakes it; the other aggregates go on. Never fails: the result
   * lists what was acked and the first failure. A wrapper of the service
   * that must see every publish of the relay wraps this method.
   */
  readonly publishMessages: (
    messages: Iterable<OutgoingMessage>,
    options?: { readonly window?: number | undefined }
  ) => Effect.Effect<Published>
}>() {}

/** What a publish task reports. */
type Done = (exit: Exit.Exit<Ack, PublishError>) => void

/** A task of the publish window. */
type Task<R> = (lane: PublishWindow.Lane<PublishError, R>, done: Done) => void

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
      message: `cannot encode ${event.type}: ${ParseIssues.describe(cause)}`,
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

/** Split messages into per-aggregate chains, each in the given order. */
const chains = (messages: Iterable<OutgoingMessage>): Array<Array<OutgoingMessage>> => {
  const byAggregate = new Map<string, Array<OutgoingMessage>>()
  for (const message of messages) {
    const chain = byAggregate.get(message.aggregateId)
    if (chain === undefined) byAggregate.set(message.aggregateId, [message])
    else chain.push(message)
  }
  return [...byAggregate.values()]
}

/**
 * Build the service.
 *
 * Whether to create PRODUCER spans is decided here, once (the rule of
 * `Tracing.isRecording`). Every publish runs in the one windowed engine
 * (`publish` and `publishMessage` are a window of one). Without spans, a
 * message is built (Schema encode, synchronous when the Schema allows) when
 * its turn comes and sent with plain promises through `JetStream.publish`;
 * the next one starts as soon as an ack frees a place, so nats.js writes the
 * publishes of one tick together. Only a message whose publish failed goes
 * through the Effect retry path (and the dead-letter stream, with
 * {@link layerWithDeadLetter}). With spans, each publish runs in its span, in
 * a fiber of the same window.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}, deadLetter?: DeadLetter.DeadLetter["Type"]) =>
  Effect.gen(function*() {
    const js = yield* JetStream
    const tracing = yield* Tracing.isRecording
    const retry = options.retry ?? defaultRetry
    const window = Math.max(1, options.window ?? 256)
    const timeout = Duration.toMillis(options.timeout ?? "5 seconds")
    const source = options.source
    const spans = new Map<string, MessagingSpan>()
    const spanFor = (subject: string) => {
      let span = spans.get(subject)
      if (span === undefined) {
        span = messagingSpan("producer", "publish", subject)
        spans.set(subject, span)
      }
      return span
    }

    // the one JetStream publish of a prepared message (the effect `attempt` and the window both call it)
    const jsPublish = (p: Prepared): Promise<PubAck> => js.publish(p.message.subject, p.payload, p.headers, timeout)

    const attempt = (p: Prepared) =>
      Effect.tryPromise({ try: () => jsPublish(p), catch: NatsError.fromCause("Publisher.publish", p.message.subject) })

    /** After a failed publish: retry transient failures with the Schedule, then fail (and dead-letter, if configured). */
    const recover = (p: Prepared, first: NatsError.NatsError): Effect.Effect<Ack, PublishError> =>
      retryAfter(first, attempt(p), { schedule: retry, while: NatsError.isTransient }).pipe(
        Effect.map((ack) => toAck(p.message.id, ack)),
        Effect.tap(() => Metric.increment(Metrics.published)),
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

    /** Publish in a fiber (a traced publish, a message whose encode is effectful): first attempt, then `recover`. */
    const send = (message: OutgoingMessage): Effect.Effect<Ack, PublishError> =>
      Effect.suspend(() => {
        const p = prepare(message)
        return Effect.matchEffect(attempt(p), {
          onFailure: (first) => recover(p, first),
          onSuccess: (ack) => Effect.as(Metric.increment(Metrics.published), toAck(message.id, ack))
        })
      })

    /** Publish in the window with plain promises: first attempt, then `recover` in a fiber only after a failure. */
    const start = <R>(lane: PublishWindow.Lane<PublishError, R>, message: OutgoingMessage, done: Done) => {
      let p: Prepared
      try {
        p = prepare(message)
      } catch (defect) {
        // what `send` dies with (e.g. a header nats.js refuses)
        return done(Exit.die(defect))
      }
      jsPublish(p).then(
        (ack) => {
          if (lane.over()) return
          Metrics.published.unsafeUpdate(1, lane.labels)
          done(Exit.succeed(toAck(message.id, ack)))
        },
        (cause) => {
          if (!lane.over()) lane.fork(recover(p, NatsError.fromCause("Publisher.publish", message.subject)(cause)), done)
        }
      )
    }

    /** `self` (build, then publish) in the PRODUCER span: built in it, its traceparent goes with the message. */
    const traced = <R>(subject: string, build: Effect.Effect<OutgoingMessage, PublishError, R>) =>
      Effect.withSpan(
        Effect.flatMap(build, (message) =>
          Effect.zipRight(Effect.annotateCurrentSpan(Tracing.Attributes.messageId, message.id), send(message))),
        `publish ${subject}`,
        spanFor(subject)
      )

    /** The task that publishes a built message. */
    const messageTask = (message: OutgoingMessage): Task<never> =>
      tracing
        ? (lane, done) => lane.fork(traced(message.subject, Effect.succeed(message)), done)
        : (lane, done) => start(lane, message, done)

    /** The task that builds an entry's message (when its turn comes) and publishes it. */
    const entryTask = <R>(context: FiberContext, entry: Entry<R>): Task<R> => {
      const event = entry.event
      const meta = entry.meta ?? {}
      if (tracing) {
        const build = Effect.flatMap(fiberContext, (inSpan) => buildWith(inSpan, event, entry.data, meta, source))
        return (lane, done) => lane.fork(traced(event.subject, build), done)
      }
      const built = buildWith(context, event, entry.data, meta, source)
      if (!Either.isEither(built)) return (lane, done) => lane.fork(Effect.flatMap(built, send), done)
      if (Either.isLeft(built)) return (_, done) => done(Exit.fail(built.left))
      return messageTask(built.right)
    }

    const publishAll = <R>(entries: Iterable<Entry<R>>): Effect.Effect<Array<Ack>, PublishError, R> =>
      Effect.flatMap(fiberContext, (context) => {
        const iterator = entries[Symbol.iterator]()
        const acks: Array<Ack> = []
        let index = 0
        const next = (): Task<R> | undefined => {
          const item = iterator.next()
          if (item.done) return undefined
          const i = index++
          const task = entryTask(context, item.value)
          return (lane, done) =>
            task(lane, (exit) => {
              if (Exit.isSuccess(exit)) acks[i] = exit.value
              done(exit)
            })
        }
        // the first failure ends the batch
        return Effect.as(PublishWindow.run(window, next, () => true), acks)
      })

    const publishMessages = (
      messages: Iterable<OutgoingMessage>,
      options?: { readonly window?: number | undefined }
    ): Effect.Effect<Published> =>
      Effect.suspend(() => {
        const queue = chains(messages)
        const acks: Array<Ack> = []
        let failure: PublishError | undefined
        let next = 0
        // one task per aggregate: its messages one after another; a failure ends it, the others go on
        const chain = (): Task<never> | undefined => {
          if (next === queue.length) return undefined
          const messages = queue[next++]!
          return (lane, done) => {
            const step = (index: number): void =>
              messageTask(messages[index]!)(lane, (exit) => {
                if (Exit.isSuccess(exit)) {
                  acks.push(exit.value)
                  if (index + 1 < messages.length && !lane.over()) return step(index + 1)
                }
                done(exit)
              })
            step(0)
          }
        }
        const run = PublishWindow.run(Math.max(1, options?.window ?? window), chain, (error) => {
          failure ??= error
          return false // never ends the window: `run` cannot fail
        })
        return Effect.map(Effect.orDie(run), (): Published => ({ acks, failure }))
      })

    const publish = <A, I, R>(event: Event.Event<string, A, I, R>, data: A, meta?: Meta) =>
      Effect.map(publishAll([entry(event, data, meta)]), (acks) => acks[0]!)

    const publishMessage = (message: OutgoingMessage) =>
      Effect.flatMap(
        publishMessages([message]),
        (published) => published.failure === undefined ? Effect.succeed(published.acks[0]!) : Effect.fail(published.failure)
      )

    return Publisher.of({ publish, publishAll, publishMessage, publishMessages })
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
  // the data's type is checked here, where event and data meet
  event: event as unknown as Event.Event<string, unknown, unknown, R>,
  data,
  meta
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
