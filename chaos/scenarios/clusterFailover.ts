/**
 * Scenario 9 — a node of a 3-node JetStream cluster dies.
 *
 * An R3 stream, a publisher (retries with the same msgID) at a steady rate, a
 * toolkit consumer (memory dedup) and, side by side on its own durable and
 * connection, a plain nats.js `consume()` loop. In turn, each node is killed
 * with SIGKILL and started again ~5 s later: the node leading the durable
 * consumers, then the node leading the stream, then the node the consumers'
 * clients are connected to (leaders moved off it first, so each kill hits one
 * role).
 *
 * Figures per kill: the time from the kill until the next handled message
 * published after the kill (`resumeMs`), the time of the new leader's election
 * (`electedMs`, leader kills) and the resume after it, for the toolkit and for
 * the raw loop. Guarantee shown: every publish that returned a PubAck is
 * handled once by the toolkit (0 lost, 0 duplicate effects), and the stream
 * holds each message once (no duplicate stored by a retried publish).
 */
import { NatsTestCluster } from "@effect-nats/testing"
import { AckPolicy, DeliverPolicy, jetstream, type ConsumerMessages } from "@nats-io/jetstream"
import { connect, type NatsConnection } from "@nats-io/transport-node"
import { Effect, Fiber, Layer, Schedule } from "effect"
import { Consumer, DeadLetter, Dedup, Handler, JetStream, NatsClient, Publisher } from "effect-nats"
import { OrderPlaced } from "../lib/events.js"
import { Report, type Result, waitUntil } from "../lib/harness.js"

export type Kill = "consumer-leader" | "stream-leader" | "client-node"

export interface Options {
  /** The kills, in order. */
  readonly kills: ReadonlyArray<Kill>
  /** Published per second. */
  readonly rate: number
  /** How long a killed node stays down (ms, default 5000). */
  readonly downMs?: number
  /** Run the plain nats.js loop beside the toolkit consumer (default true). */
  readonly raw?: boolean
  /** The longest a kill's figures are waited for (ms, default 60 000: the raw loop stalls ~40 s). */
  readonly capMs?: number
}

export const name = "cluster-failover"

const STREAM = "CHAOS_FAILOVER"
const DURABLE = "failover-toolkit"
const RAW = "failover-raw"

/** The publisher's retry: covers a stream leader election (4-8 s on nats-server 2.9). */
const electionRetry = Schedule.exponential("100 millis").pipe(
  Schedule.either(Schedule.spaced("500 millis")),
  Schedule.upTo("30 seconds")
)

/** Handled messages: id -> count, and handled-at times in order with the publish start of each. */
class Seen {
  readonly count = new Map<string, number>()
  readonly times: Array<{ readonly at: number; readonly publishedAt: number }> = []
  constructor(private readonly startedAt: Map<string, number>) {}
  add(id: string): void {
    this.count.set(id, (this.count.get(id) ?? 0) + 1)
    this.times.push({ at: Date.now(), publishedAt: this.startedAt.get(id) ?? 0 })
  }
  /** The first message published after `t` and handled: when? */
  resumedAfter(t: number): number | undefined {
    return this.times.find((x) => x.publishedAt > t)?.at
  }
}

/** A plain nats.js consume loop (defaults: 30 s expires, 15 s heartbeats), acking each message. */
const rawLoop = async (nc: NatsConnection, seen: Seen) => {
  const consumer = await jetstream(nc).consumers.get(STREAM, RAW)
  let current: ConsumerMessages | undefined
  let stopped = false
  const done = (async () => {
    while (!stopped) {
      try {
        current = await consumer.consume({ max_messages: 100 })
        for await (const m of current) {
          seen.add(m.json<{ id: string }>().id)
          m.ack()
        }
      } catch {
        await new Promise((r) => setTimeout(r, 100))
      }
    }
  })()
  return async () => {
    stopped = true
    current?.stop()
    await Promise.race([done, new Promise((r) => setTimeout(r, 3000))])
  }
}

/** Run the scenario (its clock starts when it runs). */
export const run = (options: Options): Effect.Effect<Result> => Effect.suspend(() => runNow(options))

const runNow = (options: Options): Effect.Effect<Result> => {
  const report = new Report(name)
  const downMs = options.downMs ?? 5000
  const capMs = options.capMs ?? 60_000
  const withRaw = options.raw ?? true
  return Effect.gen(function*() {
    const cluster = yield* NatsTestCluster.make({ nodes: 3 })
    report.set("server", `nats-server ${yield* cluster.serverVersion}, 3 nodes, R3 file stream`)
    const urls = cluster.urls
    // the consumers' clients: the first node first, so their node is known; the publisher: all nodes
    const consumerSide = yield* Layer.build(
      JetStream.layer.pipe(Layer.provideMerge(NatsClient.layer({ servers: urls, connectionOptions: { noRandomize: true } })))
    )
    const publisherSide = yield* Layer.build(JetStream.layer.pipe(Layer.provideMerge(NatsClient.layer({ servers: urls }))))
    const admin = yield* Effect.acquireRelease(
      Effect.promise(() => connect({ servers: [...urls], maxReconnectAttempts: -1, reconnectTimeWait: 250 })),
      (nc) => Effect.promise(() => nc.close())
    )

    // elections, seen on the admin connection
    const elections: Array<{ at: number; subject: string }> = []
    admin.subscribe("$JS.EVENT.ADVISORY.*.LEADER_ELECTED.>", {
      callback: (_e, m) => void elections.push({ at: Date.now(), subject: m.subject })
    })

    const publishStartedAt = new Map<string, number>()
    const toolkit = new Seen(publishStartedAt)
    const raw = new Seen(publishStartedAt)

    const js = yield* Effect.provide(JetStream.JetStream, consumerSide)
    yield* js.ensureStream({ name: STREAM, subjects: ["chaos.order.>"], storage: "file", replicas: 3 })
    yield* cluster.awaitStreamCurrent(STREAM, 3)
    yield* Effect.promise(() =>
      js.manager.consumers.add(STREAM, { durable_name: RAW, ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.All })
    )

    // the toolkit consumer
    yield* Consumer.make({
      stream: STREAM,
      durable: DURABLE,
      ackWait: "10 seconds",
      handlers: [Handler.make(OrderPlaced, (e) => Effect.sync(() => toolkit.add(e.id)))]
    }).pipe(Effect.provide(Layer.mergeAll(Dedup.layerMemory(), DeadLetter.layer())), Effect.provide(consumerSide))
    const consumerNats = yield* Effect.provide(NatsClient.NatsClient, consumerSide)
    const rawNc = yield* Effect.acquireRelease(
      Effect.promise(() => connect({ servers: [...urls], noRandomize: true, maxReconnectAttempts: -1 })),
      (nc) => Effect.promise(() => nc.close())
    )
    if (withRaw) {
      const stopRaw = yield* Effect.promise(() => rawLoop(rawNc, raw))
      yield* Effect.addFinalizer(() => Effect.promise(stopRaw))
    }

    // the publisher
    const publisher = yield* Publisher.make({ retry: electionRetry, window: 16, timeout: "2 seconds" }).pipe(
      Effect.provide(publisherSide)
    )
    const acked = new Set<string>()
    const failures: Array<string> = []
    let publishing = true
    let n = 0
    const publishFiber = yield* Effect.gen(function*() {
      const started = performance.now()
      while (publishing) {
        const due = started + n * (1000 / options.rate) - performance.now()
        if (due > 1) yield* Effect.sleep(due)
        const i = n++
        // the id is chosen here: its publish start is the baseline of "published after the kill"
        publishStartedAt.set(`ev-${i}`, Date.now())
        yield* publisher.publish(OrderPlaced, { orderId: `order-${i % 101}`, n: i }, { id: `ev-${i}` }).pipe(
          Effect.match({
            onFailure: (e) => void failures.push(e.message),
            onSuccess: (ack) => void acked.add(ack.id)
          }),
          Effect.forkDaemon
        )
      }
    }).pipe(Effect.fork)

    const nodeOf = (nc: NatsConnection) => (nc.info as { server_name?: string } | undefined)?.server_name ?? "?"
    const consumerLeader = (durable: string) => cluster.consumerLeader(STREAM, durable)
    const stepdown = (subject: string) =>
      Effect.promise(() => admin.request(subject, "", { timeout: 2000 }).then(() => undefined, () => undefined)).pipe(
        Effect.zipRight(Effect.sleep("500 millis"))
      )
    /** Step leaders down until `ok` holds (a few tries). */
    const arrange = (ok: Effect.Effect<boolean, unknown>, subject: string) =>
      Effect.gen(function*() {
        for (let i = 0; i < 8 && !(yield* ok); i++) yield* stepdown(subject)
      }).pipe(Effect.orDie)

    const kills: Array<Record<string, unknown>> = []
    for (const kill of options.kills) {
      // wait for some traffic and a healthy cluster before each kill
      yield* waitUntil(Effect.sync(() => toolkit.times.length > 20), "30 seconds")
      yield* cluster.awaitStreamCurrent(STREAM, 3, { timeoutMillis: 30_000 })
      const clientNode = nodeOf(consumerNats.connection as NatsConnection)
      const durables = withRaw ? [DURABLE, RAW] : [DURABLE]
      const streamStepdown = `$JS.API.STREAM.LEADER.STEPDOWN.${STREAM}`
      const consumerStepdown = (d: string) => `$JS.API.CONSUMER.LEADER.STEPDOWN.${STREAM}.${d}`
      // keep the roles apart, so each kill hits one: the stream leader is not the clients' node ...
      yield* arrange(Effect.map(cluster.streamLeader(STREAM), (l) => l !== clientNode), streamStepdown)
      const sl = yield* cluster.streamLeader(STREAM)
      // ... and the consumers' leader is the third node
      for (const d of durables) {
        yield* arrange(Effect.map(consumerLeader(d), (l) => l !== sl && l !== clientNode), consumerStepdown(d))
      }
      const target = kill === "consumer-leader" ? yield* consumerLeader(DURABLE) : kill === "stream-leader" ? sl : clientNode
      const roles = {
        streamLeader: yield* cluster.streamLeader(STREAM),
        consumerLeader: yield* consumerLeader(DURABLE),
        rawConsumerLeader: withRaw ? yield* consumerLeader(RAW) : null,
        toolkitClient: nodeOf(consumerNats.connection as NatsConnection),
        rawClient: nodeOf(rawNc)
      }
      // a stepdown above loses the raw loop's pull too (~40 s): wait until both consume again
      const arranged = Date.now()
      const flowing = yield* waitUntil(
        Effect.sync(() => toolkit.resumedAfter(arranged) !== undefined && (!withRaw || raw.resumedAfter(arranged) !== undefined)),
        `${capMs} millis`
      )
      if (!flowing) report.note(`${kill}: the consumers did not both consume again after the leaders were arranged`)
      yield* Effect.sleep("1 second")
      const t0 = Date.now()
      yield* cluster.kill(target)
      report.log(`${kill}: killed ${target} ${JSON.stringify(roles)}`)
      yield* Effect.sleep(downMs)
      yield* cluster.start(target)
      const done = yield* waitUntil(
        Effect.sync(() => toolkit.resumedAfter(t0) !== undefined && (!withRaw || raw.resumedAfter(t0) !== undefined)),
        `${Math.max(0, capMs - (Date.now() - t0))} millis`,
        "20 millis"
      )
      const elected = kill === "client-node" ? undefined : elections.find((e) =>
        e.at > t0 &&
        (kill === "stream-leader" ? e.subject.endsWith(`STREAM.LEADER_ELECTED.${STREAM}`) : e.subject.endsWith(`.${STREAM}.${DURABLE}`))
      )?.at
      const figure = (seen: Seen) => {
        const at = seen.resumedAfter(t0)
        return {
          resumeMs: at === undefined ? null : at - t0,
          afterElectionMs: at === undefined || elected === undefined ? null : at - elected
        }
      }
      const row = { kill, target, ...roles, electedMs: elected === undefined ? null : elected - t0, toolkit: figure(toolkit), raw: withRaw ? figure(raw) : null }
      kills.push(row)
      report.check(toolkit.resumedAfter(t0) !== undefined, `the toolkit consumer did not resume within ${capMs} ms of the ${kill} kill`)
      if (!done && withRaw) report.note(`${kill}: the raw loop did not resume within ${capMs} ms`)
      report.log(`${kill}: ${JSON.stringify(row)}`)
    }
    publishing = false
    yield* Fiber.join(publishFiber)
    yield* waitUntil(Effect.sync(() => acked.size + failures.length >= n), "60 seconds")
    report.sent = acked.size
    report.check(failures.length === 0, `${failures.length} publishes failed after the retries: ${failures.slice(0, 3).join("; ")}`)
    const all = yield* waitUntil(Effect.sync(() => [...acked].every((id) => toolkit.count.has(id))), "60 seconds", "200 millis")
    report.check(all, "some acknowledged messages were not handled within 60 s")
    const stored = (yield* js.streamInfo(STREAM)).state.messages
    report.check(stored === acked.size, `the stream holds ${stored} messages for ${acked.size} acknowledged publishes`)
    report.effects = [...toolkit.count.values()].reduce((a, b) => a + b, 0)
    report.lost = [...acked].filter((id) => !toolkit.count.has(id)).length
    report.duplicateEffects = [...toolkit.count.values()].filter((c) => c > 1).length
    report.set("kills", kills)
    report.set("storedOnStream", stored)
    if (withRaw) {
      yield* waitUntil(Effect.sync(() => [...acked].every((id) => raw.count.has(id))), "10 seconds", "200 millis")
      report.set("raw", {
        lost: [...acked].filter((id) => !raw.count.has(id)).length,
        duplicateEffects: [...raw.count.values()].filter((c) => c > 1).length
      })
    }
  }).pipe(
    Effect.scoped,
    Effect.catchAllCause((cause) => Effect.sync(() => void report.check(false, `scenario crashed: ${cause}`))),
    Effect.map(() => report.result())
  )
}
