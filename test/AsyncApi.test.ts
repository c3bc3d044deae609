import { describe, expect, it, layer } from "@effect/vitest"
import { Contracts, NatsTestServer } from "@effect-nats/testing"
import { Ajv } from "ajv"
import { DateTime, Effect, Either, Layer, Schema } from "effect"
import { Aggregate, AsyncApi, Command, CommandClient, CommandService, Event, JetStream, NatsClient, Publisher, Subject } from "effect-nats"
import { unique } from "./utils.js"

// --- definitions -------------------------------------------------------------

class OrderNotFound extends Schema.TaggedError<OrderNotFound>()("OrderNotFound", { orderId: Schema.String }) {
  readonly code = "404"
}

class OutOfStock extends Schema.TaggedError<OutOfStock>()("OutOfStock", { sku: Schema.String, message: Schema.String }) {
  readonly code = "OUT_OF_STOCK"
}

const PlaceOrder = Command.make({
  service: "shop",
  aggregate: "order",
  name: "place",
  payload: Schema.Struct({ sku: Schema.String, quantity: Schema.Int.pipe(Schema.positive()) }),
  success: Schema.Struct({ orderId: Schema.String }),
  failure: Schema.Union(OrderNotFound, OutOfStock)
})

const GetOrder = Command.query({
  service: "shop",
  aggregate: "order",
  success: Schema.Struct({ orderId: Schema.String, placedAt: Schema.DateTimeUtc })
})

const OrderPlaced = Event.make({
  type: "shop.order.placed",
  aggregate: "Order",
  schema: Schema.Struct({ orderId: Schema.String, sku: Schema.String, quantity: Schema.Int }),
  schemaVersion: 2,
  aggregateId: (d) => d.orderId
})

const OrderShipped = Event.make({
  type: "shop.order.shipped",
  aggregate: "Order",
  schema: Schema.Struct({ orderId: Schema.String, carrier: Schema.optional(Schema.String) })
})

const service = { name: "shop", version: "1.2.3", description: "orders" }

const document = AsyncApi.make({
  service,
  events: { publishes: [OrderPlaced], consumes: [OrderShipped] },
  commands: [PlaceOrder, GetOrder]
})

const place = CommandService.handler(PlaceOrder, (payload, request) =>
  Effect.gen(function*() {
    if (payload.sku === "none") return yield* new OutOfStock({ sku: payload.sku, message: "no stock" })
    const orderId = request.aggregateId ?? "o-1"
    yield* Effect.orDie((yield* Publisher.Publisher).publish(OrderPlaced, { orderId, ...payload }, { version: 1 }))
    return { orderId }
  }))

const get = CommandService.handler(GetOrder, (_, request) =>
  Effect.map(DateTime.now, (placedAt) => ({ orderId: request.aggregateId ?? "", placedAt })))

// --- the document -------------------------------------------------------------

describe("AsyncApi.make", () => {
  it.effect("parses with @asyncapi/parser without errors", () =>
    Effect.gen(function*() {
      const parsed = yield* Contracts.parse(document)
      expect(parsed.channels().all().map((c) => c.address())).toContain("$SRV.INFO.shop.{id}")
    }))

  it("channels, operations and messages come from the definitions", () => {
    expect(document.info).toEqual({ title: "shop", version: "1.2.3", description: "orders" })
    expect(Object.entries(document.operations).map(([id, op]) => [id, op.action])).toEqual([
      ["shop.order.placed.publish", "send"],
      ["shop.order.shipped.consume", "receive"],
      ["shop.command.order.place", "receive"],
      ["shop.query.order.get", "receive"],
      ["srv.ping", "receive"],
      ["srv.ping.instance", "receive"],
      ["srv.info", "receive"],
      ["srv.info.instance", "receive"],
      ["srv.stats", "receive"],
      ["srv.stats.instance", "receive"]
    ])
    // request/reply: the reply channel has no address (the requester's inbox) and carries every outcome
    const op = document.operations["shop.command.order.place"]!
    expect(op.bindings).toEqual({ nats: { queue: "q", bindingVersion: "0.1.0" } })
    expect(document.channels["shop.command.order.place.reply"]!.address).toBeNull()
    expect(op.reply!.messages.map((m) => m.$ref.split("/").at(-1))).toEqual([
      "shop.command.order.place.success",
      "shop.command.order.place.OrderNotFound",
      "shop.command.order.place.OutOfStock",
      "shop.command.order.place.error"
    ])
    // a templated subject: its token is a channel parameter
    expect(document.channels["srv.info.instance"]).toMatchObject({ address: "$SRV.INFO.shop.{id}", parameters: { id: {} } })

    const messages = document.components.messages
    const outOfStock = messages["shop.command.order.place.OutOfStock"]!
    expect(outOfStock.headers).toMatchObject({ properties: { "Nats-Service-Error-Code": { enum: ["OUT_OF_STOCK"] } } })
    expect(outOfStock.payload).toMatchObject({
      properties: {
        success: { enum: [false] },
        error: { properties: { code: { enum: ["OUT_OF_STOCK"] }, details: { $ref: "#/components/schemas/OutOfStock" } } }
      }
    })
    expect(document.components.schemas["OutOfStock"]).toMatchObject({ properties: { _tag: { enum: ["OutOfStock"] } } })
    // the query has no typed failures: success or error
    expect(Object.keys(document.channels["shop.query.order.get.reply"]!.messages)).toEqual([
      "shop.query.order.get.success",
      "shop.query.order.get.error"
    ])

    const placed = messages["shop.order.placed"]!
    expect(placed.payload).toMatchObject({
      properties: {
        type: { enum: ["shop.order.placed"] },
        aggregateType: { enum: ["Order"] },
        schemaVersion: { enum: [2] },
        data: { required: ["orderId", "sku", "quantity"] }
      }
    })
    expect(placed.headers).toMatchObject({
      required: ["Nats-Msg-Id", "Content-Type"],
      properties: { traceparent: {}, "Event-Type": { enum: ["shop.order.placed"] }, "Aggregate-Type": { enum: ["Order"] } }
    })
  })

  it("no keyword sits beside a $ref (draft-07 validators ignore those), no repeated $id: a refined named Schema is an allOf", () => {
    const beside: Array<string> = []
    const walk = (u: unknown, at: string): void => {
      if (typeof u !== "object" || u === null) return
      if ("$ref" in u && Object.keys(u).length > 1) beside.push(at)
      // nor Effect's `$id` markers, which would repeat
      if ("$id" in u) beside.push(at)
      for (const [k, v] of Object.entries(u)) walk(v, `${at}/${k}`)
    }
    walk(document, "#")
    expect(beside).toEqual([])
    // OrderPlaced's envelope: version is Int and non-negative
    expect(document.components.messages["shop.order.placed"]!.payload).toMatchObject({
      properties: { version: { allOf: [{ $ref: "#/components/schemas/Int" }], minimum: 0 } }
    })
  })

  it("a document without commands has no discovery channels", () => {
    const events = AsyncApi.make({ service, events: { publishes: [OrderPlaced] } })
    expect(Object.keys(events.channels)).toEqual(["shop.order.placed"])
    expect(AsyncApi.isDocument(events)).toBe(true)
    expect(AsyncApi.isDocument({ asyncapi: "2.6.0" })).toBe(false)
  })
})

// --- versioned events and aggregates -----------------------------------------

const CustomerV1 = Schema.Struct({ customerId: Schema.String, name: Schema.String })
const CustomerV2 = Schema.Struct({ customerId: Schema.String, firstName: Schema.String, lastName: Schema.String })
const CustomerV3 = Schema.Struct({ ...CustomerV2.fields, email: Schema.NullOr(Schema.String) })

const CustomerRegistered = Event.make({
  type: "shop.customer.registered",
  aggregate: "Customer",
  schema: CustomerV3,
  versions: Event.history(CustomerV1, (v1) => ({ customerId: v1.customerId, firstName: v1.name, lastName: "" }))
    .pipe(Event.andThen(CustomerV2, (v2) => ({ ...v2, email: null })))
})

const CustomerRenamed = Event.make({
  type: "shop.customer.renamed",
  aggregate: "Customer",
  schema: Schema.Struct({ customerId: Schema.String, firstName: Schema.String, lastName: Schema.String })
})

const Customer = Aggregate.make({
  events: [CustomerRegistered, CustomerRenamed],
  initial: 0,
  evolve: (n) => n + 1,
  decide: (_: "noop") => Effect.succeed([])
})

describe("AsyncApi.make: versions and aggregates", () => {
  const versioned = AsyncApi.make({
    service,
    events: { publishes: [CustomerRegistered], consumes: [CustomerRegistered] },
    aggregates: [Customer]
  })
  const names = (refs: ReadonlyArray<{ readonly $ref: string }>) => refs.map((r) => r.$ref.split("/").at(-1))

  /** A message as recorded on the wire: the envelope written at `schemaVersion` (none: as a v1 producer wrote it). */
  const wire = (subject: string, schemaVersion: number | undefined, data: object): Contracts.Recorded => ({
    subject,
    reply: undefined,
    headers: { "Nats-Msg-Id": "m-1", "Content-Type": "application/json" },
    data: new TextEncoder().encode(JSON.stringify({
      id: "m-1",
      type: CustomerRegistered.type,
      timestamp: "2026-12-01T00:00:00.000Z",
      correlationId: "c-1",
      aggregateId: "c-7",
      aggregateType: "Customer",
      version: 1,
      ...(schemaVersion === undefined ? {} : { schemaVersion }),
      data
    }))
  })
  const v1 = { customerId: "c-7", name: "Ada" }
  const v2 = { customerId: "c-7", firstName: "Ada", lastName: "Lovelace" }
  const v3 = { ...v2, email: "ada@example.com" }

  it.effect("parses with @asyncapi/parser without errors", () =>
    Effect.gen(function*() {
      const parsed = yield* Contracts.parse(versioned)
      expect(parsed.channels().all().map((c) => c.address())).toContain("shop.customer.events.{aggregateId}")
    }))

  it("one message per version: the current one named by the type, the past ones <type>.v<n>; publish sends the current, consume reads them all", () => {
    const channel = versioned.channels["shop.customer.registered"]!
    expect(Object.keys(channel.messages)).toEqual([
      "shop.customer.registered.v1",
      "shop.customer.registered.v2",
      "shop.customer.registered"
    ])
    expect(names(versioned.operations["shop.customer.registered.publish"]!.messages)).toEqual(["shop.customer.registered"])
    expect(names(versioned.operations["shop.customer.registered.consume"]!.messages)).toEqual(Object.keys(channel.messages))
    const messages = versioned.components.messages
    expect(messages["shop.customer.registered.v1"]!.payload).toMatchObject({
      properties: { schemaVersion: { enum: [1] }, data: { required: ["customerId", "name"] } }
    })
    // v1 was written without schemaVersion: it stays optional there, and only there
    expect(messages["shop.customer.registered.v1"]!.payload!["required"]).not.toContain("schemaVersion")
    expect(messages["shop.customer.registered.v2"]!.payload).toMatchObject({
      required: expect.arrayContaining(["schemaVersion"]),
      properties: { schemaVersion: { enum: [2] }, data: { required: ["customerId", "firstName", "lastName"] } }
    })
    expect(messages["shop.customer.registered"]!.payload).toMatchObject({
      properties: {
        type: { enum: ["shop.customer.registered"] },
        schemaVersion: { enum: [3] },
        data: { required: ["customerId", "firstName", "lastName", "email"] }
      }
    })
    // an event without past versions keeps its one message
    expect(Object.keys(versioned.channels["shop.customer.events"]!.messages)).toContain("shop.customer.renamed")
    expect(versioned.components.messages["shop.customer.renamed.v1"]).toBeUndefined()
  })

  it("an aggregate's events: one channel on <context>.<aggregate>.events.{aggregateId}, appends send the current versions", () => {
    expect(versioned.channels["shop.customer.events"]).toMatchObject({
      address: "shop.customer.events.{aggregateId}",
      parameters: { aggregateId: {} }
    })
    expect(Object.keys(versioned.channels["shop.customer.events"]!.messages)).toEqual([
      "shop.customer.registered.v1",
      "shop.customer.registered.v2",
      "shop.customer.registered",
      "shop.customer.renamed"
    ])
    const append = versioned.operations["shop.customer.events.append"]!
    expect(append.action).toBe("send")
    expect(names(append.messages)).toEqual(["shop.customer.registered", "shop.customer.renamed"])
  })

  it.effect("a partitioned aggregate's channel: <context>.<aggregate>.events.{partition}.{aggregateId}, both parameters described", () =>
    Effect.gen(function*() {
      const doc = AsyncApi.make({ service, aggregates: [Aggregate.make({ ...Customer, partitions: 4 })] })
      const channel = doc.channels["shop.customer.events"]!
      expect(channel.address).toBe("shop.customer.events.{partition}.{aggregateId}")
      expect(channel.parameters?.["partition"]?.description).toMatch(/^0\.\.3: Subject\.partition\(aggregateId, 4\), FNV-1a/)
      expect(channel.parameters?.["aggregateId"]?.description).toMatch(/Customer's id/)
      yield* Contracts.parse(doc)
      const subject = `shop.customer.events.${Subject.partition("c-7", 4)}.c-7`
      const report = yield* Contracts.check(doc, [wire(subject, 3, v3)])
      expect(report.problems).toEqual([])
      expect(report.checked.map((c) => c.message)).toEqual(["shop.customer.registered"])
    }))

  it.effect("messages stored at each version validate against their own message, and only against it (Ajv)", () =>
    Effect.gen(function*() {
      const report = yield* Contracts.check(versioned, [
        wire("shop.customer.registered", undefined, v1),
        wire("shop.customer.registered", 2, v2),
        wire("shop.customer.registered", 3, v3),
        wire("shop.customer.events.c-7", 3, v3),
        wire("shop.customer.events.c-7", 1, v1)
      ])
      expect(report.problems).toEqual([])
      expect(report.checked.map((c) => c.message)).toEqual([
        "shop.customer.registered.v1",
        "shop.customer.registered.v2",
        "shop.customer.registered",
        "shop.customer.registered",
        "shop.customer.registered.v1"
      ])
      // data of one version under another version's number matches nothing
      const mixed = yield* Contracts.check(versioned, [wire("shop.customer.registered", 3, v1), wire("shop.customer.registered", 4, v3)])
      expect(mixed.problems).toHaveLength(2)
    }))
})

// --- real messages ------------------------------------------------------------

const Live = Layer.mergeAll(Publisher.layer(), CommandClient.layer()).pipe(
  Layer.provideMerge(NatsTestServer.layerJetStream())
)

describe("real messages against the document", () => {
  layer(Live, { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.scoped("events, requests, every kind of reply and $SRV.INFO validate against their messages (Ajv)", () =>
      Effect.gen(function*() {
        const js = yield* JetStream.JetStream
        const stream = unique("SHOP")
        yield* Effect.acquireRelease(
          js.ensureStream({ name: stream, subjects: ["shop.order.>"], storage: "memory" }),
          () => Effect.promise(() => js.manager.streams.delete(stream).catch(() => false))
        )
        const recorded = yield* Contracts.record(document)
        yield* CommandService.make({ ...service, commands: [place, get] })
        const client = yield* CommandClient.CommandClient
        yield* client.execute(PlaceOrder, "o-7", { sku: "apple", quantity: 2 })
        yield* Effect.either(client.execute(PlaceOrder, "o-8", { sku: "none", quantity: 1 }))
        yield* client.query(GetOrder, "o-7", {})
        // a malformed request: answered 400
        const nats = yield* NatsClient.NatsClient
        yield* Effect.promise(() => nats.connection.request(PlaceOrder.subject, JSON.stringify({ payload: { sku: 1 } })))
        yield* client.info({ service: "shop", maxResponses: 1 })
        yield* Effect.sleep("100 millis")

        const report = yield* Contracts.check(document, yield* recorded)
        // the one message that breaks the contract is the malformed request (its 400 answer conforms)
        expect(report.problems).toEqual([
          "shop.command.order.place (shop.command.order.place) matches none of its messages: shop.command.order.place.request: /payload must have required property 'quantity', /payload/sku must be string"
        ])
        expect(new Set(report.checked.map((c) => c.message))).toEqual(
          new Set([
            "shop.command.order.place.request",
            "shop.order.placed",
            "shop.command.order.place.success",
            "shop.command.order.place.OutOfStock",
            "shop.query.order.get.request",
            "shop.query.order.get.success",
            "shop.command.order.place.error",
            "srv.request",
            "srv.info.response"
          ])
        )

        // the check can fail: the same event with a wrong quantity matches nothing
        const event = (yield* recorded).find((m) => m.subject === OrderPlaced.subject)!
        const body = JSON.parse(new TextDecoder().decode(event.data))
        const wrong = { ...event, data: new TextEncoder().encode(JSON.stringify({ ...body, data: { ...body.data, quantity: "2" } })) }
        const failed = yield* Contracts.check(document, [wrong])
        expect(failed.problems).toHaveLength(1)
        expect(failed.problems[0]).toContain("/data/quantity must be integer")
      }))

    it.scoped("$SRV.INFO endpoint metadata carries the request and response JSON Schemas", () =>
      Effect.gen(function*() {
        yield* CommandService.make({ ...service, name: "shop-info", commands: [place] })
        const client = yield* CommandClient.CommandClient
        const [info] = yield* client.info({ service: "shop-info", maxResponses: 1 })
        const metadata = info!.endpoints[0]!.metadata!
        expect(metadata).toMatchObject({ kind: "command", aggregate: "order", command: "place" })
        const ajv = new Ajv({ strict: false })
        const request = ajv.compile(JSON.parse(metadata[CommandService.SchemaMetadata.request]!))
        const response = ajv.compile(JSON.parse(metadata[CommandService.SchemaMetadata.response]!))
        expect(request({ aggregateId: "o-1", payload: { sku: "a", quantity: 1 }, metadata: { correlationId: "c" } })).toBe(true)
        expect(request({ payload: { sku: "a", quantity: 0 } })).toBe(false)
        const metadataOut = { correlationId: "c", timestamp: "2026-01-01T00:00:00.000Z", durationMs: 1 }
        expect(response({ success: true, result: { orderId: "o-1" }, metadata: metadataOut })).toBe(true)
        expect(response({
          success: false,
          error: { code: "OUT_OF_STOCK", message: "no stock", details: { _tag: "OutOfStock", sku: "a", message: "no stock" } },
          metadata: metadataOut
        })).toBe(true)
        expect(response({ success: false, error: { code: "418", message: "teapot" }, metadata: metadataOut })).toBe(false)
        // the same schema the document has for the request
        const fromDocument = Either.getOrThrow(Schema.decodeUnknownEither(Schema.parseJson())(metadata[CommandService.SchemaMetadata.request]!))
        expect(fromDocument).toMatchObject({ $schema: "http://json-schema.org/draft-07/schema#", required: ["payload"] })
      }))
  })
})
