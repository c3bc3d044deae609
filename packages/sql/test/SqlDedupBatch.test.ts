/**
 * Batches (see `Dedup.Batch`): a consumer with `SqlDedup` commits many
 * messages in one transaction, each in its own savepoint, and acks them after
 * the commit. Against a real nats-server, on SQLite and on Postgres.
 */
import { describe, expect, layer } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import { headers as natsHeaders } from "@nats-io/nats-core"
import { Effect, Layer, Metric, Option, Ref, Schedule } from "effect"
import { Consumer, Dedup, Handler, JetStream, Metrics, Publisher } from "effect-nats"
import { billingStream, eventually, InvoiceIssued, PipelineLive, unique } from "../../../test/utils.js"
import { SqlDedup } from "../src/index.js"
import { count, PgLive, SqliteLive } from "./layers.js"

/** One row per handled message, in commit order (`seq`). */
const createEffects = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  sql.onDialectOrElse({
    pg: () => sql`CREATE TABLE IF NOT EXISTS batch_effects (seq BIGSERIAL PRIMARY KEY, invoice_id TEXT NOT NULL, n INTEGER NOT NULL)`,
    orElse: () =>
      sql`CREATE TABLE IF NOT EXISTS batch_effects (seq INTEGER PRIMARY KEY AUTOINCREMENT, invoice_id TEXT NOT NULL, n INTEGER NOT NULL)`
  }))

const effect = (invoiceId: string, n: number) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => sql`INSERT INTO batch_effects (invoice_id, n) VALUES (${invoiceId}, ${n})`)

const effectsOf = (prefix: string) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) =>
    sql<{ invoice_id: string; n: number }>`SELECT invoice_id, n FROM batch_effects WHERE invoice_id LIKE ${`${prefix}%`} ORDER BY seq`)

/** The durable has acked everything it was given (`n` messages delivered). */
const settled = (stream: string, durable: string, n: number) =>
  Effect.flatMap(JetStream.JetStream, (js) =>
    eventually(
      Effect.map(js.consumerInfo(stream, durable), (i) => i.num_ack_pending === 0 && i.num_pending === 0 && i.delivered.stream_seq >= n),
      "30 seconds"
    ))

const batches = Effect.map(Metric.value(Metrics.batchSize), (h) => ({ commits: h.count, messages: h.sum }))

const suite = <R>(name: string, sql: Layer.Layer<SqlClient.SqlClient | R, unknown>) =>
  describe(`SqlDedup batches on ${name}`, () => {
    layer(Layer.merge(PipelineLive, sql), { excludeTestServices: true, timeout: "90 seconds" })((it) => {
      it.scoped("many messages per commit; a message failing in a batch rolls back to its savepoint, the others commit", () =>
        Effect.gen(function*() {
          const stream = yield* billingStream
          const publisher = yield* Publisher.Publisher
          yield* createEffects
          // a long window: on a loaded machine a batch still takes in everything ready (it never waits for more)
          const dedup = yield* SqlDedup.make({ batch: { maxDelay: "2 seconds" } })
          expect(Option.map(dedup.batch, (b) => b.maxMessages)).toEqual(Option.some(SqlDedup.defaultBatch.maxMessages))
          const prefix = unique("inv")
          const n = 300
          const before = yield* batches
          const deadBefore = (yield* Metric.value(Metrics.deadLettered)).count
          const durable = unique("batched")
          yield* publisher.publishAll(Array.from({ length: n }, (_, i) => Publisher.entry(InvoiceIssued, { invoiceId: `${prefix}-${i}`, amount: i })))
          yield* Consumer.make({
            stream,
            durable,
            // one worker: its batches take everything ready, however the pulls and the workers interleave
            concurrency: 1,
            handlers: [
              Handler.make(InvoiceIssued, (e) =>
                Effect.zipRight(
                  effect(e.data.invoiceId, e.data.amount),
                  // written, then failed: its row must roll back with its savepoint
                  e.data.amount === 13 ? Effect.fail(new Handler.PermanentError({ message: "refused" })) : Effect.void
                ))
            ]
          }).pipe(Effect.provideService(Dedup.Dedup, dedup))
          yield* settled(stream, durable, n)
          const rows = yield* effectsOf(prefix)
          expect(rows.length).toBe(n - 1)
          expect(new Set(rows.map((r) => r.invoice_id)).size).toBe(n - 1)
          expect(rows.some((r) => Number(r.n) === 13)).toBe(false)
          expect((yield* Metric.value(Metrics.deadLettered)).count - deadBefore).toBe(1)
          const after = yield* batches
          // every handled message went through a batch, and batches held many
          expect(after.messages - before.messages).toBe(n - 1)
          expect(after.commits - before.commits).toBeLessThan((n - 1) / 4)
        }))

      it.scoped("a batch whose commit fails acks none of its messages: they come back and each commits once", () =>
        Effect.gen(function*() {
          const stream = yield* billingStream
          const publisher = yield* Publisher.Publisher
          const sql = yield* SqlClient.SqlClient
          yield* createEffects
          // a deferred foreign key is checked at COMMIT: a row breaking it fails the batch's commit, not its statement
          yield* sql.onDialectOrElse({
            pg: () =>
              Effect.zipRight(
                sql`CREATE TABLE IF NOT EXISTS batch_parents (id INTEGER PRIMARY KEY)`,
                sql`CREATE TABLE IF NOT EXISTS batch_children (parent INTEGER REFERENCES batch_parents (id) DEFERRABLE INITIALLY DEFERRED)`
              ),
            orElse: () =>
              Effect.all([
                sql`PRAGMA foreign_keys = ON`,
                sql`CREATE TABLE IF NOT EXISTS batch_parents (id INTEGER PRIMARY KEY)`,
                sql`CREATE TABLE IF NOT EXISTS batch_children (parent INTEGER REFERENCES batch_parents (id) DEFERRABLE INITIALLY DEFERRED)`
              ])
          })
          const dedup = yield* SqlDedup.make()
          const prefix = unique("inv")
          const n = 50
          const runs = yield* Ref.make(0)
          const broke = yield* Ref.make(false)
          const durable = unique("commitfails")
          yield* publisher.publishAll(Array.from({ length: n }, (_, i) => Publisher.entry(InvoiceIssued, { invoiceId: `${prefix}-${i}`, amount: i })))
          yield* Consumer.make({
            stream,
            durable,
            redelivery: Schedule.spaced("100 millis"),
            handlers: [
              Handler.make(InvoiceIssued, (e) =>
                Effect.gen(function*() {
                  yield* Ref.update(runs, (k) => k + 1)
                  yield* effect(e.data.invoiceId, e.data.amount)
                  // once: an orphan row, which fails the commit of the batch it is in
                  if (e.data.amount === 7 && !(yield* Ref.getAndSet(broke, true))) {
                    yield* sql`INSERT INTO batch_children (parent) VALUES (42)`
                  }
                }))
            ]
          }).pipe(Effect.provideService(Dedup.Dedup, dedup))
          yield* settled(stream, durable, n)
          const rows = yield* effectsOf(prefix)
          expect(rows.length).toBe(n)
          expect(new Set(rows.map((r) => r.invoice_id)).size).toBe(n)
          // the failed batch's messages (7 and the others with it) ran again
          expect(yield* Ref.get(runs)).toBeGreaterThan(n)
          expect(yield* count((s) => s<{ n: number }>`SELECT COUNT(*) AS n FROM batch_children`)).toBe(0)
        }))

      it.scoped("ordered: a message nak'ed in a batch is not overtaken by the later messages of its aggregate in that batch", () =>
        Effect.gen(function*() {
          const stream = yield* billingStream
          const publisher = yield* Publisher.Publisher
          yield* createEffects
          const dedup = yield* SqlDedup.make()
          const prefix = unique("agg")
          const failedOnce = yield* Ref.make(false)
          const durable = unique("ordered")
          // one aggregate (same invoice id), five messages, all in the stream before the consumer starts
          yield* publisher.publishAll(Array.from({ length: 5 }, (_, i) => Publisher.entry(InvoiceIssued, { invoiceId: prefix, amount: i + 1 })))
          yield* Consumer.make({
            stream,
            durable,
            orderBy: "aggregate",
            concurrency: 2,
            retry: Schedule.recurs(0),
            redelivery: Schedule.spaced("200 millis"),
            handlers: [
              Handler.make(InvoiceIssued, (e) =>
                Effect.gen(function*() {
                  yield* effect(e.data.invoiceId, e.data.amount)
                  if (e.data.amount === 2 && !(yield* Ref.getAndSet(failedOnce, true))) {
                    return yield* Effect.fail(new Error("transient"))
                  }
                }))
            ]
          }).pipe(Effect.provideService(Dedup.Dedup, dedup))
          yield* settled(stream, durable, 5)
          const order = (yield* effectsOf(prefix)).map((r) => Number(r.n))
          expect(order[0]).toBe(1)
          expect(new Set(order)).toEqual(new Set([1, 2, 3, 4, 5]))
          // 3, 4 and 5 were nak'ed with 2: none committed before it
          for (const later of [3, 4, 5]) expect(order.indexOf(later)).toBeGreaterThan(order.indexOf(2))
        }))
    })
  })

suite("SQLite", SqliteLive)
suite("Postgres", PgLive)

describe("SqlDedup batches, several instances on one Postgres database", () => {
  layer(Layer.merge(PipelineLive, PgLive), { excludeTestServices: true, timeout: "90 seconds" })((it) => {
    it.scoped("three instances sharing a durable, with copies of messages injected: one effect per message", () =>
      Effect.gen(function*() {
        const stream = yield* billingStream
        const js = yield* JetStream.JetStream
        yield* createEffects
        const prefix = unique("inv")
        const n = 600
        const copies = 200
        const durable = unique("shared")
        const handler = Handler.make(InvoiceIssued, (e) =>
          Effect.zipRight(effect(e.data.invoiceId, e.data.amount), Effect.sleep(`${e.data.amount % 3} millis`)))
        for (let instance = 0; instance < 3; instance++) {
          const dedup = yield* SqlDedup.make()
          yield* Consumer.make({ stream, durable, concurrency: 8, pullBatch: 16, handlers: [handler] }).pipe(
            Effect.provideService(Dedup.Dedup, dedup)
          )
        }
        // every message once, then a copy of 200 of them under another Nats-Msg-Id (JetStream stores it again):
        // the copies reach the instances while the originals are being handled
        const messages = yield* Effect.forEach(
          Array.from({ length: n }, (_, i) => i),
          (i) => Publisher.build(InvoiceIssued, { invoiceId: `${prefix}-${i}`, amount: i })
        )
        const publish = (m: Publisher.OutgoingMessage, msgID: string) => {
          const h = natsHeaders()
          for (const [k, v] of Object.entries(m.headers)) h.set(k, v)
          return js.client.publish(m.subject, m.payload, { msgID, headers: h })
        }
        yield* Effect.promise(() =>
          Promise.all(messages.flatMap((m, i) => i % 3 === 0 ? [publish(m, m.id), publish(m, `${m.id}-copy`)] : [publish(m, m.id)]))
        )
        const before = (yield* Metric.value(Metrics.duplicatesSkipped)).count
        yield* settled(stream, durable, n + copies)
        const rows = yield* effectsOf(prefix)
        expect(rows.length).toBe(n)
        expect(new Set(rows.map((r) => r.invoice_id)).size).toBe(n)
        expect((yield* Metric.value(Metrics.duplicatesSkipped)).count - before).toBe(copies)
      }))
  })
})

describe("SqlDedup batches off", () => {
  layer(SqliteLive)((it) => {
    it.scoped("`batch: false`: one transaction per message", () =>
      Effect.gen(function*() {
        const dedup = yield* SqlDedup.make({ batch: false })
        expect(Option.isNone(dedup.batch)).toBe(true)
        const custom = yield* SqlDedup.make({ batch: { maxMessages: 10, maxDelay: "5 millis" } })
        expect(Option.map(custom.batch, (b) => b.maxMessages)).toEqual(Option.some(10))
      }))
  })
})
