/**
 * 6. Exactly-once consume, per database: SQLite (a file, WAL,
 * `synchronous = FULL`) and PostgreSQL (a local server with fsync on).
 *
 * Every side consumes the same stream of `n` events on a fresh durable and a
 * fresh database; the handler writes one effect row and one outbox row (the
 * usual "handle, then emit" of an inbox consumer); a side is timed from its
 * start until the durable's ack floor reaches the end of the stream.
 *
 * - `raw`: nats.js `consume()` and the driver (better-sqlite3 / pg), one
 *   transaction per message (inbox check, effect row, outbox row, inbox row,
 *   commit, then ack): the one-transaction-per-message inbox of the usual
 *   frameworks, hand-written. SQLite: one loop (one connection); Postgres:
 *   16 messages at once on a pool of 16 connections.
 * - `batched`: `Consumer` with `SqlDedup.layer()` (batches on, the default),
 *   concurrency 16; the handler uses `SqlClient` and `Outbox.enqueue`.
 * - `unbatched`: the same with `SqlDedup.layer({ batch: false })`.
 * - `at-least-once`: the same consumer without a dedup store and a handler
 *   without SQL: the ceiling.
 * - `batched-3` (Postgres): three `batched` consumers on the durable, each
 *   with its own pool: their combined rate.
 */
import { PgClient } from "@effect/sql-pg"
import * as SqlClient from "@effect/sql/SqlClient"
import { SqliteClient } from "@effect/sql-sqlite-node"
import { SqlDedup, SqlMigrations, SqlOutbox } from "@effect-nats/sql"
import { PostgresTestServer } from "@effect-nats/testing"
import Database from "better-sqlite3"
import { Effect, Layer, Redacted, Schema, type Scope } from "effect"
import { Consumer, Event, Handler, JetStream, Outbox, Publisher } from "effect-nats"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import pg from "pg"
import { log, logRow, median, quick, reps, type Row, row } from "../lib.js"

const stream = "BENCH_EO"
const concurrency = 16

const OrderPlaced = Event.make({
  type: "bench.order.placed",
  aggregate: "Order",
  schema: Schema.Struct({ orderId: Schema.String, n: Schema.Number }),
  aggregateId: (d) => d.orderId
})
const OrderShipped = Event.make({
  type: "bench.order.shipped",
  aggregate: "Order",
  schema: Schema.Struct({ orderId: Schema.String, n: Schema.Number }),
  aggregateId: (d) => d.orderId
})

type Db = "sqlite" | "postgres"
type Side = "raw" | "batched" | "unbatched" | "at-least-once" | "batched-3"

const effectsTable = "CREATE TABLE IF NOT EXISTS effects (msg_id TEXT NOT NULL, n INTEGER NOT NULL)"

/** Wait until the durable has acked the whole stream (its ack floor at the stream's last sequence). */
const untilAcked = (durable: string, last: number) =>
  Effect.gen(function*() {
    const js = yield* JetStream.JetStream
    for (;;) {
      const info = yield* Effect.promise(() => js.manager.consumers.info(stream, durable))
      if (info.ack_floor.stream_seq >= last && info.num_ack_pending === 0) return
      yield* Effect.sleep("20 millis")
    }
  })

/** A fresh database: a SQLite file, or a Postgres database on the server. */
interface Fresh {
  readonly layer: Layer.Layer<SqlClient.SqlClient>
  /** For the raw side: the connection string or file. */
  readonly target: string
}

const freshDb = (db: Db, pgUrl: string | undefined, k: number): Effect.Effect<Fresh, never, Scope.Scope> =>
  Effect.gen(function*() {
    if (db === "sqlite") {
      const dir = yield* Effect.acquireRelease(
        Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "bench-eo-"))),
        (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
      )
      const file = path.join(dir, "eo.db")
      const layer = SqliteClient.layer({ filename: file }).pipe(Layer.orDie)
      yield* setUp(layer, "PRAGMA synchronous = FULL")
      return { layer, target: file }
    }
    const name = `eo_${k}_${Math.random().toString(36).slice(2, 8)}`
    const admin = new pg.Client({ connectionString: pgUrl })
    yield* Effect.promise(async () => {
      await admin.connect()
      await admin.query(`CREATE DATABASE ${name}`)
      await admin.end()
    })
    const url = pgUrl!.replace(/\/postgres$/, `/${name}`)
    const layer = PgClient.layer({ url: Redacted.make(url), maxConnections: concurrency }).pipe(Layer.orDie)
    yield* setUp(layer, undefined)
    return { layer, target: url }
  })

/** The migrations (outbox and inbox tables) and the effect table. */
const setUp = (layer: Layer.Layer<SqlClient.SqlClient>, pragma: string | undefined) =>
  Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    if (pragma !== undefined) yield* sql.unsafe(pragma)
    yield* SqlMigrations.run
    yield* sql.unsafe(effectsTable)
  }).pipe(Effect.provide(layer), Effect.orDie)

/** The toolkit sides: a Consumer, its handler writing the effect row and an outbox row. */
const toolkit = (side: Exclude<Side, "raw">, fresh: Fresh, durable: string, last: number) =>
  Effect.gen(function*() {
    const onPlaced = Handler.make(OrderPlaced, (e) =>
      Effect.flatMap(SqlClient.SqlClient, (sql) => sql`INSERT INTO effects (msg_id, n) VALUES (${e.id}, ${e.data.n})`).pipe(
        Effect.zipRight(Effect.flatMap(Outbox.Outbox, (outbox) => outbox.enqueue(OrderShipped, e.data))),
        Effect.orDie
      ))
    const options = { stream, durable, concurrency, maxAckPending: 10_000, provision: false } as const
    const t0 = performance.now()
    yield* Effect.scoped(Effect.gen(function*() {
      if (side === "at-least-once") yield* Consumer.make({ ...options, handlers: [Handler.make(OrderPlaced, () => Effect.void)] })
      else {
        // `batched-3`: three instances on the durable, each with its own pool (built in this scope: the
        // consumers' workers use the database until it closes)
        for (let instance = 0; instance < (side === "batched-3" ? 3 : 1); instance++) {
          const services = yield* Layer.build(Layer.mergeAll(
            SqlDedup.layer(side === "unbatched" ? { batch: false } : {}),
            Outbox.layer().pipe(Layer.provide(SqlOutbox.layer()))
          ).pipe(Layer.provideMerge(fresh.layer), Layer.orDie))
          yield* Consumer.make({ ...options, handlers: [onPlaced] }).pipe(Effect.provide(services))
        }
      }
      yield* untilAcked(durable, last)
    }))
    return performance.now() - t0
  })

/** The raw side on SQLite: one loop, one transaction per message. */
const rawSqlite = (fresh: Fresh, durable: string, last: number) =>
  Effect.gen(function*() {
    const js = yield* JetStream.JetStream
    const consumer = yield* Effect.promise(() => js.client.consumers.get(stream, durable))
    const db = new Database(fresh.target)
    db.pragma("journal_mode = WAL")
    db.pragma("synchronous = FULL")
    const seen = db.prepare("SELECT 1 FROM effect_nats_inbox WHERE dedup_key = ?")
    const effect = db.prepare("INSERT INTO effects (msg_id, n) VALUES (?, ?)")
    const outbox = db.prepare(
      "INSERT INTO effect_nats_outbox (id, subject, headers, payload, type, aggregate_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)"
    )
    const inbox = db.prepare("INSERT INTO effect_nats_inbox (dedup_key, handled_at) VALUES (?, ?)")
    const handle = db.transaction((e: RawEnvelope) => {
      if (seen.get(e.id) !== undefined) return
      effect.run(e.id, e.data.n)
      outbox.run(`${e.id}-shipped`, "bench.order.shipped", "{}", JSON.stringify(e.data), "bench.order.shipped", e.data.orderId, Date.now())
      inbox.run(e.id, Date.now())
    })
    const t0 = performance.now()
    yield* Effect.promise(async () => {
      const messages = await consumer.consume({ max_messages: 1000 })
      for await (const m of messages) {
        handle(m.json<RawEnvelope>())
        m.ack()
        if (m.info.streamSequence >= last) break
      }
    })
    yield* untilAcked(durable, last)
    db.close()
    return performance.now() - t0
  })

interface RawEnvelope {
  readonly id: string
  readonly data: { readonly orderId: string; readonly n: number }
}

/** The raw side on Postgres: up to `concurrency` messages at once on a pool, one transaction per message. */
const rawPostgres = (fresh: Fresh, durable: string, last: number) =>
  Effect.gen(function*() {
    const js = yield* JetStream.JetStream
    const consumer = yield* Effect.promise(() => js.client.consumers.get(stream, durable))
    const pool = new pg.Pool({ connectionString: fresh.target, max: concurrency })
    const handle = async (e: RawEnvelope) => {
      const client = await pool.connect()
      try {
        await client.query("BEGIN")
        const seen = await client.query("SELECT 1 FROM effect_nats_inbox WHERE dedup_key = $1", [e.id])
        if (seen.rowCount === 0) {
          await client.query("INSERT INTO effects (msg_id, n) VALUES ($1, $2)", [e.id, e.data.n])
          await client.query(
            "INSERT INTO effect_nats_outbox (id, subject, headers, payload, type, aggregate_id, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            [`${e.id}-shipped`, "bench.order.shipped", "{}", JSON.stringify(e.data), "bench.order.shipped", e.data.orderId, Date.now()]
          )
          await client.query("INSERT INTO effect_nats_inbox (dedup_key, handled_at) VALUES ($1, $2)", [e.id, Date.now()])
        }
        await client.query("COMMIT")
      } finally {
        client.release()
      }
    }
    const t0 = performance.now()
    yield* Effect.promise(async () => {
      const messages = await consumer.consume({ max_messages: 1000 })
      // up to `concurrency` messages in their transactions at once, each acked after its commit
      const running = new Set<Promise<void>>()
      for await (const m of messages) {
        const handled: Promise<void> = handle(m.json<RawEnvelope>()).then(() => {
          m.ack()
          running.delete(handled)
        })
        running.add(handled)
        if (running.size >= concurrency) await Promise.race(running)
        if (m.info.streamSequence >= last) break
      }
      await Promise.all(running)
    })
    yield* untilAcked(durable, last)
    yield* Effect.promise(() => pool.end())
    return performance.now() - t0
  })

/** `--eo-sides=batched,raw` and `--eo-dbs=sqlite` run some sides or databases only (for profiling: `node --cpu-prof`). */
const listArg = (name: string) => process.argv.find((a) => a.startsWith(`--${name}=`))?.split("=")[1]?.split(",")
const sides = (listArg("eo-sides") ?? ["raw", "unbatched", "batched", "at-least-once", "batched-3"]) as ReadonlyArray<Side>
const dbs = (listArg("eo-dbs") ?? ["sqlite", "postgres"]) as ReadonlyArray<Db>

const measure = (db: Db, pgUrl: string | undefined, n: number, last: number) =>
  Effect.gen(function*() {
    const js = yield* JetStream.JetStream
    const rates: Record<Side, Array<number>> = { raw: [], unbatched: [], batched: [], "at-least-once": [], "batched-3": [] }
    for (let k = 0; k < reps; k++) {
      // three instances share one database on Postgres only (SQLite: one writer)
      for (const side of sides.filter((side) => side !== "batched-3" || db === "postgres")) {
        const durable = `eo${side.replace(/-/g, "")}${Math.random().toString(36).slice(2, 8)}`
        yield* js.ensureConsumer({ stream, durable, maxAckPending: 10_000, maxDeliver: 6, ackWait: "30 seconds" })
        const fresh = yield* freshDb(db, pgUrl, k)
        const ms = side === "raw"
          ? yield* (db === "sqlite" ? rawSqlite(fresh, durable, last) : rawPostgres(fresh, durable, last))
          : yield* toolkit(side, fresh, durable, last)
        rates[side].push(n / ms * 1000)
        yield* log(`    ${db} ${side}: ${Math.round(n / ms * 1000)} msg/s`)
        yield* Effect.promise(() => js.manager.consumers.delete(stream, durable).catch(() => false))
      }
    }
    return {
      raw: median(rates.raw),
      unbatched: median(rates.unbatched),
      batched: median(rates.batched),
      ceiling: median(rates["at-least-once"]),
      three: median(rates["batched-3"])
    }
  })

export const exactlyOnce = Effect.gen(function*() {
  const js = yield* JetStream.JetStream
  const n = quick ? 5_000 : 20_000
  yield* Effect.promise(() => js.manager.streams.delete(stream).catch(() => false))
  yield* js.ensureStream({ name: stream, subjects: ["bench.order.>"] })
  const publisher = yield* Publisher.make({ window: 1000 })
  const published = yield* publisher.publishAll(
    Array.from({ length: n }, (_, i) => Publisher.entry(OrderPlaced, { orderId: `order-${i % 500}`, n: i }))
  )
  const last = Math.max(...published.map((ack) => ack.seq))
  const rows: Array<Row> = []
  const pgServer = yield* PostgresTestServer.make({ sources: ["env", "binary", "container"], durable: true }).pipe(Effect.orDie)
  for (const db of dbs) {
    const r = yield* measure(db, pgServer.url, n, last)
    const note = `${n} messages, concurrency ${concurrency}; effect row + outbox row per message`
    const bound = db === "sqlite" ? 5 : 3
    for (
      const x of [
        row(`exactly-once ${db}: batched vs 1 tx/msg raw`, "msg/s", r.raw, r.batched, { better: "higher", bound }, note),
        row(`exactly-once ${db}: batching off vs 1 tx/msg raw`, "msg/s", r.raw, r.unbatched, undefined, note),
        row(`exactly-once ${db}: batched vs at-least-once`, "msg/s", r.ceiling, r.batched, { better: "higher", bound: 0.5 }, `${note}; at-least-once: no dedup, no SQL`, ["at-least-once", "exactly-once"]),
        ...(db === "postgres"
          ? [row(`exactly-once ${db}: 3 instances (combined) vs 1 tx/msg raw`, "msg/s", r.raw, r.three, undefined, `${note}; 3 consumers on one durable, a pool each`)]
          : [])
      ]
    ) {
      rows.push(x)
      yield* logRow(x)
    }
  }
  return rows
}).pipe(Effect.scoped)
