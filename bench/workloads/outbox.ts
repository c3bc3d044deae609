/**
 * 4. Outbox: rows enqueued in SQLite transactions (`@effect-nats/sql`
 * SqlOutbox on a temp file) and published by `OutboxRelay` (default options),
 * against direct `js.publish` of the same messages with the relay's window
 * (64 in flight). Both runs end when a core subscription has seen every
 * message. Then the commit-to-publish latency: one row per transaction, from
 * just after the commit to the subscription seeing it (the relay wakes up on
 * the in-process signal), against direct `js.publish` to seen, in alternating
 * blocks.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import { SqliteClient } from "@effect/sql-sqlite-node"
import { SqlOutbox } from "@effect-nats/sql"
import { headers as natsHeaders, type Msg } from "@nats-io/nats-core"
import { Effect, Layer } from "effect"
import { JetStream, NatsClient, Outbox, OutboxRelay, Publisher } from "effect-nats"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { countdown, interleave, Item, logRow, pad, percentile, quick, type Row, row, side } from "../lib.js"
import { freshStream } from "./publish.js"

/** `OutboxRelay`'s default window: aggregates published concurrently. */
const window = 64

const program = Effect.gen(function*() {
  const js = yield* JetStream.JetStream
  const nats = yield* NatsClient.NatsClient
  const sql = yield* SqlClient.SqlClient
  const outbox = yield* Outbox.Outbox
  const publisher = yield* Publisher.make()
  const n = quick ? 10_000 : 50_000
  const samples = quick ? 100 : 300

  // one core subscription sees what reaches the stream's subject
  let onMessage: (msg: Msg) => void = () => {}
  yield* Effect.acquireRelease(
    Effect.sync(() => nats.connection.subscribe(Item.subject, {
      callback: (err, msg) => {
        if (err === null) onMessage(msg)
      }
    })),
    (s) => Effect.sync(() => s.unsubscribe())
  )
  yield* nats.flush
  const relay = Effect.gen(function*() {
    yield* OutboxRelay.make().pipe(Effect.provideService(Publisher.Publisher, publisher))
  })

  const enqueue = (count: number) =>
    Effect.forEach(
      Array.from({ length: Math.ceil(count / 100) }, (_, b) => b),
      (b) =>
        sql.withTransaction(
          Effect.forEach(
            Array.from({ length: Math.min(100, count - b * 100) }, (_, k) => b * 100 + k),
            (i) => outbox.enqueue(Item, { i, pad }),
            { discard: true }
          )
        ),
      { discard: true }
    )

  // throughput
  const raw = Effect.gen(function*() {
    yield* freshStream
    const messages = yield* Effect.forEach(Array.from({ length: n }, (_, i) => i), (i) => Publisher.build(Item, { i, pad }))
    const seen = countdown(n)
    onMessage = seen.arrived
    const t0 = performance.now()
    yield* Effect.promise(() =>
      new Promise<void>((resolve, reject) => {
        let next = 0
        let acked = 0
        const pump = () => {
          while (next - acked < window && next < n) {
            const m = messages[next++]!
            const h = natsHeaders()
            for (const k in m.headers) h.set(k, m.headers[k]!)
            js.client.publish(m.subject, new TextEncoder().encode(m.payload), { msgID: m.id, headers: h }).then(() => {
              if (++acked === n) resolve()
              else pump()
            }, reject)
          }
        }
        pump()
      })
    )
    yield* Effect.promise(() => seen.done)
    return { rate: n / (performance.now() - t0) * 1000 }
  })
  const toolkit = Effect.gen(function*() {
    yield* freshStream
    yield* enqueue(n)
    const seen = countdown(n)
    onMessage = seen.arrived
    return yield* Effect.scoped(Effect.gen(function*() {
      const t0 = performance.now()
      yield* relay
      yield* Effect.promise(() => seen.done)
      return { rate: n / (performance.now() - t0) * 1000 }
    }))
  })
  const throughput = yield* interleave(raw, toolkit)

  // commit-to-publish latency
  const arrival = (id: string) => {
    let resolve!: (t: number) => void
    const at = new Promise<number>((r) => (resolve = r))
    onMessage = (msg) => {
      if (msg.headers?.get("Nats-Msg-Id") === id) resolve(performance.now())
    }
    return at
  }
  // alternating blocks (raw, toolkit, raw, ...) with the relay running (idle in the raw blocks); percentiles over all samples
  const block = 25
  const rawLatency = Effect.gen(function*() {
    const latencies: Array<number> = []
    for (let k = 0; k < block; k++) {
      const m = yield* Publisher.build(Item, { i: k, pad })
      const at = arrival(m.id)
      const h = natsHeaders()
      for (const key in m.headers) h.set(key, m.headers[key]!)
      const t0 = performance.now()
      const ack = js.client.publish(m.subject, new TextEncoder().encode(m.payload), { msgID: m.id, headers: h })
      latencies.push((yield* Effect.promise(() => at)) - t0)
      yield* Effect.promise(() => ack)
    }
    return latencies
  })
  const toolkitLatency = Effect.gen(function*() {
    const latencies: Array<number> = []
    for (let k = 0; k < block; k++) {
      const id = `lat-${k}-${Math.random().toString(36).slice(2)}`
      const at = arrival(id)
      yield* sql.withTransaction(outbox.enqueue(Item, { i: k, pad }, { id }))
      const t0 = performance.now()
      latencies.push((yield* Effect.promise(() => at)) - t0)
    }
    return latencies
  })
  const r: Array<number> = []
  const t: Array<number> = []
  yield* freshStream
  yield* Effect.scoped(Effect.gen(function*() {
    yield* relay
    for (let done = 0; done < samples; done += block) {
      if (side !== "toolkit") r.push(...yield* rawLatency)
      if (side !== "raw") t.push(...yield* toolkitLatency)
    }
  }))
  const ms = (xs: ReadonlyArray<number>, p: number) => xs.length === 0 ? NaN : percentile(xs, p)

  const p50 = ms(t, 50)
  const note = `${samples} single-row transactions in alternating blocks of ${block}; raw: js.publish to seen`
  const rows: Array<Row> = [
    row("outbox relay throughput", "msg/s", throughput.raw("rate"), throughput.toolkit("rate"), { better: "higher", bound: 0.8 }, `${n} rows in transactions of 100; raw: js.publish, ${window} in flight`),
    row("outbox commit-to-publish p50", "ms", ms(r, 50), p50, { absolute: "toolkit <= 5 ms", met: p50 <= 5 }, note),
    row("outbox commit-to-publish p99", "ms", ms(r, 99), ms(t, 99), undefined, note)
  ]
  for (const r of rows) yield* logRow(r)
  return rows
})

export const outbox = Effect.gen(function*() {
  const dir = yield* Effect.acquireRelease(
    Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "effect-nats-bench-"))),
    (d) => Effect.sync(() => fs.rmSync(d, { recursive: true, force: true }))
  )
  const SqlLive = SqliteClient.layer({ filename: path.join(dir, "outbox.db") })
  const OutboxLive = Outbox.layer().pipe(Layer.provideMerge(SqlOutbox.layer()), Layer.provideMerge(SqlLive))
  return yield* program.pipe(Effect.provide(OutboxLive))
}).pipe(Effect.scoped)
