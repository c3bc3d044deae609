/** `effect-nats replay`. @internal */
import { Console, Effect, Option } from "effect"
import * as Replay from "effect-nats/Replay"
import { CliError } from "./connection.js"

const time = (what: string, value: Option.Option<string>) =>
  Option.match(value, {
    onNone: () => Effect.succeed(undefined),
    onSome: (text) => {
      const at = new Date(/^\d+$/.test(text) ? Number(text) : text)
      return Number.isNaN(at.getTime())
        ? Effect.fail(new CliError({ message: `${what}: not a time (ISO 8601, or epoch milliseconds): ${text}` }))
        : Effect.succeed(at)
    }
  })

/** `replay <stream> [--subject F] [--since T] [--until T] [--from-seq N] (--to SUBJECT | --durable NAME)` */
export const replay = (args: {
  readonly stream: string
  readonly subject: Option.Option<string>
  readonly since: Option.Option<string>
  readonly until: Option.Option<string>
  readonly fromSeq: Option.Option<number>
  readonly to: Option.Option<string>
  readonly durable: Option.Option<string>
}) =>
  Effect.gen(function*() {
    const since = yield* time("--since", args.since)
    const until = yield* time("--until", args.until)
    if (Option.isSome(args.fromSeq) && since !== undefined) {
      return yield* new CliError({ message: "give --since or --from-seq, not both" })
    }
    const from = Option.isSome(args.fromSeq)
      ? { startSequence: args.fromSeq.value }
      : since === undefined
      ? "all" as const
      : { startTime: since }
    const filterSubject = Option.getOrUndefined(args.subject)
    if (Option.isSome(args.to) === Option.isSome(args.durable)) {
      return yield* new CliError({ message: "give one target: --to SUBJECT or --durable NAME" })
    }
    if (Option.isSome(args.durable)) {
      if (until !== undefined) {
        return yield* new CliError({ message: "--until cannot bound a durable (it goes on with live messages); use --to" })
      }
      const ensured = yield* Replay.toDurable({ stream: args.stream, filterSubject, from, durable: args.durable.value })
      return yield* Console.log(
        `${ensured._tag === "Created" ? "created" : "kept"} durable ${args.durable.value} on ${args.stream}: ` +
          `${ensured.info.num_pending} messages pending from ${describeFrom(from)}`
      )
    }
    const to = Option.getOrThrow(args.to)
    const result = yield* Replay.toSubject(
      { stream: args.stream, filterSubject, from, until, to },
      (done, total) => done % 10_000 === 0 && done > 0 ? Console.log(`  ${done}/${total}`) : Effect.void
    )
    yield* Console.log(
      result.replayed === 0
        ? `nothing to replay from ${args.stream} (${describeFrom(from)})`
        : `replayed ${result.replayed} messages of ${args.stream} (seq ${result.first}..${result.last}) to ${to} ` +
          `at ${Math.round(result.rate)} msg/s`
    )
  })

const describeFrom = (from: Replay.Options["from"]): string =>
  from === undefined || typeof from === "string"
    ? "the beginning"
    : "startSequence" in from
    ? `sequence ${from.startSequence}`
    : from.startTime.toISOString()
