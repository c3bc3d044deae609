/**
 * `npm run bench`: the toolkit against the raw nats.js client, side by side in
 * one run, on one nats-server, same payload and concurrency, interleaved (raw,
 * toolkit, raw, toolkit, ...) and repeated; medians and ratios. See
 * bench/README.md. `--quick` for smaller counts; `--only=publish,consume,rtt,outbox,exactlyOnce,memory,rebuild`
 * to run some workloads.
 */
import { NatsTestServer } from "@effect-nats/testing"
import { Effect, Layer } from "effect"
import { DeadLetter } from "effect-nats"
import * as fs from "node:fs"
import * as path from "node:path"
import { fmt, log, machine, only, quick, type Row, selected, side, toJson } from "./lib.js"
import { consume } from "./workloads/consume.js"
import { exactlyOnce } from "./workloads/exactlyOnce.js"
import { memory } from "./workloads/memory.js"
import { outbox } from "./workloads/outbox.js"
import { publish } from "./workloads/publish.js"
import { rebuild } from "./workloads/rebuild.js"
import { rtt } from "./workloads/rtt.js"

const workloads = { publish, consume, rtt, outbox, exactlyOnce, memory, rebuild }

const program = Effect.gen(function*() {
  const rows: Array<Row> = []
  for (const [name, workload] of Object.entries(workloads)) {
    if (!selected(name)) continue
    yield* log(`${name}`)
    rows.push(...(yield* workload))
  }
  return rows
})

const Live = DeadLetter.layer().pipe(
  Layer.provideMerge(NatsTestServer.layerJetStream({ sources: ["binary", "container"] }))
)

const started = performance.now()
Effect.runPromise(program.pipe(Effect.provide(Live), Effect.scoped)).then((rows) => {
  const result = {
    machine: machine(),
    quick,
    at: new Date().toISOString(),
    seconds: Math.round((performance.now() - started) / 1000),
    rows: rows.map(toJson)
  }
  // each figure under its own column name: raw / toolkit, before / after (memory), at-least-once / exactly-once
  console.table(rows.map((r) => ({
    workload: r.workload,
    unit: r.unit,
    baseline: `${r.columns[0]} ${fmt(r.raw)}`,
    measured: `${r.columns[1]} ${fmt(r.toolkit)}`,
    ratio: r.ratio.toFixed(2),
    target: r.target,
    met: r.met === null ? "" : r.met ? "yes" : "no"
  })))
  const dir = path.join(import.meta.dirname, "results")
  fs.mkdirSync(dir, { recursive: true })
  // a partial run (--only, --side) does not replace the full results
  const file = only === undefined && side === undefined ? "latest.json" : "partial.json"
  fs.writeFileSync(path.join(dir, file), JSON.stringify(result, null, 2) + "\n")
  console.log(JSON.stringify(result))
  process.exit(0)
}, (e) => {
  console.error(e)
  process.exit(1)
})
