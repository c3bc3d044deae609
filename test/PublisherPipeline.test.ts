import { describe, expect, layer } from "@effect/vitest"
import { NatsTestServer } from "@effect-nats/testing"
import { Effect, Fiber, Redacted, Schedule, Schema } from "effect"
import { Event, JetStream, NatsClient, Publisher } from "effect-nats"
import { billingStream, InvoiceIssued, NatsLive, unique } from "./utils.js"

// Publisher's JetStream publishes go through one reply subscription per connection (not nats.js's
// request per message): these check that failures still come back as the errors js.publish gives.

const patient = Schedule.spaced("100 millis").pipe(Schedule.intersect(Schedule.recurs(40)))

describe("Publisher pipeline", () => {
  layer(NatsLive({ sources: ["binary"] }, { reconnectTimeWait: "50 millis", reconnectJitter: "0 millis" }), {
    excludeTestServices: true,
    timeout: "60 seconds"
  })((it) => {
    it.scoped("publishAll across a server outage: the failed publishes are retried, each message stored once", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        const server = yield* NatsTestServer.NatsTestServer
        const stream = unique("OUTAGE_ALL")
        yield* js.ensureStream({ name: stream, subjects: ["billing.>"] }) // file storage survives the restart
        yield* Effect.addFinalizer(() => Effect.promise(() => js.manager.streams.delete(stream).catch(() => false)))
        const publisher = yield* Publisher.make({ timeout: "500 millis", retry: patient, window: 50 })
        yield* server.stop
        const fiber = yield* Effect.fork(publisher.publishAll(
          Array.from({ length: 200 }, (_, i) => Publisher.entry(InvoiceIssued, { invoiceId: `o-${i}`, amount: i }))
        ))
        yield* Effect.sleep("1 second")
        yield* server.start
        const acks = yield* Fiber.join(fiber)
        // one ack per entry; retried publishes may be stored out of order
        expect(new Set(acks.map((a) => a.id)).size).toBe(200)
        expect([...acks.map((a) => a.seq)].sort((a, b) => a - b)).toEqual(Array.from({ length: 200 }, (_, i) => i + 1))
        expect((yield* js.streamInfo(stream)).state.messages).toBe(200)
      }))

    it.scoped("a JetStream API error is a NatsRequestError with the server's code, not retried", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        const stream = unique("SMALL")
        yield* js.ensureStream({ name: stream, subjects: ["billing.>"], maxMsgSize: 64, storage: "memory" })
        yield* Effect.addFinalizer(() => Effect.promise(() => js.manager.streams.delete(stream).catch(() => false)))
        const publisher = yield* Publisher.make({ retry: patient })
        const started = performance.now()
        const error = yield* Effect.flip(publisher.publish(InvoiceIssued, { invoiceId: "big", amount: 1 }))
        expect(error.reason).toBe("Failed")
        expect(error.cause._tag).toBe("NatsRequestError")
        if (error.cause._tag === "NatsRequestError") expect(error.cause.code).toBe(400)
        expect(performance.now() - started).toBeLessThan(1000)
      }))

    it.scoped("publishAll: an entry that does not encode fails the batch with reason Encode", () =>
      Effect.gen(function*() {
        yield* billingStream
        const Positive = Event.make({
          type: "billing.refund.issued",
          aggregate: "Refund",
          schema: Schema.Struct({ amount: Schema.Number.pipe(Schema.positive()) })
        })
        const publisher = yield* Publisher.make()
        const error = yield* Effect.flip(publisher.publishAll([
          Publisher.entry(Positive, { amount: 1 }),
          Publisher.entry(Positive, { amount: -1 }),
          Publisher.entry(Positive, { amount: 2 })
        ]))
        expect(error.reason).toBe("Encode")
        expect(error.message).toContain("amount")
      }))
  })

  layer(
    NatsTestServer.layer({
      sources: ["binary"],
      jetstream: true,
      auth: { _tag: "Users", users: [{ user: "restricted", password: "pw-r", permissions: { publish: { deny: ["secret.>"] } } }] }
    }),
    { excludeTestServices: true, timeout: "60 seconds" }
  )((it) => {
    it.scoped("a denied publish fails at once with NatsPermissionDeniedError; other publishes go on", () =>
      Effect.gen(function*() {
        const server = yield* NatsTestServer.NatsTestServer
        const nats = yield* NatsClient.make({ servers: server.url, user: "restricted", password: Redacted.make("pw-r") })
        const js = yield* JetStream.make.pipe(Effect.provideService(NatsClient.NatsClient, nats))
        const Leaked = Event.make({ type: "secret.plan.leaked", aggregate: "Plan", schema: Schema.Struct({ n: Schema.Number }) })
        yield* js.ensureStream({ name: unique("SECRET"), subjects: ["secret.>"], storage: "memory" })
        yield* js.ensureStream({ name: unique("BILLING"), subjects: ["billing.>"], storage: "memory" })
        const publisher = yield* Publisher.make({ retry: patient }).pipe(Effect.provideService(JetStream.JetStream, js))
        const started = performance.now()
        const error = yield* Effect.flip(publisher.publish(Leaked, { n: 1 }))
        expect(error.cause._tag).toBe("NatsPermissionDeniedError")
        expect(performance.now() - started).toBeLessThan(1000)
        const ack = yield* publisher.publish(InvoiceIssued, { invoiceId: "ok", amount: 1 })
        expect(ack.seq).toBe(1)
      }))
  })
})
