/**
 * Decoding a command request: the body within the limits, the envelope
 * (`commandCodec.ts`), the payload with the command's Schema, and the
 * `Request` the handler sees; or the `400` that names every invalid field.
 *
 * @internal
 */
import type { Msg } from "@nats-io/nats-core"
import { DateTime, Effect, Either, type ParseResult, type Schema } from "effect"
import * as Command from "../Command.js"
import type { Request } from "../CommandService.js"
import * as Codec from "./codec.js"
import { decodeRequest, type RequestEnvelope } from "./commandCodec.js"
import { badRequest, type Outcome } from "./commandReply.js"
import * as Eager from "./eager.js"
import * as Json from "./json.js"
import * as ParseIssues from "./parseIssues.js"
import type * as Limits from "../Limits.js"
import { uuidv7 } from "./uuid.js"

/** A decoded request: what the handler is given. */
export interface Decoded {
  readonly request: Request
  readonly payload: unknown
}

/**
 * Decode a request on one command's subject: a plain `Either` when the
 * payload Schema decodes synchronously (the usual case), else an Effect.
 */
export type Decoder<R> = (msg: Msg, nowMillis: number) => Effect.Effect<Decoded, Outcome, R>

const invalid = (error: ParseResult.ParseError): Outcome => {
  const issues = ParseIssues.issues(error)
  return badRequest(`invalid request: ${ParseIssues.describeIssues(issues)}`, { issues })
}

const headerRecord = (msg: Msg): Record<string, string> => {
  const out: Record<string, string> = {}
  if (msg.headers) for (const [k, v] of msg.headers) out[k] = v[0] ?? ""
  return out
}

const makeRequest = (command: Command.Any, msg: Msg, nowMillis: number, body: RequestEnvelope): Request => {
  const meta = body.metadata
  const id = meta?.requestId ?? uuidv7(nowMillis)
  return {
    id,
    subject: msg.subject,
    kind: command.kind,
    service: command.service,
    aggregate: command.aggregate,
    command: command.name,
    aggregateId: body.aggregateId,
    correlationId: meta?.correlationId ?? id,
    causationId: meta?.causationId,
    userId: meta?.userId,
    timestamp: meta?.timestamp ?? DateTime.unsafeMake(nowMillis),
    headers: headerRecord(msg)
  }
}

/**
 * The decoder of a command's requests. The body is refused over the limits
 * (checked before parsing), then the envelope and the payload are decoded
 * apart; when either fails, the whole `Command.request` Schema decodes the
 * body again to name every invalid field in the `400`.
 */
export const decoder = <R>(command: Command.Any, limits: Limits.Resolved): Decoder<R> => {
  const payloadSchema = command.payload as Schema.Schema<unknown, unknown, R>
  const decodePayload = Codec.decoder(payloadSchema, { errors: "all" })
  const decodeWhole = Codec.decoder(Command.request(payloadSchema), { errors: "all" })
  const rejected = (json: unknown): Effect.Effect<never, Outcome, R> =>
    Eager.match(
      decodeWhole(json),
      (error) => Either.left(invalid(error)),
      // a Schema that accepts the whole but not its parts: refused all the same
      () => Either.left(badRequest("invalid request"))
    )
  return (msg, nowMillis) => {
    const json = Json.parse(msg.data, limits.maxDepth, limits.maxBytes)
    if (Either.isLeft(json)) {
      const { message, reason } = json.left
      return Either.left(reason === "InvalidJson" ? badRequest(message) : badRequest(`request refused: ${message}`, { reason }))
    }
    const envelope = decodeRequest(json.right)
    if (Either.isLeft(envelope)) return rejected(json.right)
    return Eager.match(
      decodePayload(envelope.right.payload),
      () => rejected(json.right),
      (payload) => Either.right({ request: makeRequest(command, msg, nowMillis, envelope.right), payload })
    )
  }
}
