/**
 * Runs the tenant provisioning flow on SQLite (in memory, or the file named
 * by TENANT_DB). Uses NATS_URL when set; otherwise starts a throwaway
 * nats-server (a local binary, or Docker) for the run.
 */
import { NodeRuntime } from "@effect/platform-node"
import { NatsTestServer } from "@effect-nats/testing"
import { Console, Effect, Layer } from "effect"
import { JetStream, NatsClient } from "effect-nats"
import { program, WorkerLive } from "./program.js"

// swap the NATS layer, keep the program: a configured server, or a throwaway one
const Nats: Layer.Layer<JetStream.JetStream | NatsClient.NatsClient, unknown> = process.env["NATS_URL"]
  ? JetStream.layer.pipe(Layer.provideMerge(NatsClient.layerConfig()))
  : NatsTestServer.layerJetStream().pipe(
    Layer.merge(Layer.effectDiscard(Console.log("NATS_URL is not set: starting a throwaway nats-server")))
  )

const filename = process.env["TENANT_DB"]

program.pipe(
  Effect.provide(WorkerLive(filename !== undefined ? { filename } : {}).pipe(Layer.provideMerge(Nats))),
  NodeRuntime.runMain
)
