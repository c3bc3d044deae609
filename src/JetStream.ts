/**
 * JetStream as an Effect service: the nats.js client and manager, plus
 * declarative, idempotent provisioning of streams and durable consumers.
 *
 * `ensureStream` / `ensureConsumer` create what is missing, update what differs
 * in updatable fields, do nothing when the server already has the spec, and
 * fail with a clear {@link JetStreamProvisionError} on incompatible changes.
 * The configuration is read back afterwards, because servers silently drop
 * fields they do not know.
 *
 * @since 0.1.0
 */
import {
  AckPolicy,
  DeliverPolicy,
  DiscardPolicy,
  jetstream,
  jetstreamManager,
  RetentionPolicy,
  StorageType,
  type Consumer,
  type ConsumerAPI,
  type ConsumerConfig,
  type ConsumerInfo,
  type JetStreamClient,
  type JetStreamManager,
  type OrderedConsumerOptions,
  type PubAck,
  type StreamAPI,
  type StreamConfig,
  type StreamInfo
} from "@nats-io/jetstream"
import { type KV, Kvm, type KvOptions } from "@nats-io/kv"
import { type MsgHdrs, nanos, type NatsConnection } from "@nats-io/nats-core"
import { Context, Data, Duration, Effect, Layer } from "effect"
import { pipelined } from "./internal/jetstreamPublish.js"
import { type Connection, NatsClient } from "./NatsClient.js"
import * as NatsError from "./NatsError.js"

/**
 * A stream as the application wants it.
 *
 * @since 0.1.0
 * @category models
 */
export interface StreamSpec {
  readonly name: string
  readonly subjects: ReadonlyArray<string>
  readonly description?: string | undefined
  /** `limits` (default), `interest` or `workqueue`. Cannot change later. */
  readonly retention?: "limits" | "interest" | "workqueue" | undefined
  /** `file` (default) or `memory`. Cannot change later. */
  readonly storage?: "file" | "memory" | undefined
  readonly maxMsgs?: number | undefined
  readonly maxBytes?: number | undefined
  readonly maxAge?: Duration.DurationInput | undefined
  readonly maxMsgSize?: number | undefined
  /** JetStream `Nats-Msg-Id` dedup window (server default 2 minutes, capped by maxAge). */
  readonly duplicateWindow?: Duration.DurationInput | undefined
  readonly replicas?: number | undefined
  readonly discard?: "old" | "new" | undefined
}

/**
 * A durable pull consumer as the application wants it.
 *
 * @since 0.1.0
 * @category models
 */
export interface ConsumerSpec {
  readonly stream: string
  readonly durable: string
  readonly description?: string | undefined
  /** One subject filter (several need nats-server 2.10). */
  readonly filterSubject?: string | undefined
  /** Default 30 seconds; with a `backoff`, the server uses `backoff[0]` instead. */
  readonly ackWait?: Duration.DurationInput | undefined
  /** Default -1 (unlimited). */
  readonly maxDeliver?: number | undefined
  /** Default 1000. */
  readonly maxAckPending?: number | undefined
  /** Where the consumer starts (default `all`). Cannot change later. */
  readonly deliverPolicy?: DeliverFrom | undefined
  /** Server-side redelivery backoff. Do not combine with `nak(delay)`. */
  readonly backoff?: ReadonlyArray<Duration.DurationInput> | undefined
  readonly inactiveThreshold?: Duration.DurationInput | undefined
  readonly replicas?: number | undefined
}

/**
 * Where a consumer starts in its stream: `all` (the beginning), `new`,
 * `last`, `last_per_subject`, at a stream sequence (`{ startSequence }`), or
 * at the first message stored at or after a time (`{ startTime }`).
 *
 * @example
 * ```ts
 * import type { JetStream } from "effect-nats"
 *
 * const fromYesterday: JetStream.DeliverFrom = { startTime: new Date(Date.now() - 86_400_000) }
 * const fromSeq: JetStream.DeliverFrom = { startSequence: 1_000 }
 * ```
 *
 * @since 0.2.0
 * @category models
 */
export type DeliverFrom =
  | "all"
  | "new"
  | "last"
  | "last_per_subject"
  | { readonly startSequence: number }
  | { readonly startTime: Date }

/**
 * The consumer configuration fields of a {@link DeliverFrom}. @internal
 */
export const deliverConfig = (from: DeliverFrom | undefined): Fields => {
  if (from === undefined || typeof from === "string") {
    return {
      deliver_policy: {
        all: DeliverPolicy.All,
        new: DeliverPolicy.New,
        last: DeliverPolicy.Last,
        last_per_subject: DeliverPolicy.LastPerSubject
      }[from ?? "all"]
    }
  }
  return "startSequence" in from
    ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: Math.max(1, from.startSequence) }
    : { deliver_policy: DeliverPolicy.StartTime, opt_start_time: from.startTime.toISOString() }
}

/**
 * What `ensure` did.
 *
 * @since 0.1.0
 * @category models
 */
export type Ensured<Info> =
  | { readonly _tag: "Created"; readonly info: Info }
  | { readonly _tag: "Updated"; readonly info: Info; readonly changed: ReadonlyArray<string> }
  | { readonly _tag: "Unchanged"; readonly info: Info }

/**
 * Provisioning failed: an incompatible change (the fields are named), or the
 * server did not apply a field (it is too old to know it).
 *
 * @since 0.1.0
 * @category errors
 */
export class JetStreamProvisionError extends Data.TaggedError("JetStreamProvisionError")<{
  readonly reason: "IncompatibleChange" | "NotApplied" | "Rejected"
  readonly kind: "stream" | "consumer"
  /** The stream, or `<stream>/<durable>`. */
  readonly resource: string
  readonly fields: ReadonlyArray<string>
  readonly message: string
  readonly cause?: unknown
}> {}

/**
 * A pull consumer as effect-nats uses it: the nats.js `Consumer`, narrowed to
 * `consume` and `info`.
 *
 * @since 0.1.0
 * @category models
 */
export interface PullConsumer extends Pick<Consumer, "consume" | "info"> {}

/**
 * Access to existing consumers (nats.js `Consumers`, narrowed to `get`). With
 * no name, `get` returns an ordered consumer.
 *
 * @since 0.1.0
 * @category models
 */
export interface ConsumerAccess {
  get(stream: string, name?: string | Partial<OrderedConsumerOptions>): Promise<PullConsumer>
}

/**
 * The part of a nats.js `JetStreamClient` that effect-nats uses: `publish`
 * (answered with a PubAck) and `consumers.get`.
 *
 * The {@link JetStream} service exposes these narrow views rather than the
 * whole nats.js objects so that a test double (`InMemoryNats` in
 * `@effect-nats/testing`) can implement them: code written against them runs
 * unchanged on a real server and in memory. The nats.js objects satisfy them
 * as they are.
 *
 * @since 0.1.0
 * @category models
 */
export interface Client extends Pick<JetStreamClient, "publish"> {
  readonly consumers: ConsumerAccess
}

/**
 * Stream management (nats.js `StreamAPI`, narrowed).
 *
 * @since 0.1.0
 * @category models
 */
export interface StreamManager extends
  Pick<StreamAPI, "info" | "add" | "update" | "delete" | "purge" | "list" | "names" | "find" | "getMessage" | "deleteMessage">
{}

/**
 * Consumer management (nats.js `ConsumerAPI`, narrowed).
 *
 * @since 0.1.0
 * @category models
 */
export interface ConsumerManager extends Pick<ConsumerAPI, "info" | "add" | "update" | "delete" | "list"> {}

/**
 * The part of a nats.js `JetStreamManager` that effect-nats uses.
 *
 * @since 0.1.0
 * @category models
 */
export interface Manager extends Pick<JetStreamManager, "getAccountInfo"> {
  readonly streams: StreamManager
  readonly consumers: ConsumerManager
}

/**
 * A KV bucket (nats.js `KV`, narrowed to what a dedup store needs).
 *
 * @since 0.1.0
 * @category models
 */
export interface KvStore extends Pick<KV, "get" | "create" | "update" | "put" | "delete" | "purge" | "status"> {}

/**
 * Opens KV buckets (nats.js `Kvm`, narrowed): `create` opens the bucket,
 * creating it when it does not exist.
 *
 * @since 0.1.0
 * @category models
 */
export interface KvManager {
  create(name: string, opts?: Partial<KvOptions>): Promise<KvStore>
}

/**
 * One JetStream publish, answered with the PubAck: what
 * `client.publish(subject, payload, { headers, timeout })` does. A Promise,
 * not an Effect, for the hot loops that keep many in flight (the
 * `Publisher`'s window, the outbox relay).
 *
 * @since 0.1.0
 * @category models
 */
export type PublishFn = (subject: string, payload: Uint8Array, headers: MsgHdrs | undefined, timeout: number) => Promise<PubAck>

/**
 * The JetStream service.
 *
 * @example
 * ```ts
 * import { Effect, Layer } from "effect"
 * import { JetStream, NatsClient } from "effect-nats"
 *
 * const program = Effect.gen(function*() {
 *   const js = yield* JetStream.JetStream
 *   yield* js.ensureStream({ name: "BILLING", subjects: ["billing.>"], maxAge: "7 days" })
 * }).pipe(Effect.provide(JetStream.layer.pipe(Layer.provide(NatsClient.layerConfig()))))
 * ```
 *
 * @since 0.1.0
 * @category tags
 */
export class JetStream extends Context.Tag("effect-nats/JetStream")<JetStream, {
  /** JetStream publish and consumers (a nats.js `JetStreamClient` for {@link layer}). */
  readonly client: Client
  /**
   * The JetStream publish of the `Publisher` and the outbox relay (see
   * {@link PublishFn}). Over a connection ({@link fromHandles}' `nats`), every
   * publish is a core publish whose reply subject is on one subscription of
   * the connection, instead of a nats.js request per message (about 1.5x the
   * rate of `client.publish` at 1000 in flight here); without one, it is
   * `client.publish`. Failures are the errors `client.publish` gives.
   */
  readonly publish: PublishFn
  /** Stream and consumer management (a nats.js `JetStreamManager` for {@link layer}). */
  readonly manager: Manager
  /** KV buckets (a nats.js `Kvm` for {@link layer}). */
  readonly kvm: KvManager
  readonly ensureStream: (
    spec: StreamSpec
  ) => Effect.Effect<Ensured<StreamInfo>, JetStreamProvisionError | NatsError.NatsError>
  readonly ensureConsumer: (
    spec: ConsumerSpec
  ) => Effect.Effect<Ensured<ConsumerInfo>, JetStreamProvisionError | NatsError.NatsError>
  readonly streamInfo: (name: string) => Effect.Effect<StreamInfo, NatsError.NatsError>
  readonly consumerInfo: (stream: string, durable: string) => Effect.Effect<ConsumerInfo, NatsError.NatsError>
}>() {}

const nanosOf = (d: Duration.DurationInput): number => nanos(Duration.toMillis(d))

type Fields = Record<string, unknown>

/** @internal */
export const streamConfig = (spec: StreamSpec): Fields => {
  const c: Fields = { name: spec.name, subjects: [...spec.subjects] }
  if (spec.description !== undefined) c.description = spec.description
  if (spec.retention !== undefined) {
    c.retention = { limits: RetentionPolicy.Limits, interest: RetentionPolicy.Interest, workqueue: RetentionPolicy.Workqueue }[
      spec.retention
    ]
  }
  if (spec.storage !== undefined) c.storage = spec.storage === "memory" ? StorageType.Memory : StorageType.File
  if (spec.maxMsgs !== undefined) c.max_msgs = spec.maxMsgs
  if (spec.maxBytes !== undefined) c.max_bytes = spec.maxBytes
  if (spec.maxAge !== undefined) c.max_age = nanosOf(spec.maxAge)
  if (spec.maxMsgSize !== undefined) c.max_msg_size = spec.maxMsgSize
  if (spec.duplicateWindow !== undefined) c.duplicate_window = nanosOf(spec.duplicateWindow)
  if (spec.replicas !== undefined) c.num_replicas = spec.replicas
  if (spec.discard !== undefined) c.discard = spec.discard === "new" ? DiscardPolicy.New : DiscardPolicy.Old
  return c
}

/** @internal */
export const consumerConfig = (spec: ConsumerSpec): Fields => {
  const c: Fields = {
    durable_name: spec.durable,
    ack_policy: AckPolicy.Explicit,
    // the server sets ack_wait to backoff[0] when a backoff is given
    ack_wait: nanosOf(spec.backoff?.[0] ?? spec.ackWait ?? "30 seconds"),
    max_deliver: spec.maxDeliver ?? -1,
    max_ack_pending: spec.maxAckPending ?? 1000,
    ...deliverConfig(spec.deliverPolicy)
  }
  if (spec.description !== undefined) c.description = spec.description
  if (spec.filterSubject !== undefined) c.filter_subject = spec.filterSubject
  if (spec.backoff !== undefined) c.backoff = spec.backoff.map(nanosOf)
  if (spec.inactiveThreshold !== undefined) c.inactive_threshold = nanosOf(spec.inactiveThreshold)
  if (spec.replicas !== undefined) c.num_replicas = spec.replicas
  return c
}

const sameValue = (a: unknown, b: unknown, key?: string): boolean => {
  if (Array.isArray(a) && Array.isArray(b)) return a.length === b.length && a.every((x, i) => sameValue(x, b[i]))
  // the server writes times in its own format (RFC 3339, trailing zeros cut)
  if (key === "opt_start_time" && typeof a === "string" && typeof b === "string") return Date.parse(a) === Date.parse(b)
  return a === b || (a === undefined && b === "") || (a === "" && b === undefined)
}

/** The keys of `desired` whose value differs from `actual`. @internal */
export const diff = (desired: Fields, actual: object): Array<string> => {
  const current = actual as Fields
  return Object.keys(desired).filter((k) => !sameValue(desired[k], current[k], k))
}

const immutableStream = ["name", "storage", "retention"]
const immutableConsumer = ["durable_name", "deliver_policy", "ack_policy", "opt_start_seq", "opt_start_time"]

/**
 * Build the service from a connected {@link NatsClient}.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = Effect.gen(function*() {
  const nats = yield* NatsClient
  // a nats.js connection (NatsClient.layer); a test double brings its own JetStream layer, and on one
  // the manager's first request ($JS.API.INFO) fails with the error below
  const nc = nats.connection as NatsConnection
  const manager = yield* Effect.tryPromise({
    try: () => jetstreamManager(nc),
    catch: (cause) => {
      const e = NatsError.fromCause("JetStream.manager", undefined, nats.servers)(cause)
      return e._tag === "NatsNoRespondersError"
        ? new NatsError.NatsNoRespondersError({
          method: "JetStream.manager",
          subject: "$JS.API.INFO",
          message: `JetStream is not available on ${nats.servers}: no responders on $JS.API.INFO (is JetStream enabled? ` +
            `a test double's connection needs its own JetStream layer)`,
          cause
        })
        : e
    }
  })
  const client = jetstream(nc)
  return fromHandles({ client, manager, kvm: new Kvm(client), nats })
})

/**
 * The service over JetStream handles that already exist: what {@link make}
 * does once it has the nats.js client and manager. Provisioning
 * (`ensureStream` / `ensureConsumer`) is written against {@link Manager}, so
 * it runs unchanged on a test double's handles (`InMemoryNats` in
 * `@effect-nats/testing`). With `nats`, `publish` is pipelined on its
 * connection (the same code on a server and on an in-memory connection that
 * answers a core publish to a stream's subject with the PubAck); without,
 * it is `client.publish`.
 *
 * @since 0.1.0
 * @category constructors
 */
export const fromHandles = (handles: {
  readonly client: Client
  readonly manager: Manager
  readonly kvm: KvManager
  readonly nats?: { readonly connection: Connection; readonly inboxPrefix: string } | undefined
}): JetStream["Type"] => {
  const { client, kvm, manager } = handles
  const publish: PublishFn = handles.nats === undefined
    ? (subject, payload, headers, timeout) =>
      client.publish(subject, payload, headers === undefined ? { timeout } : { headers, timeout })
    : pipelined(handles.nats.connection, handles.nats.inboxPrefix)
  const streamInfo = (name: string) =>
    Effect.tryPromise({ try: () => manager.streams.info(name), catch: NatsError.fromCause("JetStream.streamInfo") })
  const consumerInfo = (stream: string, durable: string) =>
    Effect.tryPromise({
      try: () => manager.consumers.info(stream, durable),
      catch: NatsError.fromCause("JetStream.consumerInfo")
    })

  const isNotFound = (e: NatsError.NatsError) =>
    e._tag === "NatsRequestError" && (e.errCode === 10059 || e.errCode === 10014)

  const ensure = <Info extends { readonly config: object }>(args: {
    readonly kind: "stream" | "consumer"
    readonly name: string
    readonly desired: Fields
    readonly immutable: ReadonlyArray<string>
    readonly info: Effect.Effect<Info, NatsError.NatsError>
    readonly create: () => Promise<Info>
    readonly update: (fields: Fields) => Promise<Info>
  }): Effect.Effect<Ensured<Info>, JetStreamProvisionError | NatsError.NatsError> =>
    Effect.gen(function*() {
      const verify = (info: Info) => {
        const missing = diff(args.desired, info.config)
        return missing.length === 0 ? Effect.succeed(info) : Effect.fail(
          new JetStreamProvisionError({
            reason: "NotApplied",
            kind: args.kind,
            resource: args.name,
            fields: missing,
            message: `${args.kind} ${args.name}: the server did not apply ${
              missing.join(", ")
            } (unsupported by this server version?)`
          })
        )
      }
      const rejected = (cause: unknown) => {
        const e = NatsError.fromCause(`JetStream.ensure ${args.kind}`)(cause)
        return e._tag === "NatsRequestError" && e.code === 400
          ? new JetStreamProvisionError({
            reason: "Rejected",
            kind: args.kind,
            resource: args.name,
            fields: [],
            message: `${args.kind} ${args.name}: the server rejected the configuration: ${e.message}`,
            cause
          })
          : e
      }
      const current = yield* args.info.pipe(
        Effect.map((info) => ({ found: true as const, info })),
        Effect.catchIf(isNotFound, () => Effect.succeed({ found: false as const }))
      )
      if (!current.found) {
        const info = yield* Effect.tryPromise({ try: args.create, catch: rejected }).pipe(Effect.flatMap(verify))
        return { _tag: "Created", info } as const
      }
      const changed = diff(args.desired, current.info.config)
      if (changed.length === 0) return { _tag: "Unchanged", info: current.info } as const
      const incompatible = changed.filter((k) => args.immutable.includes(k))
      if (incompatible.length > 0) {
        return yield* new JetStreamProvisionError({
          reason: "IncompatibleChange",
          kind: args.kind,
          resource: args.name,
          fields: incompatible,
          message: `${args.kind} ${args.name}: cannot change ${incompatible.join(", ")} of an existing ${args.kind}; ` +
            `delete and recreate it, or use a new name`
        })
      }
      const info = yield* Effect.tryPromise({
        try: () => args.update(args.desired),
        catch: (cause) => {
          const e = rejected(cause)
          return e._tag === "JetStreamProvisionError"
            ? new JetStreamProvisionError({
              reason: "IncompatibleChange",
              kind: e.kind,
              resource: e.resource,
              fields: changed,
              message: e.message,
              cause: e.cause
            })
            : e
        }
      }).pipe(Effect.flatMap(verify))
      return { _tag: "Updated", info, changed } as const
    })

  const ensureStream = (spec: StreamSpec) => {
    const desired = streamConfig(spec)
    return ensure({
      kind: "stream",
      name: spec.name,
      desired,
      immutable: immutableStream,
      info: streamInfo(spec.name),
      create: () => manager.streams.add(desired as Partial<StreamConfig> & { name: string }),
      update: (fields) => {
        const { name: _name, retention: _r, storage: _s, ...updatable } = fields
        return manager.streams.update(spec.name, updatable as Partial<StreamConfig>)
      }
    }).pipe(Effect.withSpan("JetStream.ensureStream", { attributes: { "messaging.nats.stream": spec.name } }))
  }

  const ensureConsumer = (spec: ConsumerSpec) => {
    const desired = consumerConfig(spec)
    return ensure({
      kind: "consumer",
      name: `${spec.stream}/${spec.durable}`,
      desired,
      immutable: immutableConsumer,
      info: consumerInfo(spec.stream, spec.durable),
      create: () => manager.consumers.add(spec.stream, desired as Partial<ConsumerConfig>),
      update: (fields) => {
        const {
          durable_name: _d,
          deliver_policy: _p,
          ack_policy: _a,
          opt_start_seq: _s,
          opt_start_time: _t,
          ...updatable
        } = fields
        return manager.consumers.update(spec.stream, spec.durable, updatable as Partial<ConsumerConfig>)
      }
    }).pipe(Effect.withSpan("JetStream.ensureConsumer", {
      attributes: { "messaging.nats.stream": spec.stream, "messaging.consumer.group.name": spec.durable }
    }))
  }

  return JetStream.of({ client, manager, kvm, publish, ensureStream, ensureConsumer, streamInfo, consumerInfo })
}

/**
 * The JetStream layer; needs a {@link NatsClient}.
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<JetStream, NatsError.NatsError, NatsClient> = Layer.effect(JetStream, make)
