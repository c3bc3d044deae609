/**
 * The `effect-nats` command line: dead letters, stream provisioning, a
 * server check and AsyncAPI documents, built with `@effect/cli`.
 *
 * ```text
 * effect-nats [--server URL] dlq list [--context C] [--limit N] [--json] [--stream DLQ]
 * effect-nats [--server URL] dlq show <seq> [--json] [--stream DLQ]
 * effect-nats [--server URL] dlq replay <seq> | --all [--context C] [--to SUBJECT] [--keep] [--stream DLQ]
 * effect-nats [--server URL] streams ensure <file.json>
 * effect-nats [--server URL] replay <stream> [--subject F] [--since T] [--until T] [--from-seq N] (--to SUBJECT | --durable NAME)
 * effect-nats [--server URL] doctor
 * effect-nats asyncapi <module> [--export NAME] [--format yaml|json] [--out FILE] [--check]
 * ```
 *
 * The connection comes from the `NATS_*` variables (`NATS_URL`, `NATS_USER`,
 * `NATS_PASSWORD`, `NATS_TOKEN`, `NATS_CREDS`, `NATS_NKEY`, TLS: see
 * `NatsClient.config` in effect-nats); `--server`/`-s` (before or after the
 * command) overrides `NATS_URL`. Output goes to stdout; a failure prints one
 * line, `effect-nats: <what went wrong>`, to stderr and exits with code 1.
 *
 * @since 0.1.0
 */
// submodule imports: the barrels load far more than the CLI needs, and start-up time matters here
import * as Args from "@effect/cli/Args"
import type * as CliApp from "@effect/cli/CliApp"
import * as CliConfig from "@effect/cli/CliConfig"
import * as Command from "@effect/cli/Command"
import * as HelpDoc from "@effect/cli/HelpDoc"
import * as Options from "@effect/cli/Options"
import * as ValidationError from "@effect/cli/ValidationError"
import { Cause, ConfigError, Console, Data, Effect, Option, Predicate } from "effect"
import * as AsyncApiGen from "./internal/asyncapi.js"
import { CliError, deadLetterLayer, jetStreamLayer, natsLayer } from "./internal/connection.js"
import * as Dlq from "./internal/dlq.js"
import * as Doctor from "./internal/doctor.js"
import * as Replay from "./internal/replay.js"
import * as Streams from "./internal/streams.js"

/**
 * The version printed by `--version`.
 *
 * @since 0.1.0
 * @category constants
 */
export const version = "0.1.0"

/**
 * A command failed. Its reason was already printed to stderr (one line, or
 * the usage help for invalid arguments); `main` exits with `exitCode`.
 *
 * @since 0.1.0
 * @category errors
 */
export class CliExit extends Data.TaggedError("CliExit")<{
  readonly exitCode: number
  readonly message: string
}> {}

// ---------------------------------------------------------------------------
// options
// ---------------------------------------------------------------------------

const server = Options.text("server").pipe(
  Options.withAlias("s"),
  Options.withDescription("NATS server URL(s), comma-separated; overrides NATS_URL"),
  Options.optional
)

const dlqStream = Options.text("stream").pipe(
  Options.withDescription("the dead-letter stream"),
  Options.withDefault("DLQ")
)

const json = Options.boolean("json").pipe(Options.withDescription("print JSON (one object per line)"))

const context = Options.text("context").pipe(
  Options.withAlias("c"),
  Options.withDescription("only dead letters of this context (the first token of their subject: dlq.<context>)"),
  Options.optional
)

// ---------------------------------------------------------------------------
// commands
// ---------------------------------------------------------------------------

const printHelp: Effect.Effect<void> = Effect.suspend(() =>
  Console.log(HelpDoc.toAnsiText(Command.getHelp(command, CliConfig.defaultConfig)))
)

const root = Command.make("effect-nats", { server }, () => printHelp)

/** The server: the subcommand's `--server`, else the one given before the subcommand. */
const serverOf = (leaf: Option.Option<string>) => Effect.map(root, (r) => Option.orElse(leaf, () => r.server))

const dlqList = Command.make(
  "list",
  {
    server,
    stream: dlqStream,
    context,
    limit: Options.integer("limit").pipe(
      Options.withAlias("n"),
      Options.withDescription("show at most this many (oldest first)"),
      Options.withDefault(100)
    ),
    json
  },
  (args) =>
    Effect.gen(function*() {
      if (args.limit < 1) return yield* new CliError({ message: "--limit must be at least 1" })
      yield* Dlq.list(args).pipe(
        Effect.provide(deadLetterLayer(args.stream)),
        Effect.catchTag("NoDeadLetterStream", (e) => Dlq.listMissing(e, args.json)),
        Effect.provide(jetStreamLayer(yield* serverOf(args.server)))
      )
    })
).pipe(Command.withDescription("List dead letters: seq, failedAt, reason, errorTag, subject, attempts"))

const dlqShow = Command.make(
  "show",
  { server, stream: dlqStream, json, seq: Args.integer({ name: "seq" }).pipe(Args.withDescription("DLQ sequence")) },
  (args) =>
    Effect.gen(function*() {
      yield* Dlq.show(args).pipe(
        Effect.provide(deadLetterLayer(args.stream)),
        Effect.provide(jetStreamLayer(yield* serverOf(args.server)))
      )
    })
).pipe(Command.withDescription("Show one dead letter: the record, its headers and the decoded payload"))

const dlqReplay = Command.make(
  "replay",
  {
    server,
    stream: dlqStream,
    seq: Args.integer({ name: "seq" }).pipe(Args.withDescription("DLQ sequence"), Args.optional),
    all: Options.boolean("all").pipe(Options.withDescription("replay every dead letter (of --context)")),
    context,
    to: Options.text("to").pipe(
      Options.withDescription("publish to this subject instead of the original one"),
      Options.optional
    ),
    keep: Options.boolean("keep").pipe(Options.withDescription("keep the dead letter in the DLQ"))
  },
  (args) =>
    Effect.gen(function*() {
      yield* Dlq.replay(args).pipe(
        Effect.provide(deadLetterLayer(args.stream)),
        Effect.provide(jetStreamLayer(yield* serverOf(args.server)))
      )
    })
).pipe(Command.withDescription("Publish dead letters again (envelopes get a new id, caused by the old one)"))

const dlq = Command.make("dlq").pipe(
  Command.withDescription("Dead letters: list, show, replay"),
  Command.withSubcommands([dlqList, dlqShow, dlqReplay])
)

const streamsEnsure = Command.make(
  "ensure",
  {
    server,
    file: Args.file({ name: "file", exists: "yes" }).pipe(
      Args.withDescription("JSON: { \"streams\": [StreamSpec...], \"consumers\": [ConsumerSpec...] }")
    )
  },
  (args) =>
    Effect.gen(function*() {
      const file = yield* Streams.readFile(args.file)
      yield* Streams.ensure(file).pipe(Effect.provide(jetStreamLayer(yield* serverOf(args.server))))
    })
).pipe(Command.withDescription("Create or update streams and durable consumers from a file"))

const streams = Command.make("streams").pipe(
  Command.withDescription("Stream provisioning"),
  Command.withSubcommands([streamsEnsure])
)

const doctor = Command.make("doctor", { server }, (args) =>
  Effect.gen(function*() {
    yield* Doctor.doctor.pipe(Effect.provide(natsLayer(yield* serverOf(args.server))))
  })).pipe(
    Command.withDescription("Check the connection, JetStream and the server features the toolkit uses")
  )

const asyncapi = Command.make(
  "asyncapi",
  {
    module: Args.text({ name: "module" }).pipe(
      Args.withDescription("a module whose default export (or --export) is AsyncApi.make({ service, events, commands })")
    ),
    export: Options.text("export").pipe(Options.withDescription("the export holding the document"), Options.optional),
    format: Options.choice("format", ["yaml", "json"]).pipe(
      Options.withDescription("default: json for an --out ending in .json, else yaml"),
      Options.optional
    ),
    out: Options.text("out").pipe(
      Options.withAlias("o"),
      Options.withDescription("write the document to this file (default: print it)"),
      Options.optional
    ),
    check: Options.boolean("check").pipe(
      Options.withDescription("do not write: fail when --out differs from what the module defines now")
    )
  },
  (args) => AsyncApiGen.generate(args)
).pipe(Command.withDescription("Write the AsyncAPI 3.0 document of a module's Event and Command definitions"))
const replay = Command.make(
  "replay",
  {
    server,
    stream: Args.text({ name: "stream" }).pipe(Args.withDescription("the stream whose history is replayed")),
    subject: Options.text("subject").pipe(Options.withDescription("only messages on this subject filter"), Options.optional),
    since: Options.text("since").pipe(
      Options.withDescription("from the first message stored at or after this time (ISO 8601 or epoch ms)"),
      Options.optional
    ),
    until: Options.text("until").pipe(Options.withDescription("up to this time (with --to)"), Options.optional),
    fromSeq: Options.integer("from-seq").pipe(Options.withDescription("from this stream sequence"), Options.optional),
    to: Options.text("to").pipe(
      Options.withDescription("publish copies to this subject (ending in .> : a prefix before the original subject)"),
      Options.optional
    ),
    durable: Options.text("durable").pipe(
      Options.withDescription("instead, create this durable consumer starting there (a backfill for its service)"),
      Options.optional
    )
  },
  (args) =>
    Effect.gen(function*() {
      yield* Replay.replay(args).pipe(Effect.provide(jetStreamLayer(yield* serverOf(args.server))))
    })
).pipe(Command.withDescription("Feed a stream's history (subject filter, time range) into a subject or a durable"))

/**
 * The command tree.
 *
 * @since 0.1.0
 * @category commands
 */
export const command = root.pipe(Command.withSubcommands([dlq, streams, doctor, replay, asyncapi]))

// ---------------------------------------------------------------------------
// running
// ---------------------------------------------------------------------------

const describe = (error: unknown): string => {
  if (ConfigError.isConfigError(error)) return `invalid configuration: ${String(error)}`
  if (Predicate.hasProperty(error, "message") && typeof error.message === "string" && error.message !== "") {
    return error.message
  }
  return String(error)
}

const report = (cause: Cause.Cause<unknown>): Effect.Effect<never, CliExit> => {
  if (Cause.isInterruptedOnly(cause)) return Effect.interrupt
  const failure = Cause.failureOption(cause)
  if (Option.isSome(failure) && ValidationError.isValidationError(failure.value)) {
    // @effect/cli has printed the problem and the usage
    return Effect.fail(new CliExit({ exitCode: 1, message: "invalid arguments" }))
  }
  const message = Option.isSome(failure) ? describe(failure.value) : `unexpected error: ${describe(Cause.squash(cause))}`
  const line = message.replace(/\s*\n\s*/g, " ")
  return Console.error(`effect-nats: ${line}`).pipe(Effect.zipRight(Effect.fail(new CliExit({ exitCode: 1, message: line }))))
}

const cli = Command.run(command, { name: "effect-nats", version })

/**
 * Run the CLI on `args` (the arguments after the executable:
 * `process.argv.slice(2)`). Output goes to the `Console` service, so a test
 * can run it in-process and capture it; failures are printed and end in a
 * {@link CliExit}.
 *
 * @example
 * ```ts
 * import { NodeContext, NodeRuntime } from "@effect/platform-node"
 * import { Effect } from "effect"
 * import { Cli } from "@effect-nats/cli"
 *
 * Cli.run(["--server", "nats://127.0.0.1:4222", "dlq", "list", "--context", "billing"]).pipe(
 *   Effect.provide(NodeContext.layer),
 *   NodeRuntime.runMain({ disableErrorReporting: true })
 * )
 * ```
 *
 * @since 0.1.0
 * @category running
 */
export const run = (args: ReadonlyArray<string>): Effect.Effect<void, CliExit, CliApp.CliApp.Environment> =>
  cli(["node", "effect-nats", ...args]).pipe(Effect.catchAllCause(report))
