/**
 * Replay: feed a stream's history into another subject (a backfill), or
 * start a durable consumer at a point of it. `effect-nats replay` (the CLI)
 * runs these.
 *
 * {@link toSubject} reads the messages stored from `from` (matching
 * `filterSubject`, up to `until`) with the projections' ordered reader and
 * publishes each one, bytes and headers as stored, to `to` (a subject; one
 * ending in `.>` is a prefix put before the original subject). Each copy has
 * `Nats-Msg-Id: replay:<stream>:<seq>`, so running the same replay again
 * within the target stream's duplicate window stores nothing twice. Live
 * messages stored after the replay started are not copied.
 *
 * @since 0.2.0
 */
import { headers as makeHeaders } from "@nats-io/nats-core"
import type { ConsumerInfo, JsMsg } from "@nats-io/jetstream"
import { Clock, Effect } from "effect"
import * as Envelope from "./Envelope.js"
import * as History from "./internal/history.js"
import { type DeliverFrom, type Ensured, JetStream, type JetStreamProvisionError } from "./JetStream.js"
import * as NatsError from "./NatsError.js"
import * as Subject from "./Subject.js"

/**
 * What to replay.
 *
 * @since 0.2.0
 * @category models
 */
export interface Options {
  readonly stream: string
  readonly filterSubject?: string | undefined
  /** Where the history starts (default `all`). */
  readonly from?: DeliverFrom | undefined
  /** Stop at the first message stored after this time. */
  readonly until?: Date | undefined
}

/**
 * What a replay did.
 *
 * @since 0.2.0
 * @category models
 */
export interface Result {
  readonly replayed: number
  /** Stream sequences of the first and last message copied (0 when none). */
  readonly first: number
  readonly last: number
  /** Messages per second. */
  readonly rate: number
}

const window = 256

/**
 * Copy a stream's history to a subject (see the module doc). `onProgress`
 * is called after every batch with the count copied and the history's size.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Replay } from "effect-nats"
 *
 * // yesterday's invoices, into the backfill subjects of a new service's stream
 * const backfill = Replay.toSubject({
 *   stream: "BILLING",
 *   filterSubject: "billing.invoice.>",
 *   from: { startTime: new Date(Date.now() - 86_400_000) },
 *   to: "backfill.>"
 * }).pipe(Effect.tap((r) => Effect.log(`replayed ${r.replayed} at ${Math.round(r.rate)}/s`)))
 * ```
 *
 * @since 0.2.0
 * @category replay
 */
export const toSubject = (
  options: Options & { readonly to: string },
  onProgress?: (done: number, total: number) => Effect.Effect<void>
): Effect.Effect<Result, NatsError.NatsError | Subject.InvalidSubjectError, JetStream> =>
  Effect.scoped(Effect.gen(function*() {
    const js = yield* JetStream
    const prefix = options.to.endsWith(".>") ? options.to.slice(0, -1) : undefined
    yield* Subject.make(...(prefix === undefined ? options.to : prefix.slice(0, -1)).split("."))
    const target = (subject: string) => prefix === undefined ? options.to : prefix + subject
    const reader = yield* History.open(js, options)
    const until = options.until?.getTime()
    const started = yield* Clock.currentTimeMillis
    let done = 0
    let first = 0
    let last = 0
    const publish = (msg: JsMsg) => {
      const h = makeHeaders()
      for (const [k, vs] of msg.headers ?? []) for (const v of vs) h.append(k, v)
      h.set(Envelope.HeaderNames.msgId, `replay:${options.stream}:${msg.seq}`)
      return Effect.tryPromise({
        try: () => js.publish(target(msg.subject), msg.data, h, 10_000),
        catch: NatsError.fromCause("Replay.toSubject", target(msg.subject))
      })
    }
    let ended = false
    while (!ended && done < reader.total) {
      const batch: Array<JsMsg> = []
      while (batch.length < window && done + batch.length < reader.total) {
        const msg = yield* reader.next
        if (until !== undefined && msg.info.timestampNanos / 1e6 > until) {
          ended = true
          break
        }
        batch.push(msg)
      }
      yield* Effect.forEach(batch, publish, { concurrency: window, discard: true })
      if (batch.length > 0) {
        if (first === 0) first = batch[0]!.seq
        last = batch[batch.length - 1]!.seq
      }
      done += batch.length
      if (onProgress !== undefined) yield* onProgress(done, reader.total)
    }
    const elapsed = (yield* Clock.currentTimeMillis) - started
    return { replayed: done, first, last, rate: elapsed > 0 ? (done * 1000) / elapsed : done }
  }))

/**
 * Create a durable consumer that starts at `from` (a backfill for the
 * service that runs it: it handles the history from there, then the live
 * events). A durable of that name must not exist with another start; the
 * service then runs it with the same `deliverPolicy` (or `provision: false`).
 *
 * @example
 * ```ts
 * import { Replay } from "effect-nats"
 *
 * const reprocess = Replay.toDurable({
 *   stream: "BILLING",
 *   durable: "payments-backfill",
 *   from: { startSequence: 1_000 }
 * })
 * ```
 *
 * @since 0.2.0
 * @category replay
 */
export const toDurable = (
  options: Omit<Options, "until"> & { readonly durable: string }
): Effect.Effect<Ensured<ConsumerInfo>, JetStreamProvisionError | NatsError.NatsError, JetStream> =>
  Effect.flatMap(JetStream, (js) =>
    js.ensureConsumer({
      stream: options.stream,
      durable: options.durable,
      filterSubject: options.filterSubject,
      deliverPolicy: options.from
    }))
