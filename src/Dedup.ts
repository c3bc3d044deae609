/**
 * Idempotent consumers: claim a key before handling a message, commit it
 * after success, release it on failure. A message whose key is already
 * committed is a duplicate: the consumer acks it without handling it.
 *
 * A claim is a lease (`leaseTtl`): if the worker that claimed a key crashes,
 * the claim expires and a redelivery can be handled. A committed key is kept
 * for `retention`.
 *
 * Stores: {@link layerMemory} (one process), {@link layerKv} (a NATS KV
 * bucket, atomic across processes), and SQL in `@effect-nats/sql` (the dedup
 * row commits in the same transaction as the handler's own writes).
 *
 * @since 0.1.0
 */
import { Clock, Context, Data, Duration, Effect, Layer } from "effect"
import type * as Envelope from "./Envelope.js"

/**
 * The result of a claim.
 *
 * - `Claimed`: this worker may handle the message;
 * - `Duplicate`: it was handled already (ack, do not handle);
 * - `InProgress`: another worker holds a live claim (retry later).
 *
 * @since 0.1.0
 * @category models
 */
export type ClaimResult = "Claimed" | "Duplicate" | "InProgress"

/**
 * A dedup store failed.
 *
 * @since 0.1.0
 * @category errors
 */
export class DedupError extends Data.TaggedError("DedupError")<{
  readonly method: string
  readonly message: string
  readonly cause?: unknown
}> {}

/**
 * How the dedup key of a message is made: the envelope id (default), the
 * natural key `aggregateId:type:version`, or a function.
 *
 * @since 0.1.0
 * @category models
 */
export type KeyStrategy = "id" | "natural" | ((envelope: Envelope.Envelope<unknown>) => string)

/**
 * Make the key of an envelope with a strategy.
 *
 * @since 0.1.0
 * @category keys
 */
export const keyOf = (strategy: KeyStrategy) => (envelope: Envelope.Envelope<unknown>): string =>
  strategy === "id"
    ? envelope.id
    : strategy === "natural"
    ? `${envelope.aggregateId}:${envelope.type}:${envelope.version}`
    : strategy(envelope)

/**
 * The dedup service.
 *
 * @since 0.1.0
 * @category tags
 */
export class Dedup extends Context.Tag("effect-nats/Dedup")<Dedup, {
  /** The key of a message. */
  readonly key: (envelope: Envelope.Envelope<unknown>) => string
  readonly claim: (key: string) => Effect.Effect<ClaimResult, DedupError>
  readonly commit: (key: string) => Effect.Effect<void, DedupError>
  readonly release: (key: string) => Effect.Effect<void, DedupError>
  /**
   * Run the handler and the commit as one unit. For SQL stores this is a
   * transaction that also holds the handler's own writes; for the others it
   * runs the effect as it is.
   */
  readonly transaction: <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E | DedupError, R>
}>() {}

/**
 * Options shared by the stores.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Key strategy (default `"id"`). */
  readonly key?: KeyStrategy | undefined
  /** How long a claim lasts before another worker may take over (default 1 minute). */
  readonly leaseTtl?: Duration.DurationInput | undefined
  /** How long a committed key is remembered (default 24 hours). */
  readonly retention?: Duration.DurationInput | undefined
}

/**
 * Options of the in-memory store.
 *
 * @since 0.1.0
 * @category models
 */
export interface MemoryOptions extends Options {
  /** At most this many keys are kept; the oldest are evicted (default 100 000). */
  readonly maxSize?: number | undefined
}

/**
 * An in-memory store for one process: bounded in size, with TTLs, using the
 * Effect `Clock` (so `TestClock` drives expiry).
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeMemory = (options: MemoryOptions = {}) =>
  Effect.sync(() => {
    const leaseMs = Duration.toMillis(options.leaseTtl ?? "1 minute")
    const retentionMs = Duration.toMillis(options.retention ?? "24 hours")
    const maxSize = Math.max(1, options.maxSize ?? 100_000)
    const entries = new Map<string, { committed: boolean; expiresAt: number }>()
    const evict = () => {
      while (entries.size > maxSize) {
        const oldest = entries.keys().next()
        if (oldest.done) return
        entries.delete(oldest.value)
      }
    }
    return Dedup.of({
      key: keyOf(options.key ?? "id"),
      claim: (key) =>
        Effect.map(Clock.currentTimeMillis, (now) => {
          const entry = entries.get(key)
          if (entry !== undefined && entry.expiresAt > now) return entry.committed ? "Duplicate" : "InProgress"
          entries.delete(key)
          entries.set(key, { committed: false, expiresAt: now + leaseMs })
          evict()
          return "Claimed"
        }),
      commit: (key) =>
        Effect.map(Clock.currentTimeMillis, (now) => {
          entries.delete(key)
          entries.set(key, { committed: true, expiresAt: now + retentionMs })
          evict()
        }),
      release: (key) =>
        Effect.sync(() => {
          const entry = entries.get(key)
          if (entry !== undefined && !entry.committed) entries.delete(key)
        }),
      transaction: (self) => self
    })
  })

/**
 * The in-memory store as a layer.
 *
 * @example
 * ```ts
 * import { Dedup } from "effect-nats"
 *
 * const DedupLive = Dedup.layerMemory({ key: "natural", maxSize: 50_000 })
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerMemory = (options: MemoryOptions = {}): Layer.Layer<Dedup> =>
  Layer.effect(Dedup, makeMemory(options))
