import { Effect } from "effect"
import * as Handler from "../../Handler.js"

const toHandlerDefect = (defect: unknown) =>
  new Handler.HandlerDefect({
    message: defect instanceof Error ? `${defect.name}: ${defect.message}` : String(defect),
    cause: defect
  })

/** `Handler.recoverDefects`: defects become failures (`HandlerDefect`, or what `f` makes of them). */
export const recoverDefects: {
  (): <E, R>(self: Handler.Handler<E, R>) => Handler.Handler<E | Handler.HandlerDefect, R>
  <E2>(f: (defect: unknown) => E2): <E, R>(self: Handler.Handler<E, R>) => Handler.Handler<E | E2, R>
} = <E2>(f: (defect: unknown) => E2 = toHandlerDefect as (defect: unknown) => E2) =>
<E, R>(self: Handler.Handler<E, R>): Handler.Handler<E | E2, R> =>
  self.pipe(Handler.around((run: Effect.Effect<void, E, R>) => Effect.catchAllDefect(run, (defect) => Effect.fail(f(defect)))))
