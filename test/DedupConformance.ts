/**
 * One conformance suite for every Dedup store (memory, NATS KV, SQLite,
 * Postgres), as Watermill's pubsub/tests does for its backends: the same cases,
 * against a real nats-server (and a real database for the SQL stores) and the
 * in-memory transport. The cases run on the `TestClock` (see `StoreTime`).
 */
import { expect, layer } from "@effect/vitest"
import { type Duration, Effect, type Layer, Metric, Ref, type Scope } from "effect"
import * as Consumer from "../src/Consumer.js"
import type * as DeadLetter from "../src/DeadLetter.js"
import * as Dedup from "../src/Dedup.js"
import * as Handler from "../src/Handler.js"
import * as JetStream from "../src/JetStream.js"
import * as Metrics from "../src/Metrics.js"
import * as Middleware from "../src/Middleware.js"
import type * as NatsClient from "../src/NatsClient.js"
import * as Publisher from "../src/Publisher.js"
import { advance, elapse, until } from "./StoreTime.js"
import { billingStream, InvoiceIssued, unique } from "./utils.js"

/** What the suite needs from the shared layer. */
export type Services = JetStream.JetStream | NatsClient.NatsClient | DeadLetter.DeadLetter | Publisher.Publisher

/** Options a store is built with in a case. */
export interface StoreOptions {
  readonly key?: Dedup.KeyStrategy
  readonly leaseTtl?: Duration.DurationInput
}

/** A store under test. */
export interface DedupStore<R> {
  readonly name: string
  readonly layer: Layer.Layer<Services | R, unknown>
  /** A store (sharing the backend with the others of the same test). */
  readonly make: (options: StoreOptions) => Effect.Effect<Dedup.Dedup["Type"], unknown, R | Services | Scope.Scope>
  /** Does a live claim hold off other workers (`InProgress`)? SQL stores have no lease: the transaction is the claim. */
  readonly leases: boolean
}

const duplicates = Effect.map(Metric.value(Metrics.duplicatesSkipped), (s) => s.count)

/** A stream on `billing.>` with a short JetStream duplicate window, deleted after the scope. */
const shortWindowStream = Effect.gen(function*() {
  const js = yield* JetStream.JetStream
  const name = unique("DEDUP")
  yield* Effect.acquireRelease(
    js.ensureStream({ name, subjects: ["billing.>"], storage: "memory", duplicateWindow: "100 millis" }),
    () => Effect.promise(() => js.manager.streams.delete(name).catch(() => false))
  )
  return name
})

/** Run a consumer with the given store, counting how often each invoice was handled. */
const countingConsumer = (
  stream: string,
  store: Dedup.Dedup["Type"],
  options: {
    readonly fail?: (invoiceId: string, attempt: number) => boolean
    readonly pipeline?: Consumer.Options<ReadonlyArray<Handler.Any>>["pipeline"]
  } = {}
) =>
  Effect.gen(function*() {
    const handled = yield* Ref.make<Record<string, number>>({})
    const attempts = new Map<string, number>()
    const durable = unique("dedup")
    yield* Consumer.make({
      stream,
      durable,
      // the counted effect is in memory, outside any store transaction: messages of one aggregate
      // run one after another so that it is counted exactly when the store commits (SQL stores make
      // only effects written in their transaction exactly-once under concurrency)
      orderBy: "aggregate",
      handlers: [
        Handler.make(InvoiceIssued, (e) =>
          Effect.suspend(() => {
            const id = e.data.invoiceId
            const attempt = (attempts.get(id) ?? 0) + 1
            attempts.set(id, attempt)
            return options.fail?.(id, attempt) === true
              ? Effect.fail(new Error(`handler failed on ${id} (attempt ${attempt})`))
              : Ref.update(handled, (m) => ({ ...m, [id]: (m[id] ?? 0) + 1 }))
          }))
      ],
      ...(options.pipeline !== undefined ? { pipeline: options.pipeline } : {})
    }).pipe(Effect.provideService(Dedup.Dedup, store))
    return { handled, durable }
  })

/** Wait until the consumer has settled every message of its stream. */
const idle = (stream: string, durable: string) =>
  Effect.flatMap(JetStream.JetStream, (js) =>
    until(Effect.map(js.consumerInfo(stream, durable), (i) => i.num_ack_pending === 0 && i.num_pending === 0)))

/** Register the suite for one store. */
export const dedupConformance = <R>(store: DedupStore<R>) =>
  layer(store.layer, { timeout: "60 seconds" })(`Dedup conformance: ${store.name}`, (it) => {
    it.scoped("claim then commit: the key is a duplicate", () =>
      Effect.gen(function*() {
        const dedup = yield* store.make({})
        const key = unique("k")
        expect(yield* dedup.claim(key)).toBe("Claimed")
        yield* dedup.transaction(dedup.commit(key))
        expect(yield* dedup.claim(key)).toBe("Duplicate")
        expect(yield* dedup.claim(key)).toBe("Duplicate")
      }))

    it.scoped("a released claim can be claimed again", () =>
      Effect.gen(function*() {
        const dedup = yield* store.make({})
        const key = unique("k")
        expect(yield* dedup.claim(key)).toBe("Claimed")
        yield* dedup.release(key)
        expect(yield* dedup.claim(key)).toBe("Claimed")
      }))

    it.scoped("a failed transaction commits nothing", () =>
      Effect.gen(function*() {
        const dedup = yield* store.make({})
        const key = unique("k")
        expect(yield* dedup.claim(key)).toBe("Claimed")
        // as in the pipeline: commit after the handler, in the store's transaction
        const error = yield* dedup.transaction(
          Effect.tap(Effect.fail("handler failed" as const), () => dedup.commit(key))
        ).pipe(Effect.flip)
        expect(error).toBe("handler failed")
        yield* dedup.release(key)
        expect(yield* dedup.claim(key)).toBe("Claimed")
      }))

    it.scoped("any key is valid: dots, wildcards, colons, spaces, unicode, long keys", () =>
      Effect.gen(function*() {
        const dedup = yield* store.make({})
        const prefix = unique("k")
        const keys = ["a.b.c", ">", "*", "x:y:1", "with space", "ünï.cödé/✓", "", "=", "k".repeat(300)].map((k) => `${prefix}${k}`)
        for (const key of keys) {
          expect(yield* dedup.claim(key)).toBe("Claimed")
          yield* dedup.transaction(dedup.commit(key))
        }
        for (const key of keys) expect(yield* dedup.claim(key)).toBe("Duplicate")
        // keys are not confused with each other
        expect(yield* dedup.claim(`${prefix}a.b`)).toBe("Claimed")
      }))

    if (store.leases) {
      it.scoped("a live claim holds off other workers; once its lease expires, it is taken over", () =>
        Effect.gen(function*() {
          const dedup = yield* store.make({ leaseTtl: "300 millis" })
          const key = unique("k")
          expect(yield* dedup.claim(key)).toBe("Claimed")
          expect(yield* dedup.claim(key)).toBe("InProgress")
          yield* advance("450 millis")
          expect(yield* dedup.claim(key)).toBe("Claimed")
        }))
    }

    it.scoped("a message redelivered after it was handled (ack lost) is acked as a duplicate, not handled again", () =>
      Effect.gen(function*() {
        const stream = yield* billingStream
        const publisher = yield* Publisher.Publisher
        const dedup = yield* store.make({})
        const before = yield* duplicates
        // between the handler's commit and the ack, the first delivery is lost (a crash would do the same)
        const deliveries = yield* Ref.make<Array<number>>([])
        const loseFirstAck: Middleware.Middleware = (next) => (d) =>
          Effect.zipRight(
            Ref.update(deliveries, (xs) => [...xs, d.msg.info.deliveryCount]),
            Effect.map(next(d), (outcome) =>
              d.msg.info.deliveryCount === 1 && outcome._tag === "Ack" ? Middleware.Outcome.nak(0, "ack lost") : outcome)
          )
        const { durable, handled } = yield* countingConsumer(stream, dedup, {
          pipeline: (m) => [m.settle, m.trace, m.decode, loseFirstAck, m.retry, m.dedup]
        })
        yield* publisher.publish(InvoiceIssued, { invoiceId: "redelivered", amount: 1 })
        yield* until(Effect.map(duplicates, (n) => n - before === 1))
        yield* idle(stream, durable)
        expect(yield* Ref.get(deliveries)).toEqual([1, 2])
        expect(yield* Ref.get(handled)).toEqual({ redelivered: 1 })
      }))

    it.scoped("the same envelope id re-published outside the JetStream duplicate window is handled once", () =>
      Effect.gen(function*() {
        const stream = yield* shortWindowStream
        const publisher = yield* Publisher.Publisher
        const dedup = yield* store.make({})
        const before = yield* duplicates
        const { durable, handled } = yield* countingConsumer(stream, dedup)
        const id = unique("envelope")
        const first = yield* publisher.publish(InvoiceIssued, { invoiceId: "republished", amount: 1 }, { id })
        // past the stream's duplicate window (server time: real on nats-server)
        yield* elapse("300 millis")
        const second = yield* publisher.publish(InvoiceIssued, { invoiceId: "republished", amount: 1 }, { id })
        // JetStream stored both: only the consumer-side dedup stands between them and a second effect
        expect([first.duplicate, second.duplicate]).toEqual([false, false])
        expect(second.seq).toBe(first.seq + 1)
        yield* until(Effect.map(duplicates, (n) => n - before === 1))
        yield* idle(stream, durable)
        expect(yield* Ref.get(handled)).toEqual({ republished: 1 })
      }))

    it.scoped("natural keys: two ids for the same aggregate version are handled once, the next version again", () =>
      Effect.gen(function*() {
        const stream = yield* billingStream
        const publisher = yield* Publisher.Publisher
        const dedup = yield* store.make({ key: "natural" })
        const before = yield* duplicates
        const { durable, handled } = yield* countingConsumer(stream, dedup)
        const invoiceId = unique("inv")
        yield* publisher.publish(InvoiceIssued, { invoiceId, amount: 1 }, { version: 3 })
        yield* publisher.publish(InvoiceIssued, { invoiceId, amount: 1 }, { version: 3 })
        yield* publisher.publish(InvoiceIssued, { invoiceId, amount: 1 }, { version: 4 })
        yield* idle(stream, durable)
        expect(yield* Ref.get(handled)).toEqual({ [invoiceId]: 2 })
        expect((yield* duplicates) - before).toBe(1)
      }))

    it.scoped("a failing handler leaves the key free: the retry handles the message, once", () =>
      Effect.gen(function*() {
        const stream = yield* billingStream
        const publisher = yield* Publisher.Publisher
        const dedup = yield* store.make({})
        const before = yield* duplicates
        const { durable, handled } = yield* countingConsumer(stream, dedup, { fail: (_, attempt) => attempt <= 2 })
        yield* publisher.publish(InvoiceIssued, { invoiceId: "flaky", amount: 1 })
        yield* idle(stream, durable)
        expect(yield* Ref.get(handled)).toEqual({ flaky: 1 })
        expect((yield* duplicates) - before).toBe(0)
      }))
  })
