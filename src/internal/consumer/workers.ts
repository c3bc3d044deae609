/**
 * A consumer's workers: long-lived fibers that take messages from an inbox
 * a chunk at a time and run each through the pipeline; the keep-alive
 * (`working()` for messages handled longer than a third of `ack_wait`) and
 * the watchdog (`handlerTimeout`).
 *
 * @internal
 */
import type { JsMsg } from "@nats-io/jetstream"
import { Cause, Duration, Effect, Fiber, Metric, Option, Schedule, type Scope } from "effect"
import type * as Dedup from "../../Dedup.js"
import * as Metrics from "../../Metrics.js"
import type { Outcome } from "../../Middleware.js"
import type { Inbox } from "../inbox.js"
import { AggregateHold } from "./aggregateHold.js"
import type { HandBack } from "./handBack.js"
import { currentPendingAcks, PendingAcks } from "./pendingAcks.js"

/** What the workers run and how long a message may take. */
export interface Options<R> {
  readonly durable: string
  readonly concurrency: number
  /** One inbox per worker (ordered), or one shared by all. */
  readonly inboxes: ReadonlyArray<Inbox<JsMsg>>
  /** The pipeline, for one message. */
  readonly step: (msg: JsMsg) => Effect.Effect<Outcome, unknown, R>
  /** Settle a message the pipeline could not (nak, or a dead letter at its last delivery); tells which. */
  readonly giveUp: (
    msg: JsMsg,
    reason: "Timeout" | "MaxDeliveries",
    errorTag: string,
    message: string
  ) => Effect.Effect<"Nak" | "DeadLetter">
  readonly handBack: HandBack
  readonly ackWait: Duration.Duration
  readonly handlerTimeout: Duration.Duration
  /** Commit many messages at once (the dedup store's batch, see `Dedup.Batch`). */
  readonly batch: Option.Option<Dedup.Batch>
  /**
   * Messages of one aggregate are in order (`orderBy: "aggregate"`): a
   * message nak'ed holds its aggregate, its later messages are parked until
   * it is handled or dead-lettered (see `AggregateHold`); with `"block"`, a
   * dead letter holds its aggregate for the consumer's lifetime.
   */
  readonly ordered: false | { readonly onDeadLetter: "continue" | "block" }
}

/** The running workers. */
export interface Workers {
  /** The fibers of the running workers. */
  readonly fibers: () => ReadonlyArray<Fiber.RuntimeFiber<void, never>>
  /** Interrupt the workers, waiting a bounded time: a worker stuck in an uninterruptible handler is left behind. */
  readonly interrupt: Effect.Effect<void>
  /** Remove and return the parked messages of an ordered consumer (to hand them back when stopping). */
  readonly takeParked: () => Array<JsMsg>
}

/**
 * A worker's current message, for the keep-alive and the watchdog. A slot
 * exists only while its worker's fiber runs (removed when the fiber ends,
 * however it ends): a message is kept alive only by a running fiber.
 */
interface Slot {
  readonly index: number
  msg: JsMsg | undefined
  since: number
  /** The watchdog settled `msg` and replaced this worker. */
  expired: boolean
}

/**
 * Start `concurrency` workers (daemons, interrupted when the scope closes if
 * the drain has not stopped them) and the keep-alive and watchdog fiber.
 */
export const start = <R>(options: Options<R>): Effect.Effect<Workers, never, Scope.Scope | R> =>
  Effect.gen(function*() {
    const { durable, handBack, inboxes } = options
    const batch = Option.getOrUndefined(options.batch)
    const handlerTimeout = Duration.toMillis(options.handlerTimeout)
    const running = new Map<Slot, Fiber.RuntimeFiber<void, never>>()
    // ordered: the holds of each worker inbox (a replaced worker takes over its inbox's hold)
    const ordered = options.ordered
    const holds = ordered === false
      ? []
      : inboxes.map(() => new AggregateHold(Duration.toMillis(options.ackWait), ordered.onDeadLetter === "block"))
    const fibers = () => [...running.values()]
    const interrupt = Effect.suspend(() =>
      Fiber.interruptAll(fibers()).pipe(Effect.interruptible, Effect.timeoutOption("1 second"), Effect.asVoid)
    )

    const pipelineFailed = (msg: JsMsg, cause: Cause.Cause<unknown>) =>
      Effect.zipRight(
        Effect.logError(`Consumer ${durable}: pipeline failed on ${msg.subject}#${msg.info.streamSequence}`, cause),
        options.giveUp(msg, "MaxDeliveries", "PipelineDefect", `the pipeline failed: ${Cause.pretty(cause).slice(0, 1024)}`)
      )
    // a message settled outside the pipeline, in an ordered consumer: the parked messages it releases are handed back
    const settledOutside = (index: number, msg: JsMsg) => (tag: "Nak" | "DeadLetter") =>
      Effect.sync(() => {
        for (const released of holds[index]?.settled(msg, tag) ?? []) released.nak()
      })

    const worker = (slot: Slot): Effect.Effect<void, never, R> => {
      const inbox = inboxes[inboxes.length === 1 ? 0 : slot.index]!
      const hold = holds[slot.index]
      // the chunk being worked on, and the message at `position`: when stopping, or interrupted (drain
      // timeout, watchdog), what the worker has not started is handed back
      let chunk: ReadonlyArray<JsMsg> = []
      let position = -1
      let handedBack = false
      // a pipeline that fails or dies (the message is `chunk[position]`), unless the watchdog settled it
      const failed = (cause: Cause.Cause<unknown>): Effect.Effect<Outcome | "Nak" | "DeadLetter" | undefined> =>
        slot.expired ? Effect.succeed(undefined) : pipelineFailed(chunk[position]!, cause)
      // ordered: the parked messages that `msg` released run next, before the rest of the chunk
      const release = (msg: JsMsg) => (outcome: Outcome | "Nak" | "DeadLetter" | undefined) => {
        if (outcome === undefined) return outcome
        const released = hold!.settled(msg, outcome)
        if (released.length > 0) chunk = [...chunk.slice(0, position + 1), ...released, ...chunk.slice(position + 1)]
        return outcome
      }
      // the next message of the chunk; when stopping, it and the rest are handed back instead; in an ordered
      // consumer, a message whose aggregate is held is parked
      const handleNext = (): Effect.Effect<unknown, never, R> => {
        const i = ++position
        const msg = chunk[i]!
        if (handBack.stopping) {
          handedBack = true
          handBack.giveBack(chunk.slice(i))
          return Effect.void
        }
        if (hold !== undefined && !hold.admit(msg)) return Effect.void
        slot.msg = msg
        slot.since = performance.now()
        // whatever the pipeline throws while building its effect is a failure of this message
        let handled: Effect.Effect<Outcome, unknown, R>
        try {
          handled = options.step(msg)
        } catch (defect) {
          handled = Effect.die(defect)
        }
        const settled = Effect.catchAllCause(handled, failed)
        return hold === undefined ? settled : Effect.map(settled, release(msg))
      }
      const done = () => {
        slot.msg = undefined
      }
      const handleChunk = Effect.whileLoop({
        while: () => position + 1 < chunk.length && !handedBack && !slot.expired,
        body: handleNext,
        step: done
      })
      const run = (taken: ReadonlyArray<JsMsg>): Effect.Effect<void, never, R> => {
        chunk = taken
        position = -1
        handedBack = false
        // (the chunk is let go before waiting for the next: a worker holds no message it is done with)
        return Effect.zipRight(batch === undefined ? handleChunk : handleBatch(batch), Effect.suspend(() => {
          chunk = []
          return loop
        }))
      }
      // a chunk at a time; the worker ends when the inbox is closed and empty (graceful drain). A batch takes its
      // messages once its transaction is open: workers waiting for the database hold none
      const loop: Effect.Effect<void, never, R> = batch === undefined
        ? Effect.flatMap(inbox.take, (taken) => taken === undefined || slot.expired ? Effect.void : run(taken))
        : Effect.flatMap(inbox.ready, (open) => !open || slot.expired ? Effect.void : run([]))

      // batches: the acks of the batch being run, sent after its commit
      let pending: PendingAcks | undefined
      // the messages of the batch: the chunk, then what becomes ready while it runs (up to the batch's size and time)
      const handleBatch = (batch: Dedup.Batch) =>
        Effect.suspend(() => {
          const acks = new PendingAcks()
          pending = acks
          const started = performance.now()
          const maxDelay = Duration.toMillis(batch.maxDelay)
          const more = () => {
            if (handedBack || slot.expired) return false
            if (position + 1 < chunk.length) return true
            if (chunk.length >= batch.maxMessages || performance.now() - started >= maxDelay || handBack.stopping) return false
            const ready = inbox.poll(batch.maxMessages - chunk.length)
            if (ready === undefined) return false
            chunk = chunk.concat(ready)
            return true
          }
          const body = Effect.whileLoop({ while: more, body: handleNext, step: done })
          return batch.run(Effect.locally(body, currentPendingAcks, acks)).pipe(
            Effect.matchCauseEffect({
              onSuccess: () => Effect.zipRight(Metric.update(Metrics.batchSize, acks.msgs.length), acks.send),
              onFailure: (cause) => Cause.isInterruptedOnly(cause) ? Effect.failCause(cause as Cause.Cause<never>) : batchFailed(acks, cause)
            }),
            Effect.ensuring(Effect.sync(() => {
              pending = undefined
            }))
          )
        })
      // the batch did not commit: its handled messages' effects are rolled back, and what it did not start was not
      // handled: nak them all (or dead-letter them at their last delivery)
      const batchFailed = (acks: PendingAcks, cause: Cause.Cause<unknown>) => {
        const unsettled = [...acks.msgs, ...chunk.slice(position + 1)]
        position = chunk.length
        const message = `the batch's transaction failed: ${Cause.pretty(cause).slice(0, 512)}`
        return Effect.zipRight(
          Effect.logError(`Consumer ${durable}: a batch of ${unsettled.length} messages did not commit; handing them back`, cause),
          Effect.forEach(
            unsettled,
            (msg) => Effect.flatMap(options.giveUp(msg, "MaxDeliveries", "BatchFailed", message), settledOutside(slot.index, msg)),
            { discard: true }
          )
        )
      }
      return loop.pipe(
        Effect.onInterrupt(() =>
          Effect.sync(() => {
            // a batch interrupted is rolled back: its handled messages go back too
            if (pending !== undefined) handBack.giveBack(pending.msgs)
            if (!handedBack) handBack.giveBack(chunk.slice(position + 1))
          })
        ),
        Effect.ensuring(Effect.sync(() => {
          slot.msg = undefined
          running.delete(slot)
        }))
      )
    }

    // workers are daemons, stopped by the drain (or by this finalizer if the consumer never started):
    // closing the scope must not wait for a worker the watchdog gave up on
    const startWorker = (index: number) =>
      Effect.flatMap(
        Effect.sync((): Slot => ({ index, msg: undefined, since: 0, expired: false })),
        (slot) => Effect.map(Effect.forkDaemon(worker(slot)), (fiber) => void running.set(slot, fiber))
      )
    yield* Effect.addFinalizer(() => interrupt)
    yield* Effect.forEach(Array.from({ length: options.concurrency }, (_, i) => i), startWorker, { discard: true })

    /**
     * The watchdog: a message handled for longer than `handlerTimeout` is
     * settled here (nak, or a dead letter at its last delivery), and its
     * worker is interrupted (without waiting: it may never resume) and
     * replaced. If the old handler does finish, its late settle is ignored
     * by the server or is a redelivery the dedup stage catches.
     */
    const timeout = Duration.format(options.handlerTimeout)
    const expire = (slot: Slot, msg: JsMsg, fiber: Fiber.RuntimeFiber<void, never>) =>
      Effect.all([
        Effect.logError(
          `Consumer ${durable}: ${msg.subject}#${msg.info.streamSequence} was handled for more than ` +
            `${timeout}; settling it and replacing the worker`
        ),
        Metric.increment(Metrics.handlerTimeouts),
        Effect.flatMap(
          options.giveUp(msg, "Timeout", "HandlerTimeout", `handling exceeded the handler timeout of ${timeout}`),
          settledOutside(slot.index, msg)
        ),
        // abandoned: interrupted without waiting, no longer a worker of this consumer
        Effect.sync(() => running.delete(slot)),
        Fiber.interruptFork(fiber),
        Effect.suspend(() => handBack.stopping ? Effect.void : startWorker(slot.index))
      ], { discard: true })

    // keep handled messages alive with working(), from running workers only; the watchdog expires the overdue
    const keepAliveEvery = Duration.toMillis(options.ackWait) / 3
    const tick = Math.max(100, Math.min(keepAliveEvery, handlerTimeout / 4))
    let lastTick = performance.now()
    yield* Effect.suspend(() => {
      const now = performance.now()
      // a late tick means this process was stalled (a blocked event loop, no CPU): a held message could not
      // arrive meanwhile (it may be waiting in the socket), so the holds' expiry moves by as much
      const stalled = Math.max(0, now - lastTick - tick)
      lastTick = now
      const overdue: Array<readonly [Slot, JsMsg, Fiber.RuntimeFiber<void, never>]> = []
      for (const hold of holds) hold.keepAlive(now, stalled)
      for (const [slot, fiber] of running) {
        const msg = slot.msg
        if (msg === undefined || slot.expired) continue
        const age = now - slot.since
        if (age > handlerTimeout) {
          slot.expired = true
          overdue.push([slot, msg, fiber])
        } else if (age > keepAliveEvery) {
          msg.working()
        }
      }
      return Effect.forEach(overdue, ([slot, msg, fiber]) => expire(slot, msg, fiber), { discard: true })
    }).pipe(
      Effect.repeat(Schedule.spaced(Duration.millis(tick))),
      Effect.forkScoped
    )

    const takeParked = () => holds.flatMap((hold) => hold.takeAll())
    return { fibers, interrupt, takeParked }
  })
