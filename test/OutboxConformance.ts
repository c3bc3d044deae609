/**
 * One conformance suite for every outbox store (memory, SQLite, Postgres):
 * the same cases for `Outbox.enqueue` + `OutboxRelay`, against a real
 * nats-server (and a real database for the SQL stores) and the in-memory
 * transport. The cases run on the `TestClock` (see `StoreTime`).
 */
import { expect, layer } from "@effect/vitest"
import { Duration, Effect, Exit, type Layer, Metric, Schedule, Scope } from "effect"
import type * as DeadLetter from "../src/DeadLetter.js"
import * as JetStream from "../src/JetStream.js"
import * as Metrics from "../src/Metrics.js"
import type * as NatsClient from "../src/NatsClient.js"
import * as Outbox from "../src/Outbox.js"
import * as OutboxRelay from "../src/OutboxRelay.js"
import * as Publisher from "../src/Publisher.js"
import { advance, elapse, until } from "./StoreTime.js"
import { billingStream, InvoiceIssued, unique } from "./utils.js"

/** What the suite needs from the shared layer. */
export type Services = JetStream.JetStream | NatsClient.NatsClient | DeadLetter.DeadLetter | Publisher.Publisher

/** A fresh, empty store and a way to count all its rows (pending and published). */
export interface Fresh {
  readonly store: Outbox.OutboxStore["Type"]
  readonly rowCount: Effect.Effect<number, unknown>
}

/** A store under test. */
export interface OutboxHarness<R> {
  readonly name: string
  readonly layer: Layer.Layer<Services | R, unknown>
  /** An empty store. */
  readonly fresh: Effect.Effect<Fresh, unknown, R | Scope.Scope>
  /** Run an effect in a transaction of the store's database; `undefined` for a store without transactions. */
  readonly transaction:
    | (<A, E, R2>(self: Effect.Effect<A, E, R2>) => Effect.Effect<A, E | unknown, R2 | R>)
    | undefined
}

/** A message as stored in the stream. */
interface Stored {
  readonly id: string
  readonly seq: number
  readonly subject: string
  readonly aggregateId: string
  readonly payload: string
  readonly headers: Record<string, string>
}

/** Every message of a stream, in stream order. */
export const readStream = (stream: string) =>
  Effect.gen(function*() {
    const js = yield* JetStream.JetStream
    const info = yield* js.streamInfo(stream)
    const out: Array<Stored> = []
    for (let seq = info.state.first_seq; seq <= info.state.last_seq && info.state.messages > 0; seq++) {
      const m = yield* Effect.promise(() => js.manager.streams.getMessage(stream, { seq }))
      if (m === null) continue
      const headers: Record<string, string> = {}
      for (const [k, v] of m.header) headers[k] = v[0] ?? ""
      out.push({
        id: m.header.get("Nats-Msg-Id"),
        seq,
        subject: m.subject,
        aggregateId: m.header.get("Aggregate-Id"),
        payload: new TextDecoder().decode(m.data),
        headers
      })
    }
    return out
  })

const streamCount = (stream: string) =>
  Effect.flatMap(JetStream.JetStream, (js) => Effect.map(js.streamInfo(stream), (i) => i.state.messages))

/** The ids of each aggregate, in the order given. */
const byAggregate = (messages: ReadonlyArray<{ readonly id: string; readonly aggregateId: string }>) => {
  const out: Record<string, Array<string>> = {}
  for (const m of messages) (out[m.aggregateId] ??= []).push(m.id)
  return out
}

/** Start a relay on `store` in its own scope (closed at the end of the test, or earlier by the test). */
const startRelay = (store: Outbox.OutboxStore["Type"], options: OutboxRelay.Options) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    yield* OutboxRelay.make(options).pipe(Effect.provideService(Outbox.OutboxStore, store), Scope.extend(scope))
    return scope
  })

const outboxOn = (store: Outbox.OutboxStore["Type"]) =>
  Outbox.make().pipe(Effect.provideService(Outbox.OutboxStore, store))

const gauge = (g: typeof Metrics.outboxPending) => Effect.map(Metric.value(g), (s) => s.value)

/** Register the suite for one store. */
export const outboxConformance = <R>(harness: OutboxHarness<R>) => {
  const tx = <A, E, R2>(self: Effect.Effect<A, E, R2>) => harness.transaction === undefined ? self : harness.transaction(self)
  return layer(harness.layer, { timeout: "60 seconds" })(
    `Outbox conformance: ${harness.name}`,
    (it) => {
      it.scoped("enqueued messages are published in order per aggregate, with msgID = row id, then marked", () =>
        Effect.gen(function*() {
          const stream = yield* billingStream
          const { store } = yield* harness.fresh
          const outbox = yield* outboxOn(store)
          // 10 transactions of 3 messages, over 4 aggregates, before the relay starts
          const enqueued: Array<Publisher.OutgoingMessage> = []
          for (let t = 0; t < 10; t++) {
            const batch = yield* tx(Effect.forEach([0, 1, 2], (i) =>
              outbox.enqueue(InvoiceIssued, { invoiceId: `inv-${(t + i) % 4}`, amount: t * 3 + i }, {
                correlationId: `tx-${t}`,
                version: t * 3 + i
              })))
            enqueued.push(...batch)
          }
          expect((yield* store.stats).pending).toBe(30)
          yield* startRelay(store, { pollInterval: "1 hour", batchSize: 7 })
          yield* until(Effect.map(streamCount(stream), (n) => n === 30))
          const stored = yield* readStream(stream)
          expect(stored.map((m) => m.id).sort()).toEqual(enqueued.map((m) => m.id).sort())
          expect(byAggregate(stored)).toEqual(byAggregate(enqueued))
          const first = stored.find((m) => m.id === enqueued[0]!.id)!
          expect(first.payload).toBe(enqueued[0]!.payload)
          expect(first.subject).toBe("billing.invoice.issued")
          expect(first.headers).toMatchObject({ ...enqueued[0]!.headers, "Nats-Msg-Id": enqueued[0]!.id })
          expect(JSON.parse(first.payload)).toMatchObject({ correlationId: "tx-0", aggregateId: "inv-0", version: 0 })
          yield* until(Effect.map(store.stats, (s) => s.pending === 0))
        }))

      it.scoped("wakes on enqueue: each commit is published within a second, with a poll interval of 1 hour", () =>
        Effect.gen(function*() {
          const stream = yield* billingStream
          const { store } = yield* harness.fresh
          const outbox = yield* outboxOn(store)
          yield* startRelay(store, { pollInterval: "1 hour" })
          // let the relay find the store empty and go to sleep
          yield* elapse("200 millis")
          for (let i = 1; i <= 5; i++) {
            yield* tx(outbox.enqueue(InvoiceIssued, { invoiceId: `wake-${i}`, amount: i }))
            yield* until(Effect.map(streamCount(stream), (n) => n === i), "1 second")
          }
        }))

      if (harness.transaction !== undefined) {
        const transaction = harness.transaction
        it.scoped("a rolled-back transaction publishes nothing; the next commit is published", () =>
          Effect.gen(function*() {
            const stream = yield* billingStream
            const { store } = yield* harness.fresh
            const outbox = yield* outboxOn(store)
            yield* startRelay(store, { pollInterval: "1 hour" })
            const error = yield* transaction(Effect.gen(function*() {
              yield* outbox.enqueue(InvoiceIssued, { invoiceId: "rolled-back", amount: 1 }, { id: "rolled-back-1" })
              yield* elapse("100 millis")
              return yield* Effect.fail("business rule violated" as const)
            })).pipe(Effect.flip)
            expect(error).toBe("business rule violated")
            const committed = yield* transaction(outbox.enqueue(InvoiceIssued, { invoiceId: "committed", amount: 2 }))
            yield* until(Effect.map(streamCount(stream), (n) => n === 1))
            yield* elapse("200 millis")
            expect((yield* readStream(stream)).map((m) => m.id)).toEqual([committed.id])
            expect((yield* store.stats).pending).toBe(0)
          }))
      }

      it.scoped("several relays on one store: one publishes at a time, each message once, per-aggregate order kept", () =>
        Effect.gen(function*() {
          // a duplicate window shorter than the test: a double publish would be stored twice
          const js = yield* JetStream.JetStream
          const stream = unique("OUTBOX")
          yield* Effect.acquireRelease(
            js.ensureStream({ name: stream, subjects: ["billing.>"], storage: "memory", duplicateWindow: "100 millis" }),
            () => Effect.promise(() => js.manager.streams.delete(stream).catch(() => false))
          )
          const { store } = yield* harness.fresh
          const outbox = yield* outboxOn(store)
          const publishedBefore = (yield* Metric.value(Metrics.published)).count
          for (let r = 0; r < 3; r++) yield* startRelay(store, { pollInterval: "50 millis", batchSize: 16, owner: `relay-${r}` })
          const enqueued: Array<Publisher.OutgoingMessage> = []
          for (let t = 0; t < 30; t++) {
            const batch = yield* tx(Effect.forEach(Array.from({ length: 10 }, (_, i) => i), (i) =>
              outbox.enqueue(InvoiceIssued, { invoiceId: `agg-${(t * 10 + i) % 5}`, amount: t * 10 + i })))
            enqueued.push(...batch)
            if (t % 10 === 0) yield* elapse("20 millis")
          }
          yield* until(Effect.map(store.stats, (s) => s.pending === 0), "20 seconds")
          yield* elapse("300 millis")
          const stored = yield* readStream(stream)
          expect(stored.length).toBe(300)
          expect(new Set(stored.map((m) => m.id)).size).toBe(300)
          expect(byAggregate(stored)).toEqual(byAggregate(enqueued))
          // nothing was even sent twice
          expect((yield* Metric.value(Metrics.published)).count - publishedBefore).toBe(300)
        }))

      it.scoped("a stopping relay releases its lease: a standby, woken by the next enqueue, takes over at once", () =>
        Effect.gen(function*() {
          const stream = yield* billingStream
          const { store } = yield* harness.fresh
          const outbox = yield* outboxOn(store)
          const leader = yield* startRelay(store, { pollInterval: "1 hour", leaseTtl: "1 hour", owner: "leader" })
          yield* tx(outbox.enqueue(InvoiceIssued, { invoiceId: "before", amount: 1 }))
          yield* until(Effect.map(streamCount(stream), (n) => n === 1))
          yield* startRelay(store, { pollInterval: "1 hour", leaseTtl: "1 hour", owner: "standby" })
          yield* Scope.close(leader, Exit.void)
          yield* tx(outbox.enqueue(InvoiceIssued, { invoiceId: "after", amount: 2 }))
          // without the release, the standby would wait for the 1 hour lease to expire
          yield* until(Effect.map(streamCount(stream), (n) => n === 2), "2 seconds")
        }))

      it.scoped("a standby relay publishes nothing while another owner holds the lease, reports pending and lag, and takes over when it expires", () =>
        Effect.gen(function*() {
          const stream = yield* billingStream
          const { store } = yield* harness.fresh
          const outbox = yield* outboxOn(store)
          expect(yield* store.acquireLease("someone-else", Duration.seconds(2))).toBe(true)
          yield* startRelay(store, { pollInterval: "1 hour", leaseTtl: "200 millis", metricsInterval: "50 millis" })
          for (let i = 0; i < 5; i++) yield* tx(outbox.enqueue(InvoiceIssued, { invoiceId: `standby-${i}`, amount: i }))
          yield* until(Effect.map(gauge(Metrics.outboxPending), (n) => n === 5))
          yield* elapse("300 millis")
          expect(yield* streamCount(stream)).toBe(0)
          expect(yield* gauge(Metrics.outboxLag)).toBeGreaterThanOrEqual(0.25) // seconds
          // the other owner's lease runs out after 2 seconds (of the database's clock for the SQL stores);
          // the standby looks every 200 ms
          yield* elapse("1700 millis")
          yield* until(Effect.map(streamCount(stream), (n) => n === 5), "1 second")
          yield* until(
            Effect.map(Effect.all([gauge(Metrics.outboxPending), gauge(Metrics.outboxLag)]), ([p, l]) => p === 0 && l === 0)
          )
        }))

      it.scoped("a failing publish is retried with the schedule; later messages of its aggregate wait for it", () =>
        Effect.gen(function*() {
          const { store } = yield* harness.fresh
          const outbox = yield* outboxOn(store)
          const failedBefore = (yield* Metric.value(Metrics.publishFailed)).count
          // no stream yet: every publish fails (the publisher does not retry, the relay does)
          const publisher = yield* Publisher.make({ retry: Schedule.stop })
          const enqueued: Array<Publisher.OutgoingMessage> = []
          for (let i = 0; i < 6; i++) {
            enqueued.push(yield* tx(outbox.enqueue(InvoiceIssued, { invoiceId: `retry-${i % 2}`, amount: i })))
          }
          yield* startRelay(store, { pollInterval: "1 hour", retry: Schedule.spaced("100 millis") }).pipe(
            Effect.provideService(Publisher.Publisher, publisher)
          )
          yield* until(Effect.map(Metric.value(Metrics.publishFailed), (s) => s.count - failedBefore >= 4))
          expect((yield* store.stats).pending).toBe(6)
          const stream = yield* billingStream
          yield* until(Effect.map(store.stats, (s) => s.pending === 0))
          const stored = yield* readStream(stream)
          expect(stored.length).toBe(6)
          expect(byAggregate(stored)).toEqual(byAggregate(enqueued))
        }))

      it.scoped("published rows are deleted after the retention", () =>
        Effect.gen(function*() {
          const stream = yield* billingStream
          const { rowCount, store } = yield* harness.fresh
          const outbox = yield* outboxOn(store)
          for (let i = 0; i < 3; i++) yield* tx(outbox.enqueue(InvoiceIssued, { invoiceId: `old-${i}`, amount: i }))
          expect(yield* rowCount).toBe(3)
          yield* startRelay(store, { pollInterval: "1 hour", retention: "300 millis", cleanupInterval: "100 millis" })
          yield* until(Effect.map(streamCount(stream), (n) => n === 3))
          // published, kept for the retention, then deleted
          expect(yield* rowCount).toBe(3)
          yield* until(Effect.map(rowCount, (n) => n === 0))
          expect(yield* streamCount(stream)).toBe(3)
        }))

      it.scoped("store: cleanup deletes only published rows older than the retention", () =>
        Effect.gen(function*() {
          const { rowCount, store } = yield* harness.fresh
          const outbox = yield* outboxOn(store)
          const a = yield* tx(outbox.enqueue(InvoiceIssued, { invoiceId: "a", amount: 1 }))
          yield* tx(outbox.enqueue(InvoiceIssued, { invoiceId: "b", amount: 2 }))
          yield* store.markPublished([a.id])
          expect(yield* store.cleanup(Duration.hours(1))).toBe(0)
          yield* advance("20 millis")
          expect(yield* store.cleanup(Duration.millis(10))).toBe(1)
          expect(yield* rowCount).toBe(1)
          expect((yield* store.pending(10)).map((m) => m.id)).not.toContain(a.id)
        }))

      it.scoped("store: the lease is held by one owner at a time, renewed by its owner, free once released or expired", () =>
        Effect.gen(function*() {
          const { store } = yield* harness.fresh
          expect(yield* store.acquireLease("a", Duration.millis(300))).toBe(true)
          expect(yield* store.acquireLease("b", Duration.millis(300))).toBe(false)
          expect(yield* store.acquireLease("a", Duration.millis(300))).toBe(true)
          yield* store.releaseLease("b")
          expect(yield* store.acquireLease("b", Duration.millis(300))).toBe(false)
          yield* store.releaseLease("a")
          expect(yield* store.acquireLease("b", Duration.millis(300))).toBe(true)
          // the SQL stores' leases expire on the database's clock
          yield* elapse("400 millis")
          expect(yield* store.acquireLease("a", Duration.millis(300))).toBe(true)
        }))

      it.scoped("store: an id can be enqueued once", () =>
        Effect.gen(function*() {
          const { store } = yield* harness.fresh
          const outbox = yield* outboxOn(store)
          yield* tx(outbox.enqueue(InvoiceIssued, { invoiceId: "x", amount: 1 }, { id: "same-id" }))
          const error = yield* tx(outbox.enqueue(InvoiceIssued, { invoiceId: "x", amount: 1 }, { id: "same-id" })).pipe(Effect.flip)
          expect(error).toMatchObject({ _tag: "OutboxError", method: "append" })
          expect((yield* store.stats).pending).toBe(1)
        }))
    }
  )
}
