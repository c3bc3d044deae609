import { NatsTestServer } from "@effect-nats/testing"
import { expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { JetStream } from "effect-nats"
import { program, ServicesLive } from "../src/program.js"

it.live("the quick start publishes a greeting and handles it", () =>
  Effect.gen(function*() {
    yield* program
    const js = yield* JetStream.JetStream
    const info = yield* js.consumerInfo("DEMO", "greeter")
    expect(info.delivered.stream_seq).toBe(1)
    expect(info.num_ack_pending).toBe(0)
  }).pipe(Effect.scoped, Effect.provide(ServicesLive.pipe(Layer.provideMerge(NatsTestServer.layerJetStream())))))
