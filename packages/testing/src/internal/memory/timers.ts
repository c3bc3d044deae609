import type { Timers } from "./bus.js"

interface Timer {
  readonly at: number
  readonly f: () => void
  cancelled: boolean
}

/**
 * The in-memory server's timers on one sleeper at a time: timers are kept in
 * deadline order and a single sleep waits for the earliest one. Cancelled
 * timers cost nothing (they are skipped), which matters under `TestClock`,
 * where every sleep that was ever started is a step of `TestClock.adjust`:
 * an ack-wait timer per delivered message would otherwise leave one step per
 * acked message behind.
 */
export const makeTimers = (
  now: () => number,
  sleep: (millis: number, wake: () => void) => void
): Timers => {
  const timers: Array<Timer> = []
  /** The deadline the current sleep waits for (`undefined`: no sleep pending). */
  let armedAt: number | undefined
  /** Which sleep is the current one (an earlier deadline replaces a pending sleep). */
  let generation = 0

  const dropCancelled = () => {
    let i = 0
    while (i < timers.length && timers[i]!.cancelled) i++
    if (i > 0) timers.splice(0, i)
  }

  const arm = () => {
    dropCancelled()
    const next = timers[0]
    if (next === undefined) return
    if (armedAt !== undefined && armedAt <= next.at) return
    const current = ++generation
    armedAt = next.at
    sleep(Math.max(0, next.at - now()), () => {
      if (current !== generation) return // replaced by a sleep for an earlier deadline
      armedAt = undefined
      run()
    })
  }

  const run = () => {
    const t = now()
    for (;;) {
      dropCancelled()
      const next = timers[0]
      if (next === undefined || next.at > t) break
      timers.shift()
      next.f()
    }
    arm()
  }

  return {
    now,
    after: (millis, f) => {
      const timer: Timer = { at: now() + Math.max(0, millis), f, cancelled: false }
      // usually the latest deadline so far: search from the end
      let i = timers.length
      while (i > 0 && timers[i - 1]!.at > timer.at) i--
      timers.splice(i, 0, timer)
      arm()
      return () => {
        timer.cancelled = true
      }
    }
  }
}
