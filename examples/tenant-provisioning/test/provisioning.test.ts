import { describe, expect, layer } from "@effect/vitest"
import * as SqlClient from "@effect/sql/SqlClient"
import { NatsTestServer } from "@effect-nats/testing"
import { Effect, Either, Metric, Ref } from "effect"
import { DeadLetter, JetStream, Metrics } from "effect-nats"
import { EventStream, TenantCreated } from "../src/domain.js"
import * as Outages from "../src/Outages.js"
import { deadLetters, type ReadyEvent, settled, signUp, watchReadyTenants, WorkerLive } from "../src/program.js"
import * as Provisioning from "../src/Provisioning.js"
import * as TenantStorage from "../src/TenantStorage.js"
import { eventually } from "./utils.js"

/**
 * Run `body` with a provisioning worker on a fresh in-memory SQLite database;
 * afterwards the TENANTS stream is purged and its consumers deleted. (Not the
 * stream itself: a new stream would count sequences from 1 again, and dead
 * letters are deduplicated by `<stream>:<sequence>` in the DLQ's duplicate
 * window.)
 */
const withWorker = <A, E, R>(outages: Outages.Plan, body: Effect.Effect<A, E, R>) =>
  Effect.scoped(body).pipe(
    Effect.provide(WorkerLive({ outages })),
    Effect.ensuring(
      Effect.flatMap(JetStream.JetStream, (js) =>
        Effect.promise(async () => {
          for (const durable of [Provisioning.Durable, "tenant-directory"]) {
            await js.manager.consumers.delete(EventStream.name, durable).catch(() => false)
          }
          await js.manager.streams.purge(EventStream.name).catch(() => undefined)
        }))
    )
  )

/** Collect the ready events the directory consumer receives. */
const collectReady = Effect.gen(function*() {
  const ready = yield* Ref.make<ReadonlyArray<ReadyEvent>>([])
  yield* watchReadyTenants((e) => Ref.update(ready, (xs) => [...xs, e]))
  return {
    all: Ref.get(ready),
    of: (tenantId: string) => Effect.map(Ref.get(ready), (xs) => xs.filter((e) => e.data.tenantId === tenantId))
  }
})

/** The dead letters whose original envelope has this id. */
const deadLettersOf = (envelopeId: string) =>
  Effect.map(deadLetters, (entries) =>
    entries.filter((e) =>
      typeof e.record.envelope === "object" && e.record.envelope !== null && "id" in e.record.envelope &&
      e.record.envelope.id === envelopeId
    ))

/** Tables whose name starts with `tenant_` (SQLite catalog). */
const tenantTables = Effect.flatMap(SqlClient.SqlClient, (sql) =>
  sql<{ readonly name: string }>`SELECT name FROM sqlite_master WHERE type = 'table' AND name LIKE 'tenant\\_%' ESCAPE '\\' ORDER BY name`)
  .pipe(Effect.map((rows) => rows.map((r) => r.name)))

const duplicatesSkipped = Effect.map(Metric.value(Metrics.duplicatesSkipped), (s) => s.count)

describe("tenant provisioning (SQLite)", () => {
  layer(NatsTestServer.layerJetStream(), { excludeTestServices: true, timeout: "30 seconds" })((it) => {
    it.effect("tenant.created -> the tenant's table exists -> tenant.ready, caused by the created event, same correlation", () =>
      withWorker(
        {},
        Effect.gen(function*() {
          const ready = yield* collectReady
          const created = yield* signUp("acme-corp", "Acme Corp", { correlationId: "signup-1" })
          yield* eventually(Effect.map(ready.of("acme-corp"), (xs) => xs.length === 1))
          const [event] = yield* ready.of("acme-corp")

          expect(event!.type).toBe("tenants.tenant.ready")
          expect(event!.data).toEqual({ tenantId: "acme-corp", storage: "tenant_acme_corp_data" })
          expect(event!.causationId).toBe(created.id)
          expect(event!.correlationId).toBe("signup-1")
          expect(event!.tenantId).toBe("acme-corp")
          expect(event!.aggregateId).toBe("acme-corp")
          expect(event!.version).toBe(2)
          expect(event!.source).toBe("tenant-provisioner")
          expect(event!.id).toBe(Provisioning.readyId(created.id))

          // the table is in the catalog, registered, and usable
          expect(yield* tenantTables).toEqual(["tenant_acme_corp_data"])
          const storage = yield* TenantStorage.TenantStorage
          expect(yield* storage.exists("acme-corp")).toBe(true)
          expect(yield* storage.registered).toEqual([{ tenantId: "acme-corp", storage: "tenant_acme_corp_data" }])
          const sql = yield* SqlClient.SqlClient
          yield* sql`INSERT INTO tenant_acme_corp_data (key, value) VALUES ('plan', 'pro')`
          expect(yield* sql`SELECT key, value FROM tenant_acme_corp_data`).toEqual([{ key: "plan", value: "pro" }])
        })
      ))

    it.effect("provisioning that always fails is retried, then dead-lettered after 3 deliveries with its reason", () =>
      withWorker(
        { alwaysFail: ["doomed"] },
        Effect.gen(function*() {
          const ready = yield* collectReady
          const started = Date.now()
          const created = yield* signUp("doomed", "Doomed Inc")
          yield* eventually(Effect.map(deadLettersOf(created.id), (xs) => xs.length === 1), "10 seconds")
          const elapsed = Date.now() - started
          const [entry] = yield* deadLettersOf(created.id)

          expect(entry!.subject).toBe("dlq.tenants")
          expect(entry!.record).toMatchObject({
            subject: TenantCreated.subject,
            reason: "MaxDeliveries",
            attempts: 3,
            errorTag: "ProvisioningError",
            stream: EventStream.name,
            consumer: Provisioning.Durable,
            sequence: created.seq
          })
          expect(entry!.record.errorMessage).toBe(
            "failed 3 deliveries; last error: provisioning backend unavailable for tenant doomed (attempt 6)"
          )
          expect(entry!.record.envelope).toMatchObject({ id: created.id, data: { tenantId: "doomed" } })
          // 3 deliveries x (1 try + 1 in-process retry); the redeliveries waited 250 ms and 500 ms
          expect(yield* (yield* Outages.Outages).attempts("doomed")).toBe(6)
          expect(elapsed).toBeGreaterThanOrEqual(700)

          // nothing provisioned, nothing announced, and the message is settled (terminated)
          const storage = yield* TenantStorage.TenantStorage
          expect(yield* storage.exists("doomed")).toBe(false)
          expect(yield* storage.registered).toEqual([])
          expect(yield* tenantTables).toEqual([])
          yield* eventually(Effect.map(settled(Provisioning.Durable, created.seq), (ok) => ok === true))
          expect(yield* ready.all).toEqual([])
        })
      ))

    it.effect("a flaky provisioning fails its first delivery, is redelivered, and succeeds", () =>
      withWorker(
        { failFirst: { flaky: 2 } },
        Effect.gen(function*() {
          const ready = yield* collectReady
          const started = Date.now()
          const created = yield* signUp("flaky", "Flaky Ltd")
          yield* eventually(Effect.map(ready.of("flaky"), (xs) => xs.length === 1))
          // the redelivery came after the first nak delay (250 ms)
          expect(Date.now() - started).toBeGreaterThanOrEqual(200)
          const [event] = yield* ready.of("flaky")
          expect(event!.causationId).toBe(created.id)
          expect(yield* (yield* Outages.Outages).attempts("flaky")).toBe(3)
          expect(yield* (yield* TenantStorage.TenantStorage).exists("flaky")).toBe(true)
          expect(yield* deadLettersOf(created.id)).toEqual([])
          const info = yield* Effect.flatMap(JetStream.JetStream, (js) => js.consumerInfo(EventStream.name, Provisioning.Durable))
          expect(info.num_redelivered).toBe(0) // settled: nothing waiting for another delivery
          expect(info.num_ack_pending).toBe(0)
        })
      ))

    it.effect("a duplicate tenant.created (same message, same envelope again, or a re-sent sign-up) provisions once", () =>
      withWorker(
        {},
        Effect.gen(function*() {
          const ready = yield* collectReady
          const outages = yield* Outages.Outages
          const js = yield* JetStream.JetStream
          const skippedBefore = yield* duplicatesSkipped

          const first = yield* signUp("globex", "Globex", { correlationId: "signup-globex" })
          yield* eventually(Effect.map(ready.of("globex"), (xs) => xs.length === 1))

          // 1. the same message again: JetStream's duplicate window drops it
          const again = yield* signUp("globex", "Globex", { id: first.id })
          expect(again).toMatchObject({ duplicate: true, seq: first.seq })
          // 2. the same envelope delivered again (re-sent under another Nats-Msg-Id, e.g. after the window)
          const stored = yield* Effect.promise(() => js.manager.streams.getMessage(EventStream.name, { seq: first.seq }))
          const redelivered = yield* Effect.promise(() =>
            js.client.publish(TenantCreated.subject, stored!.data, { msgID: `${first.id}-again`, headers: stored!.header })
          )
          // 3. the sign-up flow retried with a new envelope for the same tenant
          const resent = yield* signUp("globex", "Globex")
          expect(resent.id).not.toBe(first.id)

          yield* eventually(Effect.map(settled(Provisioning.Durable, Math.max(redelivered.seq, resent.seq)), (ok) => ok === true))
          yield* eventually(Effect.map(settled("tenant-directory", 0), (ok) => ok === true))
          // both were acked as duplicates by the SQL dedup store (natural key globex:tenants.tenant.created:1)
          expect((yield* duplicatesSkipped) - skippedBefore).toBe(2)
          expect(yield* outages.attempts("globex")).toBe(1)
          expect((yield* ready.of("globex")).length).toBe(1)
          const storage = yield* TenantStorage.TenantStorage
          expect(yield* storage.registered).toEqual([{ tenantId: "globex", storage: "tenant_globex_data" }])
          const sql = yield* SqlClient.SqlClient
          const inbox = yield* sql<{ readonly dedup_key: string }>`SELECT dedup_key FROM effect_nats_inbox`
          expect(inbox.map((r) => r.dedup_key)).toEqual(["globex:tenants.tenant.created:1"])
          // provisioning itself is idempotent too (IF NOT EXISTS, ON CONFLICT DO NOTHING)
          expect(yield* storage.provision("globex", "Globex")).toEqual({ tenantId: "globex", storage: "tenant_globex_data" })
          expect(yield* tenantTables).toEqual(["tenant_globex_data"])
        })
      ))

    it.effect("a hostile tenant id never reaches SQL: refused by the publisher, dead-lettered at decode, refused by the storage", () =>
      withWorker(
        {},
        Effect.gen(function*() {
          const js = yield* JetStream.JetStream
          const hostile = "x\"; DROP TABLE tenants; --"

          // the typed publisher encodes with the event's Schema: nothing is sent
          const refused = yield* Effect.flip(signUp(hostile, "Evil"))
          expect(refused).toMatchObject({ _tag: "PublishError", reason: "Encode" })

          // a producer without the Schema sends it anyway: the consumer dead-letters it at decode, at once
          const envelope = {
            id: "evil-1",
            type: TenantCreated.type,
            timestamp: new Date().toISOString(),
            correlationId: "evil-1",
            aggregateId: "evil",
            aggregateType: "Tenant",
            version: 1,
            data: { tenantId: hostile, name: "Evil" }
          }
          yield* Effect.promise(() => js.client.publish(TenantCreated.subject, JSON.stringify(envelope), { msgID: "evil-1" }))
          yield* eventually(Effect.map(deadLettersOf("evil-1"), (xs) => xs.length === 1))
          const [entry] = yield* deadLettersOf("evil-1")
          expect(entry!.record).toMatchObject({ reason: "Decode", errorTag: "ParseError", attempts: 1 })
          expect(entry!.record.errorMessage).toContain("data.tenantId: Expected a string matching the pattern")

          // and the storage checks the id again, whoever calls it
          const storage = yield* TenantStorage.TenantStorage
          for (const bad of [hostile, "a.b", "a_b", "Acme", "-acme", "acme-", "a--b", "", "a".repeat(41)]) {
            const error = yield* Effect.flip(storage.provision(bad, "x"))
            expect(error).toMatchObject({ _tag: "ProvisioningError", reason: "InvalidTenantId" })
            expect(TenantStorage.isPermanent(error)).toBe(true)
          }
          expect(yield* Effect.either(TenantStorage.storagePrefix("acme-corp-2"))).toEqual(Either.right("tenant_acme_corp_2"))
          expect(yield* storage.registered).toEqual([])
          expect(yield* tenantTables).toEqual([])
          expect(yield* (yield* Outages.Outages).attempts(hostile)).toBe(0)
          // the DLQ keeps the original bytes for inspection
          const dlq = yield* DeadLetter.DeadLetter
          const kept = yield* dlq.get(entry!.seq)
          expect(JSON.parse(Buffer.from(kept.record.payload, "base64").toString())).toEqual(envelope)
        })
      ))
  })
})
