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
 * Metrics: served as Prometheus text on `http://127.0.0.1:9464/metrics` while
 * it runs (the first line says where; `OTEL_EXPORTER_PROMETHEUS_HOST` /
 * `_PORT` move it, `OTEL_METRICS_EXPORTER` replaces it, e.g. `otlp` with
 * `OTEL_EXPORTER_OTLP_ENDPOINT`; a port already taken only skips it), with the
 * payments consumer's lag and the DLQ depth polled every second.
 * `npm run demo -- --serve` keeps serving after the summary, until Ctrl-C, for
 * a Prometheus + Grafana to scrape (dashboard: `packages/opentelemetry/grafana/effect-nats.json`).
 *
 * Output: progress, a readable summary, then one JSON line, always the last
 * line on stdout: `{"published":N,"handled":N,"duplicatesSkipped":N,"deadLettered":N,"lost":0}`.
 * Exit code 0 only when every check of the summary passed (1 otherwise).
 * Ctrl-C interrupts the run: the consumer drains, the relay and the command
 * service stop, NATS drains (each bounded), and the process exits 0
 * (`NodeRuntime.runMain`; a second Ctrl-C kills it at once).
 */
import { NodeRuntime } from "@effect/platform-node"
import { Telemetry } from "@effect-nats/opentelemetry"
import { NatsTestServer, Provision } from "@effect-nats/testing"
import { Cause, Console, Data, Effect, Layer, Logger, Option, Predicate } from "effect"
import type { ConfigError } from "effect/ConfigError"
import { JetStream, Lag, NatsClient, type NatsError } from "effect-nats"
import * as Payments from "./payments.js"
import { BillingLive, defaultScenario, jsonLine, program, report } from "./program.js"

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

// metrics: Prometheus on loopback unless the OTEL_* variables say otherwise; logs stay the demo's own (stderr)
const Observability = Layer.unwrapEffect(Effect.gen(function*() {
  const env = yield* Telemetry.config
  const settings = Telemetry.resolve(Telemetry.merge(
    Telemetry.merge({ serviceName: "billing-demo", metrics: { exporter: "prometheus", prometheusHost: "127.0.0.1" } }, env),
    { logFormat: "none" }
  ))
  const { host, port } = settings.metrics.prometheus
  yield* Console.log(
    settings.metrics.exporters.includes("prometheus")
      ? `metrics: http://${host ?? "localhost"}:${port}/metrics while the demo runs (--serve: until Ctrl-C); ` +
        "Grafana dashboard: packages/opentelemetry/grafana/effect-nats.json"
      : `metrics: exported to ${settings.metrics.exporters.join(", ") || "nothing"} (OTEL_METRICS_EXPORTER)`
  )
  return Telemetry.layerSettings(settings).pipe(
    Layer.catchAll((error) => Layer.effectDiscard(Console.log(`metrics: not served: ${error.message}`)))
  )
}))

const serve = process.argv.includes("--serve")

const main = Effect.gen(function*() {
  // the server's view of the payments consumer and of the dead letters, for the lag gauges
  yield* Lag.watchConsumer({ stream: defaultScenario.stream, durable: Payments.durable }, "1 second")
  yield* Lag.watchDeadLetters("1 second")
  const summary = yield* program().pipe(
    Effect.onInterrupt(() => Console.log("\ninterrupted: draining the consumer, stopping the relay and the command service"))
  )
  yield* Console.log(report(summary))
  yield* Console.log(jsonLine(summary))
  if (!summary.consistent) return yield* new Inconsistent()
  if (serve) {
    yield* Console.error("serving /metrics until Ctrl-C")
    return yield* Effect.never
  }
}).pipe(
  Effect.scoped,
  Effect.provide(BillingLive()),
  Effect.provide(Nats),
  Effect.provide(Observability),
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
