/**
 * A consumer's graceful drain, on scope close (before the workers are
 * stopped and the connection drains): stop starting messages, close the pull,
 * hand back what no worker started, and let the running handlers finish
 * (bounded by `drainTimeout`, then they are interrupted).
 *
 * @internal
 */
import type { JsMsg } from "@nats-io/jetstream"
import { Duration, Effect, Fiber, Option, type Scope } from "effect"
import type { Inbox } from "../inbox.js"
import type { HandBack } from "./handBack.js"
import type { Pull } from "./pull.js"
import type { Workers } from "./workers.js"

/** Drain the consumer when the scope closes. */
export const onClose = (options: {
  readonly durable: string
  readonly pull: Pull
  readonly inboxes: ReadonlyArray<Inbox<JsMsg>>
  readonly handBack: HandBack
  readonly workers: Workers
  readonly drainTimeout: Duration.DurationInput
}): Effect.Effect<void, never, Scope.Scope> => {
  const { durable, handBack, inboxes, pull, workers } = options
  return Effect.addFinalizer(() =>
      Effect.gen(function*() {
        // stop: no message is started any more; the handlers running finish (bounded by drainTimeout);
        // every message not started (waiting, or still delivered by nats.js) goes back once the pull is closed
        handBack.stopping = true
        for (const inbox of inboxes) handBack.giveBack(inbox.takeAll())
        // close the current pull (and any being replaced): what the server had already sent is handed back
        yield* pull.close.pipe(Effect.interruptible, Effect.timeoutOption("5 seconds"))
        handBack.closePull()
        for (const inbox of inboxes) inbox.close()
        const finished = yield* Fiber.joinAll(workers.fibers()).pipe(
          Effect.interruptible,
          Effect.timeoutOption(options.drainTimeout)
        )
        if (Option.isNone(finished)) {
          yield* Effect.logWarning(
            `Consumer ${durable}: handlers still running after ${Duration.format(Duration.decode(options.drainTimeout))}; interrupting them`
          )
          yield* workers.interrupt
        }
        for (const inbox of inboxes) handBack.giveBack(inbox.takeAll())
        handBack.giveBack(workers.takeParked())
      })
    )
}
