/**
 * Shared pieces of the benchmark: options, the result row, statistics, and
 * the interleaved runner (raw, toolkit, raw, toolkit, ...).
 */
import { Effect, Schema } from "effect"
import { Event } from "effect-nats"
import * as os from "node:os"

export const quick = process.argv.includes("--quick")

/** `--only=publish,consume`: run only these workloads (while working on one). */
export const only: ReadonlyArray<string> | undefined = process.argv
  .find((a) => a.startsWith("--only="))
  ?.slice("--only=".length)
  .split(",")

export const selected = (workload: string): boolean => only === undefined || only.includes(workload)

/** `--side=toolkit` (or `raw`): run one side only, e.g. under `node --cpu-prof`; the other side's figures are NaN. */
export const side: "raw" | "toolkit" | undefined = process.argv.includes("--side=raw")
  ? "raw"
  : process.argv.includes("--side=toolkit")
  ? "toolkit"
  : undefined

/** Repetitions of each (raw, toolkit) pair. */
export const reps = 3

export const pad = "x".repeat(200)

/** The event of every workload: 256 bytes of JSON data once enveloped is about 450 bytes on the wire. */
export const Item = Event.make({
  type: "bench.item.created",
  aggregate: "Item",
  schema: Schema.Struct({ i: Schema.Number, pad: Schema.String })
})

/** The raw workloads publish the same data, as JSON, without the envelope. */
export const rawPayload = new TextEncoder().encode(JSON.stringify({ i: 0, pad }))

/** The names of a row's two figures: raw nats.js against the toolkit, or the toolkit before and after a run (memory). */
export type Columns = readonly ["raw", "toolkit"] | readonly ["before", "after"] | readonly ["at-least-once", "exactly-once"]

/**
 * One figure of one workload. `ratio` is toolkit / raw (or after / before):
 * higher is better for throughputs, lower is better for latencies and memory.
 * `raw` and `toolkit` hold the two figures; `columns` says what they are, and
 * the table and the JSON name them so ({@link toJson}).
 */
export interface Row {
  readonly workload: string
  readonly unit: string
  readonly columns: Columns
  readonly raw: number
  readonly toolkit: number
  readonly ratio: number
  readonly target: string
  /** Whether the target is met (information only: a benchmark never fails). */
  readonly met: boolean | null
  readonly note?: string | undefined
}

export const median = (xs: ReadonlyArray<number>): number => {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  const m = Math.floor(s.length / 2)
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2
}

/** Nearest-rank percentile (p in 0..100). */
export const percentile = (xs: ReadonlyArray<number>, p: number): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!
}

/**
 * Run `raw` and `toolkit` alternately `reps` times; each returns the figures
 * of one run (by name). The result has, per name, the runs' figures.
 */
export const interleave = <K extends string, E, R>(
  raw: Effect.Effect<Record<K, number>, E, R>,
  toolkit: Effect.Effect<Record<K, number>, E, R>
) =>
  Effect.gen(function*() {
    const r: Array<Record<K, number>> = []
    const t: Array<Record<K, number>> = []
    for (let k = 0; k < reps; k++) {
      if (side !== "toolkit") r.push(yield* raw)
      if (side !== "raw") t.push(yield* toolkit)
    }
    return {
      raw: (key: K) => median(r.map((x) => x[key])),
      toolkit: (key: K) => median(t.map((x) => x[key]))
    }
  })

/** Build a row; `better` says which direction the ratio should go for the target `bound`. */
export const row = (
  workload: string,
  unit: string,
  raw: number,
  toolkit: number,
  target: { readonly better: "higher" | "lower"; readonly bound: number } | { readonly absolute: string; readonly met: boolean } | undefined,
  note?: string,
  columns: Columns = ["raw", "toolkit"]
): Row => {
  const ratio = toolkit / raw
  return {
    workload,
    unit,
    columns,
    raw,
    toolkit,
    ratio,
    target: target === undefined
      ? "-"
      : "absolute" in target
      ? target.absolute
      : `${target.better === "higher" ? ">=" : "<="} ${target.bound}`,
    met: target === undefined
      ? null
      : "absolute" in target
      ? target.met
      : target.better === "higher"
      ? ratio >= target.bound
      : ratio <= target.bound,
    ...(note !== undefined ? { note } : {})
  }
}

export const log = (s: string) => Effect.sync(() => process.stderr.write(s + "\n"))

export const logRow = (r: Row) =>
  log(
    `  ${r.workload}: ${r.columns[0]} ${fmt(r.raw)} ${r.unit}, ${r.columns[1]} ${fmt(r.toolkit)} ${r.unit}, ratio ${
      r.ratio.toFixed(2)
    } (${r.target})`
  )

/** A row as written to the results JSON: its two figures under their column names. */
export const toJson = (r: Row): Record<string, unknown> => {
  const { columns, raw, toolkit, workload, unit, ...rest } = r
  return { workload, unit, [columns[0]]: raw, [columns[1]]: toolkit, ...rest }
}

export const fmt = (x: number): string =>
  Math.abs(x) >= 100 ? String(Math.round(x)) : Math.abs(x) >= 10 ? x.toFixed(1) : x.toFixed(2)

export const machine = () => ({
  cpus: os.cpus().length,
  model: os.cpus()[0]?.model ?? "",
  memGiB: Math.round(os.totalmem() / 2 ** 30),
  node: process.version,
  platform: `${os.platform()} ${os.release()}`
})

/** Resolves when `n` messages were counted by `count`; `arrived` is called by a subscription callback. */
export const countdown = (n: number) => {
  let seen = 0
  let resolve!: () => void
  const done = new Promise<void>((r) => (resolve = r))
  return {
    arrived: () => {
      if (++seen === n) resolve()
    },
    done
  }
}
