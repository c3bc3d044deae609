import * as fs from "node:fs"
import * as path from "node:path"
import { Cli } from "@effect-nats/cli"
import { Contracts, NatsTestServer } from "@effect-nats/testing"
import { NodeContext } from "@effect/platform-node"
import { expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import document from "../src/contracts.js"
import { BillingLive, defaultScenario, program } from "../src/program.js"

const root = path.join(import.meta.dirname, "..")

it.effect("asyncapi.yaml is what src/contracts.ts defines now, and @asyncapi/parser finds no error in it", () =>
  Effect.gen(function*() {
    const yaml = path.join(root, "asyncapi.yaml")
    yield* Cli.run(["asyncapi", path.join(root, "src/contracts.ts"), "--out", yaml, "--check"])
    yield* Contracts.parse(fs.readFileSync(yaml, "utf8"))
  }).pipe(Effect.provide(NodeContext.layer)))

it.live("every message of a (short) billing run validates against the document", () =>
  Effect.gen(function*() {
    const scenario = { ...defaultScenario, invoices: 4, poisonAt: 3, refusedAfter: 2, outages: {} }
    const { report } = yield* Contracts.during(document, program(scenario, () => Effect.void))
    expect(report.problems).toEqual([])
    expect(new Set(report.checked.map((c) => c.message))).toEqual(new Set([
      "billing.command.invoice.issue.request",
      "billing.command.invoice.issue.success",
      "billing.command.invoice.issue.CreditLimitExceeded",
      "billing.invoice.issued",
      "billing.invoice.paid",
      "billing.invoice.cancelled"
    ]))
  }).pipe(Effect.provide(BillingLive().pipe(Layer.provideMerge(NatsTestServer.layerJetStream())))), 30_000)
