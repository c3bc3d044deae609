/**
 * A consumer runs a set of handlers on one durable JetStream pull consumer.
 *
 * Messages are pulled by nats.js (callback mode) into an inbox and taken in
 * chunks by a fixed set of long-lived worker fibers: no fiber per message, no
 * wake-up per message, and the acks of a chunk leave in one write. Each message
 * goes through the {@link Middleware} pipeline. With `orderBy: "aggregate"`,
 * messages of one aggregate (the `Aggregate-Id` header) always go to the same
 * worker, so they are handled one after another while different aggregates
 * run in parallel.
 *
 * Shutdown (scope close, e.g. SIGTERM through `NodeRuntime.runMain`) stops
 * pulling, naks at once every message no handler has started (the server
 * redelivers it without waiting for `ack_wait`), lets the running handlers
 * finish and settle their messages (bounded by `drainTimeout`), before the
 * connection drains.
 *
 * On a JetStream cluster the pull can be lost with a node (the one leading
 * the durable consumer): it is issued again as soon as a new consumer leader
 * is elected (its advisory), two idle heartbeats are missed (`heartbeat`) or
 * the connection reconnects; each stall is logged (when it starts and when
 * messages come again) and counted in `Metrics.consumerStalls`.
 *
 * Two paths dead-letter: the pipeline, when its own delivery count reaches
 * `maxDeliver` (the server's `max_deliver` is set one higher so the pipeline
 * normally has the last word), and a watcher of the server's max-deliveries
 * advisory, which copies any message the server gave up on (a worker that
 * crashed on it every time).
 *
 * @since 0.1.0
 */
import type { JsMsg } from "@nats-io/jetstream"
import { Duration, Effect, Layer, Option, Schedule, type Scope } from "effect"
import * as DeadLetter from "./DeadLetter.js"
import { Dedup } from "./Dedup.js"
import type * as Handler from "./Handler.js"
import { watchMaxDeliveries } from "./internal/consumer/advisories.js"
import * as Drain from "./internal/consumer/drain.js"
import { HandBack } from "./internal/consumer/handBack.js"
import * as Pull from "./internal/consumer/pull.js"
import * as Workers from "./internal/consumer/workers.js"
import { Inbox } from "./internal/inbox.js"
import { type DeliverFrom, JetStream, type JetStreamProvisionError } from "./JetStream.js"
import * as Limits from "./Limits.js"
import * as Middleware from "./Middleware.js"
import { NatsClient } from "./NatsClient.js"
import * as NatsError from "./NatsError.js"
import * as Tracing from "./Tracing.js"

/**
 * Consumer options.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options<H extends ReadonlyArray<Handler.Any>> {
  readonly stream: string
  readonly durable: string
  /** One subject filter for the durable consumer. */
  readonly filterSubject?: string | undefined
  /**
   * Where a new durable starts (default `all`): also a stream sequence or a
   * time (`{ startSequence }`, `{ startTime }`). An existing durable keeps
   * its position (changing this is an incompatible change).
   */
  readonly deliverPolicy?: DeliverFrom | undefined
  readonly handlers: H
  /** Worker fibers (default 16). */
  readonly concurrency?: number | undefined
  /**
   * Keep messages of one aggregate (the `Aggregate-Id` header) in order:
   * they run on one worker, one after another, and a message that fails and
   * waits for its redelivery holds its aggregate: the later messages of that
   * aggregate are parked (kept alive with `working()`) until it is handled
   * or dead-lettered. Other aggregates keep flowing. See the README's
   * Guarantees for where this order stops.
   */
  readonly orderBy?: "aggregate" | undefined
  /**
   * With `orderBy: "aggregate"`, what a dead-lettered message does to its
   * aggregate: `"continue"` (default) releases the later messages;
   * `"block"` keeps them parked for the consumer's lifetime (bounded by
   * `maxAckPending`), so nothing of that aggregate is handled past a gap.
   */
  readonly onDeadLetter?: "continue" | "block" | undefined
  /** In-process retries of a failed handler (default: 2 retries, 50 ms then 100 ms); `Handler.retry` overrides it per handler. */
  readonly retry?: Schedule.Schedule<unknown, unknown> | undefined
  /** Delay of the n-th redelivery, for `nak(delay)` (default: exponential from 1 s, capped at 1 minute); `Handler.redelivery` overrides it per handler. */
  readonly redelivery?: Schedule.Schedule<unknown, unknown> | undefined
  /** Deliveries before a failing message is dead-lettered (default 5). */
  readonly maxDeliver?: number | undefined
  /** Server ack wait: covers crashed or stuck workers; long handlers are kept alive with `working()` (default 30 s). */
  readonly ackWait?: Duration.DurationInput | undefined
  /** Unacked messages the server lets this consumer have (default 1000). */
  readonly maxAckPending?: number | undefined
  /**
   * Messages asked for in one pull (default `max(100, 8 × concurrency)`, at
   * most `maxAckPending`). Larger pulls mean fewer round trips and more
   * throughput; but what one instance pulled waits for its workers, so with
   * several instances of a durable smaller pulls spread the load better.
   */
  readonly pullBatch?: number | undefined
  /**
   * The pull's idle heartbeat (default 1 s, at least 500 ms): when two are
   * missed the pull is taken as lost (e.g. with the node that led the durable
   * consumer) and issued again. The consumer also pulls again at once when a
   * new consumer leader is elected and when the connection reconnects.
   */
  readonly heartbeat?: Duration.DurationInput | undefined
  /** How long shutdown waits for in-flight handlers (default 10 s). */
  readonly drainTimeout?: Duration.DurationInput | undefined
  /** A message whose type has no handler: `"ack"` (default, counted) or `"deadLetter"`. */
  readonly unknownType?: "ack" | "deadLetter" | undefined
  /** Errors to dead-letter at once (besides `Handler.PermanentError`). */
  readonly isPermanent?: ((error: unknown) => boolean) | undefined
  /** Larger payloads are dead-lettered, reason `TooLarge` (default: `Limits.maxBytes`, else the server's max_payload). */
  readonly maxMessageBytes?: number | undefined
  /**
   * The longest a message may be handled (default 5 minutes). Past it, a
   * watchdog stops keeping the message alive, naks it (or dead-letters it,
   * reason `Timeout`, at its last delivery), logs and counts it
   * (`Metrics.handlerTimeouts`), and replaces the worker, so a handler that
   * never resumes cannot hold a message or a worker for ever.
   */
  readonly handlerTimeout?: Duration.DurationInput | undefined
  /** `"fast"` (default): `ack()`; `"confirm"`: `ackAck()`, waiting for the server. */
  readonly ack?: "fast" | "confirm" | undefined
  /** Create or update the durable consumer to match these options (default true). */
  readonly provision?: boolean | undefined
  /** Change the pipeline: receives the default middleware, returns the list to use (outermost first). */
  readonly pipeline?:
    | ((defaults: Middleware.Defaults) => ReadonlyArray<Middleware.Middleware>)
    | undefined
}

/**
 * The default in-process retry policy.
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultRetry: Schedule.Schedule<unknown, unknown> = Schedule.exponential("50 millis").pipe(
  Schedule.intersect(Schedule.recurs(2))
)

/**
 * The default redelivery policy (delays for `nak`).
 *
 * @since 0.1.0
 * @category constants
 */
export const defaultRedelivery: Schedule.Schedule<unknown, unknown> = Schedule.exponential("1 second").pipe(
  Schedule.either(Schedule.spaced("1 minute"))
)

/** The delivery of a message (its JetStream metadata is parsed from its reply subject when first read). */
const delivery = (msg: JsMsg): Middleware.Delivery => ({ msg, subject: msg.subject })

/**
 * Start a consumer in the current scope. It runs until the scope closes, then
 * drains.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Consumer, Handler } from "effect-nats"
 * import { InvoiceIssued } from "./events.js"
 *
 * const payments = Consumer.make({
 *   stream: "BILLING",
 *   durable: "payments",
 *   handlers: [Handler.make(InvoiceIssued, (e) => Effect.log(e.data.invoiceId))],
 *   concurrency: 8,
 *   maxDeliver: 5
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <const H extends ReadonlyArray<Handler.Any>>(
  options: Options<H>
): Effect.Effect<
  void,
  JetStreamProvisionError | NatsError.NatsError,
  Scope.Scope | JetStream | NatsClient | DeadLetter.DeadLetter | Handler.Context<H[number]>
> =>
  Effect.gen(function*() {
    const js = yield* JetStream
    const nats = yield* NatsClient
    const deadLetter = yield* DeadLetter.DeadLetter
    const dedup = yield* Effect.serviceOption(Dedup)
    const concurrency = Math.max(1, options.concurrency ?? 16)
    const maxDeliver = Math.max(1, options.maxDeliver ?? 5)
    const ackWait = Duration.decode(options.ackWait ?? "30 seconds")
    const drainTimeout = options.drainTimeout ?? "10 seconds"
    const handlerTimeout = Duration.decode(options.handlerTimeout ?? "5 minutes")
    const limits = Limits.resolve(yield* Limits.Limits, nats.connection.info?.max_payload)

    const handlers = new Map<string, Handler.Any>()
    for (const h of options.handlers) {
      if (handlers.has(h.type)) return yield* Effect.dieMessage(`Consumer ${options.durable}: two handlers for ${h.type}`)
      handlers.set(h.type, h)
    }

    if (options.provision !== false) {
      yield* js.ensureConsumer({
        stream: options.stream,
        durable: options.durable,
        filterSubject: options.filterSubject,
        deliverPolicy: options.deliverPolicy,
        ackWait,
        // one more than the pipeline's limit, so the pipeline dead-letters first
        maxDeliver: maxDeliver + 1,
        maxAckPending: options.maxAckPending
      })
    }

    const settings: Middleware.Settings = {
      stream: options.stream,
      durable: options.durable,
      handlers,
      maxDeliver,
      retry: options.retry ?? defaultRetry,
      redelivery: options.redelivery ?? defaultRedelivery,
      isPermanent: (e) =>
        (typeof e === "object" && e !== null && "_tag" in e && e._tag === "PermanentError") ||
        (options.isPermanent?.(e) ?? false),
      unknownType: options.unknownType ?? "ack",
      maxMessageBytes: options.maxMessageBytes ?? limits.maxBytes,
      maxDepth: limits.maxDepth,
      ack: options.ack ?? "fast",
      // term(reason) is ignored by servers before 2.10.4 (the message is redelivered)
      termWithReason: yield* nats.serverAtLeast("2.10.4"),
      tracing: yield* Tracing.isRecording,
      deadLetter,
      dedup
    }
    const pipeline = options.pipeline ?? Middleware.defaultPipeline
    const step = Middleware.compose(pipeline(Middleware.defaults(settings)), Middleware.handle)

    // one inbox per worker when ordered, else one shared by all workers
    const ordered = options.orderBy === "aggregate"
    const batch = Option.flatMap(dedup, (store) => store.batch)
    const inboxes = Array.from(
      { length: ordered ? concurrency : 1 },
      () => new Inbox<JsMsg>(ordered ? 1 : concurrency, Option.match(batch, { onNone: () => 64, onSome: (b) => b.maxMessages }))
    )
    const handBack = new HandBack()

    // settle a message the pipeline could not: nak with the redelivery delay, or dead-letter it at its last delivery
    const settleOutcome = Middleware.settle(settings)
    const giveUp = (msg: JsMsg, reason: "Timeout" | "MaxDeliveries", errorTag: string, message: string) =>
      Effect.flatMap(
        msg.info.deliveryCount >= maxDeliver
          ? Effect.succeed(Middleware.Outcome.deadLetter(reason, errorTag, message))
          : Effect.map(
            Middleware.redeliveryDelay(settings.redelivery, msg.info.deliveryCount),
            (delay) => Middleware.Outcome.nak(delay, message)
          ),
        (outcome) => Effect.as(settleOutcome(() => Effect.succeed(outcome))(delivery(msg)), outcome._tag as "Nak" | "DeadLetter")
      ).pipe(Effect.catchAllCause(() => Effect.sync(() => {
        msg.nak()
        return "Nak" as const
      })))

    const workers = yield* Workers.start({
      durable: options.durable,
      concurrency,
      inboxes,
      step: (msg) => step(delivery(msg)),
      giveUp,
      handBack,
      ackWait,
      handlerTimeout,
      batch,
      ordered: ordered && { onDeadLetter: options.onDeadLetter ?? "continue" }
    })
    yield* watchMaxDeliveries({ stream: options.stream, durable: options.durable, maxDeliver, js, nats, deadLetter })
    const maxMessages = Math.max(1, Math.min(options.maxAckPending ?? 1000, options.pullBatch ?? Math.max(100, concurrency * 8)))
    const heartbeat = Duration.decode(options.heartbeat ?? "1 second")
    // ordered: messages an earlier instance left pending come back after their ack wait; later ones wait for them
    const pending = ordered ? yield* Effect.option(js.consumerInfo(options.stream, options.durable)) : Option.none()
    const fence = Option.match(pending, {
      onNone: () => undefined,
      onSome: (info) => info.num_ack_pending > 0 ? { upTo: info.delivered.stream_seq, wait: ackWait } : undefined
    })
    const pull = yield* Pull.start({
      stream: options.stream,
      durable: options.durable,
      maxMessages,
      heartbeat,
      inboxes,
      handBack,
      fence,
      js,
      nats
    })
    yield* Drain.onClose({ durable: options.durable, pull, inboxes, handBack, workers, drainTimeout })
  }) as Effect.Effect<
    void,
    JetStreamProvisionError | NatsError.NatsError,
    Scope.Scope | JetStream | NatsClient | DeadLetter.DeadLetter | Handler.Context<H[number]>
  >

/**
 * A layer that runs the consumer for the lifetime of the layer.
 *
 * @example
 * ```ts
 * import { Effect, Layer } from "effect"
 * import { Consumer, DeadLetter, Dedup, Handler, JetStream, NatsClient } from "effect-nats"
 * import { InvoiceIssued } from "./events.js"
 *
 * const onIssued = Handler.make(InvoiceIssued, (e) => Effect.log(`invoice ${e.data.invoiceId} issued`))
 *
 * const PaymentsLive = Consumer.layer({ stream: "BILLING", durable: "payments", handlers: [onIssued] }).pipe(
 *   Layer.provide([DeadLetter.layer(), Dedup.layerMemory()]),
 *   Layer.provideMerge(JetStream.layer),
 *   Layer.provide(NatsClient.layerConfig())
 * )
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = <const H extends ReadonlyArray<Handler.Any>>(
  options: Options<H>
): Layer.Layer<
  never,
  JetStreamProvisionError | NatsError.NatsError,
  JetStream | NatsClient | DeadLetter.DeadLetter | Handler.Context<H[number]>
> => Layer.scopedDiscard(make(options))
