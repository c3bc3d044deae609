import { describe, expect, it, layer } from "@effect/vitest"
import { DateTime, Effect, Exit, Fiber, Layer, Metric, Ref } from "effect"
import * as Consumer from "../src/Consumer.js"
import * as Dedup from "../src/Dedup.js"
import * as Handler from "../src/Handler.js"
import * as JetStream from "../src/JetStream.js"
import * as Metrics from "../src/Metrics.js"
import * as Publisher from "../src/Publisher.js"
import { dedupConformance } from "./DedupConformance.js"
import { billingStream, eventually, InvoiceIssued, PipelineLive, unique } from "./utils.js"

dedupConformance({
  name: "memory",
  layer: PipelineLive,
  make: (options) => Dedup.makeMemory(options),
  leases: true
})

dedupConformance({
  name: "NATS KV",
  layer: PipelineLive,
  // one bucket per case; the stores of one case share it
  make: (options) => Dedup.makeKv({ ...options, bucket: unique("dedup") }),
  leases: true
})

describe("Dedup.layerMemory", () => {
  layer(PipelineLive, { excludeTestServices: true })((it) => {
    it.effect("is bounded: beyond maxSize the oldest keys are forgotten", () =>
      Effect.gen(function*() {
        const dedup = yield* Dedup.makeMemory({ maxSize: 2 })
        for (const key of ["a", "b", "c"]) {
          expect(yield* dedup.claim(key)).toBe("Claimed")
          yield* dedup.commit(key)
        }
        expect(yield* dedup.claim("c")).toBe("Duplicate")
        expect(yield* dedup.claim("b")).toBe("Duplicate")
        expect(yield* dedup.claim("a")).toBe("Claimed")
      }))

    it.effect("evicts in the order of the last write (a commit moves its key to the end), eviction after eviction", () =>
      Effect.gen(function*() {
        const dedup = yield* Dedup.makeMemory({ maxSize: 3 })
        yield* dedup.claim("a")
        yield* dedup.claim("b")
        yield* dedup.commit("a") // b, a
        yield* dedup.claim("c")
        yield* dedup.claim("d") // b evicted: a, c, d
        yield* dedup.claim("e") // a evicted: c, d, e
        expect(yield* dedup.claim("d")).toBe("InProgress")
        expect(yield* dedup.claim("a")).toBe("Claimed") // c evicted: d, e, a
        expect(yield* dedup.claim("c")).toBe("Claimed") // d evicted: e, a, c
        expect(yield* dedup.claim("b")).toBe("Claimed") // e evicted: a, c, b
        expect(yield* dedup.claim("e")).toBe("Claimed") // a evicted: c, b, e
        expect(yield* dedup.claim("c")).toBe("InProgress")
        expect(yield* dedup.claim("b")).toBe("InProgress")
        expect(yield* dedup.claim("a")).toBe("Claimed")
      }))

    it.effect("a committed key is forgotten after the retention", () =>
      Effect.gen(function*() {
        const dedup = yield* Dedup.makeMemory({ retention: "200 millis" })
        yield* dedup.claim("k")
        yield* dedup.commit("k")
        expect(yield* dedup.claim("k")).toBe("Duplicate")
        yield* Effect.sleep("300 millis")
        expect(yield* dedup.claim("k")).toBe("Claimed")
      }))
  })
})

describe("Dedup.layerKv", () => {
  layer(PipelineLive, { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.effect("of many concurrent claims on one key from two instances, exactly one wins", () =>
      Effect.gen(function*() {
        const bucket = unique("dedup")
        const a = yield* Dedup.makeKv({ bucket })
        const b = yield* Dedup.makeKv({ bucket })
        for (let round = 0; round < 5; round++) {
          const key = unique("race")
          const results = yield* Effect.all(
            Array.from({ length: 10 }, (_, i) => (i % 2 === 0 ? a : b).claim(key)),
            { concurrency: "unbounded" }
          )
          expect(results.filter((r) => r === "Claimed").length).toBe(1)
          expect(results.filter((r) => r === "InProgress").length).toBe(9)
        }
      }))

    it.effect("an expired claim (its worker crashed) is taken over by exactly one of several workers", () =>
      Effect.gen(function*() {
        const bucket = unique("dedup")
        const crashed = yield* Dedup.makeKv({ bucket, leaseTtl: "200 millis" })
        const workers = yield* Effect.all(Array.from({ length: 4 }, () => Dedup.makeKv({ bucket })))
        const key = unique("expired")
        expect(yield* crashed.claim(key)).toBe("Claimed")
        expect(yield* workers[0]!.claim(key)).toBe("InProgress")
        yield* Effect.sleep("300 millis")
        const results = yield* Effect.all(workers.map((w) => w.claim(key)), { concurrency: "unbounded" })
        expect(results.filter((r) => r === "Claimed").length).toBe(1)
        expect(results.filter((r) => r === "InProgress").length).toBe(3)
      }))

    it.effect("release removes only the releasing worker's own claim", () =>
      Effect.gen(function*() {
        const bucket = unique("dedup")
        const slow = yield* Dedup.makeKv({ bucket, leaseTtl: "200 millis" })
        const other = yield* Dedup.makeKv({ bucket })
        const key = unique("k")
        expect(yield* slow.claim(key)).toBe("Claimed")
        yield* Effect.sleep("300 millis")
        expect(yield* other.claim(key)).toBe("Claimed")
        // the slow worker gives up after its lease was taken over: the new claim stays
        yield* slow.release(key)
        expect(yield* slow.claim(key)).toBe("InProgress")
        yield* other.release(key)
        expect(yield* slow.claim(key)).toBe("Claimed")
      }))

    it.effect("the bucket's max_age is the retention: a committed key is forgotten after it", () =>
      Effect.gen(function*() {
        const dedup = yield* Dedup.makeKv({ bucket: unique("dedup"), retention: "1 second" })
        const key = unique("k")
        yield* dedup.claim(key)
        yield* dedup.commit(key)
        expect(yield* dedup.claim(key)).toBe("Duplicate")
        yield* eventually(Effect.map(dedup.claim(key), (r) => r === "Claimed"), "10 seconds")
      }))

    it.scoped("two consumer instances racing on the same messages: each message has one effect", () =>
      Effect.gen(function*() {
        const stream = yield* billingStream
        const js = yield* JetStream.JetStream
        const publisher = yield* Publisher.Publisher
        const bucket = unique("dedup")
        const effects = yield* Ref.make<Record<string, number>>({})
        const before = (yield* Metric.value(Metrics.duplicatesSkipped)).count
        const handler = Handler.make(InvoiceIssued, (e) =>
          Effect.zipRight(
            Effect.sleep(`${(e.data.amount * 7) % 20} millis`),
            Ref.update(effects, (m) => ({ ...m, [e.data.invoiceId]: (m[e.data.invoiceId] ?? 0) + 1 }))
          ))
        // two durables on one stream: both instances receive every message at about the same time
        const durables = [unique("racer"), unique("racer")]
        for (const durable of durables) {
          const dedup = yield* Dedup.makeKv({ bucket })
          yield* Consumer.make({ stream, durable, concurrency: 8, handlers: [handler] }).pipe(
            Effect.provideService(Dedup.Dedup, dedup)
          )
        }
        const n = 40
        yield* publisher.publishAll(
          Array.from({ length: n }, (_, i) => Publisher.entry(InvoiceIssued, { invoiceId: `race-${i}`, amount: i }))
        )
        yield* eventually(
          Effect.map(
            Effect.forEach(durables, (d) => js.consumerInfo(stream, d)),
            (infos) => infos.every((i) => i.num_ack_pending === 0 && i.num_pending === 0 && i.delivered.stream_seq === n)
          ),
          "20 seconds"
        )
        const counted = yield* Ref.get(effects)
        expect(Object.keys(counted).length).toBe(n)
        expect(Object.values(counted).every((c) => c === 1)).toBe(true)
        expect((yield* Metric.value(Metrics.duplicatesSkipped)).count - before).toBe(n)
      }))
  })
})

describe("Dedup keys", () => {
  layer(Layer.empty)((it) => {
    it.effect("strategies and namespaces: consumers sharing a store do not see each other's keys", () =>
      Effect.gen(function*() {
        const envelope = {
          id: "0190c3a5-6f1e-7cc2-9b1a-3f2d4e5f6a7b",
          type: "billing.invoice.issued",
          timestamp: DateTime.unsafeMake(0),
          correlationId: "c",
          aggregateId: "inv-1",
          aggregateType: "Invoice",
          version: 3,
          data: {}
        }
        expect(Dedup.keyOf("id")(envelope)).toBe(envelope.id)
        expect(Dedup.keyOf("natural")(envelope)).toBe("inv-1:billing.invoice.issued:3")
        expect(Dedup.keyOf((e) => e.aggregateId, "payments")(envelope)).toBe("payments:inv-1")
        const store = yield* Dedup.makeMemory()
        const payments = yield* Dedup.makeMemory({ namespace: "payments" })
        const shipping = yield* Dedup.makeMemory({ namespace: "shipping" })
        // one shared map would be the SQL/KV case; here the keys themselves must differ
        expect(payments.key(envelope)).not.toBe(shipping.key(envelope))
        expect(yield* store.claim(store.key(envelope))).toBe("Claimed")
        yield* store.commit(store.key(envelope))
        expect(yield* store.claim(store.key(envelope))).toBe("Duplicate")
        expect(yield* store.claim(payments.key(envelope))).toBe("Claimed")
      }))
  })
})

describe("Dedup.guard", () => {
  // the memory store's own guard and the one `make` builds from the four operations
  const stores = {
    memory: Dedup.makeMemory(),
    "make(memory operations)": Effect.map(Dedup.makeMemory(), (m) =>
      Dedup.make({ key: m.key, claim: m.claim, commit: m.commit, release: m.release, transaction: m.transaction }))
  }
  for (const [name, make] of Object.entries(stores)) {
    it.effect(`${name}: handles once, a duplicate after, and releases the claim on failure and interruption`, () =>
      Effect.gen(function*() {
        const store = yield* make
        expect(yield* Effect.exit(store.guard("failed", Effect.fail("boom")))).toEqual(Exit.fail("boom"))
        expect(yield* store.claim("failed")).toBe("Claimed")
        const fiber = yield* Effect.fork(store.guard("interrupted", Effect.never))
        yield* Effect.yieldNow()
        expect(yield* store.claim("interrupted")).toBe("InProgress")
        yield* Fiber.interrupt(fiber)
        expect(yield* store.claim("interrupted")).toBe("Claimed")
        expect(yield* store.guard("k", Effect.succeed(1))).toBe(1)
        expect(yield* store.guard("k", Effect.succeed(2))).toBe(Dedup.NotClaimed.Duplicate)
        expect(Dedup.isNotClaimed(yield* store.guard("failed", Effect.succeed(3)))).toBe(true)
      }))
  }

  it.effect("make: a commit that conflicts (a concurrent worker committed first) is a duplicate, and the claim is released", () =>
    Effect.gen(function*() {
      const log: Array<string> = []
      const store = Dedup.make({
        key: Dedup.keyOf("id"),
        claim: () => Effect.succeed("Claimed"),
        commit: (key) =>
          Effect.fail(new Dedup.DedupError({ reason: "Conflict", method: "commit", message: `${key} committed elsewhere` })),
        release: (key) => Effect.sync(() => void log.push(`release ${key}`)),
        transaction: (self) => self
      })
      expect(yield* store.guard("k", Effect.succeed(1))).toBe(Dedup.NotClaimed.Duplicate)
      expect(log).toEqual(["release k"])
      // any other store failure stays a failure
      const failing = Dedup.make({
        key: Dedup.keyOf("id"),
        claim: () => Effect.succeed("Claimed"),
        commit: () => Effect.fail(new Dedup.DedupError({ reason: "Store", method: "commit", message: "down" })),
        release: () => Effect.void,
        transaction: (self) => self
      })
      expect(Exit.isFailure(yield* Effect.exit(failing.guard("k", Effect.succeed(1))))).toBe(true)
    }))
})
