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
import { Cause, Duration, Effect, Fiber, Layer, Metric, Option, Queue, Runtime, Schedule, type Scope } from "effect"
import * as DeadLetter from "./DeadLetter.js"
import { Dedup } from "./Dedup.js"
import type * as Handler from "./Handler.js"
import { Inbox } from "./internal/inbox.js"
import { JetStream, type JetStreamProvisionError } from "./JetStream.js"
import * as Limits from "./Limits.js"
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
    const handlerTimeout = Duration.toMillis(Duration.decode(options.handlerTimeout ?? "5 minutes"))
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
        (outcome) => settleOutcome(() => Effect.succeed(outcome))(delivery(msg))
      ).pipe(Effect.catchAllCause(() => Effect.sync(() => msg.nak())))

    const pipelineFailed = (msg: JsMsg) => (cause: Cause.Cause<unknown>) =>
      Effect.zipRight(
        Effect.logError(`Consumer ${options.durable}: pipeline failed on ${msg.subject}#${msg.info.streamSequence}`, cause),
        giveUp(msg, "MaxDeliveries", "PipelineDefect", `the pipeline failed: ${Cause.pretty(cause).slice(0, 1024)}`)
      )

    /**
     * A worker's current message, for the keep-alive and the watchdog. A
     * slot exists only while its worker's fiber runs (removed when the fiber
     * ends, however it ends): a message is kept alive only by a running fiber.
     */
    interface Slot {
      readonly index: number
      msg: JsMsg | undefined
      since: number
      /** The watchdog settled `msg` and replaced this worker. */
      expired: boolean
    }
    const running = new Map<Slot, Fiber.RuntimeFiber<void, never>>()
    /** Interrupt workers, waiting a bounded time: a worker stuck in an uninterruptible handler is left behind. */
    const interruptWorkers = (fibers: ReadonlyArray<Fiber.RuntimeFiber<void, never>>) =>
      Fiber.interruptAll(fibers).pipe(Effect.interruptible, Effect.timeoutOption("1 second"), Effect.asVoid)

    const worker = (slot: Slot): Effect.Effect<void, never, Handler.Context<H[number]>> => {
      const inbox = inboxes[ordered ? slot.index : 0]!
      // the chunk being worked on, and the message at `position`: when stopping, or interrupted (drain
      // timeout, watchdog), what the worker has not started is handed back
      let chunk: ReadonlyArray<JsMsg> = []
      let position = -1
      let handedBack = false
      // a pipeline that fails or dies (the message is `chunk[position]`), unless the watchdog settled it
      const failed = (cause: Cause.Cause<unknown>) => slot.expired ? Effect.void : pipelineFailed(chunk[position]!)(cause)
      // the next message of the chunk; when stopping, it and the rest are handed back instead
      const handleNext = () => {
        const i = ++position
        const msg = chunk[i]!
        if (stopping) {
          handedBack = true
          giveBack(chunk.slice(i))
          return Effect.void
        }
        slot.msg = msg
        slot.since = performance.now()
        // whatever the pipeline throws while building its effect is a failure of this message
        let handled: Effect.Effect<Middleware.Outcome, unknown, Handler.Context<H[number]>>
        try {
          handled = step(delivery(msg))
        } catch (defect) {
          handled = Effect.die(defect)
        }
        return Effect.catchAllCause(handled, failed)
      }
      const handleChunk = Effect.whileLoop({
        while: () => position + 1 < chunk.length && !handedBack && !slot.expired,
        body: handleNext,
        step: () => {
          slot.msg = undefined
        }
      })
      // a chunk at a time; the worker ends when the inbox is closed and empty (graceful drain)
      const loop: Effect.Effect<void, never, Handler.Context<H[number]>> = Effect.flatMap(inbox.take, (taken) => {
        if (taken === undefined || slot.expired) return Effect.void
        chunk = taken
        position = -1
        handedBack = false
        // (the chunk is let go before waiting for the next: a worker holds no message it is done with)
        return Effect.zipRight(handleChunk, Effect.suspend(() => {
          chunk = []
          return loop
        }))
      })
      return loop.pipe(
        Effect.onInterrupt(() =>
          Effect.sync(() => {
            if (!handedBack) giveBack(chunk.slice(position + 1))
          })
        ),
        Effect.ensuring(Effect.sync(() => {
          slot.msg = undefined
          running.delete(slot)
        }))
      )
    }

    // workers are daemons, stopped by the drain below (or by this finalizer if the consumer never started):
    // closing the scope must not wait for a worker the watchdog gave up on
    const startWorker = (index: number) =>
      Effect.flatMap(
        Effect.sync((): Slot => ({ index, msg: undefined, since: 0, expired: false })),
        (slot) => Effect.map(Effect.forkDaemon(worker(slot)), (fiber) => void running.set(slot, fiber))
      )
    yield* Effect.addFinalizer(() => interruptWorkers([...running.values()]))
    yield* Effect.forEach(Array.from({ length: concurrency }, (_, i) => i), startWorker, { discard: true })

    /**
     * The watchdog: a message handled for longer than `handlerTimeout` is
     * settled here (nak, or a dead letter at its last delivery), and its
     * worker is interrupted (without waiting: it may never resume) and
     * replaced. If the old handler does finish, its late settle is ignored
     * by the server or is a redelivery the dedup stage catches.
     */
    const expire = (slot: Slot, msg: JsMsg, fiber: Fiber.RuntimeFiber<void, never>) =>
      Effect.all([
        Effect.logError(
          `Consumer ${options.durable}: ${msg.subject}#${msg.info.streamSequence} was handled for more than ` +
            `${Duration.format(Duration.millis(handlerTimeout))}; settling it and replacing the worker`
        ),
        Metric.increment(Metrics.handlerTimeouts),
        giveUp(msg, "Timeout", "HandlerTimeout", `handling exceeded the handler timeout of ${Duration.format(Duration.millis(handlerTimeout))}`),
        // abandoned: interrupted without waiting, no longer a worker of this consumer
        Effect.sync(() => running.delete(slot)),
        Fiber.interruptFork(fiber),
        stopping ? Effect.void : startWorker(slot.index)
      ], { discard: true })

    // keep handled messages alive with working(), from running workers only; the watchdog expires the overdue
    const keepAliveEvery = Duration.toMillis(ackWait) / 3
    yield* Effect.suspend(() => {
      const now = performance.now()
      const overdue: Array<readonly [Slot, JsMsg, Fiber.RuntimeFiber<void, never>]> = []
      for (const [slot, fiber] of running) {
        const msg = slot.msg
        if (msg === undefined || slot.expired) continue
        const age = now - slot.since
        if (age > handlerTimeout) {
          slot.expired = true
          overdue.push([slot, msg, fiber])
        } else if (age > keepAliveEvery) {
          msg.working()
        }
      }
      return Effect.forEach(overdue, ([slot, msg, fiber]) => expire(slot, msg, fiber), { discard: true })
    }).pipe(
      Effect.repeat(Schedule.spaced(Duration.millis(Math.max(100, Math.min(keepAliveEvery, handlerTimeout / 4))))),
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
    const runFork = Runtime.runFork(yield* Effect.runtime<never>())
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
            // nothing may escape into nats.js (it would end the pull)
            try {
              if (stopping) {
                giveBack([msg])
                return
              }
              Metrics.consumed.unsafeUpdate(1, noLabels)
              route(msg).offer(msg)
            } catch (defect) {
              Metrics.callbackDefects.unsafeUpdate(1, noLabels)
              runFork(Effect.logError(`Consumer ${options.durable}: cannot take ${msg.subject}`, Cause.die(defect)))
              try {
                msg.nak()
              } catch {
                // the connection is closing: the server redelivers after ack_wait
              }
            }
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
        const finished = yield* Fiber.joinAll([...running.values()]).pipe(Effect.interruptible, Effect.timeoutOption(drainTimeout))
        if (Option.isNone(finished)) {
          yield* Effect.logWarning(
            `Consumer ${options.durable}: handlers still running after ${Duration.format(Duration.decode(drainTimeout))}; interrupting them`
          )
          yield* interruptWorkers([...running.values()])
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
