/**
 * 5. Memory: heap and RSS of a process that consumes warm-up + N messages
 * through the default pipeline, measured after a forced GC at the end of the
 * warm-up ("before" column: the baseline) and at the end ("after" column): the
 * toolkit against itself, no raw client involved. Runs
 * in a child process started with --expose-gc, so nothing else lives in its
 * heap. The memory dedup store is bounded (here at 10 000 keys, reached in the
 * warm-up): the run looks for growth that is not bounded.
 */
import { Effect } from "effect"
import { NatsTestServer } from "@effect-nats/testing"
import { execFile } from "node:child_process"
import * as path from "node:path"
import { log, logRow, quick, type Row, row } from "../lib.js"
import { freshStream } from "./publish.js"

interface Result {
  readonly before: { readonly heapUsed: number; readonly rss: number }
  readonly after: { readonly heapUsed: number; readonly rss: number }
  readonly rate: number
}

export const memory = Effect.gen(function*() {
  const server = yield* NatsTestServer.NatsTestServer
  const warmup = 20_000
  const n = quick ? 100_000 : 1_000_000
  yield* freshStream
  const child = path.join(import.meta.dirname, "..", "memory-child.ts")
  const stdout = yield* Effect.async<string, Error>((resume) => {
    const p = execFile(
      process.execPath,
      [...process.execArgv, "--expose-gc", child],
      {
        env: { ...process.env, BENCH_NATS_URL: server.url, BENCH_WARMUP: String(warmup), BENCH_N: String(n) },
        maxBuffer: 16 * 1024 * 1024
      },
      (error, out, err) => resume(error ? Effect.fail(new Error(`${error.message}\n${err}`)) : Effect.succeed(out))
    )
    return Effect.sync(() => p.kill())
  })
  const result = JSON.parse(stdout.trim().split("\n").pop()!) as Result
  const mib = (b: number) => b / 2 ** 20
  const note = `the toolkit after ${warmup} warm-up messages (before) and after ${n} more (after), forced GC`
  const target = { better: "lower", bound: 1.1 } as const
  const rows: Array<Row> = [
    row("memory heapUsed", "MiB", mib(result.before.heapUsed), mib(result.after.heapUsed), target, note, ["before", "after"]),
    row("memory rss", "MiB", mib(result.before.rss), mib(result.after.rss), target, note, ["before", "after"])
  ]
  yield* log(`  (consumed ${n} at ${Math.round(result.rate)} msg/s)`)
  for (const r of rows) yield* logRow(r)
  return rows
})
