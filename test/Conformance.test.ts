/**
 * The transport conformance suite against both transports: a real nats-server
 * and the in-memory test double.
 */
import { describe, it, layer } from "@effect/vitest"
import { Capture, InMemoryNats, NatsTestServer } from "@effect-nats/testing"
import { Effect, Layer, TestClock } from "effect"
import { CommandClient, DeadLetter, JetStream, NatsClient, Publisher } from "effect-nats"
import { transportConformance } from "./ConformanceSuite.js"

const services = Layer.mergeAll(DeadLetter.layer(), Publisher.layer(), CommandClient.layer({ timeout: "2 seconds" }))

// in memory: a fresh server per test, its timers on the test's TestClock
const MemoryLive = services.pipe(Layer.provideMerge(InMemoryNats.layer()))

transportConformance<InMemoryNats.InMemoryNats>({
  name: "in memory",
  describe: (cases) =>
    describe("transport conformance: in memory", () => {
      cases((name, body, timeout) => it.scoped(name, () => body().pipe(Effect.provide(MemoryLive)), timeout))
    }),
  advance: (d) => TestClock.adjust(d),
  settle: "20 millis",
  connect: Effect.flatMap(InMemoryNats.InMemoryNats, (server) => server.connect)
})

// a real nats-server, shared by the cases (each makes its own stream), on the live clock
const ServerLive = Layer.mergeAll(services, Capture.layer()).pipe(Layer.provideMerge(NatsTestServer.layerJetStream()))

transportConformance<NatsTestServer.NatsTestServer>({
  name: "nats-server",
  describe: (cases) =>
    describe("transport conformance: nats-server", () => {
      layer(ServerLive, { excludeTestServices: true, timeout: "60 seconds" })((it) => {
        cases((name, body, timeout) => it.scoped(name, body, timeout))
      })
    }),
  advance: (d) => Effect.sleep(d),
  settle: "150 millis",
  connect: Effect.gen(function*() {
    const server = yield* NatsTestServer.NatsTestServer
    return yield* Layer.build(JetStream.layer.pipe(Layer.provideMerge(NatsClient.layer({ servers: server.url }))))
  }).pipe(Effect.orDie)
})
