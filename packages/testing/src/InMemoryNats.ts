/**
 * An in-memory NATS + JetStream server for unit tests: swap it in for
 * `NatsClient.layer` + `JetStream.layer` and the Publisher, Consumer,
 * DeadLetter, Dedup (memory and KV), Outbox relay and CommandService /
 * CommandClient run on it unchanged, with every server-side delay
 * (nak delays, ack_wait expiry, request timeouts, KV and stream max_age)
 * driven by Effect's `Clock`, so `TestClock.adjust` runs minutes of retries
 * and redeliveries in milliseconds of real time.
 *
 * **A test double, never a production option.** It runs in one process, keeps
 * everything in memory, and implements the part of NATS that effect-nats
 * uses, nothing more. The layer refuses to start outside a test runner
 * (`process.env.VITEST`, `NODE_ENV=test` or `JEST_WORKER_ID`) unless
 * `allowOutsideTests: true` is passed.
 *
 * What it does, as nats-server does it (the conformance suite runs the same
 * cases against both):
 * - core NATS: subjects with `*` / `>` wildcards, queue groups (one member
 *   per message), reply subjects, request/reply with timeouts, a 503
 *   "no responders" status when nobody listens;
 * - streams: subjects (overlap with another stream is refused), sequence
 *   numbers, `Nats-Msg-Id` dedup within `duplicate_window` (a duplicate is
 *   answered with the original sequence and `duplicate: true`), publish
 *   expectations (`Nats-Expected-*`), limits (max msgs/bytes/age/msg size,
 *   per subject), `limits` / `workqueue` / `interest` retention, purge,
 *   get / delete message; a publish no stream captures fails with
 *   "no responders";
 * - durable pull consumers: ack, nak with delay, term, working (resets the
 *   ack wait), delivery counts, ack_wait expiry, backoff, max_ack_pending,
 *   max_deliver (delivery stops, and the
 *   `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.<stream>.<consumer>`
 *   advisory is published on the next pull, as on nats-server 2.9/2.10),
 *   redeliveries before new messages, the durable position kept across
 *   `consume()` calls, several `consume()` calls sharing the work; ordered
 *   consumers (`consumers.get(stream)`);
 * - KV buckets as nats.js lays them out (stream `KV_<bucket>`, revisions,
 *   delete markers, atomic `create` / `update`, bucket TTL).
 *
 * What it does not do: clustering and replicas, mirrors and sources, push
 * consumers, subject transforms, republish, message TTLs (`Nats-TTL`), batch
 * publish, direct get, the `$JS.API` wire protocol (the `JetStream` service's
 * handles are the API), `inactive_threshold`, the workqueue rule of one
 * consumer per subject, auth and permissions, slow consumers, reconnects and
 * server restarts. Time is exact where nats-server checks deadlines on its own
 * timers (a little later): assert "not before" and "after", not "at".
 *
 * See the package README for the testing guide.
 *
 * @since 0.1.0
 */
import { nuid, type ServerInfo } from "@nats-io/nats-core"
import { Context, Duration, Effect, FiberSet, Layer, type Scope } from "effect"
import { JetStream, NatsClient } from "effect-nats"
import * as Capture from "./Capture.js"
import { Bus, MemoryConnection, type Timers } from "./internal/memory/bus.js"
import { Engine } from "./internal/memory/jetstream.js"
import { kvManager } from "./internal/memory/kv.js"
import { makeTimers } from "./internal/memory/timers.js"

/**
 * A message a stream holds.
 *
 * @since 0.1.0
 * @category models
 */
export interface StoredMessage {
  readonly stream: string
  readonly seq: number
  readonly subject: string
  readonly data: Uint8Array
  readonly headers: Readonly<Record<string, ReadonlyArray<string>>>
  /** When it was stored (Effect's Clock: 1970 under `TestClock` unless adjusted). */
  readonly time: Date
  readonly text: () => string
  readonly json: () => unknown
}

/**
 * The in-memory server: what a test can look at beyond the capture helpers.
 *
 * @since 0.1.0
 * @category tags
 */
export class InMemoryNats extends Context.Tag("@effect-nats/testing/InMemoryNats")<InMemoryNats, {
  /** The version the server reports in its INFO. */
  readonly serverVersion: string
  /** The streams that exist. */
  readonly streams: Effect.Effect<ReadonlyArray<string>>
  /** The messages a stream holds now, oldest first (empty when the stream does not exist). */
  readonly streamMessages: (stream: string) => Effect.Effect<ReadonlyArray<StoredMessage>>
  /**
   * Another client (NatsClient + JetStream) on the same server, closed with the
   * scope: a second instance of a service, or a client that goes away.
   */
  readonly connect: Effect.Effect<Context.Context<NatsClient.NatsClient | JetStream.JetStream>, never, Scope.Scope>
}>() {}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Start even outside a test runner (default false: the layer dies). */
  readonly allowOutsideTests?: boolean | undefined
  /** The version in the server's INFO (default `"2.11.0"`; `NatsClient.serverAtLeast` reads it). */
  readonly serverVersion?: string | undefined
  /** INFO `max_payload`: larger publishes are refused as nats.js refuses them (default 1 MiB). */
  readonly maxPayload?: number | undefined
  /** Options of the {@link Capture.Capture} the layer provides. */
  readonly capture?: Capture.Options | undefined
}

const inTestRunner = (): boolean =>
  typeof process !== "undefined" &&
  (process.env["VITEST"] !== undefined || process.env["NODE_ENV"] === "test" ||
    process.env["JEST_WORKER_ID"] !== undefined)

const decoder = new TextDecoder()

/**
 * Start an in-memory server in the current scope; returns the server service
 * and the context of its first client.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: Options = {}
): Effect.Effect<
  Context.Context<InMemoryNats | NatsClient.NatsClient | JetStream.JetStream>,
  never,
  Scope.Scope
> =>
  Effect.gen(function*() {
    if (options.allowOutsideTests !== true && !inTestRunner()) {
      return yield* Effect.dieMessage(
        "InMemoryNats is a test double and refuses to run outside tests (no VITEST, NODE_ENV=test or JEST_WORKER_ID). " +
          "Use NatsClient.layer + JetStream.layer in production, or pass { allowOutsideTests: true } if you really mean it."
      )
    }
    const clock = yield* Effect.clock
    const fork = yield* FiberSet.makeRuntime<never>()
    // one sleeping fiber at a time, forked in the layer's scope, on the layer's Clock
    const timers: Timers = makeTimers(
      () => clock.unsafeCurrentTimeMillis(),
      (millis, wake) => {
        fork(Effect.sleep(Duration.millis(millis)).pipe(Effect.zipRight(Effect.sync(wake))))
      }
    )
    const serverVersion = options.serverVersion ?? "2.11.0"
    const bus = new Bus(timers)
    const engine = new Engine(bus)
    let clients = 0
    const serverId = `NMEMORY${nuid.next()}`

    const client = Effect.gen(function*() {
      const info: ServerInfo = {
        server_id: serverId,
        server_name: "in-memory",
        version: serverVersion,
        go: "in-memory",
        host: "in-memory",
        port: 0,
        headers: true,
        jetstream: true,
        max_payload: options.maxPayload ?? 1024 * 1024,
        proto: 1,
        client_id: ++clients
      }
      const connection = yield* Effect.acquireRelease(
        Effect.sync(() => new MemoryConnection(bus, info)),
        (c) => Effect.promise(() => c.close())
      )
      const nats = yield* NatsClient.fromConnection(connection, "memory://in-memory")
      const js = JetStream.fromHandles({
        client: engine.client(connection),
        manager: engine.manager(connection),
        kvm: kvManager(engine),
        // the production publish path: core publishes with a reply subject, answered by the streams
        nats
      })
      return Context.make(NatsClient.NatsClient, nats).pipe(Context.add(JetStream.JetStream, js))
    })

    const server = InMemoryNats.of({
      serverVersion,
      streams: Effect.sync(() => [...engine.streams.keys()]),
      streamMessages: (name) =>
        Effect.sync(() => {
          const stream = engine.streams.get(name)
          if (stream === undefined) return []
          stream.expire()
          return [...stream.messages.values()].map((m): StoredMessage => {
            const headers: Record<string, Array<string>> = {}
            if (m.headers !== undefined) for (const [k, v] of m.headers) headers[k] = [...v]
            return {
              stream: name,
              seq: m.seq,
              subject: m.subject,
              data: m.data.slice(),
              headers,
              time: new Date(m.time),
              text: () => decoder.decode(m.data),
              json: () => JSON.parse(decoder.decode(m.data)) as unknown
            }
          })
        }),
      connect: client
    })
    const first = yield* client
    return Context.add(first, InMemoryNats, server)
  })

/**
 * The in-memory server and a client on it: `NatsClient`, `JetStream`, the
 * {@link InMemoryNats} service and {@link Capture.Capture}. Build it inside
 * the test (`it.effect` + `Effect.provide`, or `layer(...)` of
 * `@effect/vitest`) so that its timers use the test's `TestClock`.
 *
 * @example
 * ```ts
 * import { it } from "@effect/vitest"
 * import { Effect, Layer, TestClock } from "effect"
 * import { Consumer, DeadLetter, Handler, Publisher } from "effect-nats"
 * import { Capture, InMemoryNats } from "@effect-nats/testing"
 *
 * const TestNats = Layer.mergeAll(DeadLetter.layer(), Publisher.layer()).pipe(
 *   Layer.provideMerge(InMemoryNats.layer())
 * )
 *
 * it.scoped("a failing handler is dead-lettered after 3 deliveries", () =>
 *   Effect.gen(function*() {
 *     // ... ensureStream, Consumer.make with maxDeliver: 3, publish ...
 *     yield* TestClock.adjust("1 minute")
 *     const capture = yield* Capture.Capture
 *     const dead = yield* capture.awaitDeadLetter({ reason: "MaxDeliveries" })
 *   }).pipe(Effect.provide(TestNats)))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (
  options: Options = {}
): Layer.Layer<InMemoryNats | NatsClient.NatsClient | JetStream.JetStream | Capture.Capture> =>
  Layer.scopedContext(make(options)).pipe(
    (server) => Layer.provideMerge(Capture.layer(options.capture ?? {}), server)
  )

/**
 * Another client on the same in-memory server (e.g. a second instance of a
 * service, with its own connection).
 *
 * @since 0.1.0
 * @category layers
 */
export const layerClient: Layer.Layer<NatsClient.NatsClient | JetStream.JetStream, never, InMemoryNats> = Layer
  .scopedContext(Effect.flatMap(InMemoryNats, (server) => server.connect))
