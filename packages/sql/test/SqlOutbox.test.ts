import { PostgresTestServer } from "@effect-nats/testing"
import { describe, expect, layer } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import { PgClient } from "@effect/sql-pg"
import { SqliteClient } from "@effect/sql-sqlite-node"
import { Clock, Context, Effect, Exit, Layer, Redacted, Scope } from "effect"
import * as Outbox from "effect-nats/Outbox"
import * as OutboxRelay from "effect-nats/OutboxRelay"
import { SqlMigrations, SqlOutbox } from "../src/index.js"
import { outboxConformance, readStream } from "../../../test/OutboxConformance.js"
import { billingStream, eventually, InvoiceIssued, PipelineLive } from "../../../test/utils.js"
import { count, inTransaction, PgLive, SqliteFile, SqliteLive } from "./layers.js"

const rowCount = count((sql) => sql<{ n: number }>`SELECT COUNT(*) AS n FROM effect_nats_outbox`)

/**
 * An empty SQL store (the tables are shared by the cases of one database). The
 * cases run on the TestClock: the store starts listening (on Postgres, its
 * LISTEN waits for its own NOTIFY, on the server's time) on the live clock,
 * for the scope of the case.
 */
const fresh = Effect.gen(function*() {
  const store = yield* SqlOutbox.make()
  yield* store.listen.pipe(Effect.withClock(Clock.make()))
  const sql = yield* SqlClient.SqlClient
  yield* sql`DELETE FROM effect_nats_outbox`
  yield* sql`DELETE FROM effect_nats_outbox_lease`
  const client = yield* SqlClient.SqlClient
  return { store, rowCount: Effect.provideService(rowCount, SqlClient.SqlClient, client) }
})

const conformance = <R>(name: string, sql: Layer.Layer<SqlClient.SqlClient | R, unknown>) =>
  outboxConformance({
    name,
    layer: Layer.merge(PipelineLive, sql),
    fresh,
    transaction: inTransaction
  })

conformance("SQLite", SqliteLive)
conformance("Postgres", PgLive)

/** Start a relay with its own scope, closed with the test. */
const relayOn = (store: Outbox.OutboxStore["Type"], options: OutboxRelay.Options) =>
  Effect.gen(function*() {
    const scope = yield* Scope.make()
    yield* Effect.addFinalizer(() => Scope.close(scope, Exit.void))
    yield* OutboxRelay.make(options).pipe(Effect.provideService(Outbox.OutboxStore, store), Scope.extend(scope))
  })

describe("SqlOutbox on SQLite", () => {
  layer(Layer.merge(PipelineLive, SqliteLive), { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.scoped("rows written by another connection (another process) are found by the poll", () =>
      Effect.gen(function*() {
        const stream = yield* billingStream
        const { store } = yield* fresh
        yield* relayOn(store, { pollInterval: "300 millis" })
        yield* Effect.sleep("100 millis")
        // a second client on the same file: its enqueue cannot signal this process's relay
        const { filename } = yield* SqliteFile
        const other = Context.get(yield* Layer.build(SqliteClient.layer({ filename })), SqlClient.SqlClient)
        const outbox = yield* Outbox.make().pipe(
          Effect.provideServiceEffect(Outbox.OutboxStore, SqlOutbox.make()),
          Effect.provideService(SqlClient.SqlClient, other)
        )
        const message = yield* outbox.enqueue(InvoiceIssued, { invoiceId: "elsewhere", amount: 1 }).pipe(
          other.withTransaction,
          Effect.provideService(SqlClient.SqlClient, other)
        )
        yield* eventually(Effect.map(readStream(stream), (ms) => ms.length === 1 && ms[0]!.id === message.id), "2 seconds")
      }))

    it.effect("migrations run once, in their own table, and again as a no-op", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* SqlMigrations.run
        const again = yield* SqlMigrations.run
        expect(again).toEqual([])
        const rows = yield* sql<{ migration_id: number; name: string }>`SELECT migration_id, name FROM effect_nats_migrations ORDER BY migration_id`
        expect(rows.map((r) => [r.migration_id, r.name])).toEqual([[1, "outbox"], [2, "inbox"]])
        // the application's own migrations table is untouched
        const tables = yield* sql<{ name: string }>`SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'effect_sql_migrations'`
        expect(tables).toEqual([])
      }))
  })
})

describe("SqlOutbox on Postgres", () => {
  layer(Layer.merge(PipelineLive, PgLive), { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.scoped("a commit from another client (another process) wakes the relay through LISTEN/NOTIFY, with a 1 hour poll", () =>
      Effect.gen(function*() {
        const stream = yield* billingStream
        const { store } = yield* fresh
        yield* relayOn(store, { pollInterval: "1 hour" })
        yield* Effect.sleep("100 millis")
        // a separate pool, as another process would have
        const pg = yield* PostgresTestServer.PostgresTestServer
        const other = Context.get(yield* Layer.build(PgClient.layer({ url: Redacted.make(pg.url) })), SqlClient.SqlClient)
        const outbox = yield* Outbox.make().pipe(
          Effect.provideServiceEffect(Outbox.OutboxStore, SqlOutbox.make()),
          Effect.provideService(SqlClient.SqlClient, other)
        )
        const message = yield* outbox.enqueue(InvoiceIssued, { invoiceId: "elsewhere", amount: 1 }).pipe(
          other.withTransaction,
          Effect.provideService(SqlClient.SqlClient, other)
        )
        yield* eventually(Effect.map(readStream(stream), (ms) => ms.length === 1 && ms[0]!.id === message.id), "1 second")
      }))

    it.scoped("concurrent migrations (two stores starting at once on a fresh database) succeed", () =>
      Effect.gen(function*() {
        const sql = yield* SqlClient.SqlClient
        yield* sql`DROP TABLE IF EXISTS effect_nats_outbox, effect_nats_outbox_lease, effect_nats_inbox, effect_nats_migrations`
        const results = yield* Effect.all([SqlMigrations.run, SqlMigrations.run, SqlMigrations.run], { concurrency: "unbounded" })
        expect(results.flat().map(([id]) => id).sort()).toEqual([1, 2])
        const rows = yield* sql<{ n: string }>`SELECT COUNT(*) AS n FROM effect_nats_migrations`
        expect(Number(rows[0]!.n)).toBe(2)
      }))
  })
})
