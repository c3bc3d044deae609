/**
 * The watcher of the server's max-deliveries advisory: a message the server
 * gave up on (`max_deliver` reached without the pipeline settling it, e.g. a
 * worker that crashed on it every time) is copied to the dead-letter stream.
 *
 * @internal
 */
import type { Subscription } from "@nats-io/nats-core"
import { Effect, Metric, Queue, type Scope } from "effect"
import type * as DeadLetter from "../../DeadLetter.js"
import type { JetStream } from "../../JetStream.js"
import * as Metrics from "../../Metrics.js"
import type { NatsClient } from "../../NatsClient.js"
import * as NatsError from "../../NatsError.js"

interface AdvisoryPayload {
  readonly stream?: string
  readonly consumer?: string
  readonly stream_seq?: number
  readonly deliveries?: number
}

/** Subscribe to the advisories of `stream` / `durable` and copy each message they name, for the scope's lifetime. */
export const watchMaxDeliveries = (options: {
  readonly stream: string
  readonly durable: string
  readonly maxDeliver: number
  readonly js: JetStream["Type"]
  readonly nats: NatsClient["Type"]
  readonly deadLetter: DeadLetter.DeadLetter["Type"]
}): Effect.Effect<void, NatsError.NatsError, Scope.Scope> =>
  Effect.gen(function*() {
    const { deadLetter, durable, js, nats, stream } = options
    const advisories = yield* Queue.unbounded<AdvisoryPayload>()
    const subject = `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.${stream}.${durable}`
    yield* Effect.acquireRelease(
      Effect.try({
        try: () =>
          nats.connection.subscribe(subject, {
            queue: `effect-nats.dlq.${durable}`,
            callback: (err, m) => {
              if (err === null) {
                try {
                  Queue.unsafeOffer(advisories, m.json<AdvisoryPayload>())
                } catch {
                  // not JSON: nothing to copy
                }
              }
            }
          }),
        catch: NatsError.fromCause("Consumer.advisories", subject)
      }),
      (sub: Subscription) => Effect.sync(() => sub.unsubscribe())
    )
    const copy = (a: AdvisoryPayload) => {
      const seq = a.stream_seq
      if (seq === undefined) return Effect.void
      return Effect.tryPromise(() => js.manager.streams.getMessage(stream, { seq })).pipe(
        Effect.flatMap((m) =>
          m === null ? Effect.void : deadLetter.send({
            subject: m.subject,
            headers: m.header,
            data: m.data,
            reason: "MaxDeliveries",
            errorTag: "MaxDeliveries",
            errorMessage: `the server stopped delivering after ${a.deliveries ?? "max"} deliveries`,
            attempts: a.deliveries ?? options.maxDeliver + 1,
            stream,
            consumer: durable,
            sequence: seq,
            storedAt: m.time.getTime()
          }).pipe(Effect.zipRight(Metric.increment(Metrics.deadLettered)))
        ),
        Effect.catchAll((e) => Effect.logError(`Consumer ${durable}: cannot copy ${stream}#${seq} to the DLQ`, e))
      )
    }
    yield* Queue.take(advisories).pipe(Effect.flatMap(copy), Effect.forever, Effect.forkScoped)
  })
