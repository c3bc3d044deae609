import { describe, expect, layer } from "@effect/vitest"
import { headers } from "@nats-io/nats-core"
import { Clock, Duration, Effect, Exit, Layer, Metric, Ref, Schedule, Scope } from "effect"
import { Consumer, DeadLetter, Envelope, Handler, JetStream, Metrics, Middleware, NatsClient, Publisher } from "effect-nats"
import { billingStream, eventually, InvoiceIssued, PaymentReceived, PipelineLive, unique } from "./utils.js"

const count = (metric: Metric.Metric.Counter<number>) => Effect.map(Metric.value(metric), (s) => s.count)

/** Start a consumer in its own scope; returns the scope so a test can close it (graceful drain). */
const startConsumer = <const H extends ReadonlyArray<Handler.Any>>(options: Consumer.Options<H>) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    yield* Consumer.make(options).pipe(Scope.extend(scope))
    return scope
  })

describe("Consumer", () => {
  layer(PipelineLive, { excludeTestServices: true, timeout: "30 seconds" })((it) => {
    it.scoped("handles typed events; what a handler publishes is caused by and correlated with its message", () =>
      Effect.gen(function*() {
        const stream = yield* billingStream
        const publisher = yield* Publisher.Publisher
        const seen = yield* Ref.make<Array<Envelope.Envelope<unknown>>>([])
        yield* Consumer.make({
          stream,
          durable: unique("c"),
          handlers: [
            Handler.make(InvoiceIssued, (e) =>
              Effect.gen(function*() {
                yield* Ref.update(seen, (xs) => [...xs, e])
                const amount: number = e.data.amount // typed data
                yield* publisher.publish(PaymentReceived, { invoiceId: e.data.invoiceId, paid: amount })
              })),
            Handler.make(PaymentReceived, (e) => Ref.update(seen, (xs) => [...xs, e]))
          ]
        })
        const ack = yield* publisher.publish(InvoiceIssued, { invoiceId: "inv-1", amount: 42 }, {
          correlationId: "flow-1",
          version: 1
        })
        expect(ack.stream).toBe(stream)
        expect(ack.duplicate).toBe(false)
        yield* eventually(Effect.map(Ref.get(seen), (xs) => xs.length === 2))
        const [issued, paid] = yield* Ref.get(seen)
        expect(issued!.type).toBe("billing.invoice.issued")
        expect(issued!.aggregateId).toBe("inv-1")
        expect(issued!.aggregateType).toBe("Invoice")
        expect(issued!.correlationId).toBe("flow-1")
        expect(issued!.version).toBe(1)
        expect(paid!.type).toBe("billing.payment.received")
        expect(paid!.causationId).toBe(issued!.id)
        expect(paid!.correlationId).toBe("flow-1")
      }))

    it.scoped("re-publishing the same id within the duplicate window is a JetStream duplicate", () =>
      Effect.gen(function*() {
        yield* billingStream
        const publisher = yield* Publisher.Publisher
        const a = yield* publisher.publish(InvoiceIssued, { invoiceId: "inv-2", amount: 1 }, { id: "fixed-id-1" })
        const b = yield* publisher.publish(InvoiceIssued, { invoiceId: "inv-2", amount: 1 }, { id: "fixed-id-1" })
        expect(a.duplicate).toBe(false)
        expect(b.duplicate).toBe(true)
        expect(b.seq).toBe(a.seq)
      }))

    it.scoped("publishAll keeps a bounded window and returns acks in order", () =>
      Effect.gen(function*() {
        yield* billingStream
        const publisher = yield* Publisher.Publisher
        const acks = yield* publisher.publishAll(
          Array.from({ length: 200 }, (_, i) => Publisher.entry(InvoiceIssued, { invoiceId: `inv-${i}`, amount: i }))
        )
        expect(acks.map((a) => a.seq)).toEqual(Array.from({ length: 200 }, (_, i) => i + 1))
      }))

    it.scoped("poison messages are dead-lettered with their reason and the consumer keeps going", () =>
      Effect.gen(function*() {
        const stream = yield* billingStream
        const js = yield* JetStream.JetStream
        const dlq = yield* DeadLetter.DeadLetter
        const publisher = yield* Publisher.Publisher
        const handled = yield* Ref.make(0)
        const durable = unique("poison")
        const before = yield* count(Metrics.deadLettered)
        yield* Consumer.make({
          stream,
          durable,
          unknownType: "deadLetter",
          maxMessageBytes: 10_000,
          handlers: [Handler.make(InvoiceIssued, () => Ref.update(handled, (n) => n + 1))]
        })
        const enc = new TextEncoder()
        const raw = (payload: string) => Effect.promise(() => js.client.publish("billing.invoice.issued", enc.encode(payload)))
        yield* raw("{not json")
        yield* publisher.publish(InvoiceIssued, { invoiceId: "ok-1", amount: 1 })
        yield* raw(JSON.stringify({ id: "x1", type: "billing.invoice.issued", timestamp: "2026-01-01T00:00:00Z", correlationId: "c", aggregateId: "a", aggregateType: "Invoice", version: 0, data: { invoiceId: 7 } }))
        yield* raw(JSON.stringify({ id: "x2", type: "billing.invoice.voided", timestamp: "2026-01-01T00:00:00Z", correlationId: "c", aggregateId: "a", aggregateType: "Invoice", version: 0, data: {} }))
        yield* raw(JSON.stringify({ hello: "world" }))
        yield* raw("x".repeat(20_000))
        yield* publisher.publish(InvoiceIssued, { invoiceId: "ok-2", amount: 2 })

        yield* eventually(Effect.map(count(Metrics.deadLettered), (n) => n - before === 5))
        yield* eventually(Effect.map(Ref.get(handled), (n) => n === 2))
        const entries = yield* dlq.list({ context: "billing" })
        const mine = entries.filter((e) => e.record.stream === stream)
        expect(mine.map((e) => [e.record.reason, e.record.errorTag])).toEqual([
          ["Decode", "InvalidJson"],
          ["Decode", "ParseError"],
          ["UnknownType", "UnknownType"],
          ["Decode", "NotAnEnvelope"],
          ["TooLarge", "TooLarge"]
        ])
        const parseError = mine[1]!.record
        // one line naming the field, not the envelope Schema's signature
        expect(parseError.errorMessage).toBe("billing.invoice.issued: data.invoiceId: Expected string, actual 7; data.amount: is missing")
        expect(parseError.attempts).toBe(1)
        expect(parseError.consumer).toBe(durable)
        expect(parseError.envelope).toMatchObject({ id: "x1" })
        expect(Buffer.from(mine[0]!.record.payload, "base64").toString()).toBe("{not json")
      }))

    it.scoped("a failing handler is retried in process, redelivered with nak(delay), then dead-lettered", () =>
      Effect.gen(function*() {
        const stream = yield* billingStream
        const dlq = yield* DeadLetter.DeadLetter
        const publisher = yield* Publisher.Publisher
        const attempts = yield* Ref.make<Array<number>>([])
        const retriedBefore = yield* count(Metrics.retried)
        const redeliveredBefore = yield* count(Metrics.redelivered)
        yield* Consumer.make({
          stream,
          durable: unique("failing"),
          maxDeliver: 3,
          retry: Schedule.recurs(1),
          redelivery: Schedule.spaced("100 millis"),
          handlers: [
            Handler.make(InvoiceIssued, (e) =>
              Effect.flatMap(Ref.update(attempts, (xs) => [...xs, Date.now()]), () =>
                Effect.fail({ _tag: "PaymentGatewayDown", message: `gateway down for ${e.data.invoiceId}` })))
          ]
        })
        const ack = yield* publisher.publish(InvoiceIssued, { invoiceId: "inv-f", amount: 1 })
        yield* eventually(
          Effect.map(dlq.list({ context: "billing" }), (xs) => xs.some((x) => x.record.sequence === ack.seq && x.record.stream === stream))
        )
        const entry = (yield* dlq.list({ context: "billing" })).find((x) => x.record.stream === stream)!
        expect(entry.record.reason).toBe("MaxDeliveries")
        expect(entry.record.errorTag).toBe("PaymentGatewayDown")
        expect(entry.record.errorMessage).toContain("gateway down for inv-f")
        expect(entry.record.attempts).toBe(3)
        // 3 deliveries x (1 try + 1 in-process retry)
        expect((yield* Ref.get(attempts)).length).toBe(6)
        expect((yield* count(Metrics.retried)) - retriedBefore).toBe(3)
        expect((yield* count(Metrics.redelivered)) - redeliveredBefore).toBe(2)
      }))

    it.scoped("a permanent error is dead-lettered at once; defects are retried like failures", () =>
      Effect.gen(function*() {
        const stream = yield* billingStream
        const dlq = yield* DeadLetter.DeadLetter
        const publisher = yield* Publisher.Publisher
        const calls = yield* Ref.make(0)
        yield* Consumer.make({
          stream,
          durable: unique("perm"),
          maxDeliver: 2,
          retry: Schedule.stop,
          redelivery: Schedule.spaced("50 millis"),
          handlers: [
            Handler.make(InvoiceIssued, (e) =>
              Effect.zipRight(
                Ref.update(calls, (n) => n + 1),
                e.data.amount < 0
                  ? Handler.permanent(Effect.fail(new Error("negative amount")))
                  : Effect.die(new TypeError("boom"))
              ))
          ]
        })
        yield* publisher.publish(InvoiceIssued, { invoiceId: "neg", amount: -5 })
        yield* publisher.publish(InvoiceIssued, { invoiceId: "bug", amount: 5 })
        yield* eventually(Effect.map(dlq.list({ context: "billing" }), (xs) => xs.filter((x) => x.record.stream === stream).length === 2))
        const entries = (yield* dlq.list({ context: "billing" })).filter((x) => x.record.stream === stream)
        const byReason = Object.fromEntries(entries.map((e) => [e.record.reason, e.record]))
        expect(byReason["Permanent"]).toMatchObject({ errorTag: "PermanentError", errorMessage: "negative amount", attempts: 1 })
        expect(byReason["MaxDeliveries"]).toMatchObject({ errorTag: "HandlerDefect", attempts: 2 })
        expect(byReason["MaxDeliveries"]!.errorMessage).toContain("TypeError: boom")
        expect(yield* Ref.get(calls)).toBe(3)
      }))

    it.scoped("graceful drain: in-flight messages are handled once and acked; the next instance gets none again", () =>
      Effect.gen(function*() {
        const stream = yield* billingStream
        const js = yield* JetStream.JetStream
        const publisher = yield* Publisher.Publisher
        const durable = unique("drain")
        const handled = yield* Ref.make<Array<string>>([])
        const handler = Handler.make(InvoiceIssued, (e) =>
          Effect.zipRight(Effect.sleep("50 millis"), Ref.update(handled, (xs) => [...xs, e.data.invoiceId])))
        yield* publisher.publishAll(
          Array.from({ length: 200 }, (_, i) => Publisher.entry(InvoiceIssued, { invoiceId: `d-${i}`, amount: i }))
        )
        const scope = yield* startConsumer({ stream, durable, concurrency: 50, handlers: [handler], ackWait: "5 seconds" })
        yield* eventually(Effect.map(Ref.get(handled), (xs) => xs.length >= 20))
        yield* Scope.close(scope, Exit.void)
        const first = yield* Ref.get(handled)
        expect(new Set(first).size).toBe(first.length)
        // (messages the server had already sent to the closed pull are not acked: they come back after ack_wait)
        // a second instance handles exactly the rest
        yield* startConsumer({ stream, durable, concurrency: 50, handlers: [handler] }).pipe(
          Effect.flatMap((s) => Effect.addFinalizer(() => Scope.close(s, Exit.void)))
        )
        yield* eventually(Effect.map(Ref.get(handled), (xs) => xs.length >= 200))
        yield* Effect.sleep("300 millis")
        // every message handled once in all: what the first instance handled was acked, never redelivered
        const all = yield* Ref.get(handled)
        expect(all.length).toBe(200)
        expect(new Set(all).size).toBe(200)
        yield* eventually(Effect.map(js.consumerInfo(stream, durable), (i) => i.num_ack_pending === 0 && i.num_pending === 0))
      }))

    it.scoped("orderBy aggregate keeps each aggregate's messages in order (also across many small pulls)", () =>
      Effect.gen(function*() {
        const stream = yield* billingStream
        const publisher = yield* Publisher.Publisher
        const seen = yield* Ref.make<Record<string, Array<number>>>({})
        yield* Consumer.make({
          stream,
          durable: unique("ordered"),
          concurrency: 8,
          orderBy: "aggregate",
          pullBatch: 7,
          handlers: [
            Handler.make(InvoiceIssued, (e) =>
              Effect.zipRight(
                Effect.sleep(`${(e.data.amount * 7) % 5} millis`),
                Ref.update(seen, (m) => ({ ...m, [e.aggregateId]: [...(m[e.aggregateId] ?? []), e.data.amount] }))
              ))
          ]
        })
        yield* publisher.publishAll(
          Array.from({ length: 300 }, (_, i) => Publisher.entry(InvoiceIssued, { invoiceId: `agg-${i % 10}`, amount: i }))
        )
        yield* eventually(Effect.map(Ref.get(seen), (m) => Object.values(m).flat().length === 300))
        for (const values of Object.values(yield* Ref.get(seen))) {
          expect(values).toEqual([...values].sort((a, b) => a - b))
        }
      }))

    it.scoped("orderBy aggregate: a message waiting for its redelivery holds its aggregate (2 000 events, every 25th fails once)", () =>
      Effect.gen(function*() {
        const stream = yield* billingStream
        const publisher = yield* Publisher.Publisher
        const seen = new Map<string, Array<number>>()
        const failed = new Set<number>()
        yield* Consumer.make({
          stream,
          durable: unique("held"),
          concurrency: 8,
          orderBy: "aggregate",
          retry: Schedule.stop,
          redelivery: Schedule.spaced("300 millis"),
          handlers: [
            Handler.make(InvoiceIssued, (e) =>
              Effect.suspend(() => {
                const n = e.data.amount
                if (n % 25 === 0 && !failed.has(n)) {
                  failed.add(n)
                  return Effect.fail(new Error(`first delivery of ${n}`))
                }
                seen.set(e.aggregateId, [...(seen.get(e.aggregateId) ?? []), n])
                return Effect.void
              }))
          ]
        })
        yield* publisher.publishAll(
          Array.from({ length: 2000 }, (_, i) => Publisher.entry(InvoiceIssued, { invoiceId: `agg-${i % 10}`, amount: i }))
        )
        const handled = () => [...seen.values()].flat()
        yield* eventually(Effect.sync(() => handled().length >= 2000), "20 seconds")
        yield* Effect.sleep("300 millis")
        expect(failed.size).toBe(80)
        expect(new Set(handled()).size).toBe(2000) // none lost
        expect(handled().length).toBe(2000) // no duplicate
        let inversions = 0
        for (const values of seen.values()) values.forEach((v, i) => i > 0 && v < values[i - 1]! && inversions++)
        expect(inversions).toBe(0)
      }))

    it.scoped("orderBy aggregate: a dead-lettered message releases its aggregate, or blocks it with onDeadLetter: block", () =>
      Effect.gen(function*() {
        const stream = yield* billingStream
        const publisher = yield* Publisher.Publisher
        const run = (onDeadLetter: "continue" | "block") =>
          Effect.gen(function*() {
            const seen: Array<string> = []
            yield* Consumer.make({
              stream,
              durable: unique(`dl-${onDeadLetter}`),
              orderBy: "aggregate",
              onDeadLetter,
              concurrency: 2,
              maxDeliver: 2,
              retry: Schedule.stop,
              redelivery: Schedule.spaced("100 millis"),
              handlers: [
                Handler.make(InvoiceIssued, (e) =>
                  e.data.amount === 1
                    ? Effect.fail(new Error("poison"))
                    : Effect.sync(() => void seen.push(`${e.aggregateId}:${e.data.amount}`)))
              ]
            })
            return seen
          })
        const cont = yield* run("continue")
        const block = yield* run("block")
        yield* publisher.publishAll(
          [0, 1, 2, 3].flatMap((amount) => [
            Publisher.entry(InvoiceIssued, { invoiceId: "dl-a", amount }),
            Publisher.entry(InvoiceIssued, { invoiceId: "dl-b", amount: amount + 10 })
          ])
        )
        yield* eventually(Effect.sync(() => cont.length === 7 && block.includes("dl-b:13")))
        expect(cont.filter((s) => s.startsWith("dl-a"))).toEqual(["dl-a:0", "dl-a:2", "dl-a:3"])
        yield* Effect.sleep("500 millis")
        expect(block.filter((s) => s.startsWith("dl-a"))).toEqual(["dl-a:0"])
        expect(block.filter((s) => s.startsWith("dl-b"))).toEqual(["dl-b:10", "dl-b:11", "dl-b:12", "dl-b:13"])
      }))

    it.scoped("pullBatch is the batch of the consumer's pull requests; the default is max(100, 8 x concurrency)", () =>
      Effect.gen(function*() {
        const stream = yield* billingStream
        const nc = (yield* NatsClient.NatsClient).connection
        const batchesOf = (durable: string) =>
          Effect.gen(function*() {
            // a pull request is a publish to this subject: a plain subscriber sees it too
            const batches: Array<number> = []
            const sub = nc.subscribe(`$JS.API.CONSUMER.MSG.NEXT.${stream}.${durable}`, {
              callback: (_, m) => {
                batches.push((m.json() as { batch: number }).batch)
              }
            })
            yield* Effect.addFinalizer(() => Effect.sync(() => sub.unsubscribe()))
            yield* Effect.promise(() => nc.flush())
            return batches
          })
        const small = unique("pull7")
        const smallBatches = yield* batchesOf(small)
        yield* Consumer.make({ stream, durable: small, concurrency: 2, pullBatch: 7, handlers: [Handler.make(InvoiceIssued, () => Effect.void)] })
        const wide = unique("pull64")
        const wideBatches = yield* batchesOf(wide)
        yield* Consumer.make({ stream, durable: wide, concurrency: 64, handlers: [Handler.make(InvoiceIssued, () => Effect.void)] })
        yield* eventually(Effect.sync(() => smallBatches.length > 0 && wideBatches.length > 0))
        expect(smallBatches[0]).toBe(7)
        expect(wideBatches[0]).toBe(512)
      }))

    it.scoped("a type with no handler is acked and counted", () =>
      Effect.gen(function*() {
        const stream = yield* billingStream
        const js = yield* JetStream.JetStream
        const publisher = yield* Publisher.Publisher
        const durable = unique("unknown")
        const before = yield* count(Metrics.unhandled)
        yield* Consumer.make({ stream, durable, handlers: [Handler.make(PaymentReceived, () => Effect.void)] })
        yield* publisher.publish(InvoiceIssued, { invoiceId: "x", amount: 1 })
        yield* eventually(Effect.map(count(Metrics.unhandled), (n) => n - before === 1))
        yield* eventually(Effect.map(js.consumerInfo(stream, durable), (i) => i.num_ack_pending === 0 && i.num_pending === 0))
      }))

    it.scoped("dead letters can be replayed to their subject with a new causation link", () =>
      Effect.gen(function*() {
        const stream = yield* billingStream
        const dlq = yield* DeadLetter.DeadLetter
        const publisher = yield* Publisher.Publisher
        const fail = yield* Ref.make(true)
        const handled = yield* Ref.make<Array<Envelope.Envelope<unknown>>>([])
        yield* Consumer.make({
          stream,
          durable: unique("replay"),
          handlers: [
            Handler.make(InvoiceIssued, (e) =>
              Effect.flatMap(Ref.get(fail), (f) =>
                f ? Handler.permanent(Effect.fail("rejected")) : Ref.update(handled, (xs) => [...xs, e])))
          ]
        })
        const ack = yield* publisher.publish(InvoiceIssued, { invoiceId: "r-1", amount: 3 })
        yield* eventually(Effect.map(dlq.list(), (xs) => xs.some((x) => x.record.stream === stream)))
        const entry = (yield* dlq.list()).find((x) => x.record.stream === stream)!
        yield* Ref.set(fail, false)
        const replayed = yield* dlq.replay(entry.seq)
        expect(replayed.subject).toBe("billing.invoice.issued")
        yield* eventually(Effect.map(Ref.get(handled), (xs) => xs.length === 1))
        const [e] = yield* Ref.get(handled)
        expect(e!.causationId).toBe(ack.id)
        expect(e!.id).not.toBe(ack.id)
        expect(e!.data).toEqual({ invoiceId: "r-1", amount: 3 })
        // replayed entries leave the DLQ
        const missing = yield* Effect.flip(dlq.get(entry.seq))
        expect(missing.reason).toBe("NotFound")
      }))

    it.scoped("raw headers on a message without traceparent still work; metadata headers are set", () =>
      Effect.gen(function*() {
        yield* billingStream
        const js = yield* JetStream.JetStream
        const publisher = yield* Publisher.Publisher
        const ack = yield* publisher.publish(InvoiceIssued, { invoiceId: "h-1", amount: 1 }, { correlationId: "corr-9" })
        const m = yield* Effect.promise(() => js.manager.streams.getMessage(ack.stream, { seq: ack.seq }))
        expect(m!.header.get("Nats-Msg-Id")).toBe(ack.id)
        expect(m!.header.get("Event-Type")).toBe("billing.invoice.issued")
        expect(m!.header.get("Correlation-Id")).toBe("corr-9")
        expect(m!.header.get("Aggregate-Id")).toBe("h-1")
        expect(m!.header.get("Content-Type")).toBe("application/json")
        const h = headers()
        expect(h.get("traceparent")).toBe("")
      }))
  })
})

describe("Consumer keep-alive and metrics", () => {
  layer(PipelineLive, { excludeTestServices: true, timeout: "30 seconds" })((it) => {
    it.scoped("a handler running longer than ack_wait keeps its message with working(): no redelivery", () =>
      Effect.gen(function*() {
        const stream = yield* billingStream
        const js = yield* JetStream.JetStream
        const publisher = yield* Publisher.Publisher
        const durable = unique("slow")
        const deliveries = yield* Ref.make<Array<number>>([])
        const consumedBefore = yield* count(Metrics.consumed)
        const ackedBefore = yield* count(Metrics.acked)
        const durationsBefore = (yield* Metric.value(Metrics.handlerDuration)).count
        yield* Consumer.make({
          stream,
          durable,
          ackWait: "1 second",
          handlers: [
            Handler.make(InvoiceIssued, () =>
              Effect.zipRight(Ref.update(deliveries, (xs) => [...xs, Date.now()]), Effect.sleep("2500 millis")))
          ]
        })
        yield* publisher.publish(InvoiceIssued, { invoiceId: "slow-1", amount: 1 })
        yield* eventually(Effect.map(js.consumerInfo(stream, durable), (i) => i.num_ack_pending === 0 && i.delivered.stream_seq === 1))
        expect((yield* Ref.get(deliveries)).length).toBe(1)
        const info = yield* js.consumerInfo(stream, durable)
        expect(info.num_redelivered).toBe(0)
        expect((yield* count(Metrics.consumed)) - consumedBefore).toBe(1)
        expect((yield* count(Metrics.acked)) - ackedBefore).toBe(1)
        const durations = yield* Metric.value(Metrics.handlerDuration)
        expect(durations.count - durationsBefore).toBe(1)
        expect(durations.max).toBeGreaterThan(2.4) // seconds
      }), { timeout: 20_000 })
  })
})

describe("Middleware.redeliveryDelay", () => {
  layer(Layer.empty)((it) => {
    it.effect("is the redelivery Schedule's delay at the delivery count, computed without sleeping", () =>
      Effect.gen(function*() {
        const policy = Schedule.exponential("1 second").pipe(Schedule.either(Schedule.spaced("5 seconds")))
        const delays = yield* Effect.forEach([1, 2, 3, 4, 5], (n) => Middleware.redeliveryDelay(policy, n))
        expect(delays.map(Duration.toMillis)).toEqual([1000, 2000, 4000, 5000, 5000])
        // TestClock has not moved: nothing slept
        expect(yield* Clock.currentTimeMillis).toBe(0)
      }))
  })
})

describe("Consumer pipeline customisation and the max-deliveries watcher", () => {
  layer(PipelineLive, { excludeTestServices: true, timeout: "30 seconds" })((it) => {
    it.scoped("user middleware runs in the pipeline; messages nobody settles are copied to the DLQ when the server gives up", () =>
      Effect.gen(function*() {
        const stream = yield* billingStream
        const dlq = yield* DeadLetter.DeadLetter
        const publisher = yield* Publisher.Publisher
        const seen = yield* Ref.make<Array<number>>([])
        // a middleware of our own, recording delivery counts
        const record: Middleware.Middleware = (next) => (d) =>
          Effect.zipRight(Ref.update(seen, (xs) => [...xs, d.msg.info.deliveryCount]), next(d))
        yield* Consumer.make({
          stream,
          durable: unique("crashy"),
          ackWait: "1 second",
          maxDeliver: 2,
          // no settle stage: like a worker that crashes on the message every time
          pipeline: (m) => [record, m.decode],
          handlers: [Handler.make(InvoiceIssued, () => Effect.void)]
        })
        const ack = yield* publisher.publish(InvoiceIssued, { invoiceId: "crash-1", amount: 1 })
        yield* eventually(
          Effect.map(dlq.list({ context: "billing" }), (xs) => xs.some((x) => x.record.stream === stream && x.record.sequence === ack.seq)),
          "20 seconds"
        )
        // the server delivered max_deliver = maxDeliver + 1 times
        expect(yield* Ref.get(seen)).toEqual([1, 2, 3])
        const entry = (yield* dlq.list({ context: "billing" })).find((x) => x.record.stream === stream)!
        expect(entry.record.reason).toBe("MaxDeliveries")
        expect(entry.record.envelope).toMatchObject({ id: ack.id })
      }), { timeout: 30_000 })
  })
})
