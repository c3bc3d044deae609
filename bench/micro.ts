/**
 * The consumer pipeline in isolation: the default middleware run on fake
 * messages (no server), to see what each stage costs per message.
 *
 *   node --conditions=source --import tsx bench/micro.ts [all|nodedup|only:settle,decode,...]
 *
 * `all`: the default pipeline with memory dedup, as the consumer runs it
 * (`compose(defaultPipeline(defaults(settings)), handle)`); `nodedup`: the
 * same without dedup; `only:<names>`: just these default middleware
 * (outermost first) around the handler step. Several modes run interleaved.
 * Add `--cpu-prof` before `--conditions` for a profile.
 */
import { headers } from "@nats-io/nats-core"
import { Effect, Option } from "effect"
import { Consumer, Dedup, Handler, Middleware } from "effect-nats"
import { Item, pad } from "./lib.js"

const n = 100_000
const encoder = new TextEncoder()
const now = new Date().toISOString()
const messages = Array.from({ length: n }, (_, i) => {
  const id = `0190a1b2-c3d4-7e5f-8a9b-${String(i).padStart(12, "0")}`
  const data = encoder.encode(JSON.stringify({
    id,
    type: Item.type,
    timestamp: now,
    correlationId: id,
    aggregateId: id,
    aggregateType: "Item",
    version: 0,
    data: { i, pad }
  }))
  const h = headers()
  h.set("Nats-Msg-Id", id)
  const info = { stream: "S", consumer: "c", streamSequence: i, deliveryCount: 1 }
  return { data, headers: h, subject: Item.subject, info, ack() {}, nak() {}, term() {}, working() {} }
})

/** The step of a mode, with a fresh memory dedup store (so that no message is a duplicate of an earlier round). */
const stepOf = (mode: string) =>
  Effect.gen(function*() {
    const dedup = yield* Dedup.makeMemory()
    const handlers = new Map([[Item.type, Handler.make(Item, () => Effect.void) as Handler.Any]])
    const settings: Middleware.Settings = {
      stream: "S",
      durable: "c",
      handlers,
      maxDeliver: 5,
      retry: Consumer.defaultRetry,
      redelivery: Consumer.defaultRedelivery,
      isPermanent: () => false,
      unknownType: "ack",
      maxMessageBytes: 1024 * 1024,
      maxDepth: 128,
      ack: "fast",
      termWithReason: false,
      tracing: false,
      deadLetter: undefined as never,
      dedup: mode === "nodedup" ? Option.none() : Option.some(dedup)
    }
    const defaults = Middleware.defaults(settings)
    return mode.startsWith("only:")
      ? Middleware.compose(
        mode.slice("only:".length).split(",").filter((k) => k !== "").map((k) => defaults[k as keyof Middleware.Defaults]),
        Middleware.handle
      )
      : Middleware.compose(Middleware.defaultPipeline(defaults), Middleware.handle)
  })

// several modes: rounds interleaved (mode A, mode B, A, B, ...), then the median of each
const modes = process.argv.slice(2).filter((a) => !a.startsWith("-"))
if (modes.length === 0) modes.push("all")
const rounds = modes.length > 1 ? 9 : 5
Effect.runPromise(Effect.gen(function*() {
  const times = new Map<string, Array<number>>(modes.map((m) => [m, []]))
  for (let round = 0; round < rounds; round++) {
    for (const mode of modes) {
      const step = yield* stepOf(mode)
      const one = (m: (typeof messages)[number]) =>
        step({ msg: m as never, subject: m.subject })
      const t0 = performance.now()
      yield* Effect.forEach(messages, one, { discard: true })
      const dt = performance.now() - t0
      times.get(mode)!.push(dt * 1000 / n)
      console.log(`${mode}: ${Math.round(n / dt * 1000)} msg/s, ${(dt * 1000 / n).toFixed(2)} µs/msg`)
    }
  }
  if (modes.length > 1) {
    for (const [mode, ts] of times) {
      const median = [...ts].sort((a, b) => a - b)[Math.floor(ts.length / 2)]!
      console.log(`median ${mode}: ${median.toFixed(2)} µs/msg`)
    }
  }
}))
