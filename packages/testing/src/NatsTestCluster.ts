/**
 * A real JetStream cluster of local `nats-server` processes for failover tests:
 * `nodes` servers (default 3) on free loopback ports, joined by cluster routes,
 * each with its own `server_name` (`n1`, `n2`, ...) and store dir. Kill one named
 * node with SIGKILL, restart it on the same ports and store, ask which node leads
 * a stream or a durable consumer. Every node is stopped and every dir removed
 * when the scope closes, also after a kill.
 *
 * The binary comes from {@link Provision.resolve} (PATH, the usual dirs, or as
 * root on Debian/Ubuntu `apt-get install nats-server`), as for
 * {@link NatsTestServer}; there is no container or `NATS_URL` source. Works with
 * nats-server 2.9 and later.
 *
 * @since 0.1.0
 */
import { connect, type NatsConnection } from "@nats-io/transport-node"
import { Context, Effect, ExecutionStrategy, Exit, Layer, Option, Schedule, Schema, Scope } from "effect"
import { freePort } from "./internal/net.js"
import { findBinary, NatsTestServerError, node, type Node, portTaken, q, tempDir } from "./internal/natsNode.js"
import { live } from "./internal/process.js"
import { renderConfig } from "./NatsTestServer.js"

/**
 * One node of a {@link NatsTestCluster}.
 *
 * @since 0.1.0
 * @category models
 */
export interface ClusterNode {
  /** its `server_name`: `n1`, `n2`, ... */
  readonly name: string
  /** e.g. `nats://127.0.0.1:41234` */
  readonly url: string
  readonly port: number
  /** the port its cluster routes listen on */
  readonly clusterPort: number
  readonly storeDir: string
}

/**
 * What `STREAM.INFO` / `CONSUMER.INFO` say of a replicated asset's RAFT group.
 *
 * @example
 * ```ts
 * import { NatsTestCluster } from "@effect-nats/testing"
 * import { Effect } from "effect"
 *
 * Effect.gen(function*() {
 *   const cluster = yield* NatsTestCluster.NatsTestCluster
 *   const p = yield* cluster.streamPlacement("ORDERS")
 *   // p.leader: "n2"; p.replicas: [{ name: "n1", current: true }, { name: "n3", current: true }]
 * })
 * ```
 *
 * @since 0.1.0
 * @category models
 */
export class Placement extends Schema.Class<Placement>("Placement")({
  /** server name of the group's leader; absent while an election runs */
  leader: Schema.optional(Schema.String),
  replicas: Schema.optionalWith(
    Schema.Array(Schema.Struct({
      name: Schema.String,
      current: Schema.Boolean,
      offline: Schema.optional(Schema.Boolean)
    })),
    { default: () => [] }
  )
}) {}

const ApiReply = Schema.Struct({
  cluster: Schema.optional(Placement),
  error: Schema.optional(Schema.Struct({ code: Schema.Number, description: Schema.String }))
})
const decodeReply = Schema.decodeUnknown(Schema.parseJson(ApiReply))

/**
 * A running cluster. Operations run on the live clock (real time also under
 * `it.effect`'s TestClock). Node names are `n1` .. `nN`; an unknown name fails
 * with reason `UnknownNode`.
 *
 * @example
 * ```ts
 * import { NatsTestCluster } from "@effect-nats/testing"
 * import { Effect } from "effect"
 *
 * Effect.gen(function*() {
 *   const cluster = yield* NatsTestCluster.NatsTestCluster
 *   const leader = yield* cluster.consumerLeader("ORDERS", "billing")
 *   yield* cluster.kill(leader)      // SIGKILL of that node only
 *   yield* cluster.start(leader)     // back on the same ports and store dir
 * })
 * ```
 *
 * @since 0.1.0
 * @category tags
 */
export class NatsTestCluster extends Context.Tag("@effect-nats/testing/NatsTestCluster")<NatsTestCluster, {
  readonly nodes: ReadonlyArray<ClusterNode>
  /** every node's url, for a client's `servers` list */
  readonly urls: ReadonlyArray<string>
  /** from the `INFO` line of the first node's last start, e.g. `"2.9.10"` */
  readonly serverVersion: Effect.Effect<string>
  /** SIGKILL exactly that node's own process (a crash); `restart` / `start` brings it back. No-op when down */
  readonly kill: (name: string) => Effect.Effect<void, NatsTestServerError>
  /** SIGTERM (bounded wait, then SIGKILL); no-op when down */
  readonly stop: (name: string) => Effect.Effect<void, NatsTestServerError>
  /** start a down node on the same ports and store dir; resolves when it answers. No-op when running */
  readonly start: (name: string) => Effect.Effect<void, NatsTestServerError>
  /** stop (when running), then start on the same ports and store dir */
  readonly restart: (name: string) => Effect.Effect<void, NatsTestServerError>
  /** the node's current process id; none while it is down */
  readonly pid: (name: string) => Effect.Effect<Option.Option<number>, NatsTestServerError>
  /** the names of the nodes that are up */
  readonly running: Effect.Effect<ReadonlyArray<string>>
  /** wait until the cluster has a JetStream meta leader (a JetStream API request is answered) */
  readonly awaitJetStream: (options?: WaitOptions) => Effect.Effect<void, NatsTestServerError>
  /** the RAFT group of a stream (`$JS.API.STREAM.INFO.<stream>` -> `cluster`) */
  readonly streamPlacement: (stream: string) => Effect.Effect<Placement, NatsTestServerError>
  /** the RAFT group of a durable consumer (`$JS.API.CONSUMER.INFO.<stream>.<consumer>` -> `cluster`) */
  readonly consumerPlacement: (stream: string, consumer: string) => Effect.Effect<Placement, NatsTestServerError>
  /** the name of the node leading the stream; waits through an election */
  readonly streamLeader: (stream: string, options?: WaitOptions) => Effect.Effect<string, NatsTestServerError>
  /** the name of the node leading the durable consumer; waits through an election */
  readonly consumerLeader: (stream: string, consumer: string, options?: WaitOptions) => Effect.Effect<string, NatsTestServerError>
  /** wait until the stream has a leader and `replicas - 1` current followers (R3: all three nodes in sync) */
  readonly awaitStreamCurrent: (stream: string, replicas: number, options?: WaitOptions) => Effect.Effect<Placement, NatsTestServerError>
}>() {}

/**
 * How long a wait may take; default 10 000 ms.
 *
 * @since 0.1.0
 * @category models
 */
export interface WaitOptions {
  readonly timeoutMillis?: number
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** number of nodes; default 3 */
  readonly nodes?: number
  /** the `cluster.name`; default `effect-nats-test` */
  readonly name?: string
  /** raw nats-server config text appended to every node's config */
  readonly extraConfig?: string
  /** use this `nats-server` executable instead of searching for one */
  readonly binaryPath?: string
  /** time allowed for each node to answer after a start; default 10 000 ms */
  readonly startTimeoutMillis?: number
}

/**
 * Render one node's config (pure).
 *
 * @example
 * ```ts
 * import { NatsTestCluster } from "@effect-nats/testing"
 *
 * const text = NatsTestCluster.renderNodeConfig({
 *   name: "n1", port: 4222, clusterPort: 6222, storeDir: "/tmp/n1/js",
 *   routes: [6223, 6224], clusterName: "test"
 * })
 * // server_name: "n1" ... cluster { name: "test" listen: "127.0.0.1:6222" routes: [...] }
 * ```
 *
 * @since 0.1.0
 * @category config
 */
export const renderNodeConfig = (target: {
  readonly name: string
  readonly port: number
  readonly clusterPort: number
  readonly storeDir: string
  readonly routes: ReadonlyArray<number>
  readonly clusterName: string
  readonly extraConfig?: string
}): string =>
  renderConfig(
    target.extraConfig !== undefined ? { extraConfig: target.extraConfig } : {},
    { port: target.port, storeDir: target.storeDir, serverName: target.name }
  ) + [
    "cluster {",
    `  name: ${q(target.clusterName)}`,
    `  listen: ${q(`127.0.0.1:${target.clusterPort}`)}`,
    `  routes: [${target.routes.map((p) => q(`nats-route://127.0.0.1:${p}`)).join(", ")}]`,
    "}"
  ].join("\n") + "\n"

const failed = (reason: NatsTestServerError["reason"], message: string, cause?: unknown) =>
  new NatsTestServerError({ reason, message, ...(cause !== undefined ? { cause } : {}) })

const freePorts = (n: number) =>
  Effect.forEach(Array.from({ length: n }), () => freePort).pipe(
    Effect.mapError((cause) => failed("StartFailed", `no free port: ${cause.message}`, cause))
  )

/**
 * Start a cluster in the current scope: all nodes at once, then wait for a
 * JetStream meta leader and for every node to be a JetStream peer (a stream
 * with one replica per node can be placed).
 *
 * @example
 * ```ts
 * import { NatsTestCluster } from "@effect-nats/testing"
 * import { Effect } from "effect"
 *
 * const program = Effect.scoped(Effect.gen(function*() {
 *   const cluster = yield* NatsTestCluster.make({ nodes: 3 })
 *   // create an R3 stream through a client on cluster.urls, then:
 *   const leader = yield* cluster.streamLeader("ORDERS")
 *   yield* cluster.kill(leader)
 *   yield* cluster.restart(leader)
 * }))
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<NatsTestCluster["Type"], NatsTestServerError, Scope.Scope> =>
  Effect.gen(function*() {
    const size = options.nodes ?? 3
    const binary = yield* findBinary(options.binaryPath, "NatsTestCluster")
    const names = Array.from({ length: size }, (_, i) => `n${i + 1}`)
    const dirs = yield* Effect.forEach(names, () => tempDir("NatsTestCluster"))
    const outer = yield* Effect.scope
    // ports are chosen up front (every node's routes name the others'); a port taken meanwhile restarts the lot
    const started = yield* Effect.gen(function*() {
      for (let attempt = 1;; attempt++) {
        const ports = yield* freePorts(size)
        const clusterPorts = yield* freePorts(size)
        const attemptScope = yield* Scope.fork(outer, ExecutionStrategy.sequential)
        const result = yield* Effect.either(Effect.forEach(names, (name, i) =>
          node({
            binary,
            dir: dirs[i]!,
            port: ports[i]!,
            render: (storeDir) =>
              renderNodeConfig({
                name,
                port: ports[i]!,
                clusterPort: clusterPorts[i]!,
                storeDir,
                routes: clusterPorts.filter((_, j) => j !== i),
                clusterName: options.name ?? "effect-nats-test",
                ...(options.extraConfig !== undefined ? { extraConfig: options.extraConfig } : {})
              }),
            startTimeoutMillis: options.startTimeoutMillis ?? 10_000,
            label: `NatsTestCluster ${name}`
          }).pipe(Effect.map((n) => ({ name, node: n, clusterPort: clusterPorts[i]! }))), { concurrency: "unbounded" }).pipe(
          Scope.extend(attemptScope)
        ))
        if (result._tag === "Right") return result.right
        // stop the nodes of this attempt before their dirs are used again
        yield* Scope.close(attemptScope, Exit.void)
        if (!portTaken(result.left) || attempt >= 3) return yield* result.left
      }
    })
    const byName = new Map<string, Node>(started.map((s) => [s.name, s.node]))
    const locks = new Map(yield* Effect.forEach(names, (n) => Effect.map(Effect.makeSemaphore(1), (l) => [n, l] as const)))
    const find = (name: string): Effect.Effect<Node, NatsTestServerError> => {
      const n = byName.get(name)
      return n !== undefined ? Effect.succeed(n) : Effect.fail(failed("UnknownNode", `no node ${q(name)} (nodes: ${names.join(", ")})`))
    }
    const control = (op: (n: Node) => Effect.Effect<void, NatsTestServerError>) => (name: string) =>
      find(name).pipe(Effect.flatMap((n) => locks.get(name)!.withPermits(1)(op(n))), live)
    const nodes: ReadonlyArray<ClusterNode> = started.map((s) => ({
      name: s.name,
      url: `nats://127.0.0.1:${s.node.port}`,
      port: s.node.port,
      clusterPort: s.clusterPort,
      storeDir: s.node.storeDir
    }))
    /** the nodes whose process is running */
    const up = () => nodes.filter((n) => byName.get(n.name)!.pid() !== undefined)
    const running = Effect.sync(() => up().map((n) => n.name))

    /** One JetStream API request through a fresh connection to the nodes that are up. */
    const api = (subject: string, timeoutMillis = 1000, body = ""): Effect.Effect<typeof ApiReply.Type, NatsTestServerError> =>
      Effect.acquireUseRelease(
        Effect.tryPromise({
          try: () =>
            connect({
              servers: up().map((n) => n.url),
              reconnect: false,
              timeout: timeoutMillis
            }),
          catch: (cause) => failed("RequestFailed", `cannot connect to the cluster: ${String(cause)}`, cause)
        }),
        (nc) =>
          Effect.tryPromise({
            try: () => nc.request(subject, body, { timeout: timeoutMillis }),
            catch: (cause) => failed("RequestFailed", `${subject}: ${String(cause)}`, cause)
          }).pipe(
            Effect.flatMap((m) => decodeReply(m.string())),
            Effect.mapError((e) => e._tag === "NatsTestServerError" ? e : failed("RequestFailed", `${subject}: ${e.message}`, e))
          ),
        (nc: NatsConnection) => Effect.promise(() => nc.close())
      )
    const placement = (subject: string) =>
      api(subject).pipe(Effect.flatMap((r) =>
        r.error !== undefined
          ? Effect.fail(failed("RequestFailed", `${subject}: ${r.error.description} (${r.error.code})`))
          : Effect.succeed(r.cluster ?? new Placement({ replicas: [] }))
      ))
    /** Retry `self` every 50 ms until it succeeds, within the wait's timeout. */
    const waitFor = <A>(what: string, self: Effect.Effect<A, NatsTestServerError>, wait?: WaitOptions) => {
      const millis = wait?.timeoutMillis ?? 10_000
      let last: NatsTestServerError | undefined
      return self.pipe(
        Effect.tapError((e) => Effect.sync(() => (last = e))),
        Effect.retry(Schedule.spaced("50 millis")),
        Effect.timeoutFail({
          duration: millis,
          onTimeout: () => failed("Timeout", `${what} within ${millis} ms${last !== undefined ? `; last: ${last.message}` : ""}`)
        }),
        live
      )
    }
    const leaderOf = (subject: string, wait?: WaitOptions) =>
      waitFor(
        `no leader for ${subject}`,
        placement(subject).pipe(Effect.flatMap((p) =>
          p.leader !== undefined && p.leader.length > 0 ? Effect.succeed(p.leader) : Effect.fail(failed("RequestFailed", "no leader yet"))
        )),
        wait
      )
    const cluster = NatsTestCluster.of({
      nodes,
      urls: nodes.map((n) => n.url),
      serverVersion: Effect.sync(() => started[0]!.node.version()),
      kill: control((n) => n.kill),
      stop: control((n) => n.stop),
      start: control((n) => n.start),
      restart: control((n) => Effect.zipRight(n.stop, n.start)),
      pid: (name) => Effect.map(find(name), (n) => Option.fromNullable(n.pid())),
      running,
      awaitJetStream: (wait) => waitFor("no JetStream meta leader", Effect.asVoid(api("$JS.API.INFO", 500)), wait),
      streamPlacement: (stream) => placement(`$JS.API.STREAM.INFO.${stream}`).pipe(live),
      consumerPlacement: (stream, consumer) => placement(`$JS.API.CONSUMER.INFO.${stream}.${consumer}`).pipe(live),
      streamLeader: (stream, wait) => leaderOf(`$JS.API.STREAM.INFO.${stream}`, wait),
      consumerLeader: (stream, consumer, wait) => leaderOf(`$JS.API.CONSUMER.INFO.${stream}.${consumer}`, wait),
      awaitStreamCurrent: (stream, replicas, wait) =>
        waitFor(
          `stream ${stream} not ${replicas}-current`,
          placement(`$JS.API.STREAM.INFO.${stream}`).pipe(Effect.flatMap((p) =>
            p.leader !== undefined && p.replicas.filter((r) => r.current && r.offline !== true).length >= replicas - 1
              ? Effect.succeed(p)
              : Effect.fail(failed("RequestFailed", `leader ${p.leader ?? "none"}, current followers ${p.replicas.filter((r) => r.current).map((r) => r.name).join(",") || "none"}`))
          )),
          wait
        )
    })
    yield* cluster.awaitJetStream({ timeoutMillis: options.startTimeoutMillis ?? 10_000 })
    // a meta leader can answer before every node has joined the meta group: until then a stream with one replica per
    // node fails with "no suitable peers for placement" (CI saw it); ready once such a stream can be placed
    const probe = "EFFECT_NATS_CLUSTER_PROBE"
    yield* waitFor(
      "not every node is a JetStream peer",
      api(`$JS.API.STREAM.CREATE.${probe}`, 2000, JSON.stringify({ name: probe, storage: "memory", num_replicas: nodes.length })).pipe(
        Effect.flatMap((r) => r.error === undefined ? Effect.void : Effect.fail(failed("RequestFailed", `${r.error.description} (${r.error.code})`))),
        Effect.zipRight(Effect.ignore(api(`$JS.API.STREAM.DELETE.${probe}`, 2000)))
      ),
      { timeoutMillis: options.startTimeoutMillis ?? 10_000 }
    )
    return cluster
  }).pipe(live)

/**
 * A layer running a cluster for the layer's lifetime.
 *
 * @example
 * ```ts
 * import { NatsTestCluster } from "@effect-nats/testing"
 * import { expect, layer } from "@effect/vitest"
 * import { Effect } from "effect"
 *
 * layer(NatsTestCluster.layer({ nodes: 3 }))("failover", (it) => {
 *   it.effect("an R3 stream survives the loss of its leader", () =>
 *     Effect.gen(function*() {
 *       const cluster = yield* NatsTestCluster.NatsTestCluster
 *       // create stream "ORDERS" with replicas: 3 through a client on cluster.urls ...
 *       const leader = yield* cluster.streamLeader("ORDERS")
 *       yield* cluster.kill(leader)
 *       expect(yield* cluster.streamLeader("ORDERS")).not.toBe(leader)
 *     }))
 * })
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<NatsTestCluster, NatsTestServerError> =>
  Layer.scoped(NatsTestCluster, make(options))
