/**
 * Scenario 4 — graceful drain under load.
 *
 * A service (chaos/fixtures/service.ts, `NodeRuntime.runMain`) consumes slow
 * jobs; when at least `inFlight` messages are delivered to it and not yet
 * acked, it gets SIGTERM. Then a second instance consumes the rest.
 *
 * Guarantee shown: the service exits (code 0) within its drain timeout; every
 * message a handler took was handled to the end and acked; what no handler
 * had started went back to the server at once (nak: the next instance gets
 * it long before the 30 s ack wait); the next instance gets none of the
 * handled messages again.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { NatsTestServer } from "@effect-nats/testing"
import { Effect, Layer, Option } from "effect"
import { JetStream, Publisher } from "effect-nats"
import { JobQueued } from "../lib/events.js"
import { natsLayer, Report, type Result, rng, seed, since, spawnFixture, tempDir, waitUntil } from "../lib/harness.js"
import { JobsService } from "../lib/services.js"

export interface Options {
  readonly messages: number
  /** Delivered-but-unacked messages when SIGTERM is sent. */
  readonly inFlight: number
  /** Worker fibers of the service. */
  readonly concurrency: number
  readonly drainTimeoutMs: number
  /** Handler work per job: uniform in [min, max] ms. */
  readonly workMs: readonly [number, number]
  /** Run the second instance in this process (faster tests). */
  readonly nextInProcess?: boolean
  /** Server ack wait (default 30 s): a message the service abandoned comes back only after it. */
  readonly ackWaitMs?: number
}

export const name = "graceful-drain"

/** The handler's log: how often each id was taken / handled, and when it was first taken. */
const readLog = (file: string) => {
  const taken = new Map<string, number>()
  const handled = new Map<string, number>()
  const takenAt = new Map<string, number>()
  if (!fs.existsSync(file)) return { taken, handled, takenAt }
  for (const line of fs.readFileSync(file, "utf8").split("\n")) {
    const [kind, id, at] = line.split(" ")
    if (id === undefined) continue
    const into = kind === "T" ? taken : handled
    into.set(id, (into.get(id) ?? 0) + 1)
    if (kind === "T" && !takenAt.has(id)) takenAt.set(id, Number(at))
  }
  return { taken, handled, takenAt }
}

/** Run the scenario (its clock starts when it runs). */
export const run = (options: Options): Effect.Effect<Result> => Effect.suspend(() => runNow(options))

const runNow = (options: Options): Effect.Effect<Result> => {
  const report = new Report(name)
  return Effect.gen(function*() {
    const random = rng(seed ^ 0x54)
    const server = yield* NatsTestServer.NatsTestServer
    const js = yield* JetStream.JetStream
    const dir = yield* tempDir("drain")
    const stream = "CHAOS_DRAIN"
    const durable = "jobs"
    // long: a message the service abandoned (neither acked nor nak'ed) would only come back after it
    const ackWaitMs = options.ackWaitMs ?? 30_000
    yield* js.ensureStream({ name: stream, subjects: ["drain.>"], storage: "file" })
    const publisher = yield* Publisher.make({ window: 256 })
    const ids = yield* publisher.publishAll(
      Array.from({ length: options.messages }, (_, i) =>
        Publisher.entry(JobQueued, { jobId: `job-${i}`, workMs: random.int(options.workMs[0], options.workMs[1]) }))
    ).pipe(Effect.map((acks) => acks.map((a) => a.id)))
    report.sent = ids.length

    const log1 = path.join(dir, "instance-1.log")
    const log2 = path.join(dir, "instance-2.log")
    const env = (log: string, concurrency = options.concurrency) => ({
      NATS_URL: server.url,
      CHAOS_STREAM: stream,
      CHAOS_DURABLE: durable,
      CHAOS_LOG: log,
      CHAOS_CONCURRENCY: String(concurrency),
      CHAOS_DRAIN_TIMEOUT_MS: String(options.drainTimeoutMs),
      CHAOS_ACK_WAIT_MS: String(ackWaitMs)
    })
    let stopped = false
    const first = yield* spawnFixture("service", env(log1), (line) => {
      if (line === "STOPPED") stopped = true
    })
    const pending = js.consumerInfo(stream, durable).pipe(Effect.map((i) => i.num_ack_pending), Effect.orElseSucceed(() => 0))
    const loaded = yield* waitUntil(Effect.map(pending, (n) => n >= options.inFlight), "60 seconds", "20 millis")
    if (!loaded) return yield* Effect.dieMessage(`the service never had ${options.inFlight} messages in flight:\n${first.tail()}`)
    report.log(`${options.inFlight}+ in flight: SIGTERM`)
    const atSignal = readLog(log1)
    const inFlightAtSignal = yield* pending
    const runningAtSignal = atSignal.taken.size - atSignal.handled.size
    const signalled = performance.now()
    yield* first.signal("SIGTERM")
    const exit = yield* first.awaitExit(options.drainTimeoutMs + 10_000)
    const exitMs = since(signalled)
    report.check(Option.isSome(exit), `the service did not exit after SIGTERM:\n${first.tail()}`)
    if (Option.isNone(exit)) yield* first.kill
    else report.check(exit.value.code === 0, `the service exited with ${JSON.stringify(exit.value)}:\n${first.tail()}`)
    report.check(stopped, "the service did not run its finalizers (no STOPPED line)")
    // the consumer's own drain is bounded by drainTimeout; the connection drain and the runtime add a little
    report.check(exitMs <= options.drainTimeoutMs + 2000, `the service took ${exitMs} ms to exit (drain timeout ${options.drainTimeoutMs} ms)`)
    report.log(`the service exited after ${exitMs} ms: ${JSON.stringify(Option.getOrNull(exit))}`)
    const interrupted = /handlers still running/.test(first.tail(200))
    report.check(!interrupted, "the drain timed out and interrupted handlers")
    // nak'ed messages still count as pending on the server until redelivered: informative only
    const handedBack = yield* pending

    const one = readLog(log1)
    const takenNotHandled = [...one.taken.keys()].filter((id) => !one.handled.has(id)).length
    report.check(takenNotHandled === 0, `${takenNotHandled} message(s) taken by a handler but not handled to the end`)

    // the next instance
    if (options.nextInProcess === true) {
      yield* Layer.launch(JobsService({
        url: server.url,
        stream,
        durable,
        log: log2,
        concurrency: options.concurrency * 4,
        drainTimeoutMs: options.drainTimeoutMs,
        ackWaitMs
      })).pipe(Effect.forkScoped)
    } else {
      // more workers: the second instance only has to finish the jobs (faster)
      yield* spawnFixture("service", env(log2, options.concurrency * 4))
    }
    const all = new Set(ids)
    const nextStarted = performance.now()
    const nextStartedAt = Date.now()
    const finished = yield* waitUntil(
      Effect.sync(() => {
        const two = readLog(log2)
        return [...all].every((id) => one.handled.has(id) || two.handled.has(id))
      }),
      // abandoned messages come back after the ack wait: wait that long, so that they count as late, not lost
      ackWaitMs + 15_000,
      "100 millis"
    )
    const nextMs = since(nextStarted)
    report.log(`the next instance finished in ${nextMs} ms`)
    report.check(finished, "the next instance did not finish the jobs in time")

    const two = readLog(log2)
    const redelivered = [...two.taken.keys()].filter((id) => one.handled.has(id)).length
    // messages the stopped service neither acked nor handed back come back only after the ack wait
    const late = [...two.takenAt.values()].filter((at) => at - nextStartedAt > ackWaitMs * 0.8).length
    report.check(late === 0, `${late} message(s) reached the next instance only after the ack wait (left unsettled by the stopped service)`)
    report.check(redelivered === 0, `${redelivered} message(s) handled by the first instance were delivered again`)
    const handledCount = new Map<string, number>()
    for (const m of [one.handled, two.handled]) for (const [id, c] of m) handledCount.set(id, (handledCount.get(id) ?? 0) + c)
    report.effects = [...handledCount.values()].reduce((a, b) => a + b, 0)
    report.lost = ids.filter((id) => !handledCount.has(id)).length
    report.duplicateEffects = [...handledCount.values()].filter((c) => c > 1).length
    report.set("inFlightAtSigterm", inFlightAtSignal)
    report.set("handlersRunningAtSigterm", runningAtSignal)
    report.set("handledByFirstAfterSigterm", one.handled.size - atSignal.handled.size)
    report.set("handledByFirst", one.handled.size)
    report.set("handedBackAtDrain", handedBack)
    report.set("nextInstanceFinishedMs", nextMs)
    report.set("backOnlyAfterAckWait", late)
    report.set("exitMs", exitMs)
    report.set("exitCode", Option.match(exit, { onNone: () => null, onSome: (e) => e.code }))
    report.set("drainTimeoutMs", options.drainTimeoutMs)
    report.set("redeliveredToNext", redelivered)
  }).pipe(
    // the scope (children, consumers, clients) closes before the server goes away
    Effect.scoped,
    Effect.provide(natsLayer()),
    Effect.catchAllCause((cause) => Effect.sync(() => void report.check(false, `scenario crashed: ${cause}`))),
    Effect.map(() => report.result())
  )
}
