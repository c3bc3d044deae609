/**
 * Contracts other teams can read: an AsyncAPI 3.0 document made from the
 * Event and Command definitions a service already has. Nothing in it is
 * written by hand:
 *
 * - channels: one per event subject and per command subject, one per
 *   event-sourced aggregate the service keeps
 *   (`<context>.<aggregate>.events.{aggregateId}`, or
 *   `<context>.<aggregate>.events.{partition}.{aggregateId}` when partitioned), a reply channel per
 *   command (address `null`: the requester's inbox), and the micro
 *   discovery subjects `$SRV.<VERB>.<name>` and `$SRV.<VERB>.<name>.{id}` of a
 *   command service (`{id}` and `{aggregateId}` are channel parameters);
 * - operations: `send` for the events the service publishes (and appends to
 *   its aggregates), `receive` for those it consumes, `receive` with a
 *   `reply` for each command it answers (with the NATS queue group as an
 *   operation binding);
 * - messages: an event's envelope with its `data` Schema as JSON Schema (and
 *   `type`, `aggregateType` fixed), its headers (`Nats-Msg-Id`,
 *   `Content-Type`, `traceparent`, the `Envelope.HeaderNames` metadata); a
 *   versioned event (`Event.history`) has one message per version, each with
 *   its `schemaVersion` and `data` Schema: the current one (named by the
 *   event's type) is what the service publishes, the past ones
 *   (`<type>.v<n>`) what a stream may still hold and a consumer still reads;
 *   a command's request body, its success response, one response per typed
 *   failure (with its code in `error.code` and `Nats-Service-Error-Code`),
 *   and the `400` / `500` / `503` error response.
 *
 * JSON Schemas come from Effect's `JSONSchema` (draft-07); named Schemas
 * (identifiers such as `Int`, `Email`, a failure class) are written once
 * under `components.schemas`. Objects allow extra properties, as the
 * toolkit's decoders do (they ignore them).
 *
 * The document is plain JSON data: `JSON.stringify` it, or write it as YAML
 * with `effect-nats asyncapi <module>` (`@effect-nats/cli`).
 *
 * @since 0.1.0
 */
import type * as Aggregate from "./Aggregate.js"
import type * as Command from "./Command.js"
import type * as Event from "./Event.js"
import * as Contract from "./internal/contract.js"
import * as micro from "./internal/micro.js"
import * as Subject from "./Subject.js"

/**
 * A JSON Schema (draft-07) inside the document.
 *
 * @since 0.1.0
 * @category models
 */
export type JsonSchema = { readonly [key: string]: unknown }

/**
 * A JSON reference inside the document.
 *
 * @since 0.1.0
 * @category models
 */
export interface Reference {
  readonly $ref: string
}

/**
 * An AsyncAPI message.
 *
 * @since 0.1.0
 * @category models
 */
export interface Message {
  readonly name: string
  readonly title?: string
  readonly summary?: string
  readonly contentType?: string
  readonly headers?: JsonSchema
  readonly payload?: JsonSchema
  readonly correlationId?: { readonly location: string }
}

/**
 * An AsyncAPI channel: a NATS subject (`address`), or `null` for a reply
 * subject known only at run time.
 *
 * @since 0.1.0
 * @category models
 */
export interface Channel {
  readonly address: string | null
  readonly description?: string
  readonly parameters?: Readonly<Record<string, { readonly description: string }>>
  readonly messages: Readonly<Record<string, Reference>>
}

/**
 * An AsyncAPI operation.
 *
 * @since 0.1.0
 * @category models
 */
export interface Operation {
  readonly action: "send" | "receive"
  readonly channel: Reference
  readonly summary?: string
  readonly messages: ReadonlyArray<Reference>
  readonly reply?: { readonly channel: Reference; readonly messages: ReadonlyArray<Reference> }
  readonly bindings?: { readonly nats: { readonly queue: string; readonly bindingVersion: "0.1.0" } }
}

/**
 * An AsyncAPI 3.0 document.
 *
 * @since 0.1.0
 * @category models
 */
export interface Document {
  readonly asyncapi: "3.0.0"
  readonly info: { readonly title: string; readonly version: string; readonly description?: string }
  readonly defaultContentType: "application/json"
  readonly channels: Readonly<Record<string, Channel>>
  readonly operations: Readonly<Record<string, Operation>>
  readonly components: {
    readonly messages: Readonly<Record<string, Message>>
    readonly schemas: Readonly<Record<string, JsonSchema>>
  }
}

/**
 * What the document describes.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /**
   * The service: `name` and `version` as given to `CommandService.make` (the
   * `$SRV` discovery subjects use the name), and its queue group when not the
   * default `"q"`.
   */
  readonly service: {
    readonly name: string
    readonly version: string
    readonly description?: string | undefined
    readonly queueGroup?: string | undefined
  }
  /** The events the service publishes (`send`) and consumes (`receive`). */
  readonly events?: {
    readonly publishes?: ReadonlyArray<Event.Any> | undefined
    readonly consumes?: ReadonlyArray<Event.Any> | undefined
  } | undefined
  /**
   * The event-sourced aggregates the service keeps (`Aggregate.make`): their
   * events are appended (`send`) on each aggregate's own subject,
   * `<context>.<aggregate>.events.{aggregateId}` (or
   * `<context>.<aggregate>.events.{partition}.{aggregateId}` when partitioned),
   * not on the events' subjects.
   */
  readonly aggregates?: ReadonlyArray<Aggregate.Any> | undefined
  /** The commands and queries the service answers. */
  readonly commands?: ReadonlyArray<Command.Any> | undefined
}

/** A JSON pointer into the document. */
const pointer = (...tokens: ReadonlyArray<string>): Reference => ({
  $ref: "#/" + tokens.map((t) => t.replaceAll("~", "~0").replaceAll("/", "~1")).join("/")
})

const schemasPath = "#/components/schemas/"

/** Builds one document: messages, channels and operations, and the shared JSON Schema definitions. */
class Builder {
  readonly schemas: Contract.Definitions = {}
  readonly messages: Record<string, Message> = {}
  readonly channels: Record<string, Channel> = {}
  readonly operations: Record<string, Operation> = {}

  json(schema: Parameters<typeof Contract.jsonSchema>[0]): JsonSchema {
    return Contract.jsonSchema(schema, this.schemas, schemasPath) as JsonSchema
  }

  /** A channel on `address` carrying `messages` (keys of `components.messages`); `{token}`s in the address are its parameters. */
  channel(
    id: string,
    address: string | null,
    messages: ReadonlyArray<string>,
    extra: { readonly description?: string; readonly parameters?: Readonly<Record<string, string>> } = {}
  ): Reference {
    const tokens = address?.match(/\{[A-Za-z_][A-Za-z0-9_]*\}/g)?.map((t) => t.slice(1, -1)) ?? []
    this.channels[id] = {
      address,
      ...(extra.description === undefined ? {} : { description: extra.description }),
      ...(tokens.length === 0 ? {} : {
        parameters: Object.fromEntries(tokens.map((t) => [t, { description: extra.parameters?.[t] ?? t }]))
      }),
      messages: Object.fromEntries(messages.map((m) => [m, pointer("components", "messages", m)]))
    }
    return pointer("channels", id)
  }

  /** References to messages of a channel, as operations must give them. */
  channelMessages(id: string, messages: ReadonlyArray<string>): ReadonlyArray<Reference> {
    return messages.map((m) => pointer("channels", id, "messages", m))
  }

  message(key: string, message: Omit<Message, "name">): string {
    this.messages[key] = { name: key, ...message }
    return key
  }
}

/** The messages of one event: `all` its versions (oldest first), and the `current` one (what is published). */
interface EventMessages {
  readonly all: ReadonlyArray<string>
  readonly current: string
}

/**
 * The messages of one event: one per version. The current version's is named
 * by the event's type, a past version's `<type>.v<n>`; an event without past
 * versions has the one message.
 */
const eventMessages = (b: Builder, event: Event.Any): EventMessages => {
  const current = event.versions.length > 1 ? event.versions[event.versions.length - 1] : undefined
  const all = event.versions.map((version) => {
    const past = current !== undefined && version !== current
    return b.message(past ? `${event.type}.v${version.schemaVersion}` : event.type, {
      title: past ? `${event.type} (schema version ${version.schemaVersion})` : event.type,
      summary: past
        ? `${event.aggregate} event ${event.type}, past schema version ${version.schemaVersion}: no longer published, still read (migrated to version ${current.schemaVersion})`
        : `${event.aggregate} event ${event.type}${event.schemaVersion === undefined ? "" : ` (schema version ${event.schemaVersion})`}`,
      contentType: "application/json",
      headers: b.json(Contract.eventHeaders(event)),
      payload: Contract.eventPayload(event, b.schemas, schemasPath, current === undefined ? undefined : version) as JsonSchema,
      correlationId: { location: "$message.payload#/correlationId" }
    })
  })
  return { all, current: all[all.length - 1]! }
}

const addEvents = (b: Builder, options: Options): void => {
  const publishes = options.events?.publishes ?? []
  const consumes = options.events?.consumes ?? []
  const seen = new Set<string>()
  for (const event of [...publishes, ...consumes]) {
    if (seen.has(event.type)) continue
    seen.add(event.type)
    const messages = eventMessages(b, event)
    const versions = messages.all.length > 1 ? ` (every schema version a stream may hold; ${event.type} is the current one)` : ""
    const channel = b.channel(event.type, event.subject, messages.all, {
      description: `${event.aggregate} events ${event.type} (JetStream); body: the envelope, \`data\` as the event's Schema${versions}`
    })
    const operation = (action: Operation["action"], summary: string, messageKeys: ReadonlyArray<string>): Operation => ({
      action,
      channel,
      summary,
      messages: b.channelMessages(event.type, messageKeys)
    })
    // a publisher writes the current version; a consumer reads every version
    if (publishes.some((e) => e.type === event.type)) {
      b.operations[`${event.type}.publish`] = operation("send", `publish ${event.type} (JetStream, Nats-Msg-Id = id)`, [messages.current])
    }
    if (consumes.some((e) => e.type === event.type)) {
      b.operations[`${event.type}.consume`] = operation("receive", `consume ${event.type} (durable pull consumer)`, messages.all)
    }
  }
}

/**
 * Each aggregate's events on its own subject: one channel per aggregate type,
 * `{aggregateId}` its parameter (and `{partition}` before it when partitioned).
 */
const addAggregates = (b: Builder, options: Options): void => {
  for (const aggregate of options.aggregates ?? []) {
    const id = `${aggregate.context}.${aggregate.name}.${Subject.aggregateEventsToken}`
    const n = aggregate.partitions
    const messages = aggregate.events.map((event) => eventMessages(b, event))
    const channel = b.channel(id, n === undefined ? `${id}.{aggregateId}` : `${id}.{partition}.{aggregateId}`, messages.flatMap((m) => m.all), {
      description: `${aggregate.aggregateType} events (JetStream), all the events of one aggregate on its own subject, in order; ` +
        `body: the envelope (\`version\`: the aggregate's version after the event)`,
      parameters: {
        aggregateId: `the ${aggregate.aggregateType}'s id (the envelope's aggregateId)`,
        ...(n === undefined ? {} : {
          partition: `0..${n - 1}: Subject.partition(aggregateId, ${n}), FNV-1a 32 of the id's UTF-8 bytes modulo ${n} ` +
            `(nats-server's {{partition(${n},1)}} mapping)`
        })
      }
    })
    b.operations[`${id}.append`] = {
      action: "send",
      channel,
      summary: `append ${aggregate.aggregateType} events (JetStream, Nats-Msg-Id = id, Nats-Expected-Last-Subject-Sequence: optimistic concurrency)`,
      messages: b.channelMessages(id, messages.map((m) => m.current))
    }
  }
}

const errorMessage = `${micro.ErrorHeader} / ${micro.ErrorCodeHeader}`

const addCommands = (b: Builder, options: Options, queue: string): void => {
  for (const command of options.commands ?? []) {
    const id = command.subject
    const request = b.message(`${id}.request`, {
      title: `${command.endpoint} request`,
      summary: `${command.kind} ${command.name} on ${command.aggregate}`,
      contentType: "application/json",
      headers: b.json(Contract.requestHeaders),
      payload: b.json(Contract.requestBody(command)),
      correlationId: { location: "$message.payload#/metadata/correlationId" }
    })
    const replies = [
      b.message(`${id}.success`, {
        title: `${command.endpoint} success`,
        contentType: "application/json",
        payload: b.json(Contract.successBody(command)),
        correlationId: { location: "$message.payload#/metadata/correlationId" }
      }),
      ...Contract.failures(command).map((failure) =>
        b.message(`${id}.${failure.tag}`, {
          title: failure.tag,
          summary: `typed failure ${failure.tag}${failure.code === undefined ? "" : `, code ${failure.code}`} (${errorMessage} headers)`,
          contentType: "application/json",
          headers: b.json(Contract.errorHeaders(Contract.failureCode(failure))),
          payload: b.json(Contract.failureBody(failure)),
          correlationId: { location: "$message.payload#/metadata/correlationId" }
        })
      ),
      b.message(`${id}.error`, {
        title: `${command.endpoint} error`,
        summary: "400 (the request did not decode), 500 (the handler died), 503 (the service stopped)",
        contentType: "application/json",
        headers: b.json(Contract.errorHeaders(Contract.errorCode)),
        payload: b.json(Contract.errorBody),
        correlationId: { location: "$message.payload#/metadata/correlationId" }
      })
    ]
    const channel = b.channel(id, command.subject, [request], { description: `${command.kind} ${command.endpoint} (NATS request/reply)` })
    const reply = b.channel(`${id}.reply`, null, replies, { description: "the request's reply subject (a NATS inbox)" })
    b.operations[id] = {
      action: "receive",
      channel,
      summary: `answer ${command.subject} (micro endpoint ${command.endpoint})`,
      messages: b.channelMessages(id, [request]),
      reply: { channel: reply, messages: b.channelMessages(`${id}.reply`, replies) },
      bindings: { nats: { queue, bindingVersion: "0.1.0" } }
    }
  }
}

const discoveryResponses = {
  PING: micro.PingResponse,
  INFO: micro.InfoResponse,
  STATS: micro.StatsResponse
} as const

/** The micro discovery subjects of a command service: `$SRV.<VERB>.<name>` and `$SRV.<VERB>.<name>.{id}`. */
const addDiscovery = (b: Builder, name: string): void => {
  const request = b.message("srv.request", { title: "discovery request", summary: "an empty message" })
  for (const verb of micro.verbs) {
    const id = `srv.${verb.toLowerCase()}`
    const response = b.message(`${id}.response`, {
      title: `${verb} response`,
      contentType: "application/json",
      payload: b.json(discoveryResponses[verb])
    })
    const reply = pointer("channels", `${id}.reply`)
    const channels = [
      [id, micro.controlSubject(verb, name), "every instance answers"],
      [`${id}.instance`, micro.controlSubject(verb, name, "{id}"), "one instance answers"]
    ] as const
    for (const [channelId, address, who] of channels) {
      const channel = b.channel(channelId, address, [request], {
        description: `micro ${verb} (io.nats.micro.v1): ${who}`,
        parameters: { id: "the instance id, from a PING response" }
      })
      b.operations[channelId] = {
        action: "receive",
        channel,
        summary: `answer ${address}`,
        messages: b.channelMessages(channelId, [request]),
        reply: { channel: reply, messages: b.channelMessages(`${id}.reply`, [response]) }
      }
    }
    b.channel(`${id}.reply`, null, [response], { description: "the request's reply subject (a NATS inbox)" })
  }
}

/**
 * The AsyncAPI 3.0 document of a service, from its definitions. The events
 * of the aggregates it keeps (`aggregates: [Account]`, from `Aggregate.make`)
 * are documented on the aggregates' own subjects; a versioned event has one
 * message per version.
 *
 * @example
 * ```ts
 * import { AsyncApi } from "effect-nats"
 * import { GetInvoice, PayInvoice } from "./billing.js"
 * import { InvoiceIssued, InvoicePaid } from "./events.js"
 *
 * export default AsyncApi.make({
 *   service: { name: "billing", version: "1.0.0", description: "invoices and payments" },
 *   events: { publishes: [InvoiceIssued, InvoicePaid], consumes: [InvoiceIssued] },
 *   commands: [PayInvoice, GetInvoice]
 * })
 * // JSON.stringify(document) or `effect-nats asyncapi src/contracts.ts` (YAML)
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options): Document => {
  const b = new Builder()
  addEvents(b, options)
  addAggregates(b, options)
  const commands = options.commands ?? []
  if (commands.length > 0) {
    addCommands(b, options, options.service.queueGroup ?? micro.defaultQueueGroup)
    if (micro.validName.test(options.service.name)) addDiscovery(b, options.service.name)
  }
  return {
    asyncapi: "3.0.0",
    info: {
      title: options.service.name,
      version: options.service.version,
      ...(options.service.description === undefined ? {} : { description: options.service.description })
    },
    defaultContentType: "application/json",
    channels: b.channels,
    operations: b.operations,
    components: { messages: b.messages, schemas: Contract.finish(b.schemas) as unknown as Readonly<Record<string, JsonSchema>> }
  }
}

/**
 * Is this value an AsyncAPI 3.0 document (as {@link make} returns)?
 *
 * @example
 * ```ts
 * import { AsyncApi } from "effect-nats"
 *
 * AsyncApi.isDocument(AsyncApi.make({ service: { name: "billing", version: "1.0.0" } })) // true
 * ```
 *
 * @since 0.1.0
 * @category guards
 */
export const isDocument = (u: unknown): u is Document =>
  typeof u === "object" && u !== null && (u as { readonly asyncapi?: unknown }).asyncapi === "3.0.0"
