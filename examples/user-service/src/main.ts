/**
 * Runs the user-service session. Uses NATS_URL when set; otherwise starts a
 * throwaway nats-server (a local binary, or Docker) for the run.
 */
import { NodeRuntime } from "@effect/platform-node"
import { NatsTestServer } from "@effect-nats/testing"
import { Console, Effect, Layer } from "effect"
import { JetStream, NatsClient } from "effect-nats"
import { program, ServicesLive } from "./program.js"

// swap the NATS layer, keep the program: a configured server, or a throwaway one
const Nats: Layer.Layer<JetStream.JetStream | NatsClient.NatsClient, unknown> = process.env["NATS_URL"]
  ? JetStream.layer.pipe(Layer.provideMerge(NatsClient.layerConfig()))
  : NatsTestServer.layerJetStream().pipe(
    Layer.merge(Layer.effectDiscard(Console.log("NATS_URL is not set: starting a throwaway nats-server")))
  )

program.pipe(Effect.provide(ServicesLive.pipe(Layer.provideMerge(Nats))), NodeRuntime.runMain)
