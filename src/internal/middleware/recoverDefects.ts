import { Effect } from "effect"
import * as Handler from "../../Handler.js"

/** `Handler.recoverDefects`: defects become failures (`HandlerDefect`, or what `f` makes of them). */
export const recoverDefects: {
  (): <E, R>(self: Handler.Handler<E, R>) => Handler.Handler<E | Handler.HandlerDefect, R>
  <E2>(f: (defect: unknown) => E2): <E, R>(self: Handler.Handler<E, R>) => Handler.Handler<E | E2, R>
} = <E2>(f: (defect: unknown) => E2 = Handler.HandlerDefect.fromDefect as (defect: unknown) => E2) =>
<E, R>(self: Handler.Handler<E, R>): Handler.Handler<E | E2, R> =>
  self.pipe(Handler.around((run: Effect.Effect<void, E, R>) => Effect.catchAllDefect(run, (defect) => Effect.fail(f(defect)))))
