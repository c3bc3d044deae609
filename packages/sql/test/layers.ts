import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { PostgresTestServer } from "@effect-nats/testing"
import * as SqlClient from "@effect/sql/SqlClient"
import { PgClient } from "@effect/sql-pg"
import { SqliteClient } from "@effect/sql-sqlite-node"
import { Effect, Layer, Redacted } from "effect"

/** A temp dir for the scope, removed after. */
export const tempDir = Effect.acquireRelease(
  Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "effect-nats-sql-"))),
  (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
)

/** SQLite on a file in a temp dir; also provides the file name. */
export class SqliteFile extends Effect.Tag("test/SqliteFile")<SqliteFile, { readonly filename: string }>() {}

export const SqliteLive: Layer.Layer<SqlClient.SqlClient | SqliteFile, unknown> = Layer.unwrapScoped(
  Effect.map(tempDir, (dir) => {
    const filename = path.join(dir, "test.db")
    return Layer.merge(SqliteClient.layer({ filename }), Layer.succeed(SqliteFile, { filename }))
  })
)

/** A throwaway Postgres (real server) and a client on it; also provides the server. */
export const PgLive: Layer.Layer<SqlClient.SqlClient | PgClient.PgClient | PostgresTestServer.PostgresTestServer, unknown> =
  Layer.unwrapEffect(
    Effect.map(PostgresTestServer.PostgresTestServer, (pg) => PgClient.layer({ url: Redacted.make(pg.url) }))
  ).pipe(Layer.provideMerge(PostgresTestServer.layer))

/** Run an effect in a transaction of the SqlClient in context. */
export const inTransaction = <A, E, R>(self: Effect.Effect<A, E, R>) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => sql.withTransaction(self))

/** A count from SQL, as a number (Postgres returns bigint counts as strings). */
export const count = (query: (sql: SqlClient.SqlClient) => Effect.Effect<ReadonlyArray<{ readonly n: number | string }>, unknown>) =>
  Effect.flatMap(SqlClient.SqlClient, (sql) => Effect.map(query(sql), (rows) => Number(rows[0]?.n ?? 0)))
