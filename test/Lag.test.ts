import { describe, layer } from "@effect/vitest"
import { Deferred, Effect, Layer, Metric, MetricLabel, Ref, Schedule } from "effect"
import { Consumer, DeadLetter, Handler, JetStream, Lag, Metrics, Publisher } from "effect-nats"
import { billingStream, eventually, InvoiceIssued, NatsLive, unique } from "./utils.js"

const dlqStream = unique("DLQ")
const dlqPrefix = unique("dlq")

const Live = Layer.mergeAll(DeadLetter.layer({ stream: dlqStream, prefix: dlqPrefix }), Publisher.layer()).pipe(
  Layer.provideMerge(NatsLive())
)

/** A lag gauge of one consumer, as the poller tags it. */
const gaugeOf = (gauge: Metric.Metric.Gauge<number>, stream: string, durable: string) =>
  Effect.map(
    Metric.value(Metric.taggedWithLabels(gauge, [
      MetricLabel.make("messaging.consumer.group.name", durable),
      MetricLabel.make("messaging.nats.stream", stream)
    ])),
    (s) => s.value
  )

const lagOf = (stream: string, durable: string) =>
  Effect.all({
    pending: gaugeOf(Metrics.consumerPending, stream, durable),
    ackPending: gaugeOf(Metrics.consumerAckPending, stream, durable),
    redelivered: gaugeOf(Metrics.consumerRedelivered, stream, durable)
  })

describe("Lag", () => {
  layer(Live, { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.scoped("consumer gauges follow the server: pending while messages wait, ack pending and redelivered while handled, 0 when handled", () =>
      Effect.gen(function*() {
        const stream = yield* billingStream
        const durable = unique("lagged")
        const js = yield* JetStream.JetStream
        const publisher = yield* Publisher.Publisher
        yield* js.ensureConsumer({ stream, durable, ackWait: "30 seconds" })
        yield* Lag.watchConsumer({ stream, durable }, "50 millis")

        // nobody consumes yet: 5 messages wait
        for (let i = 0; i < 5; i++) yield* publisher.publish(InvoiceIssued, { invoiceId: `lag-${i}`, amount: i })
        yield* eventually(Effect.map(lagOf(stream, durable), (l) => l.pending === 5 && l.ackPending === 0))

        // a consumer takes them; the first delivery of lag-0 fails, its redelivery waits at the gate
        const gate = yield* Deferred.make<void>()
        const attempts = yield* Ref.make(0)
        yield* Consumer.make({
          stream,
          durable,
          ackWait: "30 seconds",
          retry: Schedule.recurs(0),
          redelivery: Schedule.spaced("100 millis"),
          handlers: [
            Handler.make(InvoiceIssued, (e) =>
              e.data.invoiceId !== "lag-0" ? Effect.void : Effect.flatMap(
                Ref.getAndUpdate(attempts, (n) => n + 1),
                (n) => n === 0 ? Effect.fail("first attempt fails") : Deferred.await(gate)
              ))
          ]
        })
        yield* eventually(Effect.map(lagOf(stream, durable), (l) => l.pending === 0 && l.ackPending === 1 && l.redelivered === 1))

        // handled: everything goes to 0
        yield* Deferred.succeed(gate, undefined)
        yield* eventually(Effect.map(lagOf(stream, durable), (l) => l.pending === 0 && l.ackPending === 0 && l.redelivered === 0))
      }))

    it.scoped("dead-letter depth per context, back to 0 when the dead letters are removed", () =>
      Effect.gen(function*() {
        const stream = yield* billingStream
        const durable = unique("doomed")
        const js = yield* JetStream.JetStream
        const publisher = yield* Publisher.Publisher
        const depth = Effect.map(
          Metric.value(Metric.tagged(Metrics.deadLetterDepth, "messaging.nats.dlq.context", "billing")),
          (s) => s.value
        )
        yield* Lag.watchDeadLetters("50 millis")
        yield* Consumer.make({
          stream,
          durable,
          handlers: [Handler.make(InvoiceIssued, () => Effect.fail(new Handler.PermanentError({ message: "no" })))]
        })
        for (let i = 0; i < 3; i++) yield* publisher.publish(InvoiceIssued, { invoiceId: `dead-${i}`, amount: i })
        yield* eventually(Effect.map(depth, (n) => n === 3))
        yield* Effect.promise(() => js.manager.streams.purge(dlqStream))
        yield* eventually(Effect.map(depth, (n) => n === 0))
      }))
  })
})
