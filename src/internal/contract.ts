/**
 * The wire shapes of events and commands as Schemas, and those Schemas as
 * JSON Schema: what `AsyncApi.make` writes into a document and what a
 * command service puts into its `$SRV.INFO` endpoint metadata. Everything
 * here is derived from the definitions (the envelope, the request and
 * response bodies of `Command`, the header names of `Envelope`); nothing is
 * written by hand.
 *
 * @internal
 */
import { JSONSchema, Schema, SchemaAST } from "effect"
import * as Command from "../Command.js"
import * as Envelope from "../Envelope.js"
import type * as Event from "../Event.js"
import * as micro from "./micro.js"

/** A JSON Schema (draft-07, as `JSONSchema` writes it). */
export type JsonSchema = JSONSchema.JsonSchema7 | { readonly [key: string]: unknown }

/** Shared definitions, filled while schemas are converted (one copy of `Int`, `DateTimeUtc`, ...). */
export type Definitions = Record<string, JSONSchema.JsonSchema7>

/**
 * A Schema as JSON Schema; refs to named sub-schemas go to `definitions`
 * (under `definitionPath`). Excess properties are allowed, as the decoders
 * allow (and ignore) them. A Schema that has no JSON Schema form (a
 * declaration without a `jsonSchema` annotation) becomes an open schema that
 * says so.
 */
export const jsonSchema = (schema: Schema.Schema.All, definitions: Definitions, definitionPath = "#/$defs/"): JsonSchema => {
  try {
    return draft07(JSONSchema.fromAST(schema.ast, { definitions, definitionPath, additionalPropertiesStrategy: "allow" }))
  } catch (e) {
    return { description: `no JSON Schema form: ${e instanceof Error ? e.message : String(e)}` }
  }
}

/**
 * Draft-07 ignores the keywords beside a `$ref`, and `JSONSchema` writes a
 * refinement of a named Schema (`Int` with `minimum: 0`) that way: move the
 * `$ref` into an `allOf`, which every draft reads the same. Also drops the
 * `$id`s `JSONSchema` marks `Unknown` / `{}` with (`/schemas/unknown`), which
 * would repeat within one document.
 */
const draft07 = <A>(schema: A): A => {
  if (Array.isArray(schema)) return schema.map(draft07) as A
  if (typeof schema !== "object" || schema === null) return schema
  const out: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(schema)) {
    // Effect's own markers (`/schemas/unknown`): the same id in several places of one document
    if (key === "$id" && typeof value === "string" && value.startsWith("/schemas/")) continue
    out[key] = draft07(value)
  }
  if (typeof out["$ref"] !== "string" || Object.keys(out).length === 1) return out as A
  const { $ref, ...rest } = out
  return { allOf: [{ $ref }], ...rest } as A
}

/** The definitions, as draft-07 reads them. */
export const finish = (definitions: Definitions): Definitions => draft07(definitions)

/** A self-contained JSON Schema document (its definitions under `$defs`). */
export const standalone = (schema: Schema.Schema.All): JsonSchema => {
  const definitions: Definitions = {}
  const root = jsonSchema(schema, definitions)
  return {
    $schema: "http://json-schema.org/draft-07/schema#",
    ...root,
    ...(Object.keys(definitions).length > 0 ? { $defs: finish(definitions) } : {})
  }
}

// ---------------------------------------------------------------------------
// events
// ---------------------------------------------------------------------------

const W3CTraceparent = Schema.String.pipe(Schema.pattern(/^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$/))

const optionalHeader = <S extends Schema.Schema.All>(schema: S, description: string) =>
  Schema.optionalWith(Schema.asSchema(schema).annotations({ description }), { exact: true })

/** The W3C trace headers, sent with events and command requests when a span records. */
const traceHeaders = {
  [Envelope.HeaderNames.traceparent]: optionalHeader(W3CTraceparent, "W3C trace context of the producer's span"),
  [Envelope.HeaderNames.tracestate]: optionalHeader(Schema.String, "W3C trace state")
}

/**
 * The NATS headers of an event (`Envelope.headerRecord`): the message id and
 * content type always; the trace and metadata headers when their value is
 * printable ASCII (the body always has them).
 */
export const eventHeaders = (event: Event.Any) =>
  Schema.Struct({
    [Envelope.HeaderNames.msgId]: Schema.String.annotations({ description: "the envelope id; JetStream's duplicate key" }),
    [Envelope.HeaderNames.contentType]: Schema.Literal("application/json"),
    ...traceHeaders,
    [Envelope.HeaderNames.type]: optionalHeader(Schema.Literal(event.type), "the envelope type"),
    [Envelope.HeaderNames.correlationId]: optionalHeader(Schema.String, "the envelope correlationId"),
    [Envelope.HeaderNames.causationId]: optionalHeader(Schema.String, "the envelope causationId"),
    [Envelope.HeaderNames.aggregateId]: optionalHeader(Schema.String, "the envelope aggregateId"),
    [Envelope.HeaderNames.aggregateType]: optionalHeader(Schema.Literal(event.aggregate), "the envelope aggregateType"),
    [Envelope.HeaderNames.tenantId]: optionalHeader(Schema.String, "the envelope tenantId")
  })

/**
 * The envelope of one event as published, as JSON Schema: the event's
 * envelope Schema, with the fields the definition fixes (`type`,
 * `aggregateType`, and `schemaVersion` when set) narrowed to their value.
 * With `version` (one of `event.versions`): the envelope as written at that
 * version, its `data` that version's wire Schema.
 */
export const eventPayload = (
  event: Event.Any,
  definitions: Definitions,
  definitionPath?: string,
  version?: Event.Any["versions"][number]
): JsonSchema => {
  const envelope = jsonSchema(
    version === undefined ? event.envelope : Envelope.versioned(version.schema, version.schemaVersion),
    definitions,
    definitionPath
  )
  const properties: unknown = (envelope as { readonly properties?: unknown }).properties
  if (typeof properties !== "object" || properties === null) return envelope
  const fixed = (value: string | number) => jsonSchema(Schema.Literal(value), definitions, definitionPath)
  const schemaVersion = version?.schemaVersion ?? event.schemaVersion
  return {
    ...envelope,
    properties: {
      ...properties,
      type: fixed(event.type),
      aggregateType: fixed(event.aggregate),
      ...(schemaVersion === undefined ? {} : { schemaVersion: fixed(schemaVersion) })
    }
  }
}

// ---------------------------------------------------------------------------
// commands
// ---------------------------------------------------------------------------

/** One typed failure of a command: its tag, its code (sent as `Nats-Service-Error-Code`), its Schema. */
export interface Failure {
  readonly tag: string
  readonly code: string | undefined
  readonly schema: Schema.Schema.All
}

const membersOf = (schema: Schema.Schema.All): ReadonlyArray<Schema.Schema.All> => {
  const ast = schema.ast
  if (SchemaAST.isNeverKeyword(ast)) return []
  if (!SchemaAST.isUnion(ast)) return [schema]
  const members: unknown = (schema as { readonly members?: unknown }).members
  return Array.isArray(members)
    ? members.flatMap((m: Schema.Schema.All) => membersOf(m))
    : ast.types.flatMap((t) => membersOf(Schema.make(t)))
}

const tagOf = (schema: Schema.Schema.All): string => {
  const encoded = SchemaAST.encodedAST(schema.ast)
  const tag = SchemaAST.isTypeLiteral(encoded) ? encoded.propertySignatures.find((p) => p.name === "_tag") : undefined
  return tag !== undefined && SchemaAST.isLiteral(tag.type) ? String(tag.type.literal) : "Failure"
}

/**
 * The `code` of a failure class: read from an instance made without
 * validation (the code is an instance property of a `Schema.TaggedError`
 * class, not a field).
 */
const codeOf = (schema: Schema.Schema.All): string | undefined => {
  if (typeof schema !== "function") return undefined
  try {
    const instance: unknown = new (schema as unknown as new(props: object, disableValidation: boolean) => unknown)({}, true)
    const code = (instance as { readonly code?: unknown }).code
    return typeof code === "string" || typeof code === "number" ? String(code) : undefined
  } catch {
    return undefined
  }
}

/** The typed failures of a command, in the order of its failure Schema. */
export const failures = (command: Command.Any): ReadonlyArray<Failure> =>
  membersOf(command.failure).map((schema) => ({ tag: tagOf(schema), code: codeOf(schema), schema }))

/** The request body (`Command.request` around the payload). */
export const requestBody = (command: Command.Any) => Command.request(command.payload)

/** The W3C trace headers a request carries when the client's span records. */
export const requestHeaders = Schema.Struct(traceHeaders)

/** A successful response: `result` is the encoded success value. */
export const successBody = (command: Command.Any) =>
  Schema.Struct({ success: Schema.Literal(true), result: command.success, metadata: Command.ResponseMetadata })

const failedBody = <Code extends Schema.Schema.Any>(code: Code, details: Schema.Schema.All | undefined) =>
  Schema.Struct({
    success: Schema.Literal(false),
    error: Schema.Struct({
      code,
      message: Schema.String,
      ...(details === undefined ? {} : { details: Schema.asSchema(details) })
    }),
    metadata: Command.ResponseMetadata
  })

/** The code of a typed failure (any string when the class does not tell). */
export const failureCode = (failure: Failure): Schema.Schema<string> =>
  failure.code === undefined ? Schema.String : Schema.Literal(failure.code)

/** The response to a typed failure: `error.details` is the failure, encoded with its Schema. */
export const failureBody = (failure: Failure) => failedBody(failureCode(failure), failure.schema)

/** The codes of errors that are not typed failures (`Command.ErrorCodes`). */
export const errorCode = Schema.Literal(
  Command.ErrorCodes.badRequest,
  Command.ErrorCodes.internal,
  Command.ErrorCodes.unavailable
)

/** The response to a bad request (`400`: details are the validation issues), a defect (`500`) or a stop (`503`). */
export const errorBody = Schema.Struct({
  success: Schema.Literal(false),
  error: Schema.Struct({
    code: errorCode,
    message: Schema.String,
    details: Schema.optionalWith(Schema.Unknown, { exact: true })
  }),
  metadata: Command.ResponseMetadata
})

/** The micro protocol headers of an error response. */
export const errorHeaders = <Code extends Schema.Schema.Any>(code: Code) =>
  Schema.Struct({
    [micro.ErrorHeader]: Schema.String.annotations({ description: "the error message" }),
    [micro.ErrorCodeHeader]: code
  })

/** Any response of a command: success, one of its typed failures, or an error. */
export const responseBody = (command: Command.Any) =>
  Schema.Union(successBody(command), ...failures(command).map(failureBody), errorBody)
