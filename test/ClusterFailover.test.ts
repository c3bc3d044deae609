/**
 * The Publisher, the OutboxRelay and CommandService on a 3-node JetStream
 * cluster when a node dies (the consumer's case: ChaosFailover.test.ts).
 */
import { NatsTestCluster } from "@effect-nats/testing"
import { expect, layer } from "@effect/vitest"
import { Duration, Effect, Fiber, Layer, Logger, LogLevel, Schedule, Schema } from "effect"
import { Event, JetStream, NatsClient, Outbox, OutboxRelay, Publisher } from "effect-nats"
import * as Command from "../src/Command.js"
import * as CommandClient from "../src/CommandClient.js"
import * as CommandService from "../src/CommandService.js"
import { readStream } from "../chaos/lib/harness.js"
import { eventually } from "./utils.js"

const LineAdded = Event.make({
  type: "failover.cart.line_added",
  aggregate: "Cart",
  schema: Schema.Struct({ cartId: Schema.String, line: Schema.Number }),
  aggregateId: (d) => d.cartId
})

const Ping = Command.query({ service: "probe", aggregate: "probe", name: "ping", success: Schema.Struct({ pong: Schema.Number }) })

/** NatsClient + JetStream on the cluster's nodes, `first` tried first. */
const client = (cluster: NatsTestCluster.NatsTestCluster["Type"], first: string) => {
  const urls = [...cluster.nodes.filter((n) => n.name === first), ...cluster.nodes.filter((n) => n.name !== first)].map((n) => n.url)
  return JetStream.layer.pipe(Layer.provideMerge(NatsClient.layer({ servers: urls, connectionOptions: { noRandomize: true } })))
}

/** Every message of `stream`, in stream order: its envelope. */
const readAll = (stream: string) =>
  Effect.map(readStream(stream, "20 seconds"), (stored) =>
    stored.map((m) => JSON.parse(new TextDecoder().decode(m.data)) as { id: string; data: { cartId: string; line: number } }))

layer(NatsTestCluster.layer({ nodes: 3 }), { excludeTestServices: true, timeout: "60 seconds" })("a node of the cluster dies", (it) => {
  it.scoped(
    "Publisher and OutboxRelay publish through a stream-leader election: each message stored once, per aggregate in order, the relay keeps its lease",
    () =>
      Effect.gen(function*() {
        const cluster = yield* NatsTestCluster.NatsTestCluster
        const side = yield* Layer.build(client(cluster, "n1"))
        const js = yield* Effect.provide(JetStream.JetStream, side)
        yield* js.ensureStream({ name: "FAILOVER_PUB", subjects: ["failover.>"], storage: "file", replicas: 3 })
        yield* cluster.awaitStreamCurrent("FAILOVER_PUB", 3)

        // the relay on a memory store, and a Publisher with its defaults, on the same connection
        const store = yield* Outbox.makeMemoryStore
        const deps = Layer.mergeAll(
          Layer.succeed(Outbox.OutboxStore, store),
          Publisher.layer({ source: "failover" }).pipe(Layer.provide(Layer.succeedContext(side)))
        )
        const outbox = yield* Effect.provide(Outbox.make({ source: "failover" }), deps)
        const publisher = yield* Effect.provide(Publisher.Publisher, deps)
        yield* OutboxRelay.make({ owner: "relay-1", leaseTtl: "10 seconds" }).pipe(Effect.provide(deps))

        const carts = 5
        const lines = new Map<string, number>()
        const published: Array<string> = []
        const failures: Array<string> = []
        let running = true
        const load = yield* Effect.gen(function*() {
          for (let n = 0; running; n++) {
            const cartId = `cart-${n % carts}`
            const line = lines.get(cartId) ?? 0
            lines.set(cartId, line + 1)
            yield* outbox.enqueue(LineAdded, { cartId, line })
            yield* publisher.publish(LineAdded, { cartId: `direct-${n % carts}`, line: n }).pipe(
              Effect.match({ onFailure: (e) => void failures.push(e.message), onSuccess: (a) => void published.push(a.id) }),
              Effect.forkDaemon
            )
            yield* Effect.sleep("20 millis")
          }
        }).pipe(Effect.fork)

        yield* Effect.sleep("1 second")
        const leader = yield* cluster.streamLeader("FAILOVER_PUB")
        yield* cluster.kill(leader)
        // the new leader: 4-8 s on nats-server 2.9; publishes wait in their retries meanwhile
        yield* cluster.streamLeader("FAILOVER_PUB", { timeoutMillis: 20_000 })
        yield* Effect.sleep("1 second")
        // while no stream leader exists, another relay cannot take the lease: relay-1 still has it
        expect(yield* store.acquireLease("relay-2", Duration.seconds(10))).toBe(false)
        running = false
        yield* Fiber.join(load)
        yield* cluster.restart(leader)
        const sent = lines.size === 0 ? 0 : [...lines.values()].reduce((a, b) => a + b, 0)
        // everything enqueued is relayed, every direct publish returned
        yield* eventually(
          Effect.map(store.stats, (stats) => stats.pending === 0 && published.length + failures.length >= sent),
          "40 seconds"
        )
        expect(failures).toEqual([])

        const stored = yield* Effect.provide(readAll("FAILOVER_PUB"), side)
        const relayed = stored.filter((m) => m.data.cartId.startsWith("cart-"))
        const direct = stored.filter((m) => m.data.cartId.startsWith("direct-"))
        // no loss, no duplicate stored
        expect(new Set(direct.map((m) => m.id)).size).toBe(direct.length)
        expect(new Set(direct.map((m) => m.id))).toEqual(new Set(published))
        expect(new Set(relayed.map((m) => m.id)).size).toBe(relayed.length)
        expect(relayed.length).toBe(sent)
        // the relay's order: each cart's lines 0, 1, 2, ... in stream order
        for (let c = 0; c < carts; c++) {
          const cart = relayed.map((m) => m.data).filter((d) => d.cartId === `cart-${c}`)
          expect(cart.map((d) => d.line)).toEqual(cart.map((_, i) => i))
        }
      }).pipe(Logger.withMinimumLogLevel(LogLevel.Error)),
    90_000
  )

  it.scoped("CommandService keeps serving after its node dies; CommandClient after its own node dies", () =>
    Effect.gen(function*() {
      const cluster = yield* NatsTestCluster.NatsTestCluster
      // the service on n2, the client on n3
      const serviceSide = yield* Layer.build(client(cluster, "n2"))
      const clientSide = yield* Layer.build(client(cluster, "n3"))
      let served = 0
      yield* CommandService.make({
        name: "probe",
        version: "1.0.0",
        commands: [CommandService.handler(Ping, () => Effect.sync(() => ({ pong: ++served })))]
      }).pipe(Effect.provide(serviceSide))
      const commands = yield* Effect.provide(CommandClient.make({ timeout: "1 second" }), clientSide)
      const ping = commands.query(Ping, undefined, {})
      // until the service's interest has reached the client's node (and after a kill, until both reconnected)
      const pingUntilAnswered = ping.pipe(Effect.retry(Schedule.spaced("50 millis")), Effect.timeout("30 seconds"))
      expect((yield* pingUntilAnswered).pong).toBe(1)

      /** Kill `node`, then ping until answered: the time it took. */
      const across = (node: string) =>
        Effect.gen(function*() {
          yield* cluster.kill(node)
          const t0 = Date.now()
          yield* pingUntilAnswered
          const ms = Date.now() - t0
          yield* cluster.restart(node)
          return ms
        })
      // the service's connection reconnects to another node and subscribes again
      expect(yield* across("n2")).toBeLessThan(10_000)
      // the client's connection too
      expect(yield* across("n3")).toBeLessThan(10_000)
      const before = served
      for (let i = 0; i < 5; i++) yield* ping
      expect(served).toBe(before + 5)
    }).pipe(Logger.withMinimumLogLevel(LogLevel.Error)), 90_000)
})
