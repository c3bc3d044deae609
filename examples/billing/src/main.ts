/**
 * `npm run demo`: the billing scenario end to end.
 *
 * NATS: `NATS_URL` when set (with the other `NATS_*` variables, see
 * `NatsClient.layerConfig`); otherwise a throwaway nats-server from a local
 * `nats-server` binary (PATH or the usual places), else from Docker, else, as
 * root on Debian/Ubuntu, from `apt-get install -y nats-server` (one line says
 * so); without any of them it says how to install one and exits 1
 * (`Provision.resolve` from @effect-nats/testing, shared with the tests).
 * SQLite: a new database file in a temp dir, removed at the end.
 *
 * Output: progress, a readable summary, then one JSON line, always the last
 * line on stdout: `{"published":N,"handled":N,"duplicatesSkipped":N,"deadLettered":N,"lost":0}`.
 * Exit code 0 only when every check of the summary passed (1 otherwise).
 * Ctrl-C interrupts the run: the consumer drains, the relay and the command
 * service stop, NATS drains (each bounded), and the process exits 0
 * (`NodeRuntime.runMain`; a second Ctrl-C kills it at once).
 */
import { NodeRuntime } from "@effect/platform-node"
import { NatsTestServer, Provision } from "@effect-nats/testing"
import { Cause, Console, Data, Effect, Layer, Logger, Option, Predicate } from "effect"
import type { ConfigError } from "effect/ConfigError"
import { JetStream, NatsClient, type NatsError } from "effect-nats"
import { BillingLive, jsonLine, program, report } from "./program.js"

/** The run finished, but its numbers do not add up (the summary says which check failed). */
class Inconsistent extends Data.TaggedError("Inconsistent")<{}> {}

type NatsLayer = Layer.Layer<
  JetStream.JetStream | NatsClient.NatsClient,
  NatsError.NatsError | ConfigError | NatsTestServer.NatsTestServerError | Provision.ProvisionError
>

// swap the NATS layer, keep the program: a configured server, or a throwaway one
const Nats: NatsLayer = Layer.unwrapEffect(
  Provision.resolve("nats-server", { neededBy: "the billing demo", say: (line) => console.log(line) }).pipe(
    Effect.flatMap((found): Effect.Effect<NatsLayer> => {
      switch (found._tag) {
        case "Env":
          return Effect.succeed(JetStream.layer.pipe(Layer.provideMerge(NatsClient.layerConfig())))
        case "Binary":
          return Console.log(`NATS_URL is not set: starting a throwaway nats-server (${found.path})`).pipe(
            Effect.as(NatsTestServer.layerJetStream({ binaryPath: found.path }))
          )
        case "Container":
          return Console.log("NATS_URL is not set: starting a throwaway nats-server in Docker (nats:2.10)").pipe(
            Effect.as(NatsTestServer.layerJetStream({ sources: ["container"] }))
          )
      }
    })
  )
)

// the toolkit's log lines (a dead letter, a relay retry) go to stderr: stdout stays progress + summary + JSON
const LogsToStderr = Logger.replace(Logger.defaultLogger, Logger.prettyLogger({ stderr: true }))

/** A failure as one readable paragraph (tagged errors carry their own message, e.g. how to install nats-server). */
const explain = (cause: Cause.Cause<unknown>): string =>
  Option.match(Cause.failureOption(cause), {
    onNone: () => Cause.pretty(cause),
    onSome: (error) =>
      Predicate.hasProperty(error, "message") && typeof error.message === "string"
        ? `${Predicate.hasProperty(error, "_tag") ? String(error._tag) : "Error"}: ${error.message}`
        : Cause.pretty(cause)
  })

const main = Effect.gen(function*() {
  const summary = yield* program().pipe(
    Effect.onInterrupt(() => Console.log("\ninterrupted: draining the consumer, stopping the relay and the command service"))
  )
  yield* Console.log(report(summary))
  yield* Console.log(jsonLine(summary))
  if (!summary.consistent) return yield* new Inconsistent()
}).pipe(
  Effect.scoped,
  Effect.provide(BillingLive()),
  Effect.provide(Nats),
  Effect.provide(LogsToStderr),
  Effect.onInterrupt(() => Console.log("stopped cleanly")),
  Effect.tapErrorCause((cause) =>
    Cause.isInterruptedOnly(cause) || Option.exists(Cause.failureOption(cause), (e) => e instanceof Inconsistent)
      ? Effect.void
      : Console.error(`billing demo failed: ${explain(cause)}`)
  )
)

// SIGINT/SIGTERM interrupt the main fiber; finalizers run; exit code 0 (interrupted), 1 (failed), 0 (done)
// (errors are reported above; the logger is LogsToStderr)
NodeRuntime.runMain(main, { disableErrorReporting: true, disablePrettyLogger: true })
