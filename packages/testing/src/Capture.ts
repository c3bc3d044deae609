/**
 * Capture helpers for tests, the same on a real server and in memory: what
 * was published (by subject, by event definition, decoded), waiting for N
 * messages, dead letters with their reason, metric values and spans.
 *
 * What was published is read back from the JetStream streams (what they
 * stored since the capture started, in the order they stored it), through
 * the `JetStream` service: the capture adds no subscription, so it changes
 * nothing on the server (a wildcard subscription would make every request
 * "answered" and keep dead pull requests alive). A message a workqueue or
 * interest stream deleted before the capture read it is missed: read (or
 * wait) before acking when that matters. Core NATS messages (not stored by a
 * stream) are captured only on the subjects given in `subjects`, by a
 * subscription: a request to such a subject then has a responder.
 *
 * Waiting (`awaitMessages`, `awaitEvents`, `awaitDeadLetter`, `eventually`)
 * polls on the live clock, bounded by a timeout (default 5 seconds), so a
 * test on `TestClock` still fails in real time instead of hanging. Drive the
 * clock first (`TestClock.adjust`), then wait.
 *
 * `InMemoryNats.layer()` provides a capture; on a real server, add
 * `Capture.layer()` on top of the client and JetStream layers.
 *
 * @since 0.1.0
 */
import { randomBytes } from "node:crypto"
import type { StoredMsg } from "@nats-io/jetstream"
import type { MsgHdrs } from "@nats-io/nats-core"
import { Clock, Context, Data, type Duration, Effect, Either, Layer, Metric, Option, Schema, type Scope, TestClock, Tracer } from "effect"
import type * as Exit from "effect/Exit"
import { DeadLetter, type Envelope, type Event, JetStream, Metrics, NatsClient } from "effect-nats"
import { matches, overlaps } from "./internal/memory/subjects.js"

/**
 * A message the capture saw: stored by a stream (`stream` and `seq` set), or
 * received on one of the capture's core subscriptions.
 *
 * @since 0.1.0
 * @category models
 */
export interface Captured {
  readonly subject: string
  readonly data: Uint8Array
  /** All header values by name (as sent). */
  readonly headers: Readonly<Record<string, ReadonlyArray<string>>>
  /** The first value of a header, matched case-insensitively. */
  readonly header: (name: string) => string | undefined
  /** The stream that stored it (`undefined` for a core message). */
  readonly stream: string | undefined
  /** Its sequence in that stream. */
  readonly seq: number | undefined
  /** The payload as UTF-8 text. */
  readonly text: () => string
  /** The payload parsed as JSON. */
  readonly json: () => unknown
}

/**
 * A span recorded by the capture tracer.
 *
 * @since 0.1.0
 * @category models
 */
export interface CapturedSpan {
  readonly name: string
  readonly kind: Tracer.SpanKind
  readonly traceId: string
  readonly spanId: string
  /** The parent's span id (also for an external parent extracted from a `traceparent`). */
  readonly parentSpanId: string | undefined
  readonly attributes: Readonly<Record<string, unknown>>
  readonly events: ReadonlyArray<{ readonly name: string; readonly attributes: Readonly<Record<string, unknown>> }>
  /** `undefined` while the span runs. */
  readonly exit: Exit.Exit<unknown, unknown> | undefined
}

/**
 * What `deadLetters` / `awaitDeadLetter` look for (every given field must match).
 *
 * @since 0.1.0
 * @category models
 */
export interface DeadLetterMatch {
  readonly reason?: string | undefined
  readonly errorTag?: string | undefined
  /** The original subject (a NATS filter: wildcards allowed). */
  readonly subject?: string | undefined
  /** The dead letter's context (`dlq.<context>`). */
  readonly context?: string | undefined
}

/**
 * Options of a wait.
 *
 * @since 0.1.0
 * @category models
 */
export interface AwaitOptions {
  /** Real (live-clock) time to wait before failing (default 5 seconds). */
  readonly timeout?: Duration.DurationInput | undefined
}

/**
 * A wait ran out of time; the message says what was seen.
 *
 * @since 0.1.0
 * @category errors
 */
export class CaptureTimeoutError extends Data.TaggedError("CaptureTimeoutError")<{
  readonly message: string
}> {}

/**
 * The capture service.
 *
 * @example
 * ```ts
 * import { Effect, TestClock } from "effect"
 * import { Capture } from "@effect-nats/testing"
 * import { InvoiceIssued } from "./events.js"
 *
 * const check = Effect.gen(function*() {
 *   const capture = yield* Capture.Capture
 *   yield* TestClock.adjust("1 minute")
 *   const dead = yield* capture.awaitDeadLetter({ reason: "MaxDeliveries" })
 *   const issued = yield* capture.events(InvoiceIssued)
 * })
 * ```
 *
 * @since 0.1.0
 * @category tags
 */
export class Capture extends Context.Tag("@effect-nats/testing/Capture")<Capture, {
  /**
   * Messages streams stored since the capture started, on subjects matching
   * `filter` (a NATS filter, wildcards allowed), in the order they were
   * stored (stream by stream for messages stored in the same millisecond).
   * Without a filter: every application subject (not `$...`, e.g. KV buckets).
   */
  readonly published: (filter?: string) => Effect.Effect<ReadonlyArray<Captured>>
  /** Wait until `count` messages matching `filter` were stored; returns the first `count`. */
  readonly awaitMessages: (
    filter: string,
    count: number,
    options?: AwaitOptions
  ) => Effect.Effect<ReadonlyArray<Captured>, CaptureTimeoutError>
  /**
   * Envelopes of an event stored so far, decoded with the event's Schema, one
   * per envelope id, oldest first. Messages on the subject that do not decode
   * are left out (see `published`).
   */
  readonly events: <A, I>(event: Event.Event<string, A, I, never>) => Effect.Effect<ReadonlyArray<Envelope.Envelope<A>>>
  /** Wait until `count` envelopes of the event were stored. */
  readonly awaitEvents: <A, I>(
    event: Event.Event<string, A, I, never>,
    count: number,
    options?: AwaitOptions
  ) => Effect.Effect<ReadonlyArray<Envelope.Envelope<A>>, CaptureTimeoutError>
  /** Dead letters stored so far (decoded DLQ records), oldest first, optionally only those matching. */
  readonly deadLetters: (match?: DeadLetterMatch) => Effect.Effect<ReadonlyArray<DeadLetter.Record>>
  /** Wait for a dead letter matching `match` (e.g. `{ reason: "MaxDeliveries" }`). */
  readonly awaitDeadLetter: (
    match?: DeadLetterMatch,
    options?: AwaitOptions
  ) => Effect.Effect<DeadLetter.Record, CaptureTimeoutError>
  /** Core messages received on the capture's subscriptions (option `subjects`) matching `filter`. */
  readonly received: (filter?: string) => Effect.Effect<ReadonlyArray<Captured>>
  /** Wait until `count` core messages matching `filter` were received. */
  readonly awaitReceived: (
    filter: string,
    count: number,
    options?: AwaitOptions
  ) => Effect.Effect<ReadonlyArray<Captured>, CaptureTimeoutError>
  /**
   * A counter's increase since the capture started (or `clear`) for the
   * toolkit's `Metrics.*` counters; other counters count from zero.
   */
  readonly counter: (metric: Metric.Metric.Counter<number>) => Effect.Effect<number>
  /** Spans recorded since the capture started, optionally only those whose name matches. */
  readonly spans: (name?: string | RegExp) => Effect.Effect<ReadonlyArray<CapturedSpan>>
  /** Forget what was captured so far (messages and spans); counters restart from their current value. */
  readonly clear: Effect.Effect<void>
}>() {}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Subject prefix of the DLQ (default `dlq`, as `DeadLetter.layer`). */
  readonly dlqPrefix?: string | undefined
  /** Record spans with an in-memory tracer (default true). This turns the toolkit's spans on. */
  readonly spans?: boolean | undefined
  /** Core subjects to subscribe to (default none): see the module doc for what a subscription changes. */
  readonly subjects?: ReadonlyArray<string> | undefined
}

const decoder = new TextDecoder()
const live = Clock.make()

const isApplicationSubject = (subject: string): boolean => !subject.startsWith("$") && !subject.startsWith("_INBOX.")

const capturedOf = (
  subject: string,
  data: Uint8Array,
  h: MsgHdrs | undefined,
  stream: string | undefined,
  seq: number | undefined
): Captured => {
  const headers: Record<string, Array<string>> = {}
  if (h !== undefined) for (const [k, values] of h) headers[k] = [...values]
  return {
    subject,
    data,
    headers,
    stream,
    seq,
    header: (name) => {
      const lower = name.toLowerCase()
      for (const k in headers) if (k.toLowerCase() === lower) return headers[k]![0]
      return undefined
    },
    text: () => decoder.decode(data),
    json: () => JSON.parse(decoder.decode(data)) as unknown
  }
}

/**
 * Poll `check` on the live clock until it returns a value (bounded by
 * `timeout`, default 5 seconds): for conditions that are not messages, e.g.
 * a handler's effect, in a test that runs on `TestClock`.
 *
 * @example
 * ```ts
 * import { Effect, Ref } from "effect"
 * import { Capture } from "@effect-nats/testing"
 *
 * declare const handled: Ref.Ref<number>
 * const twice = Capture.eventually(Effect.map(Ref.get(handled), (n) => n === 2))
 * ```
 *
 * @since 0.1.0
 * @category utils
 */
export const eventually = <E, R>(
  check: Effect.Effect<boolean, E, R>,
  options: AwaitOptions = {}
): Effect.Effect<void, E | CaptureTimeoutError, R> =>
  waitUntil(Effect.map(check, (ok) => ok ? Option.some(undefined) : Option.none()), options, () => "condition not met")

const isTestClock = (clock: Clock.Clock): boolean =>
  typeof (clock as unknown as { readonly adjust?: unknown }).adjust === "function"

/**
 * Let time pass for the server and the toolkit: `TestClock.adjust(d)` when the
 * test runs on `TestClock` (the in-memory server's nak delays, ack_wait
 * expiry and request timeouts follow it, and so do the toolkit's retry
 * Schedules), else a real sleep of `d` (a real server). The same test body
 * then runs on both transports.
 *
 * Against a real server, run the test on the live clock (`it.live`, or
 * `layer(..., { excludeTestServices: true })`): the server's delays are
 * real, and the toolkit's in-process retries must sleep in real time too.
 *
 * @example
 * ```ts
 * import { Capture } from "@effect-nats/testing"
 *
 * // in memory on TestClock: instant; against nats-server: 3 real seconds
 * const later = Capture.advance("3 seconds")
 * ```
 *
 * @since 0.1.0
 * @category utils
 */
export const advance = (d: Duration.DurationInput): Effect.Effect<void> =>
  Effect.clockWith((clock) => isTestClock(clock) ? TestClock.adjust(d) : Effect.sleep(d))

const waitUntil = <A, E, R>(
  check: Effect.Effect<Option.Option<A>, E, R>,
  options: AwaitOptions | undefined,
  describe: () => string
): Effect.Effect<A, E | CaptureTimeoutError, R> => {
  const timeout = options?.timeout ?? "5 seconds"
  const loop: Effect.Effect<A, E, R> = Effect.flatMap(
    check,
    (o) => Option.isSome(o) ? Effect.succeed(o.value) : Effect.zipRight(Effect.sleep("10 millis"), Effect.suspend(() => loop))
  )
  return loop.pipe(
    Effect.timeoutFail({
      duration: timeout,
      onTimeout: () => new CaptureTimeoutError({ message: describe() })
    }),
    Effect.withClock(live)
  )
}

const hex = (bytes: number) => randomBytes(bytes).toString("hex")

class RecordingSpan implements Tracer.Span {
  readonly _tag = "Span"
  readonly spanId: string
  readonly traceId: string
  readonly sampled = true
  status: Tracer.SpanStatus
  readonly attributes = new Map<string, unknown>()
  readonly links: Array<Tracer.SpanLink>
  readonly events: Array<{ readonly name: string; readonly attributes: Readonly<Record<string, unknown>> }> = []

  constructor(
    readonly name: string,
    readonly parent: Option.Option<Tracer.AnySpan>,
    readonly context: Context.Context<never>,
    links: ReadonlyArray<Tracer.SpanLink>,
    startTime: bigint,
    readonly kind: Tracer.SpanKind
  ) {
    this.status = { _tag: "Started", startTime }
    this.traceId = Option.isSome(parent) ? parent.value.traceId : hex(16)
    this.spanId = hex(8)
    this.links = [...links]
  }

  end(endTime: bigint, exit: Exit.Exit<unknown, unknown>): void {
    this.status = { _tag: "Ended", startTime: this.status.startTime, endTime, exit }
  }

  attribute(key: string, value: unknown): void {
    this.attributes.set(key, value)
  }

  event(name: string, _startTime: bigint, attributes?: Record<string, unknown>): void {
    this.events.push({ name, attributes: { ...attributes } })
  }

  addLinks(links: ReadonlyArray<Tracer.SpanLink>): void {
    this.links.push(...links)
  }
}

const spanOf = (s: RecordingSpan): CapturedSpan => ({
  name: s.name,
  kind: s.kind,
  traceId: s.traceId,
  spanId: s.spanId,
  parentSpanId: Option.isSome(s.parent) ? s.parent.value.spanId : undefined,
  attributes: Object.fromEntries(s.attributes),
  events: [...s.events],
  exit: s.status._tag === "Ended" ? s.status.exit : undefined
})

const toolkitCounters: ReadonlyArray<Metric.Metric.Counter<number>> = [
  Metrics.published,
  Metrics.publishFailed,
  Metrics.consumed,
  Metrics.acked,
  Metrics.retried,
  Metrics.redelivered,
  Metrics.deadLettered,
  Metrics.duplicatesSkipped,
  Metrics.unhandled
]

interface StreamLog {
  readonly name: string
  /** Sequences up to this one are not captured (stored before the capture started, or cleared). */
  from: number
  /** Read up to this sequence. */
  read: number
  entries: Array<Captured & { readonly time: number }>
}

const collect = async <T>(lister: AsyncIterable<T>): Promise<Array<T>> => {
  const out: Array<T> = []
  for await (const x of lister) out.push(x)
  return out
}

/**
 * The capture service over the current client, and (unless `spans: false`) a
 * recording tracer installed for the scope.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (
  options: Options = {}
): Effect.Effect<Capture["Type"], never, NatsClient.NatsClient | JetStream.JetStream | Scope.Scope> =>
  Effect.gen(function*() {
    const nats = yield* NatsClient.NatsClient
    const js = yield* JetStream.JetStream
    const dlqPrefix = options.dlqPrefix ?? "dlq"
    const dlqFilter = `${dlqPrefix}.>`

    // streams, by name and creation time (a recreated stream starts its sequences again)
    const logs = new Map<string, StreamLog>()
    const streamInfos = Effect.promise(() => collect(js.manager.streams.list()).catch(() => []))
    const keyOf = (info: { readonly config: { readonly name: string }; readonly created: string }) =>
      `${info.config.name} ${info.created}`
    for (const info of yield* streamInfos) {
      logs.set(keyOf(info), { name: info.config.name, from: info.state.last_seq, read: info.state.last_seq, entries: [] })
    }

    /** Read what the streams stored since the last read, for the streams a filter can match. */
    const refresh = (filter: string | undefined) =>
      Effect.gen(function*() {
        for (const info of yield* streamInfos) {
          const subjects = info.config.subjects ?? []
          const relevant = filter === undefined
            ? subjects.some((s) => !s.startsWith("$"))
            : subjects.some((s) => overlaps(s, filter))
          if (!relevant) continue
          const key = keyOf(info)
          let log = logs.get(key)
          if (log === undefined) {
            log = { name: info.config.name, from: 0, read: 0, entries: [] }
            logs.set(key, log)
          }
          const name = log.name
          for (let seq = Math.max(log.read + 1, log.from + 1, info.state.first_seq); seq <= info.state.last_seq; seq++) {
            const m: StoredMsg | null = yield* Effect.promise(() =>
              js.manager.streams.getMessage(name, { seq }).catch(() => null)
            )
            if (m !== null) log.entries.push({ ...capturedOf(m.subject, m.data, m.header, name, m.seq), time: m.time.getTime() })
          }
          log.read = Math.max(log.read, info.state.last_seq)
        }
      })

    const select = (filter: string | undefined): Array<Captured> => {
      const all: Array<Captured & { readonly time: number }> = []
      for (const log of logs.values()) {
        for (const e of log.entries) {
          if (filter === undefined ? isApplicationSubject(e.subject) : matches(filter, e.subject)) all.push(e)
        }
      }
      // stable: messages of one millisecond stay in stream order
      return all.sort((a, b) => a.time - b.time)
    }
    const published = (filter: string | undefined) => Effect.zipRight(refresh(filter), Effect.sync(() => select(filter)))

    // core subscriptions, when asked for
    let core: Array<Captured> = []
    for (const subject of options.subjects ?? []) {
      yield* Effect.acquireRelease(
        Effect.sync(() =>
          nats.connection.subscribe(subject, {
            callback: (err, msg) => {
              if (err === null) core.push(capturedOf(msg.subject, msg.data, msg.headers, undefined, undefined))
            }
          })
        ),
        (sub) => Effect.sync(() => sub.unsubscribe()).pipe(Effect.ignore)
      )
    }
    if (options.subjects !== undefined && options.subjects.length > 0) yield* nats.flush.pipe(Effect.ignore)
    const received = (filter: string | undefined) =>
      core.filter((m) => filter === undefined ? isApplicationSubject(m.subject) : matches(filter, m.subject))

    let spans: Array<RecordingSpan> = []
    if (options.spans !== false) {
      yield* Effect.withTracerScoped(Tracer.make({
        span: (name, parent, context, links, startTime, kind) => {
          const span = new RecordingSpan(name, parent, context, links, startTime, kind)
          spans.push(span)
          return span
        },
        context: (f) => f()
      }))
    }

    const baselines = new Map<Metric.Metric.Counter<number>, number>()
    const readCounter = (m: Metric.Metric.Counter<number>) => Effect.map(Metric.value(m), (s) => s.count)
    const resetCounters = Effect.forEach(toolkitCounters, (m) => Effect.map(readCounter(m), (n) => baselines.set(m, n)), {
      discard: true
    })
    yield* resetCounters

    const decodeEvents = <A, I>(event: Event.Event<string, A, I, never>, messages: ReadonlyArray<Captured>) => {
      const decode = Schema.decodeUnknownEither(Schema.parseJson(event.envelope))
      const seen = new Set<string>()
      const out: Array<Envelope.Envelope<A>> = []
      for (const m of messages) {
        const decoded = decode(m.text())
        if (Either.isLeft(decoded) || seen.has(decoded.right.id)) continue
        seen.add(decoded.right.id)
        out.push(decoded.right)
      }
      return out
    }
    const events = <A, I>(event: Event.Event<string, A, I, never>) =>
      Effect.map(published(event.subject), (ms) => decodeEvents(event, ms))

    const decodeRecord = Schema.decodeUnknownEither(Schema.parseJson(DeadLetter.Record))
    const records = (match: DeadLetterMatch | undefined) =>
      Effect.map(published(dlqFilter), (ms) => {
        const out: Array<DeadLetter.Record> = []
        for (const m of ms) {
          const decoded = decodeRecord(m.text())
          if (Either.isLeft(decoded)) continue
          const r = decoded.right
          if (match?.reason !== undefined && r.reason !== match.reason) continue
          if (match?.errorTag !== undefined && r.errorTag !== match.errorTag) continue
          if (match?.subject !== undefined && !matches(match.subject, r.subject)) continue
          if (match?.context !== undefined && m.subject !== `${dlqPrefix}.${match.context}`) continue
          out.push(r)
        }
        return out
      })

    const someWhen = <A>(ok: boolean, a: A): Option.Option<A> => ok ? Option.some(a) : Option.none()

    return Capture.of({
      published,
      awaitMessages: (filter, count, o) =>
        waitUntil(
          Effect.map(published(filter), (found) => someWhen(found.length >= count, found.slice(0, count))),
          o,
          () => `expected ${count} messages on ${filter}, saw ${select(filter).length}`
        ),
      events,
      awaitEvents: (event, count, o) =>
        waitUntil(
          Effect.map(events(event), (found) => someWhen(found.length >= count, found.slice(0, count))),
          o,
          () => `expected ${count} ${event.type} events, saw ${decodeEvents(event, select(event.subject)).length}`
        ),
      deadLetters: records,
      awaitDeadLetter: (match, o) =>
        waitUntil(Effect.map(records(match), (found) => Option.fromNullable(found[0])), o, () => {
          const all = select(dlqFilter).map((m) => decodeRecord(m.text())).filter(Either.isRight).map((r) => r.right)
          return `no dead letter matching ${JSON.stringify(match ?? {})}; ${
            all.length === 0
              ? "none was stored"
              : `stored: ${all.map((r) => `${r.subject} (${r.reason}/${r.errorTag}: ${r.errorMessage})`).join("; ")}`
          }`
        }),
      received: (filter) => Effect.sync(() => received(filter)),
      awaitReceived: (filter, count, o) =>
        waitUntil(
          Effect.sync(() => {
            const found = received(filter)
            return someWhen(found.length >= count, found.slice(0, count))
          }),
          o,
          () => `expected ${count} core messages on ${filter}, saw ${received(filter).length}`
        ),
      counter: (m) => Effect.map(readCounter(m), (n) => n - (baselines.get(m) ?? 0)),
      spans: (name) =>
        Effect.sync(() =>
          spans
            .filter((s) => name === undefined || (typeof name === "string" ? s.name === name : name.test(s.name)))
            .map(spanOf)
        ),
      clear: Effect.gen(function*() {
        yield* refresh(">")
        for (const log of logs.values()) {
          log.from = log.read
          log.entries = []
        }
        core = []
        spans = []
        yield* resetCounters
      })
    })
  })

/**
 * The capture layer, over the client and JetStream it is given.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { Capture, NatsTestServer } from "@effect-nats/testing"
 *
 * const ServerWithCapture = Capture.layer().pipe(Layer.provideMerge(NatsTestServer.layerJetStream()))
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<Capture, never, NatsClient.NatsClient | JetStream.JetStream> =>
  Layer.scoped(Capture, make(options))
