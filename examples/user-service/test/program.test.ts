import { NatsTestServer } from "@effect-nats/testing"
import { expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { session, ServicesLive } from "../src/program.js"

it.live("the scripted session: commands, typed failures, events, $SRV monitoring and health", () =>
  Effect.gen(function*() {
    const report = yield* session("user-123")

    expect(report.user).toEqual({
      id: "user-123",
      name: "John Doe",
      email: "john.doe@example.com",
      status: "inactive",
      version: 3
    })
    expect(report.failures).toEqual([
      { step: "create with a taken email", tag: "EmailTaken", code: "409" },
      { step: "get an unknown user", tag: "UserNotFound", code: "404" },
      { step: "update-email when deactivated", tag: "UserInactive", code: "410" },
      // refused by the client's own Schema: never sent
      { step: "create with an invalid email", tag: "CommandTransportError", code: "Encode" }
    ])

    expect(report.events.map((e) => e.type)).toEqual([
      "users.user.created",
      "users.user.email-updated",
      "users.user.deactivated"
    ])
    expect(report.events.map((e) => e.causationId)).toEqual([
      report.requestIds["create"],
      report.requestIds["update-email"],
      report.requestIds["deactivate"]
    ])
    expect(report.events.every((e) => e.correlationId === report.correlationId)).toBe(true)

    expect(report.info).toHaveLength(1)
    expect(report.info[0]!.endpoints.map((e) => e.subject)).toEqual([
      "users.command.user.create",
      "users.command.user.update-email",
      "users.command.user.deactivate",
      "users.query.user.get"
    ])
    const stats = Object.fromEntries(report.stats[0]!.endpoints.map((e) => [e.name, [e.num_requests, e.num_errors]]))
    // the invalid email never reached the service: 2 creates, not 3
    expect(stats).toEqual({
      "user_create": [2, 1],
      "user_update-email": [2, 1],
      "user_deactivate": [1, 0],
      "user_get_query": [3, 1]
    })
    expect(report.health.status).toBe("healthy")
    expect(report.health.instances.map((i) => i.id)).toEqual([report.info[0]!.id])
  }).pipe(Effect.scoped, Effect.provide(ServicesLive.pipe(Layer.provideMerge(NatsTestServer.layerJetStream())))))
