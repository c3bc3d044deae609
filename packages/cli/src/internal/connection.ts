/** The NATS connection of a CLI command. @internal */
import { Config, Data, Duration, Effect, Layer, Option } from "effect"
import * as DeadLetter from "effect-nats/DeadLetter"
import * as JetStream from "effect-nats/JetStream"
import * as NatsClient from "effect-nats/NatsClient"
import type * as NatsError from "effect-nats/NatsError"

/** A failure the CLI reports as one line. @internal */
export class CliError extends Data.TaggedError("CliError")<{
  readonly message: string
  readonly cause?: unknown
}> {}

/**
 * NatsClient from the `NATS_*` variables, `--server` overriding `NATS_URL`.
 * A CLI should fail fast: connect timeout 5 s and drain 2 s unless configured.
 */
export const natsLayer = (server: Option.Option<string>) =>
  NatsClient.layerConfig(NatsClient.config.pipe(Config.map((c): NatsClient.Options => ({
    ...c,
    servers: Option.getOrElse(server, () => c.servers),
    name: c.name ?? "effect-nats-cli",
    timeout: c.timeout ?? "5 seconds",
    drainTimeout: c.drainTimeout ?? "2 seconds"
  }))))

/** NatsClient + JetStream. */
export const jetStreamLayer = (server: Option.Option<string>) =>
  JetStream.layer.pipe(Layer.provideMerge(natsLayer(server)))

const isNotFound = (e: NatsError.NatsError) => e._tag === "NatsRequestError" && e.errCode === 10059

/** The DLQ stream is missing: nothing was dead-lettered on this server (or another `--stream` is meant). */
export class NoDeadLetterStream extends Data.TaggedError("NoDeadLetterStream")<{
  readonly stream: string
  readonly message: string
}> {}

/**
 * The DeadLetter service over an EXISTING dead-letter stream. `DeadLetter.layer`
 * ensures its stream with its own defaults (30 days, `dlq.>`), which would
 * update a stream that an application configured differently; so the options
 * are taken from the stream as it is, and a missing stream is not created.
 */
export const deadLetterLayer = (stream: string) =>
  Layer.unwrapEffect(Effect.gen(function*() {
    const js = yield* JetStream.JetStream
    const info = yield* js.streamInfo(stream).pipe(
      Effect.catchIf(isNotFound, () =>
        new NoDeadLetterStream({ stream, message: `there is no dead-letter stream ${stream} on this server` }))
    )
    const subjects = info.config.subjects ?? []
    const only = subjects.length === 1 ? subjects[0] : undefined
    if (only === undefined || !only.endsWith(".>") || only.length < 3) {
      return yield* new CliError({
        message: `stream ${stream} is not a dead-letter stream (subjects ${JSON.stringify(subjects)}, expected ["<prefix>.>"])`
      })
    }
    return DeadLetter.layer({
      stream,
      prefix: only.slice(0, -2),
      maxAge: Duration.millis(info.config.max_age / 1_000_000),
      replicas: info.config.num_replicas
    })
  }))
