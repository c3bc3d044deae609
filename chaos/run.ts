/**
 * The chaos suite: `npm run chaos` (full counts, ~9 minutes on an idle 2-core machine) or
 * `npm run chaos -- --quick` (about a tenth, ~5 minutes: cluster-failover takes ~3).
 *
 *   --quick            about 1/10 of the counts
 *   --only=a,b         run only these scenarios (names below, or 1..13)
 *   --list             print the scenarios and their counts, run nothing
 *
 * Counts are overridable with CHAOS_* variables (see chaos/README.md);
 * CHAOS_SEED repeats a run's random choices; CHAOS_VERBOSE=1 shows the logs
 * of the toolkit and of the child processes.
 *
 * Everything runs on loopback against nats-server processes of its own; every
 * scenario has a time limit, the suite a deadline; children and servers are
 * killed when a scenario ends, however it ends. Each scenario prints its
 * figures; the suite ends with one JSON line per scenario, then an overall
 * line. Exit code 0 when every scenario passed.
 */
import { NodeRuntime } from "@effect/platform-node"
import { Duration, Effect, Logger, LogLevel, Option } from "effect"
import { count, describeResult, jsonLine, type Result, seed } from "./lib/harness.js"
import * as authTls from "./scenarios/authTls.js"
import * as clusterFailover from "./scenarios/clusterFailover.js"
import * as consumerCrash from "./scenarios/consumerCrash.js"
import * as gracefulDrain from "./scenarios/gracefulDrain.js"
import * as hostilePayloads from "./scenarios/hostilePayloads.js"
import * as hostileSubjects from "./scenarios/hostileSubjects.js"
import * as orderedInstances from "./scenarios/orderedInstances.js"
import * as outboxCrash from "./scenarios/outboxCrash.js"
import * as poison from "./scenarios/poison.js"
import * as serverRestart from "./scenarios/serverRestart.js"

const args = process.argv.slice(2)
const quick = args.includes("--quick")
const only = args.find((a) => a.startsWith("--only="))?.slice("--only=".length).split(",").map((s) => s.trim())
const q = quick

interface Scenario {
  readonly name: string
  readonly sizes: Record<string, unknown>
  readonly run: Effect.Effect<Result>
  /** This scenario's time limit, when it needs more than the others. */
  readonly limitS?: number
}

const scenarios: ReadonlyArray<Scenario> = [
  (() => {
    const sizes = { messages: count("CONSUMER_MESSAGES", 50_000, 5_000, q), kills: count("CONSUMER_KILLS", 10, 2, q) }
    return { name: consumerCrash.name, sizes, run: consumerCrash.run(sizes) }
  })(),
  (() => {
    const sizes = { rows: count("OUTBOX_ROWS", 20_000, 2_000, q), kills: count("OUTBOX_KILLS", 20, 3, q) }
    return { name: outboxCrash.name, sizes, run: outboxCrash.run(sizes) }
  })(),
  (() => {
    const sizes = {
      messages: count("RESTART_MESSAGES", 20_000, 2_000, q),
      rate: count("RESTART_RATE", 800, 400, q),
      outages: quick ? ["restart", "kill"] as const : ["restart", "kill", "restart", "kill"] as const
    }
    return { name: serverRestart.name, sizes, run: serverRestart.run(sizes) }
  })(),
  (() => {
    const sizes = {
      messages: count("DRAIN_MESSAGES", 1_500, 400, q),
      inFlight: count("DRAIN_IN_FLIGHT", 500, 100, q),
      concurrency: count("DRAIN_CONCURRENCY", 64, 16, q),
      drainTimeoutMs: count("DRAIN_TIMEOUT_MS", 5_000, 5_000, q),
      workMs: [200, 1200] as const
    }
    return { name: gracefulDrain.name, sizes, run: gracefulDrain.run(sizes) }
  })(),
  (() => {
    const sizes = { good: count("POISON_GOOD", 10_000, 1_000, q), perKind: count("POISON_PER_KIND", 20, 3, q) }
    return { name: poison.name, sizes, run: poison.run(sizes) }
  })(),
  (() => {
    const sizes = { strings: count("HOSTILE_STRINGS", 10_000, 1_000, q) }
    return { name: hostileSubjects.name, sizes, run: hostileSubjects.run(sizes) }
  })(),
  { name: authTls.name, sizes: {}, run: authTls.run() },
  (() => {
    const sizes = { inputs: count("HOSTILE_INPUTS", 10_000, 1_000, q) }
    return { name: hostilePayloads.name, sizes, run: hostilePayloads.run(sizes) }
  })(),
  (() => {
    const sizes = {
      kills: ["consumer-leader", "stream-leader", "client-node"] as const,
      rate: count("FAILOVER_RATE", 200, 100, q),
      downMs: count("FAILOVER_DOWN_MS", 5_000, 5_000, q)
    }
    // the raw loop stalls ~40 s per leader kill, and again after the leaders are arranged
    return { name: clusterFailover.name, sizes, run: clusterFailover.run(sizes), limitS: 420 }
  })(),
  (() => {
    const sizes = {
      messages: count("ORDERED_MESSAGES", 10_000, 2_000, q),
      kills: count("ORDERED_KILLS", 5, 1, q, 0),
      aggregates: 10,
      ordered: true
    }
    return { name: consumerCrash.orderedName, sizes, run: consumerCrash.run(sizes) }
  })(),
  // 11-13: order across two instances: one shared durable (the limit), partitions owned by one instance, maxAckPending 1 per partition
  ...(["shared", "owned", "single"] as const).map((mode) => {
    const sizes = {
      mode,
      messages: count("INSTANCES_MESSAGES", 10_000, 2_000, q),
      kills: count("INSTANCES_KILLS", 2, 1, q, 0),
      partitions: count("INSTANCES_PARTITIONS", 4, 4, q),
      aggregates: 40
    }
    return { name: `${orderedInstances.name}/${mode}`, sizes, run: orderedInstances.run(sizes) }
  })
]

const selected = scenarios.filter((s, i) => only === undefined || only.includes(s.name) || only.includes(String(i + 1)))
const scenarioLimit = Duration.seconds(count("SCENARIO_TIMEOUT_S", 240, 90, q))
const deadline = Duration.seconds(count("DEADLINE_S", 900, 240, q) + (selected.some((s) => s.name === clusterFailover.name) ? 420 : 0))

const out = (line: string) => process.stdout.write(`${line}\n`)

const timedOut = (s: Scenario, limit: Duration.Duration, why: string): Result => ({
  scenario: s.name,
  ok: false,
  sent: 0,
  effects: 0,
  lost: 0,
  duplicateEffects: 0,
  durationMs: Math.round(Duration.toMillis(limit)),
  failures: [why],
  figures: {},
  notes: []
})

const main = Effect.gen(function*() {
  if (args.includes("--list")) {
    scenarios.forEach((s, i) => out(`${i + 1}. ${s.name} ${JSON.stringify(s.sizes)}`))
    return 0
  }
  if (selected.length === 0) {
    out(`no scenario matches ${only?.join(",")}; try --list`)
    return 2
  }
  out(`effect-nats chaos suite (${quick ? "quick" : "full"}), seed ${seed} (CHAOS_SEED=${seed} repeats it)`)
  const started = performance.now()
  const results: Array<Result> = []
  for (const s of selected) {
    const left = Duration.toMillis(deadline) - (performance.now() - started)
    if (left < 5_000) {
      results.push(timedOut(s, Duration.zero, `skipped: the suite's deadline (${Duration.format(deadline)}) was reached`))
      continue
    }
    const limit = Duration.millis(Math.min(s.limitS !== undefined ? s.limitS * 1000 : Duration.toMillis(scenarioLimit), left))
    out(`\n== ${s.name} ${JSON.stringify(s.sizes)}`)
    const result = yield* s.run.pipe(
      Effect.timeoutOption(limit),
      Effect.map(Option.getOrElse(() => timedOut(s, limit, `timed out after ${Duration.format(limit)}`)))
    )
    results.push(result)
    out(describeResult(result))
  }
  const ok = results.every((r) => r.ok)
  out("")
  for (const r of results) out(jsonLine(r))
  const sum = (f: (r: Result) => number) => results.reduce((a, r) => a + f(r), 0)
  out(JSON.stringify({
    scenario: "overall",
    ok,
    mode: quick ? "quick" : "full",
    seed,
    scenarios: results.length,
    passed: results.filter((r) => r.ok).length,
    failed: results.filter((r) => !r.ok).map((r) => r.scenario),
    sent: sum((r) => r.sent),
    effects: sum((r) => r.effects),
    lost: sum((r) => r.lost),
    duplicateEffects: sum((r) => r.duplicateEffects),
    durationMs: Math.round(performance.now() - started)
  }))
  return ok ? 0 : 1
}).pipe(
  // the toolkit logs every dead letter and retry: keep the figures readable unless asked
  Logger.withMinimumLogLevel(process.env["CHAOS_VERBOSE"] === "1" ? LogLevel.Info : LogLevel.Error)
)

NodeRuntime.runMain(main.pipe(Effect.flatMap((code) => Effect.sync(() => process.exit(code)))))
