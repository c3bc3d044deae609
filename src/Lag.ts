/**
 * Lag as the server sees it: pollers that read consumer info and the
 * dead-letter stream on an interval and set the lag gauges of
 * {@link Metrics}. They run beside the consumers (nothing on the message
 * path), one request per consumer per interval.
 *
 * | gauge | from | attributes |
 * | --- | --- | --- |
 * | `messaging.nats.consumer.pending` | consumer info `num_pending` | `messaging.nats.stream`, `messaging.consumer.group.name` |
 * | `messaging.nats.consumer.ack_pending` | `num_ack_pending` | same |
 * | `messaging.nats.consumer.redelivered` | `num_redelivered` | same |
 * | `messaging.nats.dlq.depth` | messages per `dlq.<context>` subject of the DLQ stream | `messaging.nats.dlq.context` |
 *
 * A poll that fails (the server away, the consumer not created yet) is
 * logged at debug level and the gauges keep their last value until the next
 * poll succeeds.
 *
 * @since 0.2.0
 */
import { Duration, Effect, Layer, Metric, MetricLabel, Schedule, type Scope } from "effect"
import { DeadLetter } from "./DeadLetter.js"
import { consumerLabels } from "./internal/spans.js"
import { JetStream } from "./JetStream.js"
import * as Metrics from "./Metrics.js"

/**
 * A durable consumer to watch.
 *
 * @since 0.2.0
 * @category models
 */
export interface ConsumerRef {
  readonly stream: string
  readonly durable: string
}

/**
 * Lag poller options.
 *
 * @since 0.2.0
 * @category models
 */
export interface Options {
  /** The consumers to watch. */
  readonly consumers?: ReadonlyArray<ConsumerRef> | undefined
  /** How often the server is asked (default 10 seconds). */
  readonly interval?: Duration.DurationInput | undefined
}

const defaultInterval = Duration.seconds(10)

/** Run `poll` now and then every `interval` in the scope; a failed poll is logged and skipped. */
const every = <E, R>(what: string, interval: Duration.DurationInput | undefined, poll: Effect.Effect<void, E, R>) =>
  poll.pipe(
    Effect.catchAll((error) => Effect.logDebug(`Lag: cannot read ${what}`, error)),
    Effect.repeat(Schedule.spaced(interval ?? defaultInterval)),
    Effect.forkScoped,
    Effect.asVoid
  )

/**
 * Watch one durable consumer: sets `Metrics.consumerPending`,
 * `consumerAckPending` and `consumerRedelivered` for it until the scope
 * closes.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Consumer, Lag } from "effect-nats"
 * import { handlers } from "./handlers.js"
 *
 * const payments = Effect.zipRight(
 *   Consumer.make({ stream: "BILLING", durable: "payments", handlers }),
 *   Lag.watchConsumer({ stream: "BILLING", durable: "payments" }, "5 seconds")
 * )
 * ```
 *
 * @since 0.2.0
 * @category constructors
 */
export const watchConsumer = (
  consumer: ConsumerRef,
  interval?: Duration.DurationInput
): Effect.Effect<void, never, JetStream | Scope.Scope> =>
  Effect.flatMap(JetStream, (js) => {
    const labels = consumerLabels(consumer.stream, consumer.durable)
    const pending = Metric.taggedWithLabels(Metrics.consumerPending, labels)
    const ackPending = Metric.taggedWithLabels(Metrics.consumerAckPending, labels)
    const redelivered = Metric.taggedWithLabels(Metrics.consumerRedelivered, labels)
    return every(
      `consumer ${consumer.stream}/${consumer.durable}`,
      interval,
      Effect.flatMap(js.consumerInfo(consumer.stream, consumer.durable), (info) =>
        Effect.all([
          Metric.set(pending, info.num_pending),
          Metric.set(ackPending, info.num_ack_pending),
          Metric.set(redelivered, info.num_redelivered)
        ], { discard: true }))
    )
  })

/**
 * Watch the dead-letter stream: sets `Metrics.deadLetterDepth` per context
 * (`dlq.<context>`) until the scope closes; a context whose dead letters
 * were all removed goes back to 0.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Lag } from "effect-nats"
 *
 * const watch = Lag.watchDeadLetters("30 seconds") // needs DeadLetter and JetStream
 * ```
 *
 * @since 0.2.0
 * @category constructors
 */
export const watchDeadLetters = (
  interval?: Duration.DurationInput
): Effect.Effect<void, never, JetStream | DeadLetter | Scope.Scope> =>
  Effect.gen(function*() {
    const js = yield* JetStream
    const dlq = yield* DeadLetter
    const prefix = dlq.subjectFor("")
    const gauges = new Map<string, Metric.Metric.Gauge<number>>()
    const gaugeFor = (context: string) => {
      let g = gauges.get(context)
      if (g === undefined) {
        g = Metric.taggedWithLabels(Metrics.deadLetterDepth, [MetricLabel.make(Metrics.MetricAttributes.deadLetterContext, context)])
        gauges.set(context, g)
      }
      return g
    }
    yield* every(
      `dead-letter stream ${dlq.stream}`,
      interval,
      Effect.flatMap(
        Effect.tryPromise(() => js.manager.streams.info(dlq.stream, { subjects_filter: `${prefix}>` })),
        (info) => {
          const depth = new Map<string, number>()
          for (const [subject, n] of Object.entries(info.state.subjects ?? {})) {
            if (subject.startsWith(prefix)) depth.set(subject.slice(prefix.length), n)
          }
          for (const context of gauges.keys()) if (!depth.has(context)) depth.set(context, 0)
          return Effect.forEach(depth, ([context, n]) => Metric.set(gaugeFor(context), n), { discard: true })
        }
      )
    )
  })

/**
 * The consumer lag pollers as a layer, for the lifetime of the layer.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { JetStream, Lag } from "effect-nats"
 *
 * const LagLive = Lag.layer({ consumers: [{ stream: "BILLING", durable: "payments" }], interval: "5 seconds" }).pipe(
 *   Layer.provide(JetStream.layer)
 * )
 * ```
 *
 * @since 0.2.0
 * @category layers
 */
export const layer = (options: Options): Layer.Layer<never, never, JetStream> =>
  Layer.scopedDiscard(Effect.forEach(options.consumers ?? [], (c) => watchConsumer(c, options.interval), { discard: true }))

/**
 * The dead-letter depth poller as a layer (needs the {@link DeadLetter} service).
 *
 * @since 0.2.0
 * @category layers
 */
export const layerDeadLetters = (
  options: { readonly interval?: Duration.DurationInput | undefined } = {}
): Layer.Layer<never, never, JetStream | DeadLetter> => Layer.scopedDiscard(watchDeadLetters(options.interval))
