/**
 * Per-tenant storage on SQL: on SQLite a table `tenant_<id>_data`, on
 * Postgres a schema `tenant_<id>` with a table `data`, plus a row in the
 * `tenants` registry. Every statement is idempotent (`IF NOT EXISTS`,
 * `ON CONFLICT DO NOTHING`), so provisioning a tenant twice is harmless, and
 * it runs inside the caller's transaction when there is one (the consumer's
 * SQL dedup transaction): a failed provisioning leaves nothing behind.
 */
import * as SqlClient from "@effect/sql/SqlClient"
import type { SqlError } from "@effect/sql/SqlError"
import { Clock, Context, Data, Effect, Layer, Schema } from "effect"
import { TenantId } from "./domain.js"
import * as Outages from "./Outages.js"

/**
 * Provisioning failed:
 * - `Unavailable`: the backend is down for now (transient: retried);
 * - `InvalidTenantId`: the id cannot name storage (permanent: dead-lettered at once);
 * - `Sql`: a statement failed (retried).
 */
export class ProvisioningError extends Data.TaggedError("ProvisioningError")<{
  readonly reason: "Unavailable" | "InvalidTenantId" | "Sql"
  readonly tenantId: string
  readonly message: string
  readonly cause?: unknown
}> {}

/** Is this error worth retrying? Everything but an invalid tenant id. */
export const isPermanent = (error: unknown): boolean =>
  error instanceof ProvisioningError && error.reason === "InvalidTenantId"

/** Where a tenant's data lives. */
export interface Provisioned {
  readonly tenantId: string
  /** `tenant_<id>_data` (SQLite) or `tenant_<id>.data` (Postgres). */
  readonly storage: string
}

/** The storage service. */
export class TenantStorage extends Context.Tag("examples/tenant-provisioning/TenantStorage")<TenantStorage, {
  /** Create the tenant's storage and registry row if missing. */
  readonly provision: (tenantId: string, name: string) => Effect.Effect<Provisioned, ProvisioningError>
  /** Does the tenant's storage exist (looked up in the database catalog)? */
  readonly exists: (tenantId: string) => Effect.Effect<boolean, ProvisioningError>
  /** The registered tenants, in id order. */
  readonly registered: Effect.Effect<ReadonlyArray<{ readonly tenantId: string; readonly storage: string }>, ProvisioningError>
}>() {}

const isTenantId: (u: string) => boolean = Schema.is(TenantId)

/**
 * The SQL name of a tenant's storage: `tenant_` + the id with `-` as `_`
 * (injective, since ids contain no `_`). The id is checked again here, so
 * nothing but `[a-z0-9_]` ever reaches an identifier, whoever calls.
 */
export const storagePrefix = (tenantId: string): Effect.Effect<string, ProvisioningError> =>
  isTenantId(tenantId)
    ? Effect.succeed(`tenant_${tenantId.replaceAll("-", "_")}`)
    : Effect.fail(
      new ProvisioningError({
        reason: "InvalidTenantId",
        tenantId,
        message: `invalid tenant id ${JSON.stringify(tenantId.slice(0, 60))}: expected a lowercase slug (a-z, 0-9, '-')`
      })
    )

/**
 * Build the storage on the `SqlClient` in context and create the registry
 * table. Every attempt first asks `Outages` (a simulation; `Outages.layerNone`
 * in production).
 */
export const make = Effect.gen(function*() {
  const sql = yield* SqlClient.SqlClient
  const outages = yield* Outages.Outages
  const dialect = sql.onDialectOrElse({ pg: () => "pg" as const, orElse: () => "sqlite" as const })

  yield* sql`CREATE TABLE IF NOT EXISTS tenants (
    tenant_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    storage TEXT NOT NULL,
    provisioned_at BIGINT NOT NULL
  )`

  const sqlError = (tenantId: string) => (cause: SqlError) =>
    new ProvisioningError({ reason: "Sql", tenantId, message: `provisioning ${tenantId}: ${cause.message}`, cause })

  /** The storage's qualified name, and the statements that create it. */
  const statements = (prefix: string) =>
    dialect === "pg"
      ? {
        storage: `${prefix}.data`,
        create: [
          sql`CREATE SCHEMA IF NOT EXISTS ${sql(prefix)}`,
          sql`CREATE TABLE IF NOT EXISTS ${sql(`${prefix}.data`)} (key TEXT PRIMARY KEY, value TEXT NOT NULL)`
        ],
        exists: sql<{ readonly found: number }>`SELECT 1 AS found FROM information_schema.tables
          WHERE table_schema = ${prefix} AND table_name = 'data'`
      }
      : {
        storage: `${prefix}_data`,
        create: [
          sql`CREATE TABLE IF NOT EXISTS ${sql(`${prefix}_data`)} (key TEXT PRIMARY KEY, value TEXT NOT NULL)`
        ],
        exists: sql<{ readonly found: number }>`SELECT 1 AS found FROM sqlite_master
          WHERE type = 'table' AND name = ${`${prefix}_data`}`
      }

  const provision = (tenantId: string, name: string) =>
    Effect.gen(function*() {
      const prefix = yield* storagePrefix(tenantId)
      const verdict = yield* outages.attempt(tenantId)
      if (verdict._tag === "Outage") {
        return yield* new ProvisioningError({
          reason: "Unavailable",
          tenantId,
          message: `provisioning backend unavailable for tenant ${tenantId} (attempt ${verdict.attempt})`
        })
      }
      const s = statements(prefix)
      const now = yield* Clock.currentTimeMillis
      for (const statement of s.create) yield* statement
      yield* sql`INSERT INTO tenants (tenant_id, name, storage, provisioned_at)
        VALUES (${tenantId}, ${name}, ${s.storage}, ${now}) ON CONFLICT (tenant_id) DO NOTHING`
      return { tenantId, storage: s.storage } satisfies Provisioned
    }).pipe(
      Effect.catchTag("SqlError", (e) => Effect.fail(sqlError(tenantId)(e))),
      Effect.withSpan("TenantStorage.provision", { attributes: { "tenant.id": tenantId } })
    )

  const exists = (tenantId: string) =>
    Effect.flatMap(storagePrefix(tenantId), (prefix) => statements(prefix).exists).pipe(
      Effect.map((rows) => rows.length > 0),
      Effect.catchTag("SqlError", (e) => Effect.fail(sqlError(tenantId)(e)))
    )

  const registered = sql<{ readonly tenant_id: string; readonly storage: string }>`
    SELECT tenant_id, storage FROM tenants ORDER BY tenant_id`.pipe(
    Effect.map((rows) => rows.map((r) => ({ tenantId: r.tenant_id, storage: r.storage }))),
    Effect.catchTag("SqlError", (e) => Effect.fail(sqlError("*")(e)))
  )

  return TenantStorage.of({ provision, exists, registered })
})

/**
 * The storage as a layer; needs the `SqlClient` (the same one the SQL dedup
 * store uses, so both share a transaction) and `Outages`.
 */
export const layer: Layer.Layer<TenantStorage, SqlError, SqlClient.SqlClient | Outages.Outages> = Layer.effect(
  TenantStorage,
  make
)
