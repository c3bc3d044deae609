/** `effect-nats dlq list|show|replay`. @internal */
import { Console, Effect, Either, Option, Predicate, Schema } from "effect"
import * as DeadLetter from "effect-nats/DeadLetter"
import * as Limits from "effect-nats/Limits"
import * as JetStream from "effect-nats/JetStream"
import { CliError, NoDeadLetterStream } from "./connection.js"
import * as Format from "./format.js"

const encodeRecord = Schema.encodeSync(DeadLetter.Record)

const jsonLine = (entry: DeadLetter.Entry): string =>
  JSON.stringify({ seq: entry.seq, dlqSubject: entry.subject, ...encodeRecord(entry.record) })

/** The text of a payload: UTF-8 (JSON pretty-printed), else base64. */
export const payloadText = (base64: string): { readonly kind: string; readonly text: string; readonly size: number } => {
  const data = Buffer.from(base64, "base64")
  let text: string
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(data)
  } catch {
    return { kind: "binary, base64", text: base64, size: data.length }
  }
  // pretty-printed only within the limits: pretty-printing is recursive, a hostile payload is shown as it is
  const parsed = Limits.parseJson(data, { maxDepth: Limits.defaultMaxDepth })
  if (Either.isLeft(parsed)) {
    return { kind: parsed.left.reason === "InvalidJson" ? "text" : `text; ${parsed.left.message}`, text, size: data.length }
  }
  return { kind: "JSON", text: JSON.stringify(parsed.right, null, 2), size: data.length }
}

/** `dlq list` */
export const list = (options: {
  readonly context: Option.Option<string>
  readonly limit: number
  readonly json: boolean
}) =>
  Effect.gen(function*() {
    const dlq = yield* DeadLetter.DeadLetter
    // one more than asked, to know whether there are more
    const found = yield* dlq.list({ context: Option.getOrUndefined(options.context), limit: options.limit + 1 })
    const entries = found.slice(0, options.limit)
    if (options.json) {
      for (const entry of entries) yield* Console.log(jsonLine(entry))
      return
    }
    const where = Option.match(options.context, { onNone: () => "", onSome: (c) => ` for context ${c}` })
    if (entries.length === 0) return yield* Console.log(`No dead letters in ${dlq.stream}${where}.`)
    yield* Console.log(Format.table(
      ["SEQ", "FAILED AT", "REASON", "ERROR TAG", "SUBJECT", "ATTEMPTS"],
      entries.map((e) => [
        String(e.seq),
        e.record.failedAt,
        e.record.reason,
        e.record.errorTag,
        e.record.subject,
        String(e.record.attempts)
      ])
    ))
    if (found.length > options.limit) {
      yield* Console.log(`(the first ${options.limit} dead letters${where}; there are more: use --limit)`)
    }
  })

/** `dlq list` when the stream does not exist: nothing to list. */
export const listMissing = (e: NoDeadLetterStream, json: boolean) =>
  json ? Effect.void : Console.log(`No dead letters: ${e.message}.`)

/** `dlq show <seq>` */
export const show = (options: { readonly seq: number; readonly json: boolean }) =>
  Effect.gen(function*() {
    const dlq = yield* DeadLetter.DeadLetter
    const entry = yield* dlq.get(options.seq)
    if (options.json) return yield* Console.log(jsonLine(entry))
    const r = entry.record
    const source = [
      r.stream !== undefined ? `stream ${r.stream}` : undefined,
      r.sequence !== undefined ? `sequence ${r.sequence}` : undefined,
      r.consumer !== undefined ? `consumer ${r.consumer}` : undefined
    ].filter((s) => s !== undefined).join(", ")
    const payload = payloadText(r.payload)
    const headers = Object.entries(r.headers).flatMap(([k, values]) => values.map((v) => `${k}: ${v}`))
    yield* Console.log([
      `Dead letter ${entry.seq} in ${dlq.stream} (${entry.subject})`,
      Format.fields([
        ["subject", r.subject],
        ["reason", r.reason],
        ["error tag", r.errorTag],
        ["error", r.errorMessage],
        ["attempts", String(r.attempts)],
        ["failed at", r.failedAt],
        ["source", source === "" ? "-" : source]
      ]),
      `Headers${headers.length === 0 ? " (none)" : ""}`,
      ...headers.map((h) => Format.indent(h)),
      `Payload (${payload.size} bytes, ${payload.kind})`,
      Format.indent(payload.text)
    ].join("\n"))
  })

const replayOne = (dlq: DeadLetter.DeadLetter["Type"], seq: number, to: Option.Option<string>, keep: boolean) =>
  Effect.gen(function*() {
    const entry = yield* dlq.get(seq)
    const subject = Option.getOrElse(to, () => entry.record.subject)
    const r = yield* dlq.replay(seq, { to: subject, keep }).pipe(
      Effect.mapError((e) => {
        const noStream = Predicate.isTagged(e.cause, "NatsNoRespondersError")
        return new CliError({
          message: `cannot replay ${seq} to ${subject}: ${e.message}${noStream ? " (no stream stores that subject)" : ""}`,
          cause: e
        })
      })
    )
    yield* Console.log(
      `Replayed ${seq} to ${r.subject} as ${r.id} (stream sequence ${r.seq}); ${
        keep ? `kept in ${dlq.stream}` : `removed from ${dlq.stream}`
      }`
    )
  })

/** `dlq replay <seq> | --all` */
export const replay = (options: {
  readonly seq: Option.Option<number>
  readonly all: boolean
  readonly context: Option.Option<string>
  readonly to: Option.Option<string>
  readonly keep: boolean
}) =>
  Effect.gen(function*() {
    const dlq = yield* DeadLetter.DeadLetter
    if (Option.isSome(options.seq)) {
      if (options.all) return yield* new CliError({ message: "give either a sequence or --all, not both" })
      if (Option.isSome(options.context)) {
        return yield* new CliError({ message: "--context selects dead letters for --all; it cannot be used with a sequence" })
      }
      yield* replayOne(dlq, options.seq.value, options.to, options.keep)
      return
    }
    if (!options.all) return yield* new CliError({ message: "give the sequence of a dead letter to replay, or --all" })
    // only what is there now: a replay into the DLQ itself (--to dlq.x --keep) must not loop
    const js = yield* JetStream.JetStream
    const lastSeq = (yield* js.streamInfo(dlq.stream)).state.last_seq
    let fromSeq = 0
    let replayed = 0
    const failed: Array<string> = []
    for (;;) {
      const page = (yield* dlq.list({ context: Option.getOrUndefined(options.context), fromSeq, limit: 100 }))
        .filter((e) => e.seq <= lastSeq)
      if (page.length === 0) break
      for (const entry of page) {
        const result = yield* Effect.either(replayOne(dlq, entry.seq, options.to, options.keep))
        if (result._tag === "Right") replayed++
        else {
          failed.push(String(entry.seq))
          yield* Console.error(`effect-nats: ${result.left.message}`)
        }
      }
      fromSeq = page[page.length - 1]!.seq + 1
    }
    const where = Option.match(options.context, { onNone: () => "", onSome: (c) => ` of context ${c}` })
    yield* Console.log(`Replayed ${replayed} dead letter${replayed === 1 ? "" : "s"}${where}.`)
    if (failed.length > 0) {
      return yield* new CliError({ message: `${failed.length} dead letter(s) could not be replayed: ${failed.join(", ")}` })
    }
  })
