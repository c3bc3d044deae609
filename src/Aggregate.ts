/**
 * Event-sourced aggregates on JetStream.
 *
 * An aggregate is its events: {@link make} defines it from its event
 * definitions, an `initial` state, `evolve` (state + event → state) and
 * `decide` (command + state → new events). A {@link Repository} loads an
 * aggregate by folding the events stored on its own subject,
 * `<context>.<aggregate>.events.<aggregateId>` (see `Subject.aggregateEvents`),
 * or, with `partitions: n`, `<context>.<aggregate>.events.<partition>.<aggregateId>`
 * (`partition` = `Subject.partition(aggregateId, n)`: one durable consumer per
 * partition keeps each aggregate's events in order across instances),
 * and appends the events a command decides with
 * `Nats-Expected-Last-Subject-Sequence` set to the last sequence it read:
 * when another writer appended in between, JetStream refuses the append and
 * the command fails with {@link ConcurrencyConflict} — or, with a `retry`
 * Schedule, is loaded, decided and appended again.
 *
 * Each event is published through the `Publisher` (envelope, Schema encode,
 * headers, spans, retries of transient failures with the same message id),
 * on the aggregate's subject, with `version` = the aggregate's version after
 * it. The events of one command are appended one after the other, each
 * expecting the sequence of the one before (atomic batches need
 * nats-server 2.12): a crash in between leaves the first ones stored, as if
 * the command had decided fewer events. Old event versions are migrated when
 * loaded (see `Event.history`).
 *
 * Snapshots (optional) are kept in a KV bucket: every `every` versions the
 * state is stored with its version and sequence, and a load starts from the
 * snapshot and reads only the events after it. A snapshot that does not
 * decode (the state's Schema changed) is ignored.
 *
 * @since 0.2.0
 */
import { Data, Effect, Either, Option, type ParseResult, type Schedule, Schema } from "effect"
import * as Handler from "./Handler.js"
import type * as Event from "./Event.js"
import * as History from "./internal/history.js"
import * as Json from "./internal/json.js"
import { JetStream, type KvStore } from "./JetStream.js"
import * as Limits from "./Limits.js"
import * as NatsError from "./NatsError.js"
import { type PublishError, Publisher } from "./Publisher.js"
import * as PublisherModule from "./Publisher.js"
import * as Subject from "./Subject.js"

/**
 * One of an aggregate's events, as `evolve` receives it and `decide`
 * returns it: its type and its (current-version) data.
 *
 * @since 0.2.0
 * @category models
 */
export type EventOf<Events extends ReadonlyArray<Event.Any>> = {
  [K in keyof Events]: { readonly type: Events[K]["type"]; readonly data: Event.Data<Events[K]> }
}[number]

/**
 * An aggregate definition.
 *
 * @since 0.2.0
 * @category models
 */
export interface Aggregate<S, C, Events extends ReadonlyArray<Event.Any>, E = never, R = never> {
  /** The first two tokens of its events' types: `<context>.<aggregate>`. */
  readonly context: string
  readonly name: string
  /** The aggregate type of its events (`Event.aggregate`), e.g. `"User"`. */
  readonly aggregateType: string
  readonly events: Events
  readonly initial: S
  readonly evolve: (state: S, event: EventOf<Events>) => S
  readonly decide: (
    command: C,
    state: S,
    current: { readonly id: string; readonly version: number }
  ) => Effect.Effect<ReadonlyArray<EventOf<Events>>, E, R>
  /** The number of partitions of its subjects, `undefined` when not partitioned. */
  readonly partitions: number | undefined
  /**
   * The subjects of all aggregates of this type (for the stream):
   * `<context>.<aggregate>.events.*`, or `<context>.<aggregate>.events.*.*` when partitioned.
   */
  readonly subjects: string
  /**
   * The filter subject of each partition, `<context>.<aggregate>.events.<k>.*`
   * for `k` in `0..partitions-1`; `[subjects]` (one partition) when not
   * partitioned, so that code written for partitions works for both.
   */
  readonly partitionSubjects: ReadonlyArray<string>
  /**
   * The nats-server `mappings` entry that routes the unpartitioned subject to
   * the partitioned one, `{ "<ctx>.<agg>.events.*": "<ctx>.<agg>.events.{{partition(n,1)}}.{{wildcard(1)}}" }`:
   * a publisher outside the toolkit then lands on the subject the toolkit
   * uses. `undefined` when not partitioned.
   */
  readonly serverMapping: Readonly<Record<string, string>> | undefined
  /** The subject of one aggregate's events (the id validated as a token). */
  readonly subject: (id: string) => Effect.Effect<string, Subject.InvalidSubjectError>
}

/**
 * Any aggregate definition, as far as its events and their subject go (what
 * `AsyncApi.make` documents of it).
 *
 * @since 0.2.0
 * @category models
 */
export interface Any {
  readonly context: string
  readonly name: string
  readonly aggregateType: string
  readonly events: ReadonlyArray<Event.Any>
  /** The number of partitions of its subjects (see {@link make}), `undefined` when not partitioned. */
  readonly partitions?: number | undefined
}

/**
 * Define an aggregate. Its events must share the context and aggregate tokens
 * of their types (`accounts.user.*`) and the aggregate type; otherwise it
 * throws at definition time.
 *
 * With `partitions: n` (a positive integer; anything else throws), each
 * aggregate's subject carries its partition,
 * `<context>.<aggregate>.events.<partition>.<aggregateId>`, and
 * `partitionSubjects` lists the filter subject of each partition: run one
 * durable consumer per partition (`orderBy: "aggregate"`), and each
 * aggregate's events are read by one reader at a time, in order, however
 * many instances share the work. `serverMapping` is the nats-server mapping
 * for publishers outside the toolkit. The partition count is part of the
 * subjects: changing it moves aggregates to other subjects.
 *
 * @example
 * ```ts
 * import { Effect, Schema } from "effect"
 * import { Aggregate, Event } from "effect-nats"
 *
 * const Deposited = Event.make({ type: "bank.account.deposited", aggregate: "Account", schema: Schema.Struct({ amount: Schema.Number }) })
 * const Withdrawn = Event.make({ type: "bank.account.withdrawn", aggregate: "Account", schema: Schema.Struct({ amount: Schema.Number }) })
 *
 * export const Account = Aggregate.make({
 *   events: [Deposited, Withdrawn],
 *   initial: { balance: 0 },
 *   evolve: (state, event) => {
 *     switch (event.type) {
 *       case "bank.account.deposited": return { balance: state.balance + event.data.amount }
 *       case "bank.account.withdrawn": return { balance: state.balance - event.data.amount }
 *     }
 *   },
 *   decide: (command: { readonly withdraw: number }, state) =>
 *     command.withdraw > state.balance
 *       ? Effect.fail("insufficient funds" as const)
 *       : Effect.succeed([{ type: "bank.account.withdrawn" as const, data: { amount: command.withdraw } }])
 * })
 *
 * // the same, its subjects in 8 partitions: bank.account.events.<0..7>.<id>
 * export const PartitionedAccount = Aggregate.make({ ...Account, partitions: 8 })
 * PartitionedAccount.partitionSubjects // ["bank.account.events.0.*", ..., "bank.account.events.7.*"]
 * ```
 *
 * @since 0.2.0
 * @category constructors
 */
export const make = <const Events extends ReadonlyArray<Event.Any>, S, C, E = never, R = never>(options: {
  readonly events: Events
  readonly initial: S
  readonly evolve: (state: S, event: EventOf<Events>) => S
  readonly decide: (
    command: C,
    state: S,
    current: { readonly id: string; readonly version: number }
  ) => Effect.Effect<ReadonlyArray<EventOf<Events>>, E, R>
  /** Partition its subjects in this many partitions (a positive integer; default: not partitioned). */
  readonly partitions?: number | undefined
}): Aggregate<S, C, Events, E, R> => {
  const first = options.events[0]
  if (first === undefined) throw new Error("Aggregate.make: no events")
  const [context, name] = first.type.split(".") as [string, string]
  for (const e of options.events) {
    if (!e.type.startsWith(`${context}.${name}.`) || e.aggregate !== first.aggregate) {
      throw new Error(
        `Aggregate.make: ${e.type} (aggregate ${e.aggregate}) is not an event of ${context}.${name} (aggregate ${first.aggregate})`
      )
    }
  }
  const partitions = options.partitions
  if (partitions !== undefined && !(Number.isInteger(partitions) && partitions >= 1)) {
    throw new Error(`Aggregate.make: partitions must be a positive integer, got ${partitions}`)
  }
  const prefix = `${context}.${name}.${Subject.aggregateEventsToken}`
  const subjects = partitions === undefined ? `${prefix}.*` : `${prefix}.*.*`
  return {
    context,
    name,
    aggregateType: first.aggregate,
    events: options.events,
    initial: options.initial,
    evolve: options.evolve,
    decide: options.decide,
    partitions,
    subjects,
    partitionSubjects: partitions === undefined ? [subjects] : Array.from({ length: partitions }, (_, k) => `${prefix}.${k}.*`),
    serverMapping: partitions === undefined
      ? undefined
      : { [`${prefix}.*`]: `${prefix}.{{partition(${partitions},1)}}.{{wildcard(1)}}` },
    subject: (id) => Subject.aggregateEvents(context, name, id, partitions)
  }
}

/**
 * An aggregate as loaded: its state, its version (events folded) and the
 * stream sequence of its last event (0 when it has none).
 *
 * @since 0.2.0
 * @category models
 */
export interface Loaded<S> {
  readonly id: string
  readonly state: S
  readonly version: number
  readonly sequence: number
}

/**
 * What a command did: the state after it and the events it appended.
 *
 * @since 0.2.0
 * @category models
 */
export interface Executed<S, Ev> extends Loaded<S> {
  readonly events: ReadonlyArray<Ev>
}

/**
 * Another writer appended to the aggregate since it was loaded: JetStream
 * refused the append (`Nats-Expected-Last-Subject-Sequence`).
 *
 * @since 0.2.0
 * @category errors
 */
export class ConcurrencyConflict extends Data.TaggedError("ConcurrencyConflict")<{
  readonly aggregateId: string
  readonly subject: string
  /** The last sequence the append expected. */
  readonly expected: number
  readonly message: string
}> {}

/**
 * A stored event of the aggregate could not be read (it does not decode, or
 * its type is not one of the aggregate's events): the aggregate cannot be
 * loaded.
 *
 * @since 0.2.0
 * @category errors
 */
export class AggregateLoadError extends Data.TaggedError("AggregateLoadError")<{
  readonly aggregateId: string
  readonly sequence: number
  readonly message: string
  readonly cause?: unknown
}> {}

/**
 * Load and command aggregates of one type.
 *
 * @since 0.2.0
 * @category models
 */
export interface Repository<S, C, Ev, E, R> {
  readonly load: (
    id: string
  ) => Effect.Effect<Loaded<S>, AggregateLoadError | Subject.InvalidSubjectError | NatsError.NatsError, R>
  /**
   * Load, decide, append. A {@link ConcurrencyConflict} is retried with the
   * repository's `retry` Schedule, when it has one (each try loads again).
   */
  readonly execute: (
    id: string,
    command: C
  ) => Effect.Effect<
    Executed<S, Ev>,
    E | ConcurrencyConflict | PublishError | AggregateLoadError | Subject.InvalidSubjectError | NatsError.NatsError,
    R
  >
}

/**
 * Snapshot options: the KV bucket, how often (in versions), and the state's Schema.
 *
 * @since 0.2.0
 * @category models
 */
export interface Snapshots<S, I> {
  readonly bucket: string
  /** Store a snapshot each time the version crosses a multiple of this (default 100). */
  readonly every?: number | undefined
  readonly schema: Schema.Schema<S, I>
}

const ExpectedLastSubjectSequence = "Nats-Expected-Last-Subject-Sequence"
/** JetStream's err_code for "wrong last sequence". */
const wrongLastSequence = 10071

const isWrongLastSequence = (e: PublishError): boolean =>
  e.cause._tag === "NatsRequestError" && e.cause.errCode === wrongLastSequence

/** A KV key for any valid subject token (KV keys allow fewer characters). */
const snapshotKey = (id: string): string => /^[-_=A-Za-z0-9]+$/.test(id) ? id : `b64_${Buffer.from(id).toString("base64url")}`

/**
 * A repository of an aggregate type on a stream whose subjects cover
 * `aggregate.subjects`.
 *
 * @example
 * ```ts
 * import { Effect, Schedule } from "effect"
 * import { Aggregate } from "effect-nats"
 * import { Account } from "./account.js"
 *
 * const program = Effect.gen(function*() {
 *   const accounts = yield* Aggregate.repository(Account, { stream: "BANK", retry: Schedule.recurs(5) })
 *   const after = yield* accounts.execute("acc-1", { withdraw: 10 })
 *   yield* Effect.log(`balance ${after.state.balance} at version ${after.version}`)
 * })
 * ```
 *
 * @since 0.2.0
 * @category constructors
 */
export const repository = <S, C, Events extends ReadonlyArray<Event.Any>, E, R, SI = S>(
  aggregate: Aggregate<S, C, Events, E, R>,
  options: {
    readonly stream: string
    /** The envelope `source` of the events it appends (the service's name). */
    readonly source?: string | undefined
    /** Retries of a command whose append met a {@link ConcurrencyConflict} (default: none, the conflict is the failure). */
    readonly retry?: Schedule.Schedule<unknown, unknown> | undefined
    readonly snapshots?: Snapshots<S, SI> | undefined
  }
): Effect.Effect<
  Repository<S, C, EventOf<Events>, E, R | Event.Context<Events[number]>>,
  NatsError.NatsError,
  JetStream | Publisher
> =>
  Effect.gen(function*() {
    type Ev = EventOf<Events>
    const js = yield* JetStream
    const publisher = yield* Publisher
    const limits = Limits.resolve(yield* Limits.Limits, undefined)
    const definitions = new Map<string, Event.Event<string, unknown, unknown, unknown>>(
      aggregate.events.map((e) => [e.type, e as Event.Event<string, unknown, unknown, unknown>])
    )
    // the consumers' decode (with version migration) of each event
    const decoders = new Map([...definitions].map(([type, e]) => [type, Handler.make(e, () => Effect.void).decode]))
    const snapshots = options.snapshots
    const every = Math.max(1, snapshots?.every ?? 100)
    const kv: KvStore | undefined = snapshots === undefined ? undefined : yield* Effect.tryPromise({
      try: () => js.kvm.create(snapshots.bucket, { history: 1 }),
      catch: NatsError.fromCause("Aggregate.repository", snapshots.bucket)
    })
    const Snapshot = snapshots === undefined ? undefined : Schema.parseJson(Schema.Struct({
      version: Schema.Int,
      sequence: Schema.Int,
      state: snapshots.schema
    }))

    const readSnapshot = (id: string): Effect.Effect<Option.Option<Loaded<S>>> =>
      kv === undefined || Snapshot === undefined ? Effect.succeedNone : Effect.tryPromise(() => kv.get(snapshotKey(id))).pipe(
        Effect.flatMap((entry) =>
          entry === null || entry.operation !== "PUT"
            ? Effect.succeedNone
            : Effect.map(Schema.decodeUnknown(Snapshot)(entry.string()), (s) => Option.some({ id, ...s }))
        ),
        // no snapshot, or one that no longer decodes: fold from the first event
        Effect.catchAll((e) => Effect.as(Effect.logWarning(`Aggregate ${aggregate.context}.${aggregate.name} ${id}: snapshot ignored: ${String(e)}`), Option.none()))
      )

    const writeSnapshot = (loaded: Loaded<S>): Effect.Effect<void> =>
      kv === undefined || Snapshot === undefined ? Effect.void : Schema.encode(Snapshot)(loaded).pipe(
        Effect.flatMap((json) => Effect.tryPromise(() => kv.put(snapshotKey(loaded.id), json))),
        Effect.catchAll((e) => Effect.logWarning(`Aggregate ${aggregate.context}.${aggregate.name} ${loaded.id}: snapshot not stored: ${String(e)}`)),
        Effect.asVoid
      )

    const load = (id: string) =>
      Effect.gen(function*() {
        const subject = yield* aggregate.subject(id)
        const snapshot = yield* readSnapshot(id)
        let { state, version, sequence } = Option.getOrElse(snapshot, () => ({ state: aggregate.initial, version: 0, sequence: 0 }))
        const reader = yield* History.open(js, {
          stream: options.stream,
          filterSubject: subject,
          from: sequence === 0 ? "all" : { startSequence: sequence + 1 }
        })
        for (let i = 0; i < reader.total; i++) {
          const msg = yield* reader.next
          const refused = (message: string, cause?: unknown) =>
            new AggregateLoadError({ aggregateId: id, sequence: msg.seq, message: `${subject}#${msg.seq}: ${message}`, cause })
          const parsed = Json.parse(msg.data, limits.maxDepth, limits.maxBytes)
          if (Either.isLeft(parsed)) return yield* refused(parsed.left.message)
          const json = parsed.right
          const type = typeof json === "object" && json !== null && "type" in json ? String(json.type) : ""
          const decode = decoders.get(type)
          if (decode === undefined) return yield* refused(`"${type}" is not an event of ${aggregate.context}.${aggregate.name}`)
          const envelope = yield* Effect.mapError(decode(json) as unknown as Effect.Effect<{ readonly data: unknown; readonly version: number }, ParseResult.ParseError | Event.UnsupportedVersionError>, (e) => refused(e.message, e))
          state = aggregate.evolve(state, { type, data: envelope.data } as Ev)
          version = envelope.version > 0 ? envelope.version : version + 1
          sequence = msg.seq
        }
        return { id, state, version, sequence }
      }).pipe(
        Effect.scoped,
        Effect.withSpan("Aggregate.load", { attributes: { "messaging.destination.name": `${aggregate.context}.${aggregate.name}`, "aggregate.id": id } })
      ) as Effect.Effect<Loaded<S>, AggregateLoadError | Subject.InvalidSubjectError | NatsError.NatsError, R>

    /** Append events after `loaded`, each expecting the sequence of the one before. */
    const append = (loaded: Loaded<S>, subject: string, events: ReadonlyArray<Ev>) =>
      Effect.reduce(events, loaded, (at, event) => {
        const definition = definitions.get(event.type)
        if (definition === undefined) return Effect.dieMessage(`Aggregate ${aggregate.context}.${aggregate.name}: decide returned ${event.type}, not one of its events`)
        const version = at.version + 1
        return PublisherModule.build(definition, event.data, { aggregateId: loaded.id, version }, options.source).pipe(
          Effect.flatMap((message) =>
            publisher.publishMessage({
              ...message,
              subject,
              headers: { ...message.headers, [ExpectedLastSubjectSequence]: String(at.sequence) }
            })
          ),
          Effect.catchIf(isWrongLastSequence, () =>
            new ConcurrencyConflict({
              aggregateId: loaded.id,
              subject,
              expected: at.sequence,
              message: `${subject}: another writer appended after sequence ${at.sequence} (version ${at.version})`
            })),
          Effect.map((ack) => ({ id: loaded.id, state: aggregate.evolve(at.state, event), version, sequence: ack.seq }))
        )
      })

    const once = (id: string, command: C) =>
      Effect.gen(function*() {
        const loaded = yield* load(id)
        const subject = yield* aggregate.subject(id)
        const events = yield* aggregate.decide(command, loaded.state, { id, version: loaded.version })
        if (events.length === 0) return { ...loaded, events }
        const after = yield* append(loaded, subject, events)
        if (Math.floor(after.version / every) > Math.floor(loaded.version / every)) yield* writeSnapshot(after)
        return { ...after, events }
      })

    const execute = (id: string, command: C) =>
      (options.retry === undefined
        ? once(id, command)
        : Effect.retry(once(id, command), {
          schedule: options.retry,
          while: (e: unknown) => typeof e === "object" && e !== null && "_tag" in e && e._tag === "ConcurrencyConflict"
        })).pipe(Effect.withSpan("Aggregate.execute", { attributes: { "aggregate.id": id } }))

    return { load, execute } as unknown as Repository<S, C, Ev, E, R | Event.Context<Events[number]>>
  })
