/**
 * Check a service against its AsyncAPI document with the ecosystem's own
 * tools: the document is parsed by `@asyncapi/parser` (any error fails), and
 * real messages recorded on a running server are validated against its
 * message schemas (headers and payload) with Ajv.
 *
 * `record` subscribes to the document's channel addresses (a `{param}`
 * becomes `*`) and to `_INBOX.>`, so it sees the events, the command
 * requests and their replies. A reply is checked against the reply messages
 * of the operation whose request it answers; every other inbox message (a
 * JetStream PubAck) is ignored. Note that a subscription on a command
 * subject answers nothing but counts as a responder while it lasts.
 *
 * @since 0.1.0
 */
import { Parser } from "@asyncapi/parser"
import { headers as natsHeaders } from "@nats-io/nats-core"
import { Ajv, type ValidateFunction } from "ajv"
import { Data, Effect, type Scope } from "effect"
import { NatsClient, type NatsError } from "effect-nats"

/**
 * A message seen on the wire.
 *
 * @since 0.1.0
 * @category models
 */
export interface Recorded {
  readonly subject: string
  readonly reply: string | undefined
  /** First value of each header. */
  readonly headers: Readonly<Record<string, string>>
  readonly data: Uint8Array
}

/**
 * One recorded message and the document message it matched (its `name`).
 *
 * @since 0.1.0
 * @category models
 */
export interface Checked {
  readonly subject: string
  readonly message: string
}

/**
 * What `check` found: the messages that matched, and one line per message
 * that matched none of its channel's messages (with Ajv's reasons).
 *
 * @since 0.1.0
 * @category models
 */
export interface Report {
  readonly checked: ReadonlyArray<Checked>
  readonly problems: ReadonlyArray<string>
}

/**
 * The document does not parse: the parser's errors.
 *
 * @since 0.1.0
 * @category errors
 */
export class ContractError extends Data.TaggedError("ContractError")<{
  readonly errors: ReadonlyArray<string>
  readonly message: string
}> {}

/**
 * A document (as text, YAML or JSON, or as data) parsed by
 * `@asyncapi/parser`. Fails with every error diagnostic; warnings and hints
 * are not errors.
 *
 * @example
 * ```ts
 * import { Contracts } from "@effect-nats/testing"
 * import { AsyncApi } from "effect-nats"
 * import { InvoiceIssued } from "./events.js"
 *
 * const document = AsyncApi.make({ service: { name: "billing", version: "1.0.0" }, events: { publishes: [InvoiceIssued] } })
 * const parsed = Contracts.parse(document) // fails with ContractError on any parser error
 * ```
 *
 * @since 0.1.0
 * @category parsing
 */
export const parse = (document: unknown) =>
  Effect.gen(function*() {
    const input = typeof document === "string" ? document : JSON.stringify(document)
    const { diagnostics, document: parsed } = yield* Effect.promise(() => new Parser().parse(input))
    // DiagnosticSeverity.Error = 0
    const errors = diagnostics.filter((d) => d.severity === 0).map((d) => `${d.path.join(".")}: ${d.message}`)
    if (errors.length > 0 || parsed === undefined) {
      return yield* new ContractError({ errors, message: `the AsyncAPI document has errors: ${errors.join("; ")}` })
    }
    return parsed
  })

/**
 * Record, for the rest of the scope, the messages on the document's channel
 * addresses and on `_INBOX.>`; read them with the returned effect.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Contracts } from "@effect-nats/testing"
 * import { AsyncApi, Publisher } from "effect-nats"
 * import { InvoiceIssued } from "./events.js"
 *
 * const document = AsyncApi.make({ service: { name: "billing", version: "1.0.0" }, events: { publishes: [InvoiceIssued] } })
 * const program = Effect.gen(function*() {
 *   const recorded = yield* Contracts.record(document)
 *   const publisher = yield* Publisher.Publisher
 *   yield* publisher.publish(InvoiceIssued, { invoiceId: "inv-1", amount: 42 })
 *   const report = yield* Contracts.check(document, yield* recorded) // report.problems: [] when all conform
 * }).pipe(Effect.scoped)
 * ```
 *
 * @since 0.1.0
 * @category recording
 */
export const record = (
  document: { readonly channels: Readonly<Record<string, { readonly address: string | null }>> }
): Effect.Effect<Effect.Effect<ReadonlyArray<Recorded>>, NatsError.NatsError, NatsClient.NatsClient | Scope.Scope> =>
  Effect.gen(function*() {
    const nats = yield* NatsClient.NatsClient
    const seen: Array<Recorded> = []
    const subjects = new Set(["_INBOX.>"])
    for (const channel of Object.values(document.channels)) {
      if (channel.address !== null) subjects.add(channel.address.replace(/\{[^}]+\}/g, "*"))
    }
    for (const subject of subjects) {
      yield* Effect.acquireRelease(
        Effect.sync(() =>
          nats.connection.subscribe(subject, {
            callback: (err, msg) => {
              if (err !== null) return
              const headers: Record<string, string> = {}
              for (const [key, values] of msg.headers ?? natsHeaders()) headers[key] = values[0] ?? ""
              seen.push({ subject: msg.subject, reply: msg.reply || undefined, headers, data: msg.data })
            }
          })
        ),
        (sub) => Effect.sync(() => sub.unsubscribe())
      )
    }
    yield* nats.flush
    return Effect.sync(() => seen.slice())
  })

interface Candidate {
  readonly name: string
  readonly headers: ValidateFunction | undefined
  readonly payload: ValidateFunction | undefined
}

interface Channel {
  readonly id: string
  readonly pattern: RegExp | undefined
  readonly messages: ReadonlyArray<Candidate>
  /** The reply messages, when an operation on this channel replies. */
  readonly replies: ReadonlyArray<Candidate> | undefined
}

const escape = (s: string) => s.replace(/[.*+?^$()|[\]\\]/g, "\\$&")

const addressPattern = (address: string): RegExp =>
  new RegExp("^" + address.split(/\{[^}]+\}/).map(escape).join("[^.]+") + "$")

const decode = (data: Uint8Array): unknown => data.length === 0 ? undefined : JSON.parse(new TextDecoder().decode(data))

/**
 * Parse the document, then validate each recorded message against the
 * messages of the channel its subject is the address of (a reply: of the
 * reply channel of the request's operation). A message passes when its
 * headers and payload validate against one of them.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Contracts } from "@effect-nats/testing"
 * import { AsyncApi } from "effect-nats"
 * import { InvoiceIssued } from "./events.js"
 *
 * const document = AsyncApi.make({ service: { name: "billing", version: "1.0.0" }, events: { publishes: [InvoiceIssued] } })
 * const verify = (recorded: ReadonlyArray<Contracts.Recorded>) =>
 *   Effect.map(Contracts.check(document, recorded), (report) => report.problems) // [] when all conform
 * ```
 *
 * @since 0.1.0
 * @category checking
 */
export const check = (document: unknown, recorded: ReadonlyArray<Recorded>): Effect.Effect<Report, ContractError> =>
  Effect.gen(function*() {
    const parsed = yield* parse(document)
    const ajv = new Ajv({ strict: false, allErrors: true })
    const compile = (schema: { json(): unknown } | undefined) =>
      schema === undefined ? undefined : ajv.compile(schema.json() as object)
    const candidates = (messages: ReadonlyArray<{ name(): string | undefined; id(): string; hasHeaders(): boolean; headers(): { json(): unknown } | undefined; hasPayload(): boolean; payload(): { json(): unknown } | undefined }>) =>
      messages.map((m): Candidate => ({
        name: m.name() ?? m.id(),
        headers: m.hasHeaders() ? compile(m.headers()) : undefined,
        payload: m.hasPayload() ? compile(m.payload()) : undefined
      }))
    const channels: Array<Channel> = []
    for (const channel of parsed.channels().all()) {
      const address = channel.address()
      const reply = parsed.operations().all().find((op) => op.channels().all().some((c) => c.id() === channel.id()) && op.reply() !== undefined)
      channels.push({
        id: channel.id(),
        pattern: address === null || address === undefined ? undefined : addressPattern(address),
        messages: candidates(channel.messages().all()),
        replies: reply === undefined ? undefined : candidates(reply.reply()!.messages().all())
      })
    }
    const checked: Array<Checked> = []
    const problems: Array<string> = []
    const awaiting = new Map<string, Channel>()
    const validate = (message: Recorded, channel: Channel, against: ReadonlyArray<Candidate>) => {
      let payload: unknown
      try {
        payload = decode(message.data)
      } catch {
        problems.push(`${message.subject} (${channel.id}): the body is not JSON`)
        return
      }
      const reasons: Array<string> = []
      for (const candidate of against) {
        const headersOk = candidate.headers === undefined || candidate.headers(message.headers)
        const payloadOk = candidate.payload === undefined ? payload === undefined : candidate.payload(payload)
        if (headersOk && payloadOk) {
          checked.push({ subject: message.subject, message: candidate.name })
          return
        }
        const errors = [...(candidate.headers?.errors ?? []), ...(candidate.payload?.errors ?? [])]
        reasons.push(`${candidate.name}: ${errors.map((e) => `${e.instancePath || "/"} ${e.message}`).join(", ") || "no payload expected"}`)
      }
      problems.push(`${message.subject} (${channel.id}) matches none of its messages: ${reasons.join(" | ")}`)
    }
    for (const message of recorded) {
      const waiting = awaiting.get(message.subject)
      if (waiting !== undefined) {
        validate(message, waiting, waiting.replies ?? [])
        continue
      }
      const channel = channels.find((c) => c.pattern?.test(message.subject) === true)
      if (channel === undefined) continue
      if (channel.replies !== undefined && message.reply !== undefined) awaiting.set(message.reply, channel)
      validate(message, channel, channel.messages)
    }
    return { checked, problems }
  })

/**
 * Run `effect` while recording (see {@link record}), then {@link check} what
 * it sent and received against the document.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { Contracts } from "@effect-nats/testing"
 * import { AsyncApi, Publisher } from "effect-nats"
 * import { InvoiceIssued } from "./events.js"
 *
 * const document = AsyncApi.make({ service: { name: "billing", version: "1.0.0" }, events: { publishes: [InvoiceIssued] } })
 * const run = Effect.flatMap(Publisher.Publisher, (p) => p.publish(InvoiceIssued, { invoiceId: "inv-1", amount: 42 }))
 * const problems = Effect.map(Contracts.during(document, run), ({ report }) => report.problems) // []
 * ```
 *
 * @since 0.1.0
 * @category checking
 */
export const during = <A, E, R>(
  document: { readonly channels: Readonly<Record<string, { readonly address: string | null }>> },
  effect: Effect.Effect<A, E, R>
): Effect.Effect<
  { readonly result: A; readonly report: Report },
  E | ContractError | NatsError.NatsError,
  Exclude<R, Scope.Scope> | NatsClient.NatsClient
> =>
  Effect.scoped(Effect.gen(function*() {
    const recorded = yield* record(document)
    const result = yield* effect
    // replies and deliveries still in flight
    yield* Effect.promise(() => new Promise((resolve) => setTimeout(resolve, 100)))
    return { result, report: yield* check(document, yield* recorded) }
  }))
