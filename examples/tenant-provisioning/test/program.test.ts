import { NatsTestServer } from "@effect-nats/testing"
import { expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { flow, WorkerLive } from "../src/program.js"
import * as Provisioning from "../src/Provisioning.js"

it.live("the flow on SQLite: two tenants ready, one dead-lettered after 3 deliveries, repeated sign-ups provisioned once", () =>
  Effect.gen(function*() {
    const report = yield* flow

    const acme = report.created["acme-corp"]!
    const flaky = report.created["flaky"]!
    const doomed = report.created["doomed"]!
    expect(report.ready.map((e) => [e.data.tenantId, e.data.storage])).toEqual([
      ["acme-corp", "tenant_acme_corp_data"],
      ["flaky", "tenant_flaky_data"]
    ])
    for (const [e, created] of [[report.ready[0]!, acme], [report.ready[1]!, flaky]] as const) {
      expect(e.causationId).toBe(created.id)
      expect(e.correlationId).toBe(created.correlationId)
      expect(e.id).toBe(Provisioning.readyId(created.id))
    }

    expect(report.deadLetters).toHaveLength(1)
    expect(report.deadLetters[0]!.record).toMatchObject({
      reason: "MaxDeliveries",
      attempts: 3,
      errorTag: "ProvisioningError",
      envelope: { id: doomed.id, data: { tenantId: "doomed" } }
    })
    expect(report.deadLetters[0]!.record.errorMessage).toContain("provisioning backend unavailable for tenant doomed")

    expect(report.resentWasDuplicate).toBe(true)
    expect(report.attempts).toEqual({ "acme-corp": 1, flaky: 3, doomed: 6 })
    expect(report.storage).toEqual({ "acme-corp": true, flaky: true, doomed: false })
    // flaky: 1 retry + 1 nak; doomed: 3 retries + 2 naks + 1 dead letter; the re-sent sign-up: 1 duplicate
    // (the same-id one never reached the consumer: JetStream dropped it)
    expect(report.metrics).toEqual({ retried: 4, redelivered: 3, deadLettered: 1, duplicatesSkipped: 1 })
    expect(report.registered).toEqual([
      { tenantId: "acme-corp", storage: "tenant_acme_corp_data" },
      { tenantId: "flaky", storage: "tenant_flaky_data" }
    ])
  }).pipe(Effect.scoped, Effect.provide(WorkerLive().pipe(Layer.provideMerge(NatsTestServer.layerJetStream())))))
