/**
 * A consumer's pull: nats.js pulls in callback mode and each message is put
 * into its worker's inbox (or handed back, once the consumer is stopping).
 *
 * The pull can be lost with the node that leads the durable consumer (see
 * `failover.ts`): on each signal of that, `restart` starts a fresh pull on
 * the same consumer and closes the one it replaces. One pull is current at a
 * time; `close` (the drain) closes it and any pull still being replaced.
 *
 * @internal
 */
import type { ConsumerMessages, JsMsg } from "@nats-io/jetstream"
import { Cause, Duration, Effect, Runtime, Schedule, type Scope } from "effect"
import type { JetStream } from "../../JetStream.js"
import * as Metrics from "../../Metrics.js"
import type { NatsClient } from "../../NatsClient.js"
import * as NatsError from "../../NatsError.js"
import * as Subject from "../../Subject.js"
import type { Inbox } from "../inbox.js"
import { aggregateOf } from "./aggregateHold.js"
import * as Failover from "./failover.js"
import type { HandBack } from "./handBack.js"

/** The extra metric labels of the consumed counter (none: the fiber's own labels do not reach the nats.js callback). */
const noLabels: ReadonlyArray<never> = []

/** What the pull needs. */
export interface Options {
  readonly stream: string
  readonly durable: string
  /** Messages asked for in one pull. */
  readonly maxMessages: number
  /** The pull's idle heartbeat: two missed mean the pull is lost. */
  readonly heartbeat: Duration.Duration
  /** One inbox per worker, chosen by the `Aggregate-Id` header (else the subject), or one shared by all. */
  readonly inboxes: ReadonlyArray<Inbox<JsMsg>>
  readonly handBack: HandBack
  /**
   * An ordered consumer started while its durable had messages pending (an
   * instance that crashed left them unacked, up to `upTo`, the durable's
   * last delivered stream sequence): they come back in any order, once
   * their ack wait (`wait`) runs out. Every message is kept back, alive,
   * until all the pending ones are here, then handed to the workers in
   * stream order; if some do not come (another instance has them), once
   * none came for twice `wait`.
   */
  readonly fence?: { readonly upTo: number; readonly wait: Duration.Duration } | undefined
  readonly js: JetStream["Type"]
  readonly nats: NatsClient["Type"]
}

/** The consumer's pull. */
export interface Pull {
  /** Start a fresh pull and close the current one (if `from` is given, only if it is still the current one). */
  readonly restart: (signal: Failover.Signal, from?: ConsumerMessages) => Effect.Effect<void>
  /** Close the pull, and any pull still being replaced; no restart after this. */
  readonly close: Effect.Effect<void>
}

/**
 * Close one pull. nats.js drops what arrives after an unsubscribe: drain the
 * pull's subscription first (unsubscribe, then a round trip), so that what the
 * server had already sent still reaches the callback.
 */
const closeMessages = (messages: ConsumerMessages): Promise<void> => {
  const sub = (messages as { readonly sub?: { drain(): Promise<void> } }).sub
  const closed = (async () => {
    await sub?.drain().catch(() => undefined)
    await messages.close().catch(() => undefined)
  })()
  // a connection that is down may never answer the drain's round trip
  let timer: ReturnType<typeof setTimeout> | undefined
  const timeout = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      messages.stop()
      resolve()
    }, 5000)
  })
  return Promise.race([closed, timeout]).finally(() => clearTimeout(timer))
}

/** Start pulling, and watch for the signals that the pull is lost, for the scope's lifetime. */
export const start = (options: Options): Effect.Effect<Pull, NatsError.NatsError, Scope.Scope> =>
  Effect.gen(function*() {
    const { durable, handBack, inboxes } = options
    const route = (msg: JsMsg): Inbox<JsMsg> => {
      if (inboxes.length === 1) return inboxes[0]!
      return inboxes[Subject.partition(aggregateOf(msg) ?? msg.subject, inboxes.length)]!
    }
    // the fence: everything that arrives waits (kept alive) until the messages left pending have come back, then goes
    // to the inboxes in stream order
    let fenced: Array<JsMsg> | undefined
    // when the last message up to `upTo` (a redelivery) came
    let lastPending = performance.now()
    const fence = options.fence
    const offer = (msg: JsMsg) => {
      if (fenced === undefined) return route(msg).offer(msg)
      if (msg.seq <= fence!.upTo) lastPending = performance.now()
      fenced.push(msg)
    }
    if (fence !== undefined) {
      fenced = []
      const wait = Duration.toMillis(fence.wait)
      yield* Effect.logInfo(
        `Consumer ${durable}: messages up to #${fence.upTo} are pending; waiting for their redelivery before handling other messages`
      )
      const lift = Effect.sync(() => {
        const waiting = (fenced ?? []).sort((a, b) => a.seq - b.seq)
        fenced = undefined
        for (const msg of waiting) {
          if (handBack.stopping) handBack.giveBack([msg])
          else route(msg).offer(msg)
        }
      })
      // lifted once every message pending on the durable is here (a single instance), or when none of those up to
      // `upTo` came for twice the ack wait (another instance has them, or they were acked: the server finds expired
      // messages on a timer); meanwhile the fenced messages are kept alive
      let alive = performance.now()
      const every = Math.min(1000, Math.max(50, wait / 6))
      let lastCheck = performance.now()
      const check = Effect.gen(function*() {
        const now = performance.now()
        // a late check means this process was stalled: the pending messages may be waiting in the socket, so the
        // stall does not count as time in which none came
        lastPending += Math.max(0, now - lastCheck - every)
        if (now - alive > wait / 3) {
          alive = now
          for (const msg of fenced ?? []) msg.working()
        }
        if (now - lastPending >= 2 * wait) return true
        const info = yield* Effect.option(options.js.consumerInfo(options.stream, durable))
        lastCheck = performance.now()
        return info._tag === "Some" && info.value.num_ack_pending <= (fenced?.length ?? 0)
      })
      yield* check.pipe(
        Effect.repeat({ schedule: Schedule.spaced(Duration.millis(every)), until: (done) => done }),
        Effect.zipRight(lift),
        Effect.forkScoped
      )
      // stopping: the fenced messages are handed back with the rest
      yield* Effect.addFinalizer(() => Effect.sync(() => fenced === undefined ? undefined : handBack.giveBack(fenced.splice(0))))
    }
    const runFork = Runtime.runFork(yield* Effect.runtime<never>())
    const scope = yield* Effect.scope
    const stall = new Failover.Stall(durable, runFork)
    const heartbeat = Math.max(500, Duration.toMillis(options.heartbeat))
    const consumer = yield* Effect.tryPromise({
      try: () => options.js.client.consumers.get(options.stream, durable),
      catch: NatsError.fromCause("Consumer.get")
    })

    const lock = yield* Effect.makeSemaphore(1)
    let closed = false
    const closing = new Set<Promise<void>>()
    let current: ConsumerMessages | undefined
    const consume = Effect.suspend(() => {
      // a stall ends with a message or heartbeat of the current pull, not of one being closed
      let self: ConsumerMessages | undefined
      const alive = () => {
        if (self === current) stall.resumed()
      }
      return Effect.tryPromise({
        try: () =>
          consumer.consume({
            max_messages: options.maxMessages,
            idle_heartbeat: heartbeat,
            expires: Math.max(30_000, 2 * heartbeat),
            callback: (msg) => {
              // nothing may escape into nats.js (it would end the pull)
              try {
                if (handBack.stopping) {
                  handBack.giveBack([msg])
                  return
                }
                if (stall.stalled) alive()
                Metrics.consumed.unsafeUpdate(1, noLabels)
                offer(msg)
              } catch (defect) {
                Metrics.callbackDefects.unsafeUpdate(1, noLabels)
                runFork(Effect.logError(`Consumer ${durable}: cannot take ${msg.subject}`, Cause.die(defect)))
                try {
                  msg.nak()
                } catch {
                  // the connection is closing: the server redelivers after ack_wait
                }
              }
            }
          }),
        catch: NatsError.fromCause("Consumer.consume")
      }).pipe(
        Effect.tap((messages) => {
          self = messages
          return Effect.forkIn(Failover.watchPull(messages, restart("heartbeat", messages), alive), scope)
        })
      )
    })

    current = yield* consume
    const retire = (messages: ConsumerMessages) => {
      const done = closeMessages(messages).finally(() => closing.delete(done))
      closing.add(done)
    }

    function restart(signal: Failover.Signal, from?: ConsumerMessages): Effect.Effect<void> {
      return lock.withPermits(1)(Effect.suspend(() => {
        if (closed || (from !== undefined && from !== current)) return Effect.void
        return stall.lost(signal).pipe(
          Effect.zipRight(consume),
          Effect.matchEffect({
            // the current pull stays: its heartbeats or the next signal try again
            onFailure: (e) => Effect.logError(`Consumer ${durable}: cannot pull again`, e),
            onSuccess: (messages) =>
              Effect.sync(() => {
                if (current !== undefined) retire(current)
                current = messages
              })
          })
        )
      }))
    }

    const close = lock.withPermits(1)(Effect.sync(() => {
      closed = true
      if (current !== undefined) retire(current)
    })).pipe(Effect.zipRight(Effect.promise(() => Promise.all(closing))), Effect.asVoid)

    yield* Failover.watchConnection({ stream: options.stream, durable, nats: options.nats, lost: (signal) => restart(signal) })
    return { restart, close }
  })
