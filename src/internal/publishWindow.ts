/**
 * The one windowed publish engine, under `Publisher.publishAll` and
 * `Publisher.publishMessages` (and so the outbox relay): at most `window`
 * tasks in flight, the next one started as soon as one finishes, driven by
 * the completions themselves (no fiber per task). A task publishes with
 * plain promises; it runs an effect in a fiber only when it needs one (an
 * effectful encode, a retry after a failure, a traced publish), through
 * {@link Lane.fork}, so that the window can interrupt it.
 *
 * @internal
 */
import { Cause, Effect, Exit, Fiber, FiberId, FiberRef, FiberRefs, type MetricLabel, Option, Runtime } from "effect"

/** What a running task can use. */
export interface Lane<E, R> {
  /** Has the window ended (a failure that stops it, a defect, an interruption)? A task then starts nothing more. */
  readonly over: () => boolean
  /** The metric labels of the fiber that runs the window. */
  readonly labels: ReadonlyArray<MetricLabel.MetricLabel>
  /** Run `effect` in a fiber the window interrupts if it ends first; `done` gets its exit (unless the window ended). */
  readonly fork: <A>(effect: Effect.Effect<A, E, R>, done: (exit: Exit.Exit<A, E>) => void) => void
}

/** A unit of work: it calls `done` once, with its outcome (maybe before it returns). */
export type Task<E, R> = (lane: Lane<E, R>, done: (exit: Exit.Exit<unknown, E>) => void) => void

/**
 * Run the tasks `next` gives (until it gives `undefined`) with at most
 * `window` in flight. A task that fails with `E` ends the window with that
 * failure when `stop(error)` says so, else the others go on; a defect or an
 * interruption always ends it. Ending the window interrupts the fibers its
 * tasks forked. `next` and the tasks may throw: that is a defect.
 */
export const run = <E, R>(
  window: number,
  next: () => Task<E, R> | undefined,
  stop: (error: E) => boolean
): Effect.Effect<void, E, R> =>
  Effect.flatMap(Effect.runtime<R>(), (runtime) =>
    Effect.async<void, E>((resume) => {
      const fibers = new Set<Fiber.RuntimeFiber<unknown, unknown>>()
      const runFork = Runtime.runFork(runtime)
      let active = 0
      let exhausted = false
      let filling = false
      let over = false
      const end = (exit: Exit.Exit<void, E>) => {
        if (over) return
        over = true
        for (const fiber of fibers) fiber.unsafeInterruptAsFork(FiberId.none)
        resume(exit)
      }
      const lane: Lane<E, R> = {
        over: () => over,
        labels: FiberRefs.getOrDefault(runtime.fiberRefs, FiberRef.currentMetricLabels),
        fork: (effect, done) => {
          const fiber = runFork(effect)
          fibers.add(fiber)
          fiber.addObserver((exit) => {
            fibers.delete(fiber)
            if (!over) done(exit)
          })
        }
      }
      const done = (exit: Exit.Exit<unknown, E>) => {
        if (over) return
        if (Exit.isFailure(exit)) {
          const error = Cause.failureOption(exit.cause)
          if (Option.isNone(error)) return end(Exit.failCause(exit.cause as Cause.Cause<never>))
          if (stop(error.value)) return end(Exit.fail(error.value))
        }
        active--
        fill()
      }
      const fill = () => {
        // a task that finishes at once (inside `task(...)`) frees its place for this loop
        if (filling) return
        filling = true
        try {
          while (!over && !exhausted && active < window) {
            const task = next()
            if (task === undefined) exhausted = true
            else {
              active++
              task(lane, done)
            }
          }
        } catch (defect) {
          end(Exit.die(defect))
        } finally {
          filling = false
        }
        if (!over && exhausted && active === 0) end(Exit.void)
      }
      fill()
      return Effect.suspend(() => {
        over = true
        return Fiber.interruptAll(fibers)
      })
    }))
