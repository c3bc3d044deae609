import { NatsTestServer } from "@effect-nats/testing"
import { describe, expect, layer } from "@effect/vitest"
import { Effect, Fiber, Layer, Metric, Schedule, Schema } from "effect"
import { DeadLetter, Event, JetStream, Metrics, Publisher } from "effect-nats"
import { InvoiceIssued, unique } from "./utils.js"

const count = (metric: Metric.Metric.Counter<number>) => Effect.map(Metric.value(metric), (s) => s.count)

const Live = Layer.mergeAll(DeadLetter.layer(), Publisher.layer({
  timeout: "500 millis",
  retry: Schedule.spaced("100 millis").pipe(Schedule.intersect(Schedule.recurs(40)))
})).pipe(Layer.provideMerge(NatsTestServer.layerJetStream(
  { sources: ["binary"] },
  { reconnectTimeWait: "50 millis", reconnectJitter: "0 millis" }
)))

describe("Publisher", () => {
  layer(Live, { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.effect("a publish during a server outage is retried by the Schedule and stored once", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        const server = yield* NatsTestServer.NatsTestServer
        const publisher = yield* Publisher.Publisher
        const stream = unique("OUTAGE")
        yield* js.ensureStream({ name: stream, subjects: ["billing.>"] }) // file storage survives the restart
        const before = yield* count(Metrics.published)
        yield* server.stop
        const fiber = yield* Effect.fork(publisher.publish(InvoiceIssued, { invoiceId: "o-1", amount: 1 }))
        yield* Effect.sleep("1500 millis")
        yield* server.start
        const ack = yield* Fiber.join(fiber)
        expect(ack.stream).toBe(stream)
        const info = yield* js.streamInfo(stream)
        expect(info.state.messages).toBe(1)
        expect((yield* count(Metrics.published)) - before).toBe(1)
        yield* Effect.promise(() => js.manager.streams.delete(stream))
      }))

    it.effect("retries that run out fail with a typed PublishError carrying the envelope", () =>
      Effect.gen(function*() {
        // no stream listens on this subject: JetStream answers "no responders" every time
        const Orphan = Event.make({ type: "nowhere.thing.happened", aggregate: "Thing", schema: Schema.Struct({ n: Schema.Number }) })
        const failedBefore = yield* count(Metrics.publishFailed)
        const error = yield* Effect.flatMap(Publisher.Publisher, (p) => p.publish(Orphan, { n: 1 })).pipe(
          Effect.provide(Publisher.layer({ retry: Schedule.recurs(2), timeout: "200 millis" })),
          Effect.flip
        )
        expect(error._tag).toBe("PublishError")
        expect(error.reason).toBe("Failed")
        expect(error.subject).toBe("nowhere.thing.happened")
        expect(error.cause._tag).toBe("NatsNoRespondersError")
        expect(JSON.parse(String(error.envelope))).toMatchObject({ id: error.messageId, data: { n: 1 } })
        expect((yield* count(Metrics.publishFailed)) - failedBefore).toBe(1)
      }))

    it.effect("with layerWithDeadLetter, a message that cannot be published is kept in the DLQ for replay", () =>
      Effect.gen(function*() {
        const Orphan = Event.make({ type: "nowhere.thing.happened", aggregate: "Thing", schema: Schema.Struct({ n: Schema.Number }) })
        const error = yield* Effect.flatMap(Publisher.Publisher, (p) => p.publish(Orphan, { n: 7 })).pipe(
          Effect.provide(Publisher.layerWithDeadLetter({ retry: Schedule.recurs(1), timeout: "200 millis" })),
          Effect.flip
        )
        expect(error.deadLetterSeq).toBeDefined()
        const entry = yield* Effect.flatMap(DeadLetter.DeadLetter, (dlq) => dlq.get(error.deadLetterSeq!))
        expect(entry.subject).toBe("dlq.nowhere")
        expect(entry.record.reason).toBe("PublishFailed")
        expect(entry.record.errorTag).toBe("NatsNoRespondersError")
        expect(entry.record.envelope).toMatchObject({ id: error.messageId, data: { n: 7 } })
      }))

    it.effect("data that does not match the Schema is a PublishError with reason Encode", () =>
      Effect.gen(function*() {
        const publisher = yield* Publisher.Publisher
        const Positive = Event.make({
          type: "billing.refund.issued",
          aggregate: "Refund",
          schema: Schema.Struct({ amount: Schema.Number.pipe(Schema.positive()) })
        })
        const error = yield* Effect.flip(publisher.publish(Positive, { amount: -1 }))
        expect(error.reason).toBe("Encode")
        expect(error.message).toContain("amount")
      }))
  })
})
