/**
 * The tables of `@effect-nats/sql`, as migrations for SQLite and Postgres.
 *
 * They run in their own migrations table (`effect_nats_migrations`), so they
 * never collide with the application's own migration ids. `SqlOutbox.layer`
 * and `SqlDedup.layer` run them on start (idempotent; pass `migrate: false`
 * to manage the schema yourself, e.g. by adding {@link migrations} to your
 * own migrator).
 *
 * Tables:
 * - `effect_nats_outbox` (`seq` auto-increment order, `id` unique = msgID,
 *   `subject`, `headers` JSON, `payload`, `type`, `aggregate_id`,
 *   `created_at` / `published_at` epoch millis), partial indexes on the
 *   pending rows and on `published_at`;
 * - `effect_nats_outbox_lease` (one row per relay group: `owner`,
 *   `expires_at` epoch millis of the database clock);
 * - `effect_nats_inbox` (`dedup_key` primary key, `handled_at` epoch millis).
 *
 * @since 0.1.0
 */
import * as Migrator from "@effect/sql/Migrator"
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Effect, Schedule } from "effect"

/**
 * The migrations table of this package.
 *
 * @since 0.1.0
 * @category constants
 */
export const table = "effect_nats_migrations"

/**
 * The migrations, by `<id>_<name>` (the format of `Migrator.fromRecord`).
 *
 * @since 0.1.0
 * @category migrations
 */
export const migrations: Record<string, Effect.Effect<void, SqlError, SqlClient.SqlClient>> = {
  "1_outbox": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql.onDialectOrElse({
      pg: () =>
        sql`CREATE TABLE effect_nats_outbox (
          seq BIGSERIAL PRIMARY KEY,
          id TEXT NOT NULL UNIQUE,
          subject TEXT NOT NULL,
          headers TEXT NOT NULL,
          payload TEXT NOT NULL,
          type TEXT NOT NULL,
          aggregate_id TEXT NOT NULL,
          created_at BIGINT NOT NULL,
          published_at BIGINT
        )`,
      orElse: () =>
        sql`CREATE TABLE effect_nats_outbox (
          seq INTEGER PRIMARY KEY AUTOINCREMENT,
          id TEXT NOT NULL UNIQUE,
          subject TEXT NOT NULL,
          headers TEXT NOT NULL,
          payload TEXT NOT NULL,
          type TEXT NOT NULL,
          aggregate_id TEXT NOT NULL,
          created_at INTEGER NOT NULL,
          published_at INTEGER
        )`
    })
    yield* sql`CREATE INDEX effect_nats_outbox_pending ON effect_nats_outbox (seq) WHERE published_at IS NULL`
    yield* sql`CREATE INDEX effect_nats_outbox_published ON effect_nats_outbox (published_at) WHERE published_at IS NOT NULL`
    yield* sql`CREATE TABLE effect_nats_outbox_lease (
      name TEXT PRIMARY KEY,
      owner TEXT NOT NULL,
      expires_at BIGINT NOT NULL
    )`
  }),
  "2_inbox": Effect.gen(function*() {
    const sql = yield* SqlClient.SqlClient
    yield* sql`CREATE TABLE effect_nats_inbox (
      dedup_key TEXT PRIMARY KEY,
      handled_at BIGINT NOT NULL
    )`
    yield* sql`CREATE INDEX effect_nats_inbox_handled_at ON effect_nats_inbox (handled_at)`
  })
}

/**
 * Run the migrations that have not run yet. Safe to run concurrently (from
 * several layers or processes): Postgres serializes them with a table lock,
 * SQLite with its write lock, and a lost race to create the migrations table
 * is retried.
 *
 * @since 0.1.0
 * @category migrations
 */
export const run: Effect.Effect<
  ReadonlyArray<readonly [id: number, name: string]>,
  Migrator.MigrationError | SqlError,
  SqlClient.SqlClient
> = Migrator.make({})({ loader: Migrator.fromRecord(migrations), table }).pipe(
  Effect.retry({ times: 3, schedule: Schedule.spaced("50 millis") })
)
