/**
 * `CommandClient.subscribe`: the events published on an event's subject,
 * handled over core NATS (no acks, no redelivery), one at a time, until the
 * scope closes.
 *
 * @internal
 */
import type { Msg } from "@nats-io/nats-core"
import { Effect, Queue, Schema, type Scope } from "effect"
import * as Envelope from "../Envelope.js"
import type * as Event from "../Event.js"
import type * as Limits from "../Limits.js"
import type { NatsClient } from "../NatsClient.js"
import * as NatsError from "../NatsError.js"
import * as Tracing from "../Tracing.js"
import * as Codec from "./codec.js"
import * as Json from "./json.js"
import { messagingSpan, parentOf } from "./spans.js"
import * as ParseIssues from "./parseIssues.js"

/**
 * Subscribe `handle` to an event's subject. Messages over the limits, that do
 * not decode, and handler failures are logged and skipped. A CONSUMER span
 * per message when a tracer records (read when the subscription starts, the
 * rule of `Tracing.isRecording`).
 */
export const subscribe = <A, I, RS, E, R>(
  nats: NatsClient["Type"],
  limits: Limits.Resolved,
  event: Event.Event<string, A, I, RS>,
  handle: (envelope: Envelope.Envelope<A>) => Effect.Effect<void, E, R>,
  options: { readonly queue?: string | undefined }
): Effect.Effect<void, NatsError.NatsError, Scope.Scope | RS | R> =>
  Effect.gen(function*() {
    const decode = Codec.decoder(Schema.parseJson(event.envelope), { errors: "all" })
    const recording = yield* Tracing.isRecording
    const queue = yield* Effect.acquireRelease(Queue.unbounded<Msg>(), Queue.shutdown)
    yield* Effect.acquireRelease(
      Effect.try({
        try: () =>
          nats.connection.subscribe(event.subject, {
            ...(options.queue !== undefined ? { queue: options.queue } : {}),
            callback: (err, msg) => {
              if (err === null) Queue.unsafeOffer(queue, msg)
            }
          }),
        catch: NatsError.fromCause("CommandClient.subscribe", event.subject, nats.servers)
      }),
      (sub) => Effect.sync(() => sub.unsubscribe()).pipe(Effect.ignore)
    )
    const span = messagingSpan("consumer", "process", event.subject)
    const one = (msg: Msg) => {
      const refused = Json.exceeds(msg.data, limits.maxDepth, limits.maxBytes)
      if (refused !== undefined) {
        return Effect.logWarning(`CommandClient.subscribe: a message on ${msg.subject} is refused: ${refused.message}`)
      }
      const handled = decode(msg.string()).pipe(
        Effect.matchEffect({
          onFailure: (e) =>
            Effect.logWarning(
              `CommandClient.subscribe: a message on ${msg.subject} does not decode: ${ParseIssues.describe(e)}`
            ),
          onSuccess: (envelope) =>
            handle(envelope).pipe(
              Envelope.withCausation({ id: envelope.id, correlationId: envelope.correlationId, tenantId: envelope.tenantId }),
              Effect.catchAllCause((cause) => Effect.logError(`CommandClient.subscribe: the handler of ${envelope.type} failed`, cause))
            )
        })
      )
      return recording
        ? Effect.withSpan(handled, `process ${msg.subject}`, {
          ...span,
          ...parentOf(msg.headers)
        })
        : handled
    }
    // whatever one message does (a defect included), the subscriber goes on with the next
    yield* Queue.take(queue).pipe(
      Effect.flatMap((msg) =>
        Effect.catchAllCause(
          Effect.suspend(() => one(msg)),
          (cause) => Effect.logError(`CommandClient.subscribe: a message on ${msg.subject} failed`, cause)
        )
      ),
      Effect.forever,
      Effect.forkScoped
    )
    yield* nats.flush
  })
