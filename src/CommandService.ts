/**
 * A command service: each command (and query) handler is an endpoint of a
 * NATS micro service (ADR-32) in a queue group, so instances share the load
 * and `$SRV.PING` / `$SRV.INFO` / `$SRV.STATS` discovery answers in the
 * `io.nats.micro.v1` format of the stock micro libraries (checked against
 * nats.go's `micro` types in test/go/microclient).
 *
 * Per request: decode (a malformed request gets a `400` naming every invalid
 * field), run the handler with the request in context (`RequestContext`,
 * `Envelope.withCausation` so published events are caused by the request and
 * share its correlation id, a SERVER span named after the subject and
 * parented on the caller's `traceparent`), then encode the success or the
 * typed failure. A defect becomes a `500` whose details are logged, never
 * sent.
 *
 * Statistics follow the Go and JS micro libraries: per endpoint
 * `num_requests`, `num_errors` (every error response: typed failures, 400,
 * 500, 503), `last_error` as `"<code>:<message>"`, and `processing_time` /
 * `average_processing_time` in nanoseconds (measured with `process.hrtime`).
 *
 * Keep command and query subjects out of JetStream stream subjects: a stream
 * on `billing.>` would store `billing.command.…` requests and answer them with
 * a PubAck before the service does.
 *
 * @since 0.1.0
 */
import { headers as natsHeaders, type Msg, nuid, type Subscription } from "@nats-io/nats-core"
import {
  Cause,
  Clock,
  Context,
  DateTime,
  Duration,
  Effect,
  Either,
  Exit,
  FiberRef,
  FiberRefs,
  FiberSet,
  Layer,
  Option,
  ParseResult,
  Runtime,
  Schema,
  type Scope
} from "effect"
import * as Command from "./Command.js"
import * as Envelope from "./Envelope.js"
import * as Causation from "./internal/causation.js"
import * as Codec from "./internal/codec.js"
import * as Json from "./internal/json.js"
import { locallyWith } from "./internal/fiberRef.js"
import { isRecord, parseUtc } from "./internal/wire.js"
import * as micro from "./internal/micro.js"
import { uuidv7 } from "./internal/uuid.js"
import * as Limits from "./Limits.js"
import { NatsClient } from "./NatsClient.js"
import * as NatsError from "./NatsError.js"
import * as Tracing from "./Tracing.js"

/**
 * The request being handled: its ids, who sent it, and when.
 *
 * @since 0.1.0
 * @category models
 */
export interface Request {
  /** The request id (from the request metadata, or generated). Events published by the handler have it as causation id. */
  readonly id: string
  readonly subject: string
  readonly kind: Command.Kind
  readonly service: string
  readonly aggregate: string
  readonly command: string
  readonly aggregateId: string | undefined
  readonly correlationId: string
  readonly causationId: string | undefined
  readonly userId: string | undefined
  /** When the client sent it (or when it arrived, if the client did not say). */
  readonly timestamp: DateTime.Utc
  /** The NATS headers of the request (first value of each). */
  readonly headers: Readonly<Record<string, string>>
}

/**
 * The request being handled, available to the handler and everything it calls.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { CommandService } from "effect-nats"
 *
 * const whoAsked = Effect.map(CommandService.RequestContext, (r) => r.userId ?? "anonymous")
 * ```
 *
 * @since 0.1.0
 * @category tags
 */
export class RequestContext extends Context.Tag("effect-nats/CommandService/RequestContext")<RequestContext, Request>() {}

/**
 * A handler bound to its command.
 *
 * @since 0.1.0
 * @category models
 */
export interface Handler<R> {
  readonly command: Command.Any
  readonly handle: (payload: unknown, request: Request) => Effect.Effect<unknown, unknown, R>
}

/**
 * Any handler.
 *
 * @since 0.1.0
 * @category models
 */
export type AnyHandler = Handler<unknown>

/**
 * The context a handler (or a union of handlers) needs.
 *
 * @since 0.1.0
 * @category type-level
 */
export type HandlerContext<H> = H extends Handler<infer R> ? R : never

/**
 * Bind a handler to a command or query. It receives the decoded payload and
 * the request, and returns the success value or one of the command's typed
 * failures. Anything else must be handled (or made a defect: a `500`).
 * `RequestContext` is provided.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { CommandService, Publisher } from "effect-nats"
 * import { PayInvoice, InvoiceNotFound, InvoicePaid } from "./billing.js"
 *
 * const pay = CommandService.handler(PayInvoice, (payload, request) =>
 *   Effect.gen(function*() {
 *     if (request.aggregateId === undefined) return yield* new InvoiceNotFound({ invoiceId: "" })
 *     const publisher = yield* Publisher.Publisher
 *     // caused by the request, same correlation id; a failed publish is a defect here (a 500)
 *     yield* Effect.orDie(publisher.publish(InvoicePaid, { invoiceId: request.aggregateId, amount: payload.amount }))
 *     return { paid: payload.amount }
 *   }))
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const handler = <C extends Command.Any, R>(
  command: C,
  handle: (payload: Command.Payload<C>, request: Request) => Effect.Effect<Command.Success<C>, Command.Error<C>, R>
): Handler<Exclude<R, RequestContext> | Command.Context<C>> => ({
  command,
  handle: handle as (payload: unknown, request: Request) => Effect.Effect<unknown, unknown, Exclude<R, RequestContext>>
})

/**
 * Options of a service.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options<H extends ReadonlyArray<AnyHandler>> {
  /** The micro service name (`A-Z a-z 0-9 - _`), shown by `$SRV.INFO`. */
  readonly name: string
  /** SemVer. */
  readonly version: string
  readonly description?: string | undefined
  /** Default `"q"`, the micro protocol's default. Instances in one group share the requests. */
  readonly queueGroup?: string | undefined
  readonly metadata?: Readonly<Record<string, string>> | undefined
  readonly commands: H
  /** How long the stop waits for requests in flight before interrupting them (default 10 s). */
  readonly stopTimeout?: Duration.DurationInput | undefined
}

/**
 * A running service instance.
 *
 * @since 0.1.0
 * @category models
 */
export interface Instance {
  /** The instance id (a nuid), as in `$SRV.<VERB>.<name>.<id>`. */
  readonly id: string
  readonly name: string
  /** What `$SRV.INFO` answers. */
  readonly info: Effect.Effect<InfoResponse>
  /** What `$SRV.STATS` answers now. */
  readonly stats: Effect.Effect<StatsResponse>
}

/**
 * The `$SRV.PING` response (`io.nats.micro.v1.ping_response`).
 *
 * @since 0.1.0
 * @category schemas
 */
export const PingResponse = micro.PingResponse

/**
 * @since 0.1.0
 * @category models
 */
export type PingResponse = micro.PingResponse

/**
 * The `$SRV.INFO` response (`io.nats.micro.v1.info_response`).
 *
 * @since 0.1.0
 * @category schemas
 */
export const InfoResponse = micro.InfoResponse

/**
 * @since 0.1.0
 * @category models
 */
export type InfoResponse = micro.InfoResponse

/**
 * The `$SRV.STATS` response (`io.nats.micro.v1.stats_response`); times are
 * nanoseconds, as in the Go and JS micro libraries.
 *
 * @since 0.1.0
 * @category schemas
 */
export const StatsResponse = micro.StatsResponse

/**
 * @since 0.1.0
 * @category models
 */
export type StatsResponse = micro.StatsResponse

/**
 * Micro protocol header names of an error response.
 *
 * @since 0.1.0
 * @category constants
 */
export const ErrorHeaders = { message: micro.ErrorHeader, code: micro.ErrorCodeHeader } as const

interface Outcome {
  readonly request?: Request
  readonly result?: unknown
  readonly error?: { readonly code: string; readonly message: string; readonly details?: unknown }
}

interface DecodedRequest {
  readonly aggregateId?: string | undefined
  readonly payload: unknown
  readonly metadata?: typeof Command.RequestMetadata.Type | undefined
}

interface Compiled<R> {
  readonly command: Command.Any
  readonly endpoint: micro.Endpoint
  readonly decodeRequest: Codec.Codec<DecodedRequest, R>
  readonly decodePayload: Codec.Codec<unknown, R>
  readonly encodeSuccess: Codec.Codec<unknown, R>
  readonly encodeFailure: Codec.Codec<unknown, R>
  readonly isFailure: (u: unknown) => boolean
  readonly handle: (payload: unknown, request: Request) => Effect.Effect<unknown, unknown, R>
  readonly span: { readonly kind: "server"; readonly captureStackTrace: false; readonly attributes: Record<string, unknown> }
  readonly limits: Limits.Resolved
}

const textEncoder = new TextEncoder()

const headerSafe = (s: string): string => {
  // eslint-disable-next-line no-control-regex
  const line = s.replace(/[\u0000-\u001f\u007f]+/g, " ").trim()
  return line.length > 512 ? line.slice(0, 511) + "…" : line || "error"
}

const badRequest = (message: string, details?: unknown): Outcome => ({
  error: { code: Command.ErrorCodes.badRequest, message, ...(details !== undefined ? { details } : {}) }
})

const internalError: Outcome = { error: { code: Command.ErrorCodes.internal, message: "internal error" } }

/** The answer to a request whose handler was interrupted (the service stopping). */
const stopping = (request?: Request): Outcome => ({
  ...(request !== undefined ? { request } : {}),
  error: { code: Command.ErrorCodes.unavailable, message: "service stopping" }
})

const issuesOf = (error: ParseResult.ParseError) =>
  ParseResult.ArrayFormatter.formatErrorSync(error).map((issue) => ({
    path: issue.path.map((p) => typeof p === "symbol" ? String(p) : p),
    message: issue.message
  }))

const describeIssues = (issues: ReadonlyArray<{ readonly path: ReadonlyArray<string | number>; readonly message: string }>) =>
  issues.map((i) => `${i.path.length > 0 ? i.path.join(".") : "(root)"}: ${i.message}`).join("; ")

const unsubscribe = (s: Subscription): void => {
  try {
    if (!s.isClosed()) s.unsubscribe()
  } catch {
    // the connection is already closed
  }
}

const headerRecord = (msg: Msg): Record<string, string> => {
  const out: Record<string, string> = {}
  if (msg.headers) for (const [k, v] of msg.headers) out[k] = v[0] ?? ""
  return out
}

const compile = <R>(
  h: Handler<R>,
  queueGroup: string,
  limits: Limits.Resolved
): Compiled<R> => {
  const command = h.command
  const isFailure = Schema.is(Schema.typeSchema(command.failure as Schema.Schema.Any))
  return {
    command,
    endpoint: new micro.Endpoint(command.endpoint, command.subject, queueGroup, {
      kind: command.kind,
      aggregate: command.aggregate,
      command: command.name
    }),
    decodeRequest: Codec.decoder(Command.request(command.payload), { errors: "all" }) as Compiled<R>["decodeRequest"],
    decodePayload: Codec.decoder(command.payload as Schema.Schema<unknown, unknown, unknown>, { errors: "all" }) as Compiled<R>["decodePayload"],
    encodeSuccess: Codec.encoder(command.success as Schema.Schema<unknown, unknown, unknown>) as Compiled<R>["encodeSuccess"],
    encodeFailure: Codec.encoder(command.failure as Schema.Schema<unknown, unknown, unknown>) as Compiled<R>["encodeFailure"],
    isFailure: (u) => isFailure(u),
    handle: h.handle,
    limits,
    span: {
      kind: "server",
      captureStackTrace: false,
      attributes: {
        [Tracing.Attributes.system]: "nats",
        [Tracing.Attributes.destination]: command.subject,
        [Tracing.Attributes.operationType]: "process",
        [Tracing.Attributes.operationName]: "process",
        [Tracing.Attributes.consumerGroup]: queueGroup
      }
    }
  }
}

/** An optional string field: absent, or a string (at least `min` long). */
const optionalString = (u: unknown, min: number): boolean => u === undefined || (typeof u === "string" && u.length >= min)

/**
 * The request metadata as `Command.RequestMetadata` decodes it, checked by
 * hand (it is on every request); `undefined` when it does not check, and the
 * Schema then says why.
 */
const metadataNow = (u: unknown): typeof Command.RequestMetadata.Type | undefined => {
  if (!isRecord(u)) return undefined
  const { causationId, correlationId, requestId, timestamp, userId } = u
  if (
    !optionalString(requestId, 1) || !optionalString(correlationId, 1) || !optionalString(causationId, 0) ||
    !optionalString(userId, 0)
  ) return undefined
  const at = timestamp === undefined ? undefined : parseUtc(timestamp)
  if (timestamp !== undefined && at === undefined) return undefined
  const out: { -readonly [K in keyof typeof Command.RequestMetadata.Type]: typeof Command.RequestMetadata.Type[K] } = {}
  if (requestId !== undefined) out.requestId = requestId as string
  if (correlationId !== undefined) out.correlationId = correlationId as string
  if (causationId !== undefined) out.causationId = causationId as string
  if (userId !== undefined) out.userId = userId as string
  if (at !== undefined) out.timestamp = at
  return out
}

/**
 * The request body (parsed JSON), decoded without running an Effect when the
 * Schemas allow it: the body or the `400`, or `undefined` when only the
 * effectful decoder can tell (a Schema with an async step or a service).
 * The envelope (`aggregateId`, `metadata`) is checked by hand and only the
 * payload goes through its Schema; anything unusual takes the full
 * `Command.request` Schema, which names the invalid fields.
 */
const decodeNow = <R>(c: Compiled<R>, json: unknown): Either.Either<DecodedRequest, Outcome> | undefined => {
  if (isRecord(json) && "payload" in json && optionalString(json["aggregateId"], 0)) {
    const meta = json["metadata"] === undefined ? undefined : metadataNow(json["metadata"])
    if (json["metadata"] === undefined || meta !== undefined) {
      const payload = Codec.sync(c.decodePayload(json["payload"]))
      if (payload !== undefined && Either.isRight(payload)) {
        const aggregateId = json["aggregateId"] as string | undefined
        return Either.right({
          ...(aggregateId !== undefined ? { aggregateId } : {}),
          payload: payload.right,
          ...(meta !== undefined ? { metadata: meta } : {})
        })
      }
    }
  }
  const done = Codec.sync(c.decodeRequest(json))
  return done === undefined ? undefined : Either.mapLeft(done, invalid)
}

const invalid = (error: ParseResult.ParseError): Outcome => {
  const issues = issuesOf(error)
  return badRequest(`invalid request: ${describeIssues(issues)}`, { issues })
}

/** The JSON of a request, or its `400` (invalid JSON, or over the limits: checked before parsing). */
const parseBody = <R>(c: Compiled<R>, msg: Msg): Either.Either<unknown, Outcome> => {
  const parsed = Json.parse(msg.data, c.limits.maxDepth, c.limits.maxBytes)
  if (Either.isRight(parsed)) return Either.right(parsed.right)
  const { message, reason } = parsed.left
  return Either.left(
    reason === "InvalidJson" ? badRequest(message) : badRequest(`request refused: ${message}`, { reason })
  )
}

/**
 * Run one request: decode, handle, encode. Never fails: every problem is an
 * error outcome (400 / 500 / 503 / the typed failure's code). Decoding and
 * encoding are synchronous when the Schemas allow it (the usual case).
 */
const handleRequest = <R>(c: Compiled<R>, msg: Msg, nowMillis: number, tracing: boolean): Effect.Effect<Outcome, never, R> => {
  const json = parseBody(c, msg)
  if (Either.isLeft(json)) return Effect.succeed(json.left)
  const done = decodeNow(c, json.right)
  if (done === undefined) {
    return Effect.flatMap(
      Effect.either(c.decodeRequest(json.right)),
      (body) => Either.isLeft(body) ? Effect.succeed(invalid(body.left)) : handleDecoded(c, msg, nowMillis, tracing, body.right)
    )
  }
  return Either.isLeft(done) ? Effect.succeed(done.left) : handleDecoded(c, msg, nowMillis, tracing, done.right)
}

/** The request a handler sees. */
const makeRequest = <R>(c: Compiled<R>, msg: Msg, nowMillis: number, body: DecodedRequest): Request => {
  const meta = body.metadata
  const id = meta?.requestId ?? uuidv7(nowMillis)
  return {
    id,
    subject: msg.subject,
    kind: c.command.kind,
    service: c.command.service,
    aggregate: c.command.aggregate,
    command: c.command.name,
    aggregateId: body.aggregateId,
    correlationId: meta?.correlationId ?? id,
    causationId: meta?.causationId,
    userId: meta?.userId,
    timestamp: meta?.timestamp ?? DateTime.unsafeMake(nowMillis),
    headers: headerRecord(msg)
  }
}

const handleDecoded = <R>(
  c: Compiled<R>,
  msg: Msg,
  nowMillis: number,
  tracing: boolean,
  body: DecodedRequest
): Effect.Effect<Outcome, never, R> => {
  const request = makeRequest(c, msg, nowMillis, body)
  const id = request.id
  const handled = c.handle(body.payload, request).pipe(
    Effect.flatMap(c.encodeSuccess),
    // Effect.provideService(RequestContext, request), in fewer steps
    (self) => locallyWith(self, FiberRef.currentContext, (context) => Context.add(context, RequestContext, request)),
    Envelope.withCausation({ id, correlationId: request.correlationId }),
    Effect.exit,
    Effect.flatMap((exit): Effect.Effect<Outcome, never, R> =>
      exit._tag === "Success" ? Effect.succeed({ request, result: exit.value }) : failed(c, request, exit.cause)
    )
  )
  return tracing
    ? Effect.zipRight(
      Effect.annotateCurrentSpan({
        [Tracing.Attributes.messageId]: id,
        [Tracing.Attributes.conversationId]: request.correlationId
      }),
      handled
    )
    : handled
}

/** An outcome, and what to log about it (a 500's details). */
interface Failed {
  readonly outcome: Outcome
  readonly log?: Effect.Effect<void> | undefined
}

const typedFailure = <R>(
  c: Compiled<R>,
  request: Request,
  error: Command.Failure & { readonly message?: unknown },
  details: Either.Either<unknown, ParseResult.ParseError>
): Failed => {
  if (Either.isLeft(details)) {
    return {
      outcome: { request, ...internalError },
      log: Effect.logError(`CommandService: cannot encode the failure of ${c.command.subject}`, details.left)
    }
  }
  const message = typeof error.message === "string" && error.message.length > 0 ? error.message : error._tag
  return { outcome: { request, error: { code: String(error.code), message, details: details.right } } }
}

/**
 * The outcome of a handler that failed: its typed failure, 503 when
 * interrupted, else 500 (logged). An Effect only when the failure Schema
 * needs the effectful encoder.
 */
const failedWith = <R>(c: Compiled<R>, request: Request, cause: Cause.Cause<unknown>): Failed | Effect.Effect<Failed, never, R> => {
  const failure = Cause.failureOption(cause)
  if (Option.isSome(failure) && c.isFailure(failure.value)) {
    const error = failure.value as Command.Failure & { readonly message?: unknown }
    const encoded = c.encodeFailure(error)
    const details = Codec.sync(encoded)
    return details === undefined
      ? Effect.map(Effect.either(encoded), (d) => typedFailure(c, request, error, d))
      : typedFailure(c, request, error, details)
  }
  if (Cause.isInterruptedOnly(cause)) {
    return { outcome: stopping(request) }
  }
  return {
    outcome: { request, ...internalError },
    log: Effect.logError(`CommandService: ${c.command.subject} failed unexpectedly`, cause).pipe(
      Effect.annotateLogs({ requestId: request.id, correlationId: request.correlationId })
    )
  }
}

const logged = (f: Failed): Effect.Effect<Outcome> => f.log === undefined ? Effect.succeed(f.outcome) : Effect.as(f.log, f.outcome)

/** {@link failedWith} as an Effect that logs. */
const failed = <R>(c: Compiled<R>, request: Request, cause: Cause.Cause<unknown>): Effect.Effect<Outcome, never, R> => {
  const f = failedWith(c, request, cause)
  return Effect.isEffect(f) ? Effect.flatMap(f, logged) : logged(f)
}

const respond = (
  endpoint: micro.Endpoint,
  msg: Msg,
  outcome: Outcome,
  started: bigint,
  nowMillis: number
): { readonly lastError: string | undefined; readonly encodeError: unknown } => {
  const nanos = process.hrtime.bigint() - started
  let error = outcome.error
  const metadata = {
    requestId: outcome.request?.id,
    correlationId: outcome.request?.correlationId ?? "",
    timestamp: new Date(nowMillis).toISOString(),
    durationMs: Number(nanos) / 1e6
  }
  let payload: string
  let encodeError: unknown
  try {
    payload = JSON.stringify(
      error === undefined ? { success: true, result: outcome.result, metadata } : { success: false, error, metadata }
    )
  } catch (e) {
    // an encoded value that is not JSON (a bigint, a cycle): a 500, logged by the caller
    encodeError = e
    error = internalError.error
    payload = JSON.stringify({ success: false, error, metadata })
  }
  let h: ReturnType<typeof natsHeaders> | undefined
  if (error !== undefined) {
    h = natsHeaders()
    h.set(micro.ErrorHeader, headerSafe(error.message))
    h.set(micro.ErrorCodeHeader, headerSafe(error.code))
  }
  const lastError = error === undefined ? undefined : `${error.code}:${headerSafe(error.message)}`
  endpoint.record(nanos, lastError)
  if (msg.reply) msg.respond(textEncoder.encode(payload), h ? { headers: h } : undefined)
  return { lastError, encodeError }
}

/**
 * Start a service instance in the current scope. Closing the scope stops it:
 * the endpoint subscriptions are drained (no new requests), requests in
 * flight finish (bounded by `stopTimeout`, then interrupted and answered
 * `503`), then the discovery subscriptions go.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { CommandService } from "effect-nats"
 * import { pay, getInvoice } from "./handlers.js"
 *
 * const program = Effect.gen(function*() {
 *   const instance = yield* CommandService.make({ name: "billing", version: "1.0.0", commands: [pay, getInvoice] })
 *   yield* Effect.log(`billing ${instance.id} up`)
 *   yield* Effect.never
 * }).pipe(Effect.scoped)
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = <const H extends ReadonlyArray<AnyHandler>>(
  options: Options<H>
): Effect.Effect<Instance, NatsError.NatsError, NatsClient | Scope.Scope | HandlerContext<H[number]>> =>
  Effect.gen(function*() {
    type R = HandlerContext<H[number]>
    const nats = yield* NatsClient
    const nc = nats.connection
    if (!micro.validName.test(options.name)) {
      return yield* Effect.dieMessage(
        `CommandService.make: invalid service name ${JSON.stringify(options.name)} (A-Z, a-z, 0-9, '-', '_')`
      )
    }
    if (!micro.validVersion.test(options.version)) {
      return yield* Effect.dieMessage(`CommandService.make: version ${JSON.stringify(options.version)} is not SemVer`)
    }
    const queueGroup = options.queueGroup ?? micro.defaultQueueGroup
    const limits = Limits.resolve(yield* Limits.Limits, nc.info?.max_payload)
    const compiled = options.commands.map((h) => compile(h as Handler<R>, queueGroup, limits))
    const subjects = new Set<string>()
    for (const c of compiled) {
      if (subjects.has(c.command.subject)) {
        return yield* Effect.dieMessage(`CommandService.make: two handlers for ${c.command.subject}`)
      }
      subjects.add(c.command.subject)
    }
    const stopTimeout = options.stopTimeout ?? "10 seconds"
    const config: micro.ServiceConfig = {
      name: options.name,
      id: nuid.next(),
      version: options.version,
      description: options.description ?? "",
      metadata: options.metadata ?? {},
      started: new Date(yield* Clock.currentTimeMillis).toISOString(),
      endpoints: compiled.map((c) => c.endpoint)
    }
    const runtime = yield* Effect.runtime<never>()
    const logSubscriptionError = (subject: string, error: Error) =>
      Runtime.runFork(runtime)(Effect.logError(`CommandService ${options.name}: subscription error on ${subject}`, error))

    // finalizers run in reverse: endpoints drain, in-flight requests finish, discovery stops, leftovers are interrupted
    const fibers = yield* FiberSet.make<unknown, never>()
    const run = yield* FiberSet.runtime(fibers)<R>()
    const handlerRuntime = yield* Effect.runtime<R>()

    yield* Effect.acquireRelease(
      Effect.try({
        try: () => micro.subscribeControl(nc, config, logSubscriptionError),
        catch: NatsError.fromCause("CommandService.make", micro.apiPrefix, nats.servers)
      }),
      (subs) => Effect.sync(() => subs.forEach(unsubscribe))
    )

    yield* Effect.addFinalizer(() =>
      // finalizers are uninterruptible: make the wait interruptible so that the timeout can end it
      Effect.interruptible(FiberSet.awaitEmpty(fibers)).pipe(
        Effect.timeoutOption(stopTimeout),
        Effect.flatMap((done) =>
          Option.isNone(done)
            ? Effect.logWarning(
              `CommandService ${options.name}: requests still running after ${Duration.format(stopTimeout)}; interrupting`
            )
            : Effect.void
        )
      )
    )

    // read once: the requests run in this service's runtime
    const clock = yield* Clock.clockWith(Effect.succeed)
    const tracing = yield* Tracing.isRecording

    /** Send the answer; what went wrong sending it is returned as a log, for the caller to run where it runs. */
    const answer = (
      c: Compiled<R>,
      msg: Msg,
      outcome: Outcome,
      started: bigint
    ): { readonly lastError: string | undefined; readonly log: Effect.Effect<void> | undefined } => {
      try {
        const sent = respond(c.endpoint, msg, outcome, started, clock.unsafeCurrentTimeMillis())
        return {
          lastError: sent.lastError,
          log: sent.encodeError === undefined
            ? undefined
            : Effect.logError(`CommandService: the response of ${c.command.subject} is not JSON`, sent.encodeError)
        }
      } catch (e) {
        return {
          lastError: undefined,
          log: Effect.logWarning(`CommandService: cannot respond on ${c.command.subject}`, new Cause.UnknownException(e))
        }
      }
    }

    const serve = (c: Compiled<R>, msg: Msg): Effect.Effect<void, never, R> =>
      Effect.suspend(() => {
        const started = process.hrtime.bigint()
        const reply = (outcome: Outcome): Effect.Effect<void> => {
          const sent = answer(c, msg, outcome, started)
          const annotate = tracing && sent.lastError !== undefined
            ? Effect.annotateCurrentSpan("error.type", sent.lastError)
            : Effect.void
          return sent.log === undefined ? annotate : Effect.zipRight(annotate, sent.log)
        }
        const served = handleRequest(c, msg, clock.unsafeCurrentTimeMillis(), tracing).pipe(
          Effect.onInterrupt(() => reply(stopping())),
          Effect.flatMap(reply)
        )
        // a SERVER span only when a tracer records it
        return tracing
          ? Effect.withSpan(served, c.command.subject, {
            ...c.span,
            // without a traceparent, a new trace (not a child of whatever span started the service)
            ...Option.match(Tracing.extract(msg.headers), {
              onNone: () => ({ root: true }),
              onSome: (parent) => ({ parent })
            })
          })
          : served
      })

    /** Log from outside a request's fiber (the answer is already sent). */
    const background = (log: Effect.Effect<void>): void => {
      Runtime.runFork(runtime)(log)
    }

    const replyNow = (c: Compiled<R>, msg: Msg, outcome: Outcome, started: bigint): void => {
      const sent = answer(c, msg, outcome, started)
      if (sent.log !== undefined) background(sent.log)
    }

    /**
     * `serve` without a tracer recording, in fewer steps (it runs once per
     * request): the request is decoded and answered by plain functions, and
     * only the handler runs in a fiber, forked with `RequestContext` in its
     * context and the request as `Envelope.current` (so nothing needs
     * restoring after it), and answered when that fiber ends (a `503` if it
     * was interrupted). A handler that returns its outcome directly
     * (`Effect.succeed`, `Effect.fail`) needs no fiber. Requests whose
     * Schemas need effects take `serve`.
     */
    const serveNow = (c: Compiled<R>, msg: Msg): void => {
      const started = process.hrtime.bigint()
      const json = parseBody(c, msg)
      if (Either.isLeft(json)) return replyNow(c, msg, json.left, started)
      const body = decodeNow(c, json.right)
      if (body === undefined) {
        run(serve(c, msg))
        return
      }
      if (Either.isLeft(body)) return replyNow(c, msg, body.left, started)
      const request = makeRequest(c, msg, clock.unsafeCurrentTimeMillis(), body.right)
      /** Answer with the handler's encoded success, or its failure. */
      const handled = (exit: Exit.Exit<unknown, unknown>): void => {
        if (exit._tag === "Success") return replyNow(c, msg, { request, result: exit.value }, started)
        const f = failedWith(c, request, exit.cause)
        if (Effect.isEffect(f)) {
          run(Effect.flatMap(f, (f) => Effect.map(logged(f), (outcome) => replyNow(c, msg, outcome, started))))
          return
        }
        replyNow(c, msg, f.outcome, started)
        if (f.log !== undefined) background(f.log)
      }
      let handling: Effect.Effect<unknown, unknown, R>
      try {
        handling = c.handle(body.right.payload, request)
      } catch (defect) {
        // a handler that throws instead of returning an Effect: a defect, like one thrown inside it
        return handled(Exit.die(defect))
      }
      // a handler that answered without running anything (`Effect.succeed`, `Effect.fail`): nothing to run a fiber for
      if (Exit.isExit(handling)) {
        if (handling._tag === "Failure") return handled(handling)
        const encoded = Codec.sync(c.encodeSuccess(handling.value))
        if (encoded !== undefined) {
          return handled(Either.isRight(encoded) ? Exit.succeed(encoded.right) : Exit.fail(encoded.left))
        }
      }
      const causation = Causation.handling({ id: request.id, correlationId: request.correlationId })
      const fiber = Runtime.runFork(
        Runtime.make({
          context: Context.add(handlerRuntime.context, RequestContext, request),
          fiberRefs: handlerRuntime.fiberRefs,
          runtimeFlags: handlerRuntime.runtimeFlags
        }),
        Effect.exit(Effect.flatMap(handling, c.encodeSuccess)),
        { updateRefs: (refs, fiberId) => FiberRefs.updateAs(refs, { fiberId, fiberRef: Envelope.current, value: causation }) }
      )
      fiber.addObserver((exit: Exit.Exit<Exit.Exit<unknown, unknown>>) =>
        // a failure here is an interruption (the service stopping)
        exit._tag === "Success"
          ? handled(exit.value)
          : replyNow(c, msg, stopping(request), started)
      )
      // still running (it waits for I/O): the stop waits for it
      if (fiber.unsafePoll() === null) FiberSet.unsafeAdd(fibers, fiber)
    }

    /** What threw out of a request's handling in the subscription callback: answered `500`, logged, counted. */
    const escaped = (c: Compiled<R>, msg: Msg, defect: unknown): void => {
      try {
        replyNow(c, msg, internalError, process.hrtime.bigint())
      } catch {
        // the answer cannot be sent either: the log below says why
      }
      background(
        Effect.logError(`CommandService ${options.name}: request on ${c.command.subject} failed outside its handler`, Cause.die(defect))
      )
    }

    const endpointSubs: Array<Subscription> = []
    yield* Effect.acquireRelease(
      Effect.try({
        try: () => {
          for (const c of compiled) {
            endpointSubs.push(nc.subscribe(c.command.subject, {
              queue: queueGroup,
              callback: (err, msg) => {
                if (err !== null) {
                  c.endpoint.fail(`500:${headerSafe(err.message)}`)
                  logSubscriptionError(c.command.subject, err)
                  return
                }
                // run at once, in this callback: a request that needs no I/O is answered before nats.js reads on
                try {
                  if (tracing) run(serve(c, msg), { immediate: true })
                  else serveNow(c, msg)
                } catch (defect) {
                  // nothing may escape into nats.js: a throw here would end the connection's reader
                  escaped(c, msg, defect)
                }
              }
            }))
          }
        },
        catch: NatsError.fromCause("CommandService.make", undefined, nats.servers)
      }).pipe(Effect.tapError(() => Effect.sync(() => endpointSubs.forEach(unsubscribe)))),
      () =>
        Effect.forEach(endpointSubs, (s) => Effect.promise(() => s.drain().catch(() => unsubscribe(s))), {
          concurrency: "unbounded",
          discard: true
        }).pipe(
          Effect.interruptible,
          Effect.timeoutOption(stopTimeout),
          Effect.ensuring(Effect.sync(() => endpointSubs.forEach(unsubscribe))),
          Effect.ignore
        )
    )
    yield* nats.flush

    return {
      id: config.id,
      name: config.name,
      info: Effect.sync(() => micro.info(config)),
      stats: Effect.sync(() => micro.stats(config))
    } satisfies Instance
  })

/**
 * The service as a layer: started when the layer is built, stopped
 * gracefully when its scope closes.
 *
 * @example
 * ```ts
 * import { Layer } from "effect"
 * import { CommandService, NatsClient, Publisher } from "effect-nats"
 * import { pay, getInvoice } from "./handlers.js"
 *
 * const BillingLive = CommandService.layer({
 *   name: "billing",
 *   version: "1.0.0",
 *   description: "invoices and payments",
 *   commands: [pay, getInvoice]
 * })
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = <const H extends ReadonlyArray<AnyHandler>>(
  options: Options<H>
): Layer.Layer<never, NatsError.NatsError, NatsClient | HandlerContext<H[number]>> => Layer.scopedDiscard(make(options))
