/**
 * Measure which signal lets a raw nats.js pull consumer resume fastest after a
 * node of a 3-node JetStream cluster dies (issue 15). Not part of `npm run chaos`:
 *
 * ```sh
 * node --conditions=source --import tsx chaos/measure/failoverSignals.ts [--runs=3] [--cap=45000] [--only=consume,advisory] [--kills=client-node]
 * ```
 *
 * For each strategy and each kill -- (a) the node leading the durable consumer,
 * (b) the node leading the stream, (c) the node the consumer's client is connected
 * to -- a fresh R3 durable on an R3 stream, a publisher at ~100 msg/s, then SIGKILL
 * of that node. The figure is the time from the kill until the consumer receives
 * the first message published after the kill ("resume"), capped at `--cap` ms;
 * beside it the time of the leader-elected advisory the kill caused (a, b).
 * The three nodes' roles are kept apart (consumer leader stepped down until it is
 * not the stream leader; the client on the third node), so each kill hits one role.
 *
 * Strategies (each restarts by stopping the current `consume()` iterator and
 * starting a new one, i.e. a fresh pull):
 * - `consume`: a plain `consumer.consume()` loop (nats.js defaults: 30 s expires, 15 s heartbeats)
 * - `fetch`: a `consumer.fetch({ expires: 1000 })` loop (a fresh pull every second at most)
 * - `advisory`: consume + restart on `$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED.<stream>.<consumer>`
 * - `reconnect`: consume + restart on the connection's `reconnect` status event
 * - `heartbeat`: consume with `idle_heartbeat: 500`, `expires: 2000` + restart on `heartbeats_missed`
 * - `all`: advisory + reconnect + heartbeat
 */
import { NatsTestCluster, type NatsTestServer } from "@effect-nats/testing"
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager, type ConsumerMessages } from "@nats-io/jetstream"
import { connect, type NatsConnection } from "@nats-io/transport-node"
import { Effect, Exit, Scope } from "effect"

const STREAM = "FO"
const strategies = ["consume", "fetch", "advisory", "reconnect", "heartbeat", "all"] as const
type Strategy = typeof strategies[number]
const kills = ["consumer-leader", "stream-leader", "client-node"] as const
type Kill = typeof kills[number]

const arg = (name: string): string | undefined =>
  process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3)
const RUNS = Number(arg("runs") ?? 3)
const CAP = Number(arg("cap") ?? 45_000)
const only = arg("only")?.split(",")
const onlyKills = arg("kills")?.split(",")
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms))

interface Running {
  readonly stop: () => Promise<void>
  readonly restarts: () => number
}

/** Start `strategy` on durable `durable`; `onMsg(publishedAt)` for every message. */
const startConsumer = async (
  nc: NatsConnection,
  durable: string,
  strategy: Strategy,
  onMsg: (publishedAt: number) => void
): Promise<Running> => {
  const js = jetstream(nc)
  const consumer = await js.consumers.get(STREAM, durable)
  let stopped = false
  let current: ConsumerMessages | undefined
  let restarts = 0
  const restart = () => {
    if (stopped || current === undefined) return
    restarts++
    current.stop()
  }
  const hb = strategy === "heartbeat" || strategy === "all"
  const loop = (async () => {
    while (!stopped) {
      try {
        const msgs = strategy === "fetch"
          ? await consumer.fetch({ max_messages: 100, expires: 1000 })
          : await consumer.consume({ max_messages: 100, ...(hb ? { idle_heartbeat: 500, expires: 2000 } : {}) })
        current = msgs
        if (hb) {
          void (async () => {
            for await (const s of msgs.status()) if (s.type === "heartbeats_missed") restart()
          })()
        }
        for await (const m of msgs) {
          onMsg(Number(m.string()))
          m.ack()
        }
      } catch {
        await sleep(50) // a fetch that failed (no responders, heartbeats missed): pull again
      }
    }
  })()
  const subs: Array<{ unsubscribe: () => void }> = []
  if (strategy === "advisory" || strategy === "all") {
    subs.push(nc.subscribe(`$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED.${STREAM}.${durable}`, { callback: () => restart() }))
  }
  if (strategy === "reconnect" || strategy === "all") {
    // ends when the connection closes; restart() is a no-op once stopped
    void (async () => {
      for await (const s of nc.status()) if (s.type === "reconnect") restart()
    })()
  }
  return {
    restarts: () => restarts,
    stop: async () => {
      stopped = true
      for (const s of subs) s.unsubscribe()
      current?.stop()
      await Promise.race([loop, sleep(3000)])
    }
  }
}

const median = (xs: ReadonlyArray<number>): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]!
}

const program = Effect.gen(function*() {
  const scope = yield* Scope.make()
  const cluster = yield* NatsTestCluster.make({ nodes: 3 }).pipe(Scope.extend(scope))
  console.error(`nats-server ${yield* cluster.serverVersion}, nodes ${cluster.urls.join(" ")}`)
  const urlOf = (name: string) => cluster.nodes.find((n) => n.name === name)!.url
  const ordered = (first: string) => [urlOf(first), ...cluster.nodes.filter((n) => n.name !== first).map((n) => n.url)]
  const run = <A>(e: Effect.Effect<A, NatsTestServer.NatsTestServerError>) => Effect.runPromise(e)

  const results: Array<{ strategy: Strategy; kill: Kill; resumeMs: number; electedMs: number | null; restarts: number }> = []
  yield* Effect.promise(async () => {
    const admin = await connect({ servers: [...cluster.urls] })
    const jsm = await jetstreamManager(admin)
    await jsm.streams.add({ name: STREAM, subjects: ["fo.>"], num_replicas: 3, max_msgs: 200_000 })
    let trial = 0
    for (const strategy of strategies.filter((s) => only === undefined || only.includes(s))) {
      for (const kill of kills.filter((k) => onlyKills === undefined || onlyKills.includes(k))) {
        for (let r = 0; r < RUNS; r++) {
          const durable = `d${++trial}`
          await jsm.consumers.add(STREAM, { durable_name: durable, ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.New })
          const streamLeader = await run(cluster.streamLeader(STREAM))
          let consumerLeader = await run(cluster.consumerLeader(STREAM, durable))
          for (let i = 0; i < 8 && consumerLeader === streamLeader; i++) {
            await admin.request(`$JS.API.CONSUMER.LEADER.STEPDOWN.${STREAM}.${durable}`, "", { timeout: 2000 }).catch(() => undefined)
            await sleep(300)
            consumerLeader = await run(cluster.consumerLeader(STREAM, durable))
          }
          const third = cluster.nodes.map((n) => n.name).find((n) => n !== streamLeader && n !== consumerLeader)!
          const target = kill === "consumer-leader" ? consumerLeader : kill === "stream-leader" ? streamLeader : third
          const safe = cluster.nodes.map((n) => n.name).find((n) => n !== target && n !== third) ?? third
          // the consumer's client on the third node; publisher and monitor on a node that survives
          const nc = await connect({ servers: ordered(third), noRandomize: true, maxReconnectAttempts: -1 })
          const pubNc = await connect({ servers: ordered(safe), noRandomize: true, maxReconnectAttempts: -1 })
          const js = jetstream(pubNc)
          let t0 = Infinity
          let resumedAt = 0
          let electedAt = 0
          let received = 0
          const monitor = pubNc.subscribe("$JS.EVENT.ADVISORY.*.LEADER_ELECTED.>", {
            callback: (_e, m) => {
              const relevant = kill === "consumer-leader" ? m.subject.endsWith(`.${STREAM}.${durable}`) : m.subject.endsWith(`STREAM.LEADER_ELECTED.${STREAM}`)
              if (relevant && electedAt === 0 && Date.now() > t0) electedAt = Date.now()
            }
          })
          let publishing = true
          const publisher = (async () => {
            while (publishing) {
              await js.publish("fo.x", String(Date.now()), { timeout: 1000 }).catch(() => undefined)
              await sleep(10)
            }
          })()
          const consumer = await startConsumer(nc, durable, strategy, (publishedAt) => {
            received++
            if (resumedAt === 0 && publishedAt > t0) resumedAt = Date.now()
          })
          // connections older than nats.js's reconnectTimeWait (2 s), as in a running service: nats.js
          // redials the server it lost first, and waits reconnectTimeWait since that server's last connect
          const connectedAt = Date.now()
          for (let i = 0; i < 100 && (received < 20 || Date.now() - connectedAt < 2500); i++) await sleep(50)
          const restartsBefore = consumer.restarts()
          t0 = Date.now()
          await run(cluster.kill(target))
          while (resumedAt === 0 && Date.now() - t0 < CAP) await sleep(10)
          const row = {
            strategy,
            kill,
            resumeMs: resumedAt === 0 ? CAP : resumedAt - t0,
            electedMs: kill === "client-node" || electedAt === 0 ? null : electedAt - t0,
            restarts: consumer.restarts() - restartsBefore
          }
          results.push(row)
          console.log(JSON.stringify({ ...row, target, streamLeader, consumerLeader, client: third, capped: resumedAt === 0 }))
          publishing = false
          await consumer.stop()
          await publisher
          monitor.unsubscribe()
          await Promise.all([nc.close(), pubNc.close()])
          await run(cluster.restart(target))
          await run(cluster.awaitStreamCurrent(STREAM, 3, { timeoutMillis: 30_000 }))
          await jsm.consumers.delete(STREAM, durable).catch(() => undefined)
        }
      }
    }
    await admin.close()
  })
  yield* Scope.close(scope, Exit.void)

  /** median resume ms after the kill; for leader kills also the median election and the median resume minus election */
  const cell = (s: Strategy, k: Kill) => {
    const rows = results.filter((r) => r.strategy === s && r.kill === k)
    if (rows.length === 0) return "-"
    const m = median(rows.map((r) => r.resumeMs))
    const elected = rows.filter((r) => r.electedMs !== null)
    const after = elected.length === 0
      ? ""
      : ` (elected ${median(elected.map((r) => r.electedMs!))}, +${median(elected.map((r) => r.resumeMs - r.electedMs!))})`
    return `${m >= CAP ? `>${CAP}` : m}${after}`
  }
  console.log(`\n| strategy | (a) consumer leader killed | (b) stream leader killed | (c) client's node killed |`)
  console.log(`| --- | --- | --- | --- |`)
  for (const s of strategies.filter((x) => only === undefined || only.includes(x))) {
    console.log(`| ${s} | ${kills.map((k) => cell(s, k)).join(" | ")} |`)
  }
})

Effect.runPromise(program).then(() => process.exit(0), (e) => {
  console.error(e)
  process.exit(1)
})
