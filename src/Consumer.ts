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
 * Two paths dead-letter: the pipeline, when its own delivery count reaches
 * `maxDeliver` (the server's `max_deliver` is set one higher so the pipeline
 * normally has the last word), and a watcher of the server's max-deliveries
 * advisory, which copies any message the server gave up on (a worker that
 * crashed on it every time).
 *
 * @since 0.1.0
 */
import type { ConsumerMessages, JsMsg } from "@nats-io/jetstream"
import type { Subscription } from "@nats-io/nats-core"
import { type Cause, Duration, Effect, Fiber, Layer, Metric, Option, Queue, Schedule, type Scope } from "effect"
import * as DeadLetter from "./DeadLetter.js"
import { Dedup } from "./Dedup.js"
import type * as Handler from "./Handler.js"
import { Inbox } from "./internal/inbox.js"
import { JetStream, type JetStreamProvisionError } from "./JetStream.js"
import * as Metrics from "./Metrics.js"
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
  readonly handlers: H
  /** Worker fibers (default 16). */
  readonly concurrency?: number | undefined
  /** Keep messages of one aggregate in order (they run on one worker). */
  readonly orderBy?: "aggregate" | undefined
  /** In-process retries of a failed handler (default: 2 retries, 50 ms then 100 ms). */
  readonly retry?: Schedule.Schedule<unknown, unknown> | undefined
  /** Delay of the n-th redelivery, for `nak(delay)` (default: exponential from 1 s, capped at 1 minute). */
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
  /** How long shutdown waits for in-flight handlers (default 10 s). */
  readonly drainTimeout?: Duration.DurationInput | undefined
  /** A message whose type has no handler: `"ack"` (default, counted) or `"deadLetter"`. */
  readonly unknownType?: "ack" | "deadLetter" | undefined
  /** Errors to dead-letter at once (besides `Handler.PermanentError`). */
  readonly isPermanent?: ((error: unknown) => boolean) | undefined
  /** Larger payloads are dead-lettered (default 1 MiB). */
  readonly maxMessageBytes?: number | undefined
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

const hash = (s: string): number => {
  let h = 0x811c9dc5
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return h >>> 0
}

/** A delivery of the default step: the JetStream metadata is parsed from the reply subject when first read. */
class MessageDelivery implements Middleware.Delivery {
  constructor(readonly msg: JsMsg) {}
  get subject(): string {
    return this.msg.subject
  }
  get stream(): string {
    return this.msg.info.stream
  }
  get consumer(): string {
    return this.msg.info.consumer
  }
  get streamSequence(): number {
    return this.msg.info.streamSequence
  }
  get deliveryCount(): number {
    return this.msg.info.deliveryCount
  }
}

/** The extra metric labels of the consumed counter (none: the fiber's own labels do not reach the nats.js callback). */
const noLabels: ReadonlyArray<never> = []

interface AdvisoryPayload {
  readonly stream?: string
  readonly consumer?: string
  readonly stream_seq?: number
  readonly deliveries?: number
}

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
      maxMessageBytes: options.maxMessageBytes ?? 1024 * 1024,
      ack: options.ack ?? "fast",
      // term(reason) is ignored by servers before 2.10.4 (the message is redelivered)
      termWithReason: yield* nats.serverAtLeast("2.10.4"),
      tracing: yield* Tracing.isRecording,
      deadLetter,
      dedup
    }
    // the default pipeline runs as one step (same stages, fewer effects per message)
    const step = options.pipeline === undefined
      ? Middleware.defaultStep(settings)
      : Middleware.compose(options.pipeline(Middleware.defaults(settings)), Middleware.handle)

    // one inbox per worker when ordered, else one shared by all workers
    const ordered = options.orderBy === "aggregate"
    const inboxes = Array.from(
      { length: ordered ? concurrency : 1 },
      () => new Inbox<JsMsg>(ordered ? 1 : concurrency, 64)
    )
    // what each worker is handling, for the keep-alive
    const handling: Array<JsMsg | undefined> = Array.from({ length: concurrency })
    const handlingSince: Array<number> = Array.from({ length: concurrency }, () => 0)
    // stopping: no message is started any more; messages not started are handed back (nak) once the pull
    // is closed (a nak while it is open would have the server deliver them here again), newest first:
    // nats-server 2.9 delivers the last delivered message twice when it is nak'ed after others
    let stopping = false
    let pullClosed = false
    const handBack: Array<JsMsg> = []
    const nakNewestFirst = (msgs: ReadonlyArray<JsMsg>) => {
      const sorted = [...msgs].sort((a, b) => b.info.deliverySequence - a.info.deliverySequence)
      for (const msg of sorted) msg.nak()
    }
    const giveBack = (msgs: ReadonlyArray<JsMsg>): void => {
      if (pullClosed) nakNewestFirst(msgs)
      else handBack.push(...msgs)
    }

    const route = (msg: JsMsg): Inbox<JsMsg> => {
      if (inboxes.length === 1) return inboxes[0]!
      const key = msg.headers?.get("Aggregate-Id") || msg.subject
      return inboxes[hash(key) % inboxes.length]!
    }

    const pipelineFailed = (msg: JsMsg) => (cause: Cause.Cause<unknown>) =>
      Effect.zipRight(
        Effect.logError(`Consumer ${options.durable}: pipeline failed on ${msg.subject}#${msg.info.streamSequence}`, cause),
        Effect.sync(() => msg.nak())
      )

    // the default step reads a message's JetStream metadata (parsed from its reply subject) only if it needs it;
    // custom middleware get plain objects (they may copy them with a spread)
    const delivery = options.pipeline === undefined
      ? (msg: JsMsg): Middleware.Delivery => new MessageDelivery(msg)
      : (msg: JsMsg): Middleware.Delivery => {
        const info = msg.info
        return {
          msg,
          subject: msg.subject,
          stream: info.stream,
          consumer: info.consumer,
          streamSequence: info.streamSequence,
          deliveryCount: info.deliveryCount
        }
      }

    const worker = (index: number): Effect.Effect<void, never, Handler.Context<H[number]>> => {
      const inbox = inboxes[ordered ? index : 0]!
      // the chunk being worked on, and the message at `position`: when stopping, or interrupted (drain
      // timeout), what the worker has not started is handed back
      let chunk: ReadonlyArray<JsMsg> = []
      let position = -1
      let handedBack = false
      // a pipeline that fails (the message is `chunk[position]`)
      const failed = (cause: Cause.Cause<unknown>) => pipelineFailed(chunk[position]!)(cause)
      // the next message of the chunk; when stopping, it and the rest are handed back instead
      const handleNext = () => {
        const i = ++position
        const msg = chunk[i]!
        if (stopping) {
          handedBack = true
          giveBack(chunk.slice(i))
          return Effect.void
        }
        handling[index] = msg
        handlingSince[index] = performance.now()
        return Effect.catchAllCause(step(delivery(msg)), failed)
      }
      const handleChunk = Effect.whileLoop({
        while: () => position + 1 < chunk.length && !handedBack,
        body: handleNext,
        step: () => {
          handling[index] = undefined
        }
      })
      // a chunk at a time; the worker ends when the inbox is closed and empty (graceful drain)
      const loop: Effect.Effect<void, never, Handler.Context<H[number]>> = Effect.flatMap(inbox.take, (taken) => {
        if (taken === undefined) return Effect.void
        chunk = taken
        position = -1
        handedBack = false
        return Effect.zipRight(handleChunk, loop)
      })
      return Effect.onInterrupt(loop, () =>
        Effect.sync(() => {
          handling[index] = undefined
          if (!handedBack) giveBack(chunk.slice(position + 1))
        }))
    }

    const workers = yield* Effect.forEach(
      Array.from({ length: concurrency }, (_, i) => i),
      (i) => Effect.forkScoped(worker(i)),
      { concurrency: "unbounded" }
    )

    // keep long handlers alive
    const keepAliveEvery = Duration.toMillis(ackWait) / 3
    yield* Effect.sync(() => {
      const now = performance.now()
      for (let i = 0; i < concurrency; i++) {
        const msg = handling[i]
        if (msg !== undefined && now - handlingSince[i]! > keepAliveEvery) msg.working()
      }
    }).pipe(
      Effect.repeat(Schedule.spaced(Duration.millis(Math.max(250, keepAliveEvery)))),
      Effect.forkScoped
    )

    // the server gave up on a message (max_deliver reached without the pipeline settling it)
    const advisories = yield* Queue.unbounded<AdvisoryPayload>()
    const advisorySubject = `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.${options.stream}.${options.durable}`
    yield* Effect.acquireRelease(
      Effect.try({
        try: () =>
          nats.connection.subscribe(advisorySubject, {
            queue: `effect-nats.dlq.${options.durable}`,
            callback: (err, m) => {
              if (err === null) {
                try {
                  Queue.unsafeOffer(advisories, m.json<AdvisoryPayload>())
                } catch {
                  // not JSON: nothing to copy
                }
              }
            }
          }),
        catch: NatsError.fromCause("Consumer.advisories", advisorySubject)
      }),
      (sub: Subscription) => Effect.sync(() => sub.unsubscribe())
    )
    yield* Queue.take(advisories).pipe(
      Effect.flatMap((a) => {
        const seq = a.stream_seq
        if (seq === undefined) return Effect.void
        return Effect.tryPromise(() => js.manager.streams.getMessage(options.stream, { seq })).pipe(
          Effect.flatMap((m) =>
            m === null ? Effect.void : deadLetter.send({
              subject: m.subject,
              headers: m.header,
              data: m.data,
              reason: "MaxDeliveries",
              errorTag: "MaxDeliveries",
              errorMessage: `the server stopped delivering after ${a.deliveries ?? "max"} deliveries`,
              attempts: a.deliveries ?? maxDeliver + 1,
              stream: options.stream,
              consumer: options.durable,
              sequence: seq,
              storedAt: m.time.getTime()
            }).pipe(Effect.zipRight(Metric.increment(Metrics.deadLettered)))
          ),
          Effect.catchAll((e) => Effect.logError(`Consumer ${options.durable}: cannot copy ${options.stream}#${seq} to the DLQ`, e))
        )
      }),
      Effect.forever,
      Effect.forkScoped
    )

    // start pulling
    const consumer = yield* Effect.tryPromise({
      try: () => js.client.consumers.get(options.stream, options.durable),
      catch: NatsError.fromCause("Consumer.get")
    })
    const maxMessages = Math.max(1, Math.min(options.maxAckPending ?? 1000, options.pullBatch ?? Math.max(100, concurrency * 8)))
    const messages: ConsumerMessages = yield* Effect.tryPromise({
      try: () =>
        consumer.consume({
          max_messages: maxMessages,
          callback: (msg) => {
            if (stopping) {
              giveBack([msg])
              return
            }
            Metrics.consumed.unsafeUpdate(1, noLabels)
            route(msg).offer(msg)
          }
        }),
      catch: NatsError.fromCause("Consumer.consume")
    })

    // graceful drain: runs before the workers are interrupted and before the connection drains
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        // stop: no message is started any more; the handlers running finish (bounded by drainTimeout);
        // every message not started (waiting, or still delivered by nats.js) goes back once the pull is closed
        stopping = true
        for (const inbox of inboxes) giveBack(inbox.takeAll())
        // nats.js drops what arrives after an unsubscribe: drain the pull's subscription first (unsubscribe,
        // then a round trip), so that what the server had already sent reaches the callback and is handed back
        const pullSubscription = (messages as { readonly sub?: { drain(): Promise<void> } }).sub
        yield* Effect.promise(async () => {
          await pullSubscription?.drain().catch(() => undefined)
          await messages.close().catch(() => undefined)
        }).pipe(Effect.interruptible, Effect.timeoutOption("5 seconds"))
        pullClosed = true
        nakNewestFirst(handBack.splice(0))
        for (const inbox of inboxes) inbox.close()
        const finished = yield* Fiber.joinAll(workers).pipe(Effect.interruptible, Effect.timeoutOption(drainTimeout))
        if (Option.isNone(finished)) {
          yield* Effect.logWarning(
            `Consumer ${options.durable}: handlers still running after ${Duration.format(Duration.decode(drainTimeout))}; interrupting them`
          )
          yield* Fiber.interruptAll(workers)
        }
        for (const inbox of inboxes) giveBack(inbox.takeAll())
      })
    )
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
 * import { Layer } from "effect"
 * import { Consumer, DeadLetter, Dedup, Handler, JetStream, NatsClient } from "effect-nats"
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
