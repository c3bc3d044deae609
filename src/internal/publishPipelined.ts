/**
 * The publisher's own `publishMessage`, without an Effect per message, for
 * callers that keep many publishes in flight (the outbox relay).
 *
 * @internal
 */
import type { Exit, Fiber, MetricLabel, Runtime } from "effect"
import type { Ack, OutgoingMessage, PublishError } from "../Publisher.js"

/**
 * Start publishing `message`. `done` is called once with the outcome (maybe
 * before `start` returns); a publish that runs in a fiber (a retry after a
 * failure, or a `publishMessage` that is not the publisher's own) passes it to
 * `track` first, so that the caller can interrupt it.
 */
export type StartPublish = (
  message: OutgoingMessage,
  done: (exit: Exit.Exit<Ack, PublishError>) => void,
  track: (fiber: Fiber.RuntimeFiber<Ack, PublishError>) => void
) => void

/**
 * The pipelined form of a publisher's `publishMessage`, keyed by that
 * function: a caller that finds it here may use it in place of
 * `publishMessage` when no tracer records (it creates no span). A wrapped
 * `publishMessage` is not found, and is called as it is.
 */
export const pipelined = new WeakMap<
  object,
  (runtime: Runtime.Runtime<never>, labels: ReadonlyArray<MetricLabel.MetricLabel>) => StartPublish
>()
