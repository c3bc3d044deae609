/**
 * Measure the ways of keeping per-aggregate order across instances (issue 22),
 * with chaos scenario 11 (chaos/scenarios/orderedInstances.ts). Not part of
 * `npm run chaos`:
 *
 * ```sh
 * node --conditions=source --import tsx chaos/measure/orderedInstances.ts [--runs=3] [--messages=10000]
 * ```
 *
 * Each configuration runs `--runs` times, interleaved (run 1 of every
 * configuration, then run 2, ...), and prints the median throughput and the
 * inversions, lost and duplicate effects of every run; each result is also
 * appended as a JSON line to chaos/measure/orderedInstances.<date>.jsonl.
 * `steady` configurations fail nothing and kill nothing (throughput);
 * `faults` ones fail every 25th first delivery and SIGKILL instance 0 once
 * (order under failures).
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Effect, Logger, LogLevel } from "effect"
import * as OrderedInstances from "../scenarios/orderedInstances.js"

const arg = (name: string): string | undefined => process.argv.find((a) => a.startsWith(`--${name}=`))?.slice(name.length + 3)
const runs = Number(arg("runs") ?? 3)
const messages = Number(arg("messages") ?? 10_000)

interface Config {
  readonly label: string
  readonly options: OrderedInstances.Options
}

const steady = { messages, failEvery: 0, kills: 0 }
const faults = { messages, failEvery: 25, kills: 1 }
const configs: ReadonlyArray<Config> = [
  { label: "steady  1 instance, 1 durable (baseline)", options: { ...steady, mode: "shared", instances: 1 } },
  { label: "steady  2 instances, shared durable", options: { ...steady, mode: "shared" } },
  { label: "steady  2 instances, 4 partitions owned", options: { ...steady, mode: "owned", partitions: 4 } },
  { label: "steady  2 instances, 4 partitions, maxAckPending 1", options: { ...steady, mode: "single", partitions: 4 } },
  { label: "steady  2 instances, 16 partitions, maxAckPending 1", options: { ...steady, mode: "single", partitions: 16 } },
  { label: "faults  2 instances, shared durable", options: { ...faults, mode: "shared" } },
  { label: "faults  2 instances, 4 partitions owned", options: { ...faults, mode: "owned", partitions: 4 } },
  { label: "faults  2 instances, 4 partitions, maxAckPending 1", options: { ...faults, mode: "single", partitions: 4 } }
]

const out = path.join(import.meta.dirname, `orderedInstances.${new Date().toISOString().slice(0, 10)}.jsonl`)
const results = new Map<string, Array<Record<string, unknown>>>()

const program = Effect.gen(function*() {
  for (let i = 0; i < runs; i++) {
    for (const config of configs) {
      const r = yield* OrderedInstances.run(config.options)
      const line: Record<string, unknown> = { label: config.label, run: i + 1, ok: r.ok, lost: r.lost, duplicateEffects: r.duplicateEffects, ...r.figures, failures: r.failures }
      fs.appendFileSync(out, `${JSON.stringify(line)}\n`)
      results.set(config.label, [...(results.get(config.label) ?? []), line])
      process.stdout.write(`${config.label}  run ${i + 1}: ${line.msgPerSec} msg/s, inversions ${line.inversions}, lost ${r.lost}, duplicates ${r.duplicateEffects}${r.ok ? "" : ` FAILED ${r.failures.join("; ")}`}\n`)
    }
  }
  const median = (xs: ReadonlyArray<number>) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!
  process.stdout.write(`\n${messages} messages over 40 aggregates, median of ${runs} runs:\n`)
  for (const config of configs) {
    const rs = results.get(config.label) ?? []
    process.stdout.write(
      `${config.label.padEnd(56)} ${String(median(rs.map((r) => Number(r["msgPerSec"])))).padStart(6)} msg/s   inversions ${rs.map((r) => r["inversions"]).join("/")}   lost ${rs.map((r) => r["lost"]).join("/")}   duplicates ${rs.map((r) => r["duplicateEffects"]).join("/")}\n`
    )
  }
})

Effect.runPromise(program.pipe(Logger.withMinimumLogLevel(LogLevel.Error))).catch((e) => {
  console.error(e)
  process.exit(1)
})
