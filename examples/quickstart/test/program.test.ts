import { Capture, NatsTestServer } from "@effect-nats/testing"
import { expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { JetStream } from "effect-nats"
import { program, ServicesLive } from "../src/program.js"

it.live("the quick start publishes a greeting and handles it", () =>
  Effect.gen(function*() {
    yield* program
    const js = yield* JetStream.JetStream
    // the ack travels after the handler's effect: wait for the server to have it
    yield* Capture.eventually(Effect.map(js.consumerInfo("DEMO", "greeter"), (info) => info.num_ack_pending === 0))
    const info = yield* js.consumerInfo("DEMO", "greeter")
    expect(info.delivered.stream_seq).toBe(1)
    expect(info.ack_floor.stream_seq).toBe(1)
  }).pipe(Effect.scoped, Effect.provide(ServicesLive.pipe(Layer.provideMerge(NatsTestServer.layerJetStream())))))
