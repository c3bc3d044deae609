import { NatsTestServer, PostgresTestServer } from "@effect-nats/testing"
import { expect, it } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import { PgClient } from "@effect/sql-pg"
import { Effect, Layer, Redacted } from "effect"
import { flow, workerLayer } from "../src/program.js"

/** A throwaway Postgres (a real server) and a client on it. */
const PgLive = Layer.unwrapEffect(
  Effect.map(PostgresTestServer.PostgresTestServer, (pg) => PgClient.layer({ url: Redacted.make(pg.url) }))
).pipe(Layer.provide(PostgresTestServer.layer))

it.live("the same flow on Postgres: a schema per tenant (tenant_<id>.data)", () =>
  Effect.gen(function*() {
    const report = yield* flow
    expect(report.ready.map((e) => e.data.storage)).toEqual(["tenant_acme_corp.data", "tenant_flaky.data"])
    expect(report.ready[0]!.causationId).toBe(report.created["acme-corp"]!.id)
    expect(report.deadLetters.map((d) => [d.record.reason, d.record.attempts])).toEqual([["MaxDeliveries", 3]])
    expect(report.attempts).toEqual({ "acme-corp": 1, flaky: 3, doomed: 6 })
    expect(report.storage).toEqual({ "acme-corp": true, flaky: true, doomed: false })

    const sql = yield* SqlClient.SqlClient
    const schemas = yield* sql<{ readonly schema_name: string }>`SELECT schema_name FROM information_schema.schemata
      WHERE schema_name LIKE 'tenant\\_%' ORDER BY schema_name`
    expect(schemas.map((s) => s.schema_name)).toEqual(["tenant_acme_corp", "tenant_flaky"])
    yield* sql`INSERT INTO tenant_acme_corp.data (key, value) VALUES ('plan', 'pro')`
    expect(yield* sql`SELECT key, value FROM tenant_acme_corp.data`).toEqual([{ key: "plan", value: "pro" }])
    // the inbox row and the provisioning committed together: one per provisioned tenant
    const inbox = yield* sql<{ readonly dedup_key: string }>`SELECT dedup_key FROM effect_nats_inbox ORDER BY dedup_key`
    expect(inbox.map((r) => r.dedup_key)).toEqual(["acme-corp:tenants.tenant.created:1", "flaky:tenants.tenant.created:1"])
  }).pipe(
    Effect.scoped,
    Effect.provide(workerLayer(PgLive).pipe(Layer.provideMerge(NatsTestServer.layerJetStream()))),
    Effect.timeout("20 seconds")
  ))
