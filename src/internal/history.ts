/**
 * Reading a stream's history: an ordered consumer (ephemeral, no acks,
 * flow-controlled; nats.js re-creates it from the last sequence it delivered
 * when it sees a gap, so nothing is missed or delivered twice) from a start
 * position, preceded by a probe that counts the messages already stored
 * there (the "total" of a replay: the first `total` messages delivered are
 * the history, every later one is live).
 *
 * @internal
 */
import type { JsMsg } from "@nats-io/jetstream"
import { AckPolicy } from "@nats-io/jetstream"
import { nanos } from "@nats-io/nats-core"
import { Effect, Scope } from "effect"
import { type DeliverFrom, deliverConfig, type JetStream } from "../JetStream.js"
import * as NatsError from "../NatsError.js"

/** A history being read. */
export interface Reader {
  /** Messages stored from the start position (matching the filter) when the read began. */
  readonly total: number
  /** The next message, in stream order (waits for live ones once the history is read). */
  readonly next: Effect.Effect<JsMsg, NatsError.NatsError>
}

/** What to read. */
export interface Options {
  readonly stream: string
  readonly filterSubject?: string | undefined
  readonly from?: DeliverFrom | undefined
}

/** Open a reader of a stream's history, closed with the scope. */
export const open = (
  js: JetStream["Type"],
  options: Options
): Effect.Effect<Reader, NatsError.NatsError, Scope.Scope> =>
  Effect.gen(function*() {
    const start = deliverConfig(options.from)
    const fail = NatsError.fromCause("History.open", options.filterSubject)
    // the probe: an ephemeral consumer at the same start, for its pending count
    const probe = yield* Effect.tryPromise({
      try: () =>
        js.manager.consumers.add(options.stream, {
          ...start,
          ack_policy: AckPolicy.None,
          inactive_threshold: nanos(10_000),
          mem_storage: true,
          ...(options.filterSubject === undefined ? {} : { filter_subject: options.filterSubject })
        }),
      catch: fail
    })
    yield* Effect.promise(() => js.manager.consumers.delete(options.stream, probe.name).catch(() => false))
    // the reader starts where the probe did (its first sequence - 1 is its delivered stream sequence), so the
    // probe's count is the reader's history, also for `new` and a time (last_per_subject is not a range)
    const from = options.from === "last_per_subject"
      ? start
      : deliverConfig({ startSequence: probe.delivered.stream_seq + 1 })
    // the reader itself: created at the first read (a read of nothing costs nothing more)
    const scope = yield* Effect.scope
    const iterator = yield* Effect.cached(Effect.gen(function*() {
      const consumer = yield* Effect.tryPromise({
        try: () =>
          js.client.consumers.get(options.stream, {
            ...from,
            ...(options.filterSubject === undefined ? {} : { filter_subjects: options.filterSubject })
          }),
        catch: fail
      })
      const messages = yield* Effect.acquireRelease(
        Effect.tryPromise({ try: () => consumer.consume({ max_messages: 1000 }), catch: fail }),
        (m) => Effect.sync(() => m.stop())
      ).pipe(Scope.extend(scope))
      return messages[Symbol.asyncIterator]()
    }))
    const next = Effect.flatMap(
      Effect.flatMap(iterator, (it) => Effect.tryPromise({ try: () => it.next(), catch: fail })),
      (r) =>
        r.done
          ? Effect.fail(
            new NatsError.NatsConnectionError({
              reason: "Closed",
              method: "History.next",
              servers: "",
              message: "the history reader was closed"
            })
          )
          : Effect.succeed(r.value)
    )
    return { total: probe.num_pending, next }
  })
