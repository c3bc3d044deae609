/**
 * Limits on every body the toolkit decodes: command requests (read by a
 * `CommandService`), command responses (read by a `CommandClient`), event
 * envelopes and their `data` (read by a `Consumer`), dead-letter records
 * (`DeadLetter.list/get/replay`, `effect-nats dlq`) and KV values (the KV
 * dedup store).
 *
 * Both limits are checked on the raw bytes before `JSON.parse` and before any
 * recursive work (Schema decoding, error formatting, `JSON.stringify`), by a
 * single loop without recursion, so a hostile body cannot overflow the stack
 * wherever it arrives. What goes over a limit is refused with a typed
 * reason: a `400` for a command request, a dead letter with reason
 * `TooDeep` / `TooLarge` for an event, a `MalformedResponse` for a command
 * response, a `Malformed` dead-letter error for a DLQ record.
 *
 * The limits are a `Context.Reference`: the defaults apply unless a program
 * provides others (`Limits.layer`), and each service reads them when it
 * starts.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { Limits, NatsClient } from "effect-nats"
 *
 * // deeper documents than the default 128 levels, and at most 256 KiB
 * const LimitsLive = Limits.layer({ maxDepth: 512, maxBytes: 256 * 1024 })
 * ```
 *
 * @since 0.2.0
 */
import { Config, type ConfigError, Context, Effect, type Either, Layer, Option } from "effect"
import * as Json from "./internal/json.js"

/**
 * The limits.
 *
 * @since 0.2.0
 * @category models
 */
export interface Shape {
  /** The deepest nesting of arrays and objects a body may have (default 128; the body itself is level 1). */
  readonly maxDepth: number
  /**
   * The largest body in bytes. Default: the server's `max_payload` (as the
   * connection's INFO says; 1 MiB when it is not known), which no message can
   * exceed anyway; set it lower to refuse large bodies before parsing them.
   */
  readonly maxBytes?: number | undefined
}

/**
 * The default nesting limit: deep enough for any document a service means to
 * send, shallow enough that every recursive step after the check is safe.
 *
 * @since 0.2.0
 * @category constants
 */
export const defaultMaxDepth = 128

/**
 * The limits in force (a `Context.Reference`: the defaults unless provided).
 *
 * @since 0.2.0
 * @category tags
 */
export class Limits extends Context.Reference<Limits>()("effect-nats/Limits", {
  defaultValue: (): Shape => ({ maxDepth: defaultMaxDepth })
}) {}

/**
 * Why a body was refused.
 *
 * @since 0.2.0
 * @category models
 */
export type Reason = "TooDeep" | "TooLarge"

/**
 * Provide limits (the fields not given keep their defaults).
 *
 * @example
 * ```ts
 * import { Limits } from "effect-nats"
 *
 * const Strict = Limits.layer({ maxDepth: 32 })
 * ```
 *
 * @since 0.2.0
 * @category layers
 */
export const layer = (limits: Partial<Shape>): Layer.Layer<never> =>
  Layer.sync(Limits, () => validate({ maxDepth: limits.maxDepth ?? defaultMaxDepth, maxBytes: limits.maxBytes }))

/**
 * Limits from the environment: `NATS_MAX_JSON_DEPTH`, `NATS_MAX_BODY_BYTES`
 * (each optional).
 *
 * @since 0.2.0
 * @category layers
 */
export const layerConfig = (
  config: Config.Config<{ readonly maxDepth: Option.Option<number>; readonly maxBytes: Option.Option<number> }> = Config.all({
    maxDepth: Config.option(positive("NATS_MAX_JSON_DEPTH")),
    maxBytes: Config.option(positive("NATS_MAX_BODY_BYTES"))
  })
): Layer.Layer<never, ConfigError.ConfigError> =>
  Layer.effectContext(Effect.map(config, (c) =>
    Context.make(
      Limits,
      validate({ maxDepth: Option.getOrElse(c.maxDepth, () => defaultMaxDepth), maxBytes: Option.getOrUndefined(c.maxBytes) })
    )))

const positive = (name: string) =>
  Config.integer(name).pipe(Config.validate({ message: "expected a positive integer", validation: (n) => n >= 1 }))

/** A limit that is not a positive integer is a defect of the program that provides it. */
const validate = (limits: Shape): Shape => {
  if (!Number.isInteger(limits.maxDepth) || limits.maxDepth < 1) {
    throw new RangeError(`Limits: maxDepth must be a positive integer, got ${limits.maxDepth}`)
  }
  if (limits.maxBytes !== undefined && (!Number.isInteger(limits.maxBytes) || limits.maxBytes < 1)) {
    throw new RangeError(`Limits: maxBytes must be a positive integer, got ${limits.maxBytes}`)
  }
  return limits
}

/**
 * Check bytes against the limits without parsing them: the reason and a
 * readable message when they go over one.
 *
 * @example
 * ```ts
 * import { Limits } from "effect-nats"
 *
 * const bytes = new TextEncoder().encode("[".repeat(1000) + "]".repeat(1000))
 * Limits.check(bytes, { maxDepth: 128 }) // Option.some({ reason: "TooDeep", message: "nesting deeper than 128 levels" })
 * ```
 *
 * @since 0.2.0
 * @category checks
 */
export const check = (
  bytes: Uint8Array,
  limits: Shape
): Option.Option<{ readonly reason: Reason; readonly message: string }> => {
  const problem = Json.exceeds(bytes, limits.maxDepth, limits.maxBytes ?? Number.POSITIVE_INFINITY)
  return problem === undefined ? Option.none() : Option.some(problem)
}

/**
 * Parse a JSON body within the limits: the value, or why it was refused
 * (`TooDeep`, `TooLarge`, or `InvalidJson` with the parser's message).
 *
 * @example
 * ```ts
 * import { Either } from "effect"
 * import { Limits } from "effect-nats"
 *
 * const parsed = Limits.parseJson(new TextEncoder().encode('{"a":[1,2]}'), { maxDepth: 8 })
 * Either.isRight(parsed) // true
 * ```
 *
 * @since 0.2.0
 * @category checks
 */
export const parseJson = (
  bytes: Uint8Array,
  limits: Shape
): Either.Either<unknown, { readonly reason: Reason | "InvalidJson"; readonly message: string }> =>
  Json.parse(bytes, limits.maxDepth, limits.maxBytes ?? Number.POSITIVE_INFINITY)

/**
 * Limits with both values known, as a service reads them when it starts.
 *
 * @since 0.2.0
 * @category models
 */
export interface Resolved {
  readonly maxDepth: number
  readonly maxBytes: number
}

/**
 * The limits with `maxBytes` resolved against a server's `max_payload`.
 *
 * @since 0.2.0
 * @category checks
 */
export const resolve = (
  limits: Shape,
  maxPayload: number | undefined
): Resolved => ({
  maxDepth: limits.maxDepth,
  maxBytes: limits.maxBytes ?? maxPayload ?? 1024 * 1024
})
