/**
 * 2. Consume: the full default pipeline (trace extraction when a tracer
 * records, size check, JSON, Schema decode, memory dedup, a no-op handler,
 * ack) against a raw `consume()` + `ack()` loop, each on a fresh durable
 * consumer of the same stream of enveloped messages; at concurrency 1, also
 * against a raw loop that parses each message's JSON before its ack; and at
 * concurrency 64 with `orderBy: "aggregate"` (messages of 100 aggregates, one
 * worker inbox each, with the aggregate hold), nothing failing.
 */
import { Deferred, Effect, Exit } from "effect"
import { Consumer, Dedup, Event, Handler, JetStream, Publisher } from "effect-nats"
import { interleave, Item, logRow, pad, quick, type Row, row } from "../lib.js"
import { freshStream } from "./publish.js"

/** `Item` with an aggregate id (100 aggregates), on its own subject, for the ordered row. */
const OrderedItem = Event.make({
  type: "bench.item.ordered",
  aggregate: "Item",
  schema: Item.schema,
  aggregateId: (d) => `item-${d.i % 100}`
})

export const consume = Effect.gen(function*() {
  const js = yield* JetStream.JetStream
  const n = quick ? 20_000 : 100_000
  yield* freshStream
  const publisher = yield* Publisher.make({ window: 1000 })
  yield* publisher.publishAll(Array.from({ length: n }, (_, i) => Publisher.entry(Item, { i, pad })))
  const durableName = (prefix: string) => `${prefix}${Math.random().toString(36).slice(2)}`
  const dropConsumer = (durable: string) =>
    Effect.promise(() => js.manager.consumers.delete("BENCH", durable).catch(() => false))

  const rows: Array<Row> = []
  // both sides ask for the same number of messages per pull
  const pullBatch = 1000
  for (const [concurrency, ordered] of [[1, false], [64, false], [64, true]] as const) {
    if (ordered) yield* publisher.publishAll(Array.from({ length: n }, (_, i) => Publisher.entry(OrderedItem, { i, pad })))
    const filterSubject = ordered ? OrderedItem.type : Item.type
    // `parse`: the raw loop also parses each message's JSON (what the toolkit's decode starts with)
    const rawLoop = (parse: boolean) => Effect.gen(function*() {
      const durable = durableName("raw")
      yield* js.ensureConsumer({ stream: "BENCH", durable, filterSubject, maxAckPending: 10_000 })
      const consumer = yield* Effect.promise(() => js.client.consumers.get("BENCH", durable))
      const t0 = performance.now()
      yield* Effect.promise(async () => {
        const messages = await consumer.consume({ max_messages: pullBatch })
        let seen = 0
        for await (const m of messages) {
          if (parse) JSON.parse(m.string())
          m.ack()
          if (++seen >= n) break
        }
      })
      const rate = n / (performance.now() - t0) * 1000
      yield* dropConsumer(durable)
      return { rate }
    })
    const toolkit = Effect.gen(function*() {
      const durable = durableName("tk")
      const done = yield* Deferred.make<void>()
      let seen = 0
      const count = () =>
        Effect.sync(() => {
          if (++seen === n) Deferred.unsafeDone(done, Exit.void)
        })
      const handlers = [ordered ? Handler.make(OrderedItem, count) : Handler.make(Item, count)]
      // timed from start to the last message handled (the raw loop is timed to its last ack); the drain on scope close is not
      // provisioned before the clock starts, as the raw consumer is (max_deliver one above the pipeline's default 5)
      yield* js.ensureConsumer({ stream: "BENCH", durable, filterSubject, maxAckPending: 10_000, maxDeliver: 6, ackWait: "30 seconds" })
      const rate = yield* Effect.scoped(Effect.gen(function*() {
        const t0 = performance.now()
        yield* Consumer.make({
          stream: "BENCH",
          durable,
          concurrency,
          pullBatch,
          maxAckPending: 10_000,
          provision: false,
          handlers,
          ...(ordered ? { orderBy: "aggregate" as const } : {})
        }).pipe(
          Effect.provide(Dedup.layerMemory())
        )
        yield* Deferred.await(done)
        return n / (performance.now() - t0) * 1000
      }))
      yield* dropConsumer(durable)
      return { rate }
    })
    const result = yield* interleave(rawLoop(false), toolkit)
    const r = row(`consume concurrency=${concurrency}${ordered ? ", orderBy aggregate" : ""}`, "msg/s", result.raw("rate"), result.toolkit("rate"), { better: "higher", bound: 0.85 }, `${n} messages`)
    rows.push(r)
    yield* logRow(r)
    if (concurrency === 1) {
      // the same, against a raw loop that does the JSON.parse too (no target: information)
      const parsed = yield* interleave(rawLoop(true), toolkit)
      const p = row("consume concurrency=1, raw parses JSON", "msg/s", parsed.raw("rate"), parsed.toolkit("rate"), undefined, `${n} messages; raw: JSON.parse + ack`)
      rows.push(p)
      yield* logRow(p)
    }
  }
  return rows
})
