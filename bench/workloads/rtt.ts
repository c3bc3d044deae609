/**
 * 3. Request/reply: `CommandClient.execute` against a `CommandService`
 * (Schema-validated request and response, micro-protocol statistics, spans
 * when recorded) against raw `nc.request` to a plain `nc.subscribe`
 * responder (queue group, JSON in, JSON out): sequential requests in
 * alternating blocks, latency p50 and p99 over all of each side's requests.
 */
import { Effect, Schema } from "effect"
import { Command, CommandClient, CommandService, NatsClient } from "effect-nats"
import { logRow, pad, percentile, quick, type Row, row, side } from "../lib.js"

const Echo = Command.make({
  service: "rtt",
  aggregate: "echo",
  name: "run",
  payload: Schema.Struct({ i: Schema.Number, pad: Schema.String }),
  success: Schema.Struct({ i: Schema.Number })
})

const rawSubject = "rtt.raw.echo" // outside the BENCH stream's subjects

export const rtt = Effect.gen(function*() {
  const nats = yield* NatsClient.NatsClient
  const nc = nats.connection
  const n = quick ? 2_000 : 5_000
  const encoder = new TextEncoder()
  const decoder = new TextDecoder()

  // the raw responder: parse, answer with the same shape of response the service sends
  yield* Effect.acquireRelease(
    Effect.sync(() =>
      nc.subscribe(rawSubject, {
        queue: "q",
        callback: (err, msg) => {
          if (err !== null) return
          const request = JSON.parse(decoder.decode(msg.data)) as { payload: { i: number } }
          msg.respond(encoder.encode(JSON.stringify({ success: true, result: { i: request.payload.i } })))
        }
      })
    ),
    (s) => Effect.sync(() => s.unsubscribe())
  )
  yield* CommandService.make({
    name: "rtt",
    version: "1.0.0",
    commands: [CommandService.handler(Echo, (p) => Effect.succeed({ i: p.i }))]
  })
  const client = yield* CommandClient.make()
  yield* nats.flush

  // small blocks, alternated (raw, toolkit, raw, ...): load on the machine drifts over seconds; percentiles over all samples
  const block = 250
  const raw = (from: number) =>
    Effect.promise(async () => {
      const latencies: Array<number> = []
      for (let i = from; i < from + block; i++) {
        const t0 = performance.now()
        const reply = await nc.request(rawSubject, encoder.encode(JSON.stringify({ payload: { i, pad } })), { timeout: 5000 })
        const response = JSON.parse(decoder.decode(reply.data)) as { result: { i: number } }
        if (response.result.i !== i) throw new Error("wrong answer")
        latencies.push(performance.now() - t0)
      }
      return latencies
    })
  const toolkit = (from: number) =>
    Effect.gen(function*() {
      const latencies: Array<number> = []
      for (let i = from; i < from + block; i++) {
        const t0 = performance.now()
        const result = yield* client.execute(Echo, undefined, { i, pad })
        if (result.i !== i) return yield* Effect.dieMessage("wrong answer")
        latencies.push(performance.now() - t0)
      }
      return latencies
    })
  const r: Array<number> = []
  const t: Array<number> = []
  // the process's CPU time (client and service ends both run here) per request, each side's blocks apart
  const cpu = { raw: 0, toolkit: 0 }
  const timed = <A, E, R>(key: keyof typeof cpu, self: Effect.Effect<A, E, R>) =>
    Effect.suspend(() => {
      const before = process.cpuUsage()
      return Effect.tap(self, () => {
        const used = process.cpuUsage(before)
        cpu[key] += used.user + used.system
      })
    })
  for (let from = 0; from < n; from += block) {
    if (side !== "toolkit") r.push(...yield* timed("raw", raw(from)))
    if (side !== "raw") t.push(...yield* timed("toolkit", toolkit(from)))
  }
  const us = (xs: ReadonlyArray<number>, p: number) => xs.length === 0 ? NaN : percentile(xs, p) * 1000
  const note = `${n} sequential requests each, in alternating blocks of ${block}`
  const rows: Array<Row> = [
    row("request/reply p50", "µs", us(r, 50), us(t, 50), { better: "lower", bound: 1.15 }, note),
    row("request/reply p99", "µs", us(r, 99), us(t, 99), { better: "lower", bound: 2 }, note),
    row(
      "request/reply CPU per request",
      "µs",
      r.length === 0 ? NaN : cpu.raw / r.length,
      t.length === 0 ? NaN : cpu.toolkit / t.length,
      undefined,
      "process CPU time (user + system) over each side's blocks, divided by its requests; both ends run in the bench process"
    )
  ]
  for (const r of rows) yield* logRow(r)
  return rows
}).pipe(Effect.scoped)
