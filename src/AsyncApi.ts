/**
 * Contracts other teams can read: an AsyncAPI 3.0 document made from the
 * Event and Command definitions a service already has. Nothing in it is
 * written by hand:
 *
 * - channels: one per event subject and per command subject, a reply channel
 *   per command (address `null`: the requester's inbox), and the micro
 *   discovery subjects `$SRV.<VERB>.<name>` and `$SRV.<VERB>.<name>.{id}` of a
 *   command service (`{id}` is a channel parameter);
 * - operations: `send` for the events the service publishes, `receive` for
 *   those it consumes, `receive` with a `reply` for each command it answers
 *   (with the NATS queue group as an operation binding);
 * - messages: an event's envelope with its `data` Schema as JSON Schema (and
 *   `type`, `aggregateType` fixed), its headers (`Nats-Msg-Id`,
 *   `Content-Type`, `traceparent`, the `Envelope.HeaderNames` metadata); a
 *   command's request body, its success response, one response per typed
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
import type * as Command from "./Command.js"
import type * as Event from "./Event.js"
import * as Contract from "./internal/contract.js"
import * as micro from "./internal/micro.js"

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

/**
 * The messages of one event. One message today; when events have versions,
 * each version of the event is one more message here (and so on its channel
 * and in its operations).
 */
const eventMessages = (b: Builder, event: Event.Any): ReadonlyArray<string> => [
  b.message(event.type, {
    title: event.type,
    summary: `${event.aggregate} event ${event.type}${event.schemaVersion === undefined ? "" : ` (schema version ${event.schemaVersion})`}`,
    contentType: "application/json",
    headers: b.json(Contract.eventHeaders(event)),
    payload: Contract.eventPayload(event, b.schemas, schemasPath) as JsonSchema,
    correlationId: { location: "$message.payload#/correlationId" }
  })
]

const addEvents = (b: Builder, options: Options): void => {
  const publishes = options.events?.publishes ?? []
  const consumes = options.events?.consumes ?? []
  const seen = new Set<string>()
  for (const event of [...publishes, ...consumes]) {
    if (seen.has(event.type)) continue
    seen.add(event.type)
    const messages = eventMessages(b, event)
    const channel = b.channel(event.type, event.subject, messages, {
      description: `${event.aggregate} events ${event.type} (JetStream); body: the envelope, \`data\` as the event's Schema`
    })
    const operation = (action: Operation["action"], summary: string): Operation => ({
      action,
      channel,
      summary,
      messages: b.channelMessages(event.type, messages)
    })
    if (publishes.some((e) => e.type === event.type)) {
      b.operations[`${event.type}.publish`] = operation("send", `publish ${event.type} (JetStream, Nats-Msg-Id = id)`)
    }
    if (consumes.some((e) => e.type === event.type)) {
      b.operations[`${event.type}.consume`] = operation("receive", `consume ${event.type} (durable pull consumer)`)
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
 * The AsyncAPI 3.0 document of a service, from its definitions.
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
