/**
 * A consumer's pull: nats.js pulls in callback mode and each message is put
 * into its worker's inbox (or handed back, once the consumer is stopping).
 *
 * @internal
 */
import type { ConsumerMessages, JsMsg } from "@nats-io/jetstream"
import { Cause, Effect, Runtime } from "effect"
import type { JetStream } from "../../JetStream.js"
import * as Metrics from "../../Metrics.js"
import * as NatsError from "../../NatsError.js"
import type { Inbox } from "../inbox.js"
import type { HandBack } from "./handBack.js"

/** The extra metric labels of the consumed counter (none: the fiber's own labels do not reach the nats.js callback). */
const noLabels: ReadonlyArray<never> = []

const hash = (s: string): number => {
  let h = 0x811c9dc5
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i)
    h = Math.imul(h, 0x01000193)
  }
  return h >>> 0
}

/** What the pull needs. */
export interface Options {
  readonly stream: string
  readonly durable: string
  /** Messages asked for in one pull. */
  readonly maxMessages: number
  /** One inbox per worker, chosen by the `Aggregate-Id` header (else the subject), or one shared by all. */
  readonly inboxes: ReadonlyArray<Inbox<JsMsg>>
  readonly handBack: HandBack
  readonly js: JetStream["Type"]
}

/** Start pulling. */
export const start = (options: Options): Effect.Effect<ConsumerMessages, NatsError.NatsError> =>
  Effect.gen(function*() {
    const { durable, handBack, inboxes } = options
    const route = (msg: JsMsg): Inbox<JsMsg> => {
      if (inboxes.length === 1) return inboxes[0]!
      const key = msg.headers?.get("Aggregate-Id") || msg.subject
      return inboxes[hash(key) % inboxes.length]!
    }
    const runFork = Runtime.runFork(yield* Effect.runtime<never>())
    const consumer = yield* Effect.tryPromise({
      try: () => options.js.client.consumers.get(options.stream, durable),
      catch: NatsError.fromCause("Consumer.get")
    })
    const messages: ConsumerMessages = yield* Effect.tryPromise({
      try: () =>
        consumer.consume({
          max_messages: options.maxMessages,
          callback: (msg) => {
            // nothing may escape into nats.js (it would end the pull)
            try {
              if (handBack.stopping) {
                handBack.giveBack([msg])
                return
              }
              Metrics.consumed.unsafeUpdate(1, noLabels)
              route(msg).offer(msg)
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
    })

    return messages
  })
