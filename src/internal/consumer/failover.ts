/**
 * The signals that a consumer's pull is lost, and what the consumer says
 * about it.
 *
 * A pull request lives on the node leading the durable consumer: when that
 * node dies, the newly elected leader knows nothing of it and nats.js waits
 * for its own timers (two missed 15 s heartbeats, then `consumer.info()`):
 * about 40 s with no message. Three signals tell the consumer to issue its
 * pull again at once (see `Pull.restart`):
 *
 * - `advisory`: `$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED.<stream>.<durable>`
 *   (a core subscription per consumer): 1-4 ms after the election;
 * - `heartbeat`: the pull's short idle heartbeats stopped (nats.js's
 *   `heartbeats_missed`): covers a lost advisory or an account without
 *   `$JS.EVENT.>` permission, within two heartbeat intervals;
 * - `reconnect`: the connection reconnected (to the same or another node).
 *
 * A stall logs one warning when the pull is found lost and one when a
 * message or heartbeat comes again on the new pull, and counts in
 * `Metrics.consumerStalls`.
 *
 * @internal
 */
import type { ConsumerMessages } from "@nats-io/jetstream"
import { Effect, Metric, Runtime, type Scope, Stream } from "effect"
import * as Metrics from "../../Metrics.js"
import type { NatsClient } from "../../NatsClient.js"

/** What told the consumer that its pull was lost. */
export type Signal = "advisory" | "heartbeat" | "reconnect"

const what: Record<Signal, string> = {
  advisory: "a new consumer leader was elected",
  heartbeat: "its pull's heartbeats stopped",
  reconnect: "the connection reconnected"
}

/** A consumer's stall: from the first signal until a message or heartbeat comes on a new pull. */
export class Stall {
  private since = 0
  private signal: Signal = "heartbeat"

  constructor(
    private readonly durable: string,
    private readonly log: (effect: Effect.Effect<void>) => void
  ) {}

  /** Is the consumer waiting for its new pull to deliver? (read on every message: a field test) */
  get stalled(): boolean {
    return this.since !== 0
  }

  /** The pull was found lost: warn and count once per stall. */
  lost(signal: Signal): Effect.Effect<void> {
    return Effect.suspend(() => {
      this.signal = signal
      if (this.since !== 0) return Effect.void
      this.since = Date.now()
      return Effect.zipRight(
        Metric.increment(Metric.tagged(Metrics.consumerStalls, "signal", signal)),
        Effect.logWarning(`Consumer ${this.durable}: ${what[signal]}; its pull may be lost: pulling again`)
      )
    })
  }

  /** A message or heartbeat came on the current pull. */
  resumed(): void {
    if (this.since === 0) return
    const ms = Date.now() - this.since
    this.since = 0
    this.log(Effect.logWarning(`Consumer ${this.durable}: resumed after ${ms} ms, signal: ${this.signal}`))
  }
}

/**
 * Watch one pull's status until it ends: `lost` when its heartbeats stop,
 * `alive` on each heartbeat.
 */
export const watchPull = (
  messages: ConsumerMessages,
  lost: Effect.Effect<void>,
  alive: () => void
): Effect.Effect<void> =>
  Stream.fromAsyncIterable(messages.status(), () => undefined).pipe(
    Stream.runForEach((s) =>
      s.type === "heartbeats_missed" ? lost : s.type === "heartbeat" ? Effect.sync(alive) : Effect.void
    ),
    Effect.ignore
  )

/**
 * Watch the consumer's leader-elected advisory and the connection's
 * reconnects for the scope's lifetime, and run `lost` on each. An account
 * that may not subscribe to the advisory keeps the other two signals.
 */
export const watchConnection = (options: {
  readonly stream: string
  readonly durable: string
  readonly nats: NatsClient["Type"]
  readonly lost: (signal: Signal) => Effect.Effect<void>
}): Effect.Effect<void, never, Scope.Scope> =>
  Effect.gen(function*() {
    const { durable, lost, nats, stream } = options
    const runFork = Runtime.runFork(yield* Effect.runtime<never>())
    const subject = `$JS.EVENT.ADVISORY.CONSUMER.LEADER_ELECTED.${stream}.${durable}`
    yield* Effect.acquireRelease(
      Effect.try(() =>
        nats.connection.subscribe(subject, {
          callback: (err) => {
            if (err === null) runFork(lost("advisory"))
          }
        })
      ),
      (sub) => Effect.sync(() => sub.unsubscribe())
    ).pipe(
      Effect.catchAll((e) => Effect.logDebug(`Consumer ${durable}: no leader advisories (${subject})`, e))
    )
    yield* nats.status.pipe(
      Stream.filter((s) => s.type === "reconnect"),
      Stream.runForEach(() => lost("reconnect")),
      Effect.forkScoped
    )
  })
