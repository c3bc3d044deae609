import * as fs from "node:fs"
import * as path from "node:path"
import { Cli } from "@effect-nats/cli"
import { Contracts, NatsTestServer } from "@effect-nats/testing"
import { NodeContext } from "@effect/platform-node"
import { expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import document from "../src/contracts.js"
import { flow, WorkerLive } from "../src/program.js"

const root = path.join(import.meta.dirname, "..")

it.effect("asyncapi.yaml is what src/contracts.ts defines now, and @asyncapi/parser finds no error in it", () =>
  Effect.gen(function*() {
    const yaml = path.join(root, "asyncapi.yaml")
    yield* Cli.run(["asyncapi", path.join(root, "src/contracts.ts"), "--out", yaml, "--check"])
    yield* Contracts.parse(fs.readFileSync(yaml, "utf8"))
  }).pipe(Effect.provide(NodeContext.layer)))

it.live("every message of the tenant flow validates against the document", () =>
  Effect.gen(function*() {
    const { report } = yield* Contracts.during(document, flow)
    expect(report.problems).toEqual([])
    expect(new Set(report.checked.map((c) => c.message))).toEqual(new Set(["tenants.tenant.created", "tenants.tenant.ready"]))
  }).pipe(Effect.provide(WorkerLive().pipe(Layer.provideMerge(NatsTestServer.layerJetStream())))), 30_000)
