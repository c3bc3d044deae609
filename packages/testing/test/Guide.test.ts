/**
 * The testing guide's example (README), as a test: one handler test, run in
 * memory on TestClock and against a real nats-server by swapping one layer.
 */
import { describe, expect, it } from "@effect/vitest"
import { Data, Effect, Layer, Ref, Schedule, Schema } from "effect"
import { Consumer, DeadLetter, Event, Handler, JetStream, Metrics, Publisher } from "effect-nats"
import { Capture, InMemoryNats, NatsTestServer } from "@effect-nats/testing"

const InvoiceIssued = Event.make({
  type: "billing.invoice.issued",
  aggregate: "Invoice",
  schema: Schema.Struct({ invoiceId: Schema.String, amount: Schema.Number }),
  aggregateId: (d) => d.invoiceId
})

class GatewayDown extends Data.TaggedError("GatewayDown")<{ readonly message: string }> {}

// the test: a handler that always fails is retried in process, redelivered, then dead-lettered
const failingPayment = Effect.gen(function*() {
  const js = yield* JetStream.JetStream
  yield* js.ensureStream({ name: "BILLING", subjects: ["billing.>"] })
  const attempts = yield* Ref.make(0)
  yield* Consumer.make({
    stream: "BILLING",
    durable: "payments",
    maxDeliver: 3,
    retry: Schedule.exponential("100 millis").pipe(Schedule.intersect(Schedule.recurs(2))),
    redelivery: Schedule.exponential("500 millis"),
    handlers: [
      Handler.make(InvoiceIssued, (e) =>
        Effect.zipRight(
          Ref.update(attempts, (n) => n + 1),
          Effect.fail(new GatewayDown({ message: `cannot charge ${e.data.invoiceId}` }))
        ))
    ]
  })
  const publisher = yield* Publisher.Publisher
  yield* publisher.publish(InvoiceIssued, { invoiceId: "inv-1", amount: 42 })

  // in memory on TestClock: instant; against nats-server: real seconds
  yield* Capture.advance("3 seconds")

  const capture = yield* Capture.Capture
  const dead = yield* capture.awaitDeadLetter({ reason: "MaxDeliveries" })
  expect(dead).toMatchObject({ subject: "billing.invoice.issued", errorTag: "GatewayDown", attempts: 3 })
  expect(yield* Ref.get(attempts)).toBe(9) // 3 deliveries x (1 try + 2 retries)
  expect(yield* capture.counter(Metrics.deadLettered)).toBe(1)
  const spans = yield* capture.spans(/^process /)
  expect(spans.length).toBe(3)
})

// the one layer that differs
const InMemory = InMemoryNats.layer()
const RealServer = Capture.layer().pipe(Layer.provideMerge(NatsTestServer.layerJetStream()))

const services = Layer.mergeAll(DeadLetter.layer(), Publisher.layer())

describe("testing guide", () => {
  it.scoped("in memory, on TestClock: retries and dead letter in milliseconds", () =>
    failingPayment.pipe(Effect.provide(services.pipe(Layer.provideMerge(InMemory)))))

  it.live("the same test against nats-server", () =>
    failingPayment.pipe(Effect.provide(services.pipe(Layer.provideMerge(RealServer))), Effect.scoped), 30_000)
})
