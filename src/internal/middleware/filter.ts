import { Effect } from "effect"
import type * as Envelope from "../../Envelope.js"
import type * as Event from "../../Event.js"
import * as Handler from "../../Handler.js"
import type { Delivery } from "../../Middleware.js"

type Select<A> = (envelope: Envelope.Envelope<unknown>, delivery: Delivery) => A

/** `Handler.filter`: skip (ack) what the predicate refuses. */
export const filter = (predicate: Select<boolean>) => <E, R>(self: Handler.Handler<E, R>): Handler.Handler<E, R> =>
  self.pipe(Handler.around((run, envelope, delivery) => predicate(envelope, delivery) ? run : Effect.void))

/** `Handler.route`: the route `select` names handles the message; none: acked without handling. */
export const route = <const Routes extends Readonly<Record<string, Handler.Any>>>(
  select: Select<string | undefined>,
  routes: Routes
): Handler.Handler<Handler.Error<Routes[keyof Routes]>, Handler.Context<Routes[keyof Routes]>> => {
  const handlers = Object.values(routes)
  const first = handlers[0]
  if (first === undefined) throw new Error("Handler.route: no routes")
  const other = handlers.find((h) => h.type !== first.type)
  if (other !== undefined) throw new Error(`Handler.route: routes for ${first.type} and ${other.type}`)
  const table = new Map(Object.entries(routes))
  // a handler of the event with no policies of its own (the routes' stay with their attempts)
  // (a handler's `event` is the Event it was made from)
  return Handler.make(first.event as Event.Event<string, unknown, unknown, unknown>, () => Effect.void).pipe(
    Handler.around((_, envelope, delivery) => {
      const key = select(envelope, delivery)
      const chosen = key === undefined ? undefined : table.get(key)
      return chosen === undefined ? Effect.void : chosen.handle(envelope, delivery)
    })
  ) as Handler.Handler<never, never>
}
