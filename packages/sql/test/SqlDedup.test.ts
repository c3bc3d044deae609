import { describe, expect, layer } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import { Deferred, Effect, Fiber, Layer, Metric, Ref } from "effect"
import { Consumer, Dedup, Handler, JetStream, Metrics, Publisher } from "effect-nats"
import { SqlDedup } from "../src/index.js"
import { dedupConformance } from "../../../test/DedupConformance.js"
import { billingStream, eventually, InvoiceIssued, PipelineLive, unique } from "../../../test/utils.js"
import { count, inTransaction, PgLive, SqliteLive } from "./layers.js"

const conformance = <R>(name: string, sql: Layer.Layer<SqlClient.SqlClient | R, unknown>) =>
  dedupConformance({
    name,
    layer: Layer.merge(PipelineLive, sql),
    // no lease: the open transaction is the claim (leaseTtl does not apply)
    make: (options) => SqlDedup.make(options.key !== undefined ? { key: options.key } : {}),
    leases: false
  })

conformance("SQLite", SqliteLive)
conformance("Postgres", PgLive)

const payments = (invoiceId: string) =>
  count((sql) => sql<{ n: number }>`SELECT COUNT(*) AS n FROM payments WHERE invoice_id = ${invoiceId}`)
const inboxRows = (key: string) =>
  count((sql) => sql<{ n: number }>`SELECT COUNT(*) AS n FROM effect_nats_inbox WHERE dedup_key = ${key}`)

const createPayments = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  sql`CREATE TABLE IF NOT EXISTS payments (invoice_id TEXT NOT NULL, amount INTEGER NOT NULL)`)

/** The handler's own write. */
const pay = (invoiceId: string, amount: number) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => sql`INSERT INTO payments ${sql.insert({ invoice_id: invoiceId, amount })}`)

const specific = <R>(name: string, sql: Layer.Layer<SqlClient.SqlClient | R, unknown>) =>
  describe(`SqlDedup on ${name}`, () => {
    layer(Layer.merge(PipelineLive, sql), { excludeTestServices: true, timeout: "60 seconds" })((it) => {
      it.scoped("the handler's rows and the inbox row commit together, or roll back together", () =>
        Effect.gen(function*() {
          const dedup = yield* SqlDedup.make()
          yield* createPayments
          const key = unique("k")
          expect(yield* dedup.claim(key)).toBe("Claimed")
          // the handler wrote, the commit wrote, then the transaction failed: nothing stays
          const error = yield* dedup.transaction(
            Effect.gen(function*() {
              yield* pay(key, 1)
              yield* dedup.commit(key)
              return yield* Effect.fail("failed after commit" as const)
            })
          ).pipe(Effect.flip)
          expect(error).toBe("failed after commit")
          expect(yield* payments(key)).toBe(0)
          expect(yield* inboxRows(key)).toBe(0)
          expect(yield* dedup.claim(key)).toBe("Claimed")
          // now it succeeds: both rows
          yield* dedup.transaction(Effect.zipRight(pay(key, 1), dedup.commit(key)))
          expect(yield* payments(key)).toBe(1)
          expect(yield* inboxRows(key)).toBe(1)
          expect(yield* dedup.claim(key)).toBe("Duplicate")
        }))

      it.scoped("a concurrent duplicate waits for the first transaction, then conflicts and rolls its writes back", () =>
        Effect.gen(function*() {
          const dedup = yield* SqlDedup.make()
          yield* createPayments
          const key = unique("k")
          // both workers claimed before either committed
          expect(yield* dedup.claim(key)).toBe("Claimed")
          expect(yield* dedup.claim(key)).toBe("Claimed")
          const firstCommitted = yield* Deferred.make<void>()
          const first = yield* dedup.transaction(Effect.gen(function*() {
            yield* pay(key, 1)
            yield* dedup.commit(key)
            yield* Deferred.succeed(firstCommitted, undefined)
            yield* Effect.sleep("200 millis") // still open: the second worker's insert must wait
          })).pipe(Effect.fork)
          yield* Deferred.await(firstCommitted)
          const started = Date.now()
          const second = yield* dedup.transaction(Effect.zipRight(pay(key, 2), dedup.commit(key))).pipe(Effect.flip)
          expect(Date.now() - started).toBeGreaterThanOrEqual(150)
          yield* Fiber.join(first)
          expect(second).toMatchObject({ _tag: "DedupError", reason: "Conflict" })
          expect(yield* payments(key)).toBe(1)
          expect(yield* inboxRows(key)).toBe(1)
          expect(yield* dedup.claim(key)).toBe("Duplicate")
        }))

      it.scoped("through a consumer: a handler failing after its write leaves no row; the retry writes exactly one", () =>
        Effect.gen(function*() {
          const stream = yield* billingStream
          const js = yield* JetStream.JetStream
          const publisher = yield* Publisher.Publisher
          const dedup = yield* SqlDedup.make()
          yield* createPayments
          const invoiceId = unique("inv")
          const attempts = yield* Ref.make(0)
          const durable = unique("payments")
          yield* Consumer.make({
            stream,
            durable,
            handlers: [
              Handler.make(InvoiceIssued, (e) =>
                Effect.gen(function*() {
                  yield* pay(e.data.invoiceId, e.data.amount)
                  const attempt = yield* Ref.updateAndGet(attempts, (n) => n + 1)
                  if (attempt === 1) return yield* Effect.fail(new Error("gateway timeout after the insert"))
                }))
            ]
          }).pipe(Effect.provideService(Dedup.Dedup, dedup))
          const ack = yield* publisher.publish(InvoiceIssued, { invoiceId, amount: 5 })
          yield* eventually(Effect.map(js.consumerInfo(stream, durable), (i) => i.num_ack_pending === 0 && i.num_pending === 0))
          expect(yield* Ref.get(attempts)).toBe(2)
          expect(yield* payments(invoiceId)).toBe(1)
          expect(yield* inboxRows(ack.id)).toBe(1)
        }))

      it.scoped("two consumer instances racing on the same messages: one payment row per message", () =>
        Effect.gen(function*() {
          const stream = yield* billingStream
          const js = yield* JetStream.JetStream
          const publisher = yield* Publisher.Publisher
          yield* createPayments
          const before = (yield* Metric.value(Metrics.duplicatesSkipped)).count
          const handler = Handler.make(InvoiceIssued, (e) =>
            Effect.zipRight(pay(e.data.invoiceId, e.data.amount), Effect.sleep(`${e.data.amount % 10} millis`)))
          const durables = [unique("racer"), unique("racer")]
          for (const durable of durables) {
            const dedup = yield* SqlDedup.make()
            yield* Consumer.make({ stream, durable, concurrency: 4, handlers: [handler] }).pipe(
              Effect.provideService(Dedup.Dedup, dedup)
            )
          }
          const n = 20
          const prefix = unique("race")
          yield* publisher.publishAll(
            Array.from({ length: n }, (_, i) => Publisher.entry(InvoiceIssued, { invoiceId: `${prefix}-${i}`, amount: i }))
          )
          yield* eventually(
            Effect.map(
              Effect.forEach(durables, (d) => js.consumerInfo(stream, d)),
              (infos) => infos.every((i) => i.num_ack_pending === 0 && i.num_pending === 0 && i.delivered.stream_seq === n)
            ),
            "20 seconds"
          )
          for (let i = 0; i < n; i++) expect(yield* payments(`${prefix}-${i}`)).toBe(1)
          expect((yield* Metric.value(Metrics.duplicatesSkipped)).count - before).toBe(n)
        }))

      it.scoped("handled keys are deleted after the retention", () =>
        Effect.gen(function*() {
          const dedup = yield* SqlDedup.make({ retention: "200 millis", cleanupInterval: "100 millis" })
          const key = unique("k")
          yield* dedup.claim(key)
          yield* dedup.transaction(dedup.commit(key))
          expect(yield* dedup.claim(key)).toBe("Duplicate")
          yield* eventually(Effect.map(inboxRows(key), (n) => n === 0))
          expect(yield* dedup.claim(key)).toBe("Claimed")
        }))
    })
  })

specific("SQLite", SqliteLive)
specific("Postgres", PgLive)

describe("SqlDedup transaction", () => {
  layer(SqliteLive)((it) => {
    it.scoped("keeps the handler's error apart from the store's", () =>
      Effect.gen(function*() {
        const dedup = yield* SqlDedup.make()
        const error = yield* dedup.transaction(Effect.fail({ _tag: "DedupError", reason: "Store" } as const)).pipe(Effect.flip)
        // the handler's own value, not wrapped as a store failure
        expect(error).toEqual({ _tag: "DedupError", reason: "Store" })
        expect(error).not.toBeInstanceOf(Dedup.DedupError)
        expect(yield* inTransaction(Effect.succeed(1))).toBe(1)
      }))
  })
})
