/**
 * Micro protocol discovery (`$SRV.PING` / `INFO` / `STATS`): one request to
 * every service (or one name, or one instance), answers collected for a
 * window.
 *
 * @internal
 */
import { createInbox, Empty, type Msg } from "@nats-io/nats-core"
import { Deferred, Effect, Either, Schema } from "effect"
import type { DiscoveryOptions } from "../CommandClient.js"
import type * as Limits from "../Limits.js"
import type { NatsClient } from "../NatsClient.js"
import * as NatsError from "../NatsError.js"
import * as Subject from "../Subject.js"
import * as Json from "./json.js"
import * as micro from "./micro.js"
import * as ParseIssues from "./parseIssues.js"

/** Ask, collect the answers for the window (or until enough), and decode them; malformed answers are logged and left out. */
export const discover = <A, I>(
  nats: NatsClient["Type"],
  limits: Limits.Resolved,
  verb: micro.Verb,
  schema: Schema.Schema<A, I>,
  options: DiscoveryOptions = {}
): Effect.Effect<ReadonlyArray<A>, NatsError.NatsError | Subject.InvalidSubjectError> =>
  Effect.gen(function*() {
    const service = options.service === undefined ? undefined : yield* Subject.token(options.service)
    const id = options.id === undefined || service === undefined ? undefined : yield* Subject.token(options.id)
    const subject = micro.controlSubject(verb, service, id)
    const max = options.maxResponses ?? Number.POSITIVE_INFINITY
    const received: Array<Msg> = []
    const enough = yield* Deferred.make<void>()
    const inbox = createInbox()
    yield* Effect.acquireRelease(
      Effect.try({
        try: () =>
          nats.connection.subscribe(inbox, {
            callback: (err, msg) => {
              // an empty message is the server's "no responders" status
              if (err !== null || msg.data.length === 0) return
              received.push(msg)
              if (received.length >= max) Deferred.unsafeDone(enough, Effect.void)
            }
          }),
        catch: NatsError.fromCause(`CommandClient.${verb.toLowerCase()}`, inbox, nats.servers)
      }),
      (sub) => Effect.sync(() => sub.unsubscribe()).pipe(Effect.ignore)
    )
    yield* nats.publish(subject, Empty, { reply: inbox })
    yield* Effect.race(Deferred.await(enough), Effect.sleep(options.window ?? "500 millis"))
    const decode = Schema.decodeUnknownEither(Schema.parseJson(schema))
    const out: Array<A> = []
    for (const msg of received.slice(0, max)) {
      const refused = Json.exceeds(msg.data, limits.maxDepth, limits.maxBytes)
      if (refused !== undefined) {
        yield* Effect.logWarning(`CommandClient: ignoring a ${verb} response: ${refused.message}`)
        continue
      }
      const decoded = decode(msg.string())
      if (Either.isRight(decoded)) out.push(decoded.right)
      else {
        yield* Effect.logWarning(
          `CommandClient: ignoring a malformed ${verb} response: ${ParseIssues.describe(decoded.left)}`
        )
      }
    }
    return out as ReadonlyArray<A>
  }).pipe(Effect.scoped)
