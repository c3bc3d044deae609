import * as fs from "node:fs"
import * as path from "node:path"
import { Cli } from "@effect-nats/cli"
import { Contracts, NatsTestServer } from "@effect-nats/testing"
import { NodeContext } from "@effect/platform-node"
import { expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import document from "../src/contracts.js"
import { ServicesLive, session } from "../src/program.js"

const root = path.join(import.meta.dirname, "..")

it.effect("asyncapi.yaml is what src/contracts.ts defines now, and @asyncapi/parser finds no error in it", () =>
  Effect.gen(function*() {
    const yaml = path.join(root, "asyncapi.yaml")
    yield* Cli.run(["asyncapi", path.join(root, "src/contracts.ts"), "--out", yaml, "--check"])
    yield* Contracts.parse(fs.readFileSync(yaml, "utf8"))
  }).pipe(Effect.provide(NodeContext.layer)))

it.live("every message of the scripted session validates against the document", () =>
  Effect.gen(function*() {
    const { report } = yield* Contracts.during(document, session("user-contract"))
    expect(report.problems).toEqual([])
    // every command and the query, their successes and typed failures, the user's events, and $SRV discovery
    expect(new Set(report.checked.map((c) => c.message))).toEqual(new Set([
      "users.command.user.create.request",
      "users.command.user.create.success",
      "users.command.user.create.EmailTaken",
      "users.command.user.update-email.request",
      "users.command.user.update-email.success",
      "users.command.user.update-email.UserInactive",
      "users.command.user.deactivate.request",
      "users.command.user.deactivate.success",
      "users.query.user.get.request",
      "users.query.user.get.success",
      "users.query.user.get.UserNotFound",
      "users.user.created",
      "users.user.email-updated",
      "users.user.deactivated",
      "srv.request",
      "srv.info.response",
      "srv.stats.response",
      "srv.ping.response"
    ]))
    // the events are on the user's own subject (the aggregate's channel), not on their types: appended
    // there, and read back from there (each load, the subscriber's projection)
    const events = report.checked.filter((c) => ["users.user.created", "users.user.email-updated", "users.user.deactivated"].includes(c.message))
    expect(new Set(events.map((c) => c.subject))).toEqual(new Set(["users.user.events.user-contract"]))
  }).pipe(Effect.provide(ServicesLive.pipe(Layer.provideMerge(NatsTestServer.layerJetStream())))))
