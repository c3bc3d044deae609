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
 * A consumer picks the `Dedup` service up from its context: provide one of
 * these layers and every message goes through claim / commit / release; a
 * duplicate is acked and counted (`Metrics.duplicatesSkipped`), not handled.
 *
 * @since 0.1.0
 */
import { JetStreamApiCodes, JetStreamApiError, StorageType } from "@nats-io/jetstream"
import type { KvEntry } from "@nats-io/kv"
import { Cause, Clock, Context, Data, Duration, Effect, Either, Layer, Option } from "effect"
import type * as Envelope from "./Envelope.js"
import { JetStream, type KvStore } from "./JetStream.js"
import * as Json from "./internal/json.js"

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
 * A dedup store failed (`reason: "Store"`), or a commit found the key
 * committed by a concurrent worker (`reason: "Conflict"`, SQL stores: the
 * transaction is rolled back; the retried message is then a duplicate).
 *
 * @since 0.1.0
 * @category errors
 */
export class DedupError extends Data.TaggedError("DedupError")<{
  readonly reason: "Store" | "Conflict"
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
export const keyOf = (strategy: KeyStrategy, namespace?: string) => {
  const base = (envelope: Envelope.Envelope<unknown>): string =>
    strategy === "id"
      ? envelope.id
      : strategy === "natural"
      ? `${envelope.aggregateId}:${envelope.type}:${envelope.version}`
      : strategy(envelope)
  return namespace === undefined ? base : (envelope: Envelope.Envelope<unknown>): string => `${namespace}:${base(envelope)}`
}

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
  /**
   * Handle once by `key`: claim it; when claimed, run `self` and the commit
   * as one unit (`transaction`), and release the claim if that fails or is
   * interrupted. Succeeds with what `self` gives, or with `NotClaimed` (a
   * duplicate, a claim held elsewhere, or a commit that lost to a concurrent
   * worker's). The consumer's dedup stage calls only this. {@link make}
   * builds it from the four operations above; a store may implement it in
   * fewer steps (the memory store does), and every store passes the same
   * conformance suite through it.
   */
  readonly guard: <A, E, R>(key: string, self: Effect.Effect<A, E, R>) => Effect.Effect<A | NotClaimed, E | DedupError, R>
  /**
   * Whether the store can commit many messages at once: `Some` for SQL
   * stores (unless turned off), `None` for the others. A consumer then
   * handles a batch of messages inside one {@link Batch.run}: each `guard`
   * in it runs in its own savepoint, the batch commits once, and only then
   * are its messages acked.
   */
  readonly batch: Option.Option<Batch>
}>() {}

/**
 * How a store commits many messages at once (see {@link Dedup.batch}).
 *
 * A consumer takes the messages ready when a batch starts and those that
 * become ready while it runs, up to `maxMessages`, for at most `maxDelay`
 * (it never waits for messages with the batch open). Inside `run`, each
 * message's `guard` is a savepoint: a message that fails rolls back to it
 * and takes the usual path (in-process retry, nak with delay, dead letter);
 * the others commit together when `run` ends. If the commit fails, none of
 * them is acked and the server redelivers them.
 *
 * @example
 * ```ts
 * import { Duration, Effect, Option } from "effect"
 * import type { Dedup } from "effect-nats"
 *
 * const describe = (store: Dedup.Dedup["Type"]) =>
 *   Option.match(store.batch, {
 *     onNone: () => "one transaction per message",
 *     onSome: (b) => `up to ${b.maxMessages} messages per transaction, open at most ${Duration.format(b.maxDelay)}`
 *   })
 * ```
 *
 * @since 0.2.0
 * @category models
 */
export interface Batch {
  /** The most messages one batch holds. */
  readonly maxMessages: number
  /** The longest a batch takes in more messages before it commits. */
  readonly maxDelay: Duration.Duration
  /** Run `self` (the handling of the batch's messages) in one transaction, committed when it succeeds. */
  readonly run: <A, E, R>(self: Effect.Effect<A, E, R>) => Effect.Effect<A, E | DedupError, R>
}

/**
 * What {@link Dedup.guard} gives when the message is not handled here:
 * `Duplicate` (already handled: ack it) or `InProgress` (another worker holds
 * the claim: try later).
 *
 * @since 0.1.0
 * @category models
 */
export class NotClaimed extends Data.Class<{ readonly claim: Exclude<ClaimResult, "Claimed"> }> {
  /** The result for a duplicate. */
  static readonly Duplicate = new NotClaimed({ claim: "Duplicate" })
  /** The result for a claim held by another worker. */
  static readonly InProgress = new NotClaimed({ claim: "InProgress" })
}

/**
 * Is this result of {@link Dedup.guard} a message not handled here?
 *
 * @since 0.1.0
 * @category guards
 */
export const isNotClaimed = (u: unknown): u is NotClaimed => u instanceof NotClaimed

const notClaimedOf = (claim: Exclude<ClaimResult, "Claimed">): NotClaimed =>
  claim === "Duplicate" ? NotClaimed.Duplicate : NotClaimed.InProgress

/** A commit that found the key committed by a concurrent worker (SQL stores): its effect stands, ours rolled back. */
const isConflict = (cause: Cause.Cause<unknown>) =>
  Option.exists(Cause.failureOption(cause), (e) => e instanceof DedupError && e.reason === "Conflict")

/**
 * Make a store from its key and four operations; `guard` is claim, then
 * `transaction(self + commit)`, then release on failure or interruption.
 * A store that can commit many messages at once also gives its `batch`
 * (see {@link Batch}; without it, `None`).
 *
 * @example
 * ```ts
 * import { Dedup } from "effect-nats"
 * import { Effect } from "effect"
 *
 * const seen = new Set<string>()
 * const store = Dedup.make({
 *   key: Dedup.keyOf("id"),
 *   claim: (key) => Effect.sync(() => (seen.has(key) ? "Duplicate" : "Claimed")),
 *   commit: (key) => Effect.sync(() => void seen.add(key)),
 *   release: () => Effect.void,
 *   transaction: (self) => self
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (store: Omit<Dedup["Type"], "guard" | "batch"> & { readonly batch?: Batch | undefined }): Dedup["Type"] =>
  Dedup.of({
    ...store,
    batch: Option.fromNullable(store.batch),
    guard: <A, E, R>(key: string, self: Effect.Effect<A, E, R>) =>
      Effect.flatMap(store.claim(key), (claim): Effect.Effect<A | NotClaimed, E | DedupError, R> =>
        claim !== "Claimed"
          ? Effect.succeed(notClaimedOf(claim))
          : Effect.uninterruptibleMask((restore) =>
            Effect.catchAllCause(
              restore(store.transaction(Effect.zipLeft(self, store.commit(key)))),
              (cause) =>
                Effect.zipRight(
                  Effect.ignore(store.release(key)),
                  isConflict(cause) ? Effect.succeed(NotClaimed.Duplicate) : Effect.failCause(cause)
                )
            )
          ))
  })

/**
 * Options shared by the stores.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Key strategy (default `"id"`). */
  readonly key?: KeyStrategy | undefined
  /**
   * Prefix of every key. Consumers that share a store must each have their own
   * namespace (e.g. their durable name): otherwise a message handled by one is
   * a duplicate for the other.
   */
  readonly namespace?: string | undefined
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
    // in insertion order, oldest first (a write moves a key to the end)
    const entries = new Map<string, { committed: boolean; expiresAt: number }>()
    // the key written last (at the end already: writing it again changes its entry in place)
    let last: string | undefined
    // one iterator for every eviction: everything before its position was evicted (deleted) and every later
    // write lands after it, so its next key is the oldest. (A new iterator per eviction would step over the
    // slots of all the keys deleted since the map last compacted itself.)
    let oldest = entries.keys()
    const evict = () => {
      while (entries.size > maxSize) {
        let next = oldest.next()
        if (next.done) {
          oldest = entries.keys()
          next = oldest.next()
          if (next.done) return
        }
        entries.delete(next.value)
      }
    }
    // the store's state changes, synchronous; `now` is the Clock's time in milliseconds
    const state = {
      claim(key: string, now: number): ClaimResult {
        const entry = entries.get(key)
        if (entry !== undefined) {
          if (entry.expiresAt > now) return entry.committed ? "Duplicate" : "InProgress"
          entries.delete(key)
        }
        entries.set(key, { committed: false, expiresAt: now + leaseMs })
        last = key
        evict()
        return "Claimed"
      },
      commit(key: string, now: number): void {
        const entry = entries.get(key)
        if (key === last && entry !== undefined) {
          entry.committed = true
          entry.expiresAt = now + retentionMs
          return
        }
        entries.delete(key)
        entries.set(key, { committed: true, expiresAt: now + retentionMs })
        last = key
        evict()
      },
      release(key: string): void {
        const entry = entries.get(key)
        if (entry !== undefined && !entry.committed) entries.delete(key)
      }
    }
    return Dedup.of({
      key: keyOf(options.key ?? "id", options.namespace),
      // (`clockWith` calls back when the effect runs: one step per call)
      claim: (key) => Effect.clockWith((clock) => Effect.succeed(state.claim(key, clock.unsafeCurrentTimeMillis()))),
      commit: (key) => Effect.clockWith((clock) => Effect.succeed(state.commit(key, clock.unsafeCurrentTimeMillis()))),
      release: (key) => Effect.sync(() => state.release(key)),
      transaction: (self) => self,
      batch: Option.none(),
      // what `make` builds, in fewer steps: the store's state changes are plain calls inside one region
      guard: <A, E, R>(key: string, self: Effect.Effect<A, E, R>) =>
        Effect.clockWith((clock): Effect.Effect<A | NotClaimed, E, R> => {
          const claim = state.claim(key, clock.unsafeCurrentTimeMillis())
          if (claim !== "Claimed") return Effect.succeed(notClaimedOf(claim))
          return Effect.uninterruptibleMask((restore) =>
            Effect.matchCauseEffect(restore(self), {
              onFailure(cause) {
                state.release(key)
                return Effect.failCause(cause)
              },
              onSuccess(a) {
                state.commit(key, clock.unsafeCurrentTimeMillis())
                return Effect.succeed(a)
              }
            })
          )
        })
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

/**
 * Options of the NATS KV store.
 *
 * @since 0.1.0
 * @category models
 */
export interface KvOptions extends Options {
  /** The KV bucket (default `"effect-nats-dedup"`); created if missing, an existing bucket keeps its own settings. */
  readonly bucket?: string | undefined
  /** Bucket storage: `"file"` (default) or `"memory"`. */
  readonly storage?: "file" | "memory" | undefined
  /** Bucket replicas (default 1; 3 on a cluster). */
  readonly replicas?: number | undefined
}

/** What a KV entry of the dedup bucket holds. */
type KvValue =
  | { readonly state: "claimed"; readonly expiresAt: number }
  | { readonly state: "committed"; readonly at: number }

/** A value of the bucket (a flat object of a few bytes); anything else, hostile or not, is not ours (`undefined`). */
const parseKvValue = (entry: KvEntry): KvValue | undefined => {
  const parsed = Json.parse(entry.value, 1, 1024)
  if (Either.isLeft(parsed)) return undefined
  const v = parsed.right
  if (typeof v !== "object" || v === null || !("state" in v)) return undefined
  if (v.state === "committed" && "at" in v && typeof v.at === "number") return { state: "committed", at: v.at }
  if (v.state === "claimed" && "expiresAt" in v && typeof v.expiresAt === "number") {
    return { state: "claimed", expiresAt: v.expiresAt }
  }
  return undefined
}

const isWrongLastSequence = (u: unknown): boolean =>
  u instanceof JetStreamApiError &&
  (u.code === JetStreamApiCodes.StreamWrongLastSequence || u.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)

const storeError = (method: string, cause: unknown) =>
  new DedupError({
    reason: "Store",
    method,
    message: `Dedup.${method}: ${cause instanceof Error ? cause.message : String(cause)}`,
    cause
  })

/** Run a KV write; `None` when the expected revision did not match (someone else wrote first). */
const kvWrite = (method: string, write: () => Promise<number>): Effect.Effect<Option.Option<number>, DedupError> =>
  Effect.tryPromise({ try: write, catch: (cause) => cause }).pipe(
    Effect.map(Option.some),
    Effect.catchAll((cause) => isWrongLastSequence(cause) ? Effect.succeedNone : Effect.fail(storeError(method, cause)))
  )

/**
 * A store on a NATS KV bucket, shared by every consumer instance.
 *
 * - a claim is an atomic `create` of the key, whose value holds the lease
 *   expiry (`{ state: "claimed", expiresAt }`): of two workers claiming at
 *   once, exactly one gets `Claimed`. Per-key TTLs need nats-server 2.11, so
 *   an expired claim is taken over with an optimistic `update(key, value,
 *   revision)`: again exactly one worker wins;
 * - commit writes `{ state: "committed" }`; the bucket's `max_age` is the
 *   `retention`, so a committed key is forgotten `retention` after its commit;
 * - release deletes the claim, only if it is still the revision this worker
 *   wrote.
 *
 * Keys are stored base64url-encoded, so any key (dots, colons, wildcards) is
 * valid. Lease expiry compares the workers' clocks: keep them in sync to well
 * under `leaseTtl`, and choose a `leaseTtl` longer than a handler runs.
 *
 * @since 0.1.0
 * @category constructors
 */
export const makeKv = (options: KvOptions = {}): Effect.Effect<Dedup["Type"], DedupError, JetStream> =>
  Effect.gen(function*() {
    const js = yield* JetStream
    const leaseMs = Duration.toMillis(options.leaseTtl ?? "1 minute")
    const retentionMs = Duration.toMillis(options.retention ?? "24 hours")
    const bucket = options.bucket ?? "effect-nats-dedup"
    const kv: KvStore = yield* Effect.tryPromise({
      try: () =>
        js.kvm.create(bucket, {
          ttl: retentionMs,
          history: 1,
          storage: options.storage === "memory" ? StorageType.Memory : StorageType.File,
          replicas: options.replicas ?? 1
        }),
      catch: (cause) => storeError("open", cause)
    })
    const encode = (key: string) => Buffer.from(key, "utf8").toString("base64url")
    // revisions of the claims this instance holds, so release only removes its own claim
    const owned = new Map<string, number>()

    const get = (k: string) =>
      Effect.tryPromise({ try: () => kv.get(k), catch: (cause) => storeError("claim", cause) })

    const claim = (key: string): Effect.Effect<ClaimResult, DedupError> =>
      Effect.gen(function*() {
        const k = encode(key)
        // a key can vanish (aged out, released) between two steps: look again, a few times
        for (let attempt = 0; attempt < 3; attempt++) {
          const now = yield* Clock.currentTimeMillis
          const value = JSON.stringify({ state: "claimed", expiresAt: now + leaseMs } satisfies KvValue)
          const created = yield* kvWrite("claim", () => kv.create(k, value))
          if (Option.isSome(created)) {
            owned.set(key, created.value)
            return "Claimed"
          }
          const entry = yield* get(k)
          if (entry === null || entry.operation !== "PUT") continue
          const current = parseKvValue(entry)
          if (current === undefined) {
            return yield* storeError("claim", `key ${key} of bucket ${bucket} holds an unexpected value`)
          }
          if (current.state === "committed") return "Duplicate"
          if (current.expiresAt > now) return "InProgress"
          // the claim expired (its worker crashed): take it over, unless another worker does first
          const taken = yield* kvWrite("claim", () => kv.update(k, value, entry.revision))
          if (Option.isNone(taken)) return "InProgress"
          owned.set(key, taken.value)
          return "Claimed"
        }
        return "InProgress"
      })

    const commit = (key: string) =>
      Effect.flatMap(Clock.currentTimeMillis, (now) =>
        Effect.tryPromise({
          try: () => kv.put(encode(key), JSON.stringify({ state: "committed", at: now } satisfies KvValue)),
          catch: (cause) => storeError("commit", cause)
        })).pipe(Effect.zipRight(Effect.sync(() => owned.delete(key))), Effect.asVoid)

    const release = (key: string) =>
      Effect.suspend(() => {
        const revision = owned.get(key)
        owned.delete(key)
        return revision === undefined
          ? Effect.void
          : Effect.asVoid(kvWrite("release", () => kv.delete(encode(key), { previousSeq: revision }).then(() => revision)))
      })

    return make({ key: keyOf(options.key ?? "id", options.namespace), claim, commit, release, transaction: (self) => self })
  })

/**
 * The NATS KV store as a layer (needs {@link JetStream}).
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { Consumer, Dedup } from "effect-nats"
 * import { onIssued } from "./handlers.js"
 *
 * // every instance of the consumer shares the bucket: a message is handled once
 * const PaymentsLive = Consumer.layer({ stream: "BILLING", durable: "payments", handlers: [onIssued] }).pipe(
 *   Layer.provide(Dedup.layerKv({ bucket: "payments-dedup", leaseTtl: "30 seconds", retention: "7 days" }))
 * )
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layerKv = (options: KvOptions = {}): Layer.Layer<Dedup, DedupError, JetStream> =>
  Layer.effect(Dedup, makeKv(options))
