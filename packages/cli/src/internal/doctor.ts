/** `effect-nats doctor`. @internal */
import { Console, Effect, Option } from "effect"
import * as JetStream from "effect-nats/JetStream"
import * as NatsClient from "effect-nats/NatsClient"
import * as NatsError from "effect-nats/NatsError"
import { CliError } from "./connection.js"
import * as Format from "./format.js"

/**
 * Server features the toolkit adapts to, and the version that brought them.
 *
 * @internal
 */
export const features: ReadonlyArray<{ readonly since: string; readonly name: string; readonly otherwise: string }> = [
  {
    since: "2.10.0",
    name: "several filter_subjects per consumer",
    otherwise: "one filter_subject per consumer"
  },
  {
    since: "2.10.4",
    name: "term(reason)",
    otherwise: "plain term() is sent; a term with a reason would be ignored and redelivered"
  },
  {
    since: "2.11.0",
    name: "per-key KV TTL",
    otherwise: "only the bucket TTL (max_age) applies; per-key TTLs are silently ignored"
  },
  {
    since: "2.12.0",
    name: "atomic batch publish",
    otherwise: "messages are published one by one"
  }
]

const fromCause = (method: string) => NatsError.fromCause(method)

/** Connect, report the server, JetStream and features; fail when JetStream is off. */
export const doctor = Effect.gen(function*() {
  const nats = yield* NatsClient.NatsClient
  const nc = nats.connection
  const info = yield* nats.serverInfo.pipe(
    Effect.flatMap(Option.match({
      onNone: () => new CliError({ message: `connected to ${nats.servers} but received no server INFO` }),
      onSome: Effect.succeed
    }))
  )
  // nc.rtt() measures with Date.now() (whole milliseconds): time the same PING/PONG more finely
  const started = performance.now()
  yield* Effect.tryPromise({ try: () => nc.rtt(), catch: fromCause("rtt") })
  const rtt = performance.now() - started
  yield* Console.log([
    "Server",
    Format.fields([
      ["connected to", nc.getServer()],
      ["version", info.version],
      ["name", info.server_name],
      ["id", info.server_id],
      ...(info.cluster !== undefined ? [["cluster", info.cluster] as const] : []),
      ["go", info.go],
      ["max_payload", `${Format.bytes(info.max_payload)} (${info.max_payload} bytes)`],
      ["headers", info.headers === true ? "supported" : "not supported"],
      ["rtt", `${rtt.toFixed(2)} ms`]
    ])
  ].join("\n"))

  const jetStream = info.jetstream === false
    ? { ok: false as const, why: "disabled in the server configuration" }
    : yield* JetStream.make.pipe(
      Effect.flatMap((js) => Effect.tryPromise({ try: () => js.manager.getAccountInfo(), catch: fromCause("getAccountInfo") })),
      Effect.map((account) => ({ ok: true as const, account })),
      Effect.catchAll((e) => Effect.succeed({ ok: false as const, why: e.message }))
    )
  if (jetStream.ok) {
    const a = jetStream.account
    yield* Console.log([
      "JetStream",
      Format.fields([
        ["status", "enabled"],
        ...(a.domain !== undefined && a.domain !== "" ? [["domain", a.domain] as const] : []),
        ...(a.api.level !== undefined ? [["api level", String(a.api.level)] as const] : []),
        ["memory", Format.usage(a.memory, a.limits.max_memory, Format.bytes)],
        ["storage", Format.usage(a.storage, a.limits.max_storage, Format.bytes)],
        ["streams", Format.usage(a.streams, a.limits.max_streams)],
        ["consumers", Format.usage(a.consumers, a.limits.max_consumers)],
        ["api requests", `${a.api.total} (${a.api.errors} errors)`]
      ])
    ].join("\n"))
  } else {
    yield* Console.log(["JetStream", Format.fields([["status", `NOT AVAILABLE: ${jetStream.why}`]])].join("\n"))
  }

  const rows: Array<readonly [string, string]> = []
  for (const f of features) {
    const available = yield* nats.serverAtLeast(f.since)
    rows.push([f.name, available ? `yes (${f.since}+)` : `no, needs ${f.since}: ${f.otherwise}`])
  }
  yield* Console.log(["Features", Format.fields(rows)].join("\n"))

  if (!jetStream.ok) {
    return yield* new CliError({ message: `JetStream is not available on ${nc.getServer()}` })
  }
})
