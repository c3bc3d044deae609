/**
 * Scenario 2 — outbox relay crash.
 *
 * A writer (this process) commits outbox rows into a SQLite file, in small
 * transactions over many aggregates, while the relay (chaos/fixtures/relay.ts,
 * a child process) publishes them. The relay is SIGKILLed at random points
 * and restarted: half of the kills from outside at a random time, half by the
 * relay itself right after a random PubAck (so between publish and mark).
 *
 * Guarantee shown: every committed row is on the stream exactly once (by
 * message id) and the rows of each aggregate are in commit order; rolled-back
 * rows never appear. It holds because the relay publishes with msgID = row id
 * and restarts well within the stream's duplicate window.
 */
import * as path from "node:path"
import * as SqlClient from "@effect/sql/SqlClient"
import { SqliteClient } from "@effect/sql-sqlite-node"
import { SqlOutbox } from "@effect-nats/sql"
import { NatsTestServer } from "@effect-nats/testing"
import { Context, Effect, Fiber, Layer, Option } from "effect"
import { JetStream, Outbox } from "effect-nats"
import { LineAdded } from "../lib/events.js"
import { Relay } from "../lib/services.js"
import { type Child, natsLayer, readStream, Report, type Result, rng, seed, since, spawnFixture, spread, tempDir, waitUntil } from "../lib/harness.js"

export interface Options {
  readonly rows: number
  readonly kills: number
  /** How long the writer spreads its commits over (ms); default: 3 s per kill (a relay's start-up + life here). */
  readonly writeOverMs?: number
  /**
   * `"after-puback"`: the relay kills itself right after a random PubAck (before marking);
   * `"external"`: SIGKILL from here at a random moment; `"random"` (default): either, at random.
   */
  readonly killMode?: "random" | "after-puback" | "external"
  /** Run the last relay (after the kills) in this process instead of a child (faster tests). */
  readonly finishInProcess?: boolean
}

export const name = "outbox-crash"

const carts = 200

/** Run the scenario (its clock starts when it runs). */
export const run = (options: Options): Effect.Effect<Result> => Effect.suspend(() => runNow(options))

const runNow = (options: Options): Effect.Effect<Result> => {
  const report = new Report(name)
  return Effect.gen(function*() {
    const random = rng(seed ^ 0x52)
    const server = yield* NatsTestServer.NatsTestServer
    const js = yield* JetStream.JetStream
    const dir = yield* tempDir("outbox")
    const db = path.join(dir, "outbox.db")
    const stream = "CHAOS_OUTBOX"
    // default duplicate window (2 minutes): every relay restart here is well inside it
    yield* js.ensureStream({ name: stream, subjects: ["outbox.>"], storage: "file" })
    const window = (yield* js.streamInfo(stream)).config.duplicate_window
    report.set("duplicateWindow", `${window / 1e9} s`)

    // the writer: SqlOutbox on the same file, in this process
    const sqlContext = yield* Layer.build(SqliteClient.layer({ filename: db }))
    const sql = Context.get(sqlContext, SqlClient.SqlClient)
    const store = yield* SqlOutbox.make().pipe(Effect.provideService(SqlClient.SqlClient, sql))
    const outbox = yield* Outbox.make().pipe(Effect.provideService(Outbox.OutboxStore, store))
    const lines = new Array<number>(carts).fill(0)
    let committed = 0
    let rolledBack = 0
    const writeOverMs = options.writeOverMs ?? options.kills * 3000
    const writer = Effect.gen(function*() {
      const started = performance.now()
      while (committed < options.rows) {
        const size = Math.min(options.rows - committed, random.int(1, 5))
        const cart = random.int(0, carts - 1)
        const rollback = random.next() < 0.02
        const tx = Effect.forEach(Array.from({ length: size }, (_, i) => i), (i) =>
          outbox.enqueue(LineAdded, { cartId: `cart-${cart}`, line: lines[cart]! + i }))
        if (rollback) {
          // a transaction that fails after enqueueing: its rows must never be published
          yield* sql.withTransaction(Effect.zipRight(tx, Effect.fail("rollback" as const))).pipe(Effect.ignore)
          rolledBack += size
        } else {
          yield* sql.withTransaction(tx)
          lines[cart] = lines[cart]! + size
          committed += size
        }
        // pace the commits over the kills
        const due = (committed / options.rows) * writeOverMs
        const ahead = due - (performance.now() - started)
        if (ahead > 1) yield* Effect.sleep(Math.min(ahead, 200))
      }
    }).pipe(Effect.orDie)
    const writing = yield* Effect.fork(writer)

    let duplicateAcks = 0
    const start = (exitAfter: number) =>
      Effect.gen(function*() {
        let ready = false
        let last = 0
        const child = yield* spawnFixture(
          "relay",
          { NATS_URL: server.url, CHAOS_DB: db, CHAOS_EXIT_AFTER_PUBACKS: String(exitAfter) },
          (line) => {
            if (line === "READY") ready = true
            else if (line.startsWith("STATS ")) {
              const stats = JSON.parse(line.slice(6)) as { duplicates: number }
              duplicateAcks += stats.duplicates - last
              last = stats.duplicates
            }
          }
        )
        const up = yield* waitUntil(Effect.sync(() => ready || !child.running()), "60 seconds", "20 millis")
        if (!up) return yield* Effect.dieMessage(`the relay did not start:\n${child.tail()}`)
        return child
      })

    const pending = Effect.map(
      sql<{ n: number }>`SELECT COUNT(*) AS n FROM effect_nats_outbox WHERE published_at IS NULL`,
      (r) => Number(r[0]?.n ?? 0)
    ).pipe(Effect.orDie)
    const published = Effect.map(
      sql<{ n: number }>`SELECT COUNT(*) AS n FROM effect_nats_outbox WHERE published_at IS NOT NULL`,
      (r) => Number(r[0]?.n ?? 0)
    ).pipe(Effect.orDie)

    const kills: Array<{ how: string; markedAtKill: number }> = []
    const lifetimes: Array<number> = []
    let selfKills = 0
    for (let k = 0; k < options.kills; k++) {
      const mode = options.killMode ?? "random"
      const self = mode === "random" ? random.next() < 0.5 : mode === "after-puback"
      // after-puback: a PubAck the relay will reach (the rows committed so far, at least one)
      const child: Child = yield* start(self ? random.int(1, Math.max(1, Math.min(1500, committed - (yield* published)))) : 0)
      const born = performance.now()
      // external: a random moment while it publishes; self: it dies after its k-th PubAck (or we kill it then)
      const deadline = self ? 20_000 : random.int(50, 1500)
      const exitedByItself = yield* child.awaitExit(deadline)
      if (Option.isNone(exitedByItself)) yield* child.kill
      else if (self) selfKills++
      const exit = yield* child.exited
      report.check(exit.signal === "SIGKILL", `relay exited with ${JSON.stringify(exit)}, not SIGKILL:\n${child.tail()}`)
      lifetimes.push(since(born))
      const marked = yield* published
      kills.push({ how: Option.isSome(exitedByItself) ? "after-puback" : "external", markedAtKill: marked })
      report.log(`SIGKILL #${k + 1} (${kills[k]!.how}) after ${since(born)} ms; ${marked} rows marked`)
    }

    // the writer finishes; the last relay publishes the rest
    yield* Fiber.join(writing)
    if (options.finishInProcess === true) {
      const relay = yield* Layer.launch(Relay({ url: server.url, db })).pipe(Effect.forkScoped)
      const done = yield* waitUntil(Effect.map(pending, (n) => n === 0), "120 seconds", "100 millis")
      report.check(done, "rows still pending after the last restart")
      yield* Fiber.interrupt(relay)
    } else {
      const last = yield* start(0)
      const done = yield* waitUntil(Effect.map(pending, (n) => n === 0), "120 seconds", "100 millis")
      report.check(done, `rows still pending after the last restart:\n${last.tail()}`)
      yield* last.signal("SIGTERM")
      const exit = yield* last.awaitExit("15 seconds")
      report.check(Option.isSome(exit) && exit.value.code === 0, `the last relay did not stop cleanly: ${JSON.stringify(exit)}`)
    }

    // compare the stream with the committed rows
    const rows = yield* sql<{ id: string; aggregate_id: string }>`SELECT id, aggregate_id FROM effect_nats_outbox ORDER BY seq`.pipe(
      Effect.orDie
    )
    const stored = yield* readStream(stream)
    const onStream = new Map<string, number>()
    for (const m of stored) if (m.msgId !== undefined) onStream.set(m.msgId, (onStream.get(m.msgId) ?? 0) + 1)
    const committedIds = new Set(rows.map((r) => r.id))
    report.sent = rows.length
    report.effects = stored.length
    report.lost = rows.filter((r) => !onStream.has(r.id)).length
    report.duplicateEffects = [...onStream.values()].reduce((sum, c) => sum + (c - 1), 0)
    const foreign = [...onStream.keys()].filter((id) => !committedIds.has(id)).length
    report.check(rows.length === committed, `${rows.length} rows in the outbox, ${committed} committed`)
    report.check(foreign === 0, `${foreign} messages on the stream that were never committed (rolled back?)`)
    // per-aggregate order: the stream order of each cart's ids = its commit order
    const order = (xs: ReadonlyArray<{ id: string; cart: string }>) => {
      const out = new Map<string, Array<string>>()
      for (const x of xs) out.set(x.cart, [...(out.get(x.cart) ?? []), x.id])
      return out
    }
    const committedOrder = order(rows.map((r) => ({ id: r.id, cart: r.aggregate_id })))
    const streamOrder = order(stored.flatMap((m) => m.msgId === undefined ? [] : [{ id: m.msgId, cart: m.headers["Aggregate-Id"] ?? "" }]))
    // inversions: a message on the stream after one of its aggregate that was committed later
    const commitIndex = new Map(rows.map((r, i) => [r.id, i]))
    let outOfOrder = 0
    let inversions = 0
    for (const [cart, ids] of committedOrder) {
      const onStreamIds = streamOrder.get(cart) ?? []
      if (JSON.stringify(onStreamIds) !== JSON.stringify(ids)) outOfOrder++
      let latest = -1
      for (const id of onStreamIds) {
        const i = commitIndex.get(id) ?? -1
        if (i < latest) inversions++
        else latest = i
      }
    }
    report.check(outOfOrder === 0, `${outOfOrder} aggregate(s) out of commit order on the stream (${inversions} inversions)`)
    report.set("inversions", inversions)
    report.set("kills", kills.length)
    report.set("killsAfterPubAck", selfKills)
    report.set("killsExternal", kills.length - selfKills)
    report.set("relayLifetimeMs", spread(lifetimes))
    report.set("rolledBackRows", rolledBack)
    report.set("republishedDroppedByJetStream", duplicateAcks)
    report.set("aggregates", committedOrder.size)
    report.set("aggregatesOutOfOrder", outOfOrder)
  }).pipe(
    // the scope (children, consumers, clients) closes before the server goes away
    Effect.scoped,
    Effect.provide(natsLayer()),
    Effect.catchAllCause((cause) => Effect.sync(() => void report.check(false, `scenario crashed: ${cause}`))),
    Effect.map(() => report.result())
  )
}
