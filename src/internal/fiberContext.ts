import { Clock, Context, Effect, Option, type Tracer } from "effect"
import { globalValue } from "effect/GlobalValue"
import * as Envelope from "../Envelope.js"

/** Effect's built-in tracer (the same instance `Tracing.isRecording` compares with). */
const nativeTracer = globalValue(Symbol.for("effect-nats/Tracing/nativeTracer"), () => Effect.runSync(Effect.tracer))

/** Is this tracer one that records spans (anything but Effect's built-in default)? */
export const isRecordingTracer = (tracer: Tracer.Tracer): boolean => tracer !== nativeTracer

/** What publishing or sending a command reads from the fiber. */
export interface FiberContext {
  readonly clock: Clock.Clock
  /** The message being handled (`Envelope.current`). */
  readonly causation: Envelope.Causation | undefined
  /** The current span (`Effect.currentSpan`), if any. */
  readonly span: Tracer.Span | undefined
  /** Does the tracer record spans (`Tracing.isRecording`)? */
  readonly recording: boolean
}

/** Read in one step, where the separate effects would take a dozen. */
export const fiberContext: Effect.Effect<FiberContext> = Effect.withFiberRuntime((fiber) => {
  const span = fiber.currentSpan
  return Effect.succeed({
    clock: Context.get(fiber.currentDefaultServices, Clock.Clock),
    causation: Option.getOrUndefined(fiber.getFiberRef(Envelope.current)),
    span: span !== undefined && span._tag === "Span" ? span : undefined,
    recording: isRecordingTracer(fiber.currentTracer)
  })
})
