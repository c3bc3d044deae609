/**
 * The typed client of command services: `execute` a command or run a
 * `query` and get the decoded success, or one of the command's typed
 * failures decoded back to the same class, or a transport error. Plus
 * micro-protocol discovery (`ping` / `info` / `stats`) and a core-NATS
 * `subscribe` for the events the services publish.
 *
 * Each call is a CLIENT span `send <subject>` whose `traceparent` goes with
 * the request; correlation and causation default to the message being
 * handled (`Envelope.current`), so a command sent from a handler continues
 * its flow.
 *
 * @since 0.1.0
 */
import { createInbox, Empty, headers as natsHeaders, type Msg, type MsgHdrs } from "@nats-io/nats-core"
import {
  Context,
  Data,
  DateTime,
  Deferred,
  Duration,
  Effect,
  Either,
  Layer,
  Option,
  ParseResult,
  Queue,
  Schedule,
  Schema,
  type Scope,
  type Tracer
} from "effect"
import * as Command from "./Command.js"
import * as Envelope from "./Envelope.js"
import type * as Event from "./Event.js"
import * as Codec from "./internal/codec.js"
import { type FiberContext, fiberContext } from "./internal/fiberContext.js"
import * as micro from "./internal/micro.js"
import { uuidv7 } from "./internal/uuid.js"
import * as Json from "./internal/json.js"
import { isRecord, parseUtc } from "./internal/wire.js"
import * as Limits from "./Limits.js"
import { NatsClient } from "./NatsClient.js"
import * as NatsError from "./NatsError.js"
import * as Subject from "./Subject.js"
import * as Tracing from "./Tracing.js"

/**
 * The request did not get a usable answer: it timed out, nobody serves the
 * subject, the request failed on the connection, the payload did not encode
 * (nothing was sent), or the response could not be decoded.
 *
 * @since 0.1.0
 * @category errors
 */
export class CommandTransportError extends Data.TaggedError("CommandTransportError")<{
  readonly reason: "Timeout" | "NoResponders" | "RequestFailed" | "Encode" | "MalformedResponse"
  readonly subject: string
  readonly message: string
  readonly cause?: unknown
}> {}

/**
 * The service answered with an error that is not one of the command's typed
 * failures: `400` (invalid request; `details.issues` names the fields),
 * `500` (internal error), `503` (the service stopped), or a code this client
 * does not know.
 *
 * @since 0.1.0
 * @category errors
 */
export class CommandServiceError extends Data.TaggedError("CommandServiceError")<{
  readonly subject: string
  readonly code: string
  readonly message: string
  readonly details?: unknown
}> {}

/**
 * Is this error worth retrying? Only timeouts and "no responders": the
 * request may not have reached a handler. (A timed-out command may still
 * have run: retries keep the same request id so a handler can dedupe.)
 *
 * @since 0.1.0
 * @category guards
 */
export const isRetryable = (e: unknown): e is CommandTransportError =>
  e instanceof CommandTransportError && (e.reason === "Timeout" || e.reason === "NoResponders")

/**
 * Per-call options.
 *
 * @since 0.1.0
 * @category models
 */
export interface ExecuteOptions {
  /** Default: the client's (5 s). */
  readonly timeout?: Duration.DurationInput | undefined
  /** Retries of timeouts and "no responders" (see {@link isRetryable}). Default: the client's (none). */
  readonly retry?: Schedule.Schedule<unknown, CommandTransportError> | undefined
  /** Default: a new UUID v7 (the same for every retry). */
  readonly requestId?: string | undefined
  /** Default: the correlation id of the message being handled (`Envelope.current`), else the request id. */
  readonly correlationId?: string | undefined
  /** Default: the id of the message being handled (`Envelope.current`). */
  readonly causationId?: string | undefined
  /** Default: the client's. */
  readonly userId?: string | undefined
  /** Extra NATS headers. */
  readonly headers?: Readonly<Record<string, string>> | undefined
}

/**
 * Client options.
 *
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** Default 5 s. */
  readonly timeout?: Duration.DurationInput | undefined
  /** Default: no retries. */
  readonly retry?: Schedule.Schedule<unknown, CommandTransportError> | undefined
  /** Sent with every request unless a call says otherwise. */
  readonly userId?: string | undefined
}

/**
 * A success with the response metadata (correlation id, duration).
 *
 * @since 0.1.0
 * @category models
 */
export interface Response<A> {
  readonly result: A
  readonly metadata: Command.ResponseMetadata
}

/**
 * Which services discovery asks, and how long it collects answers.
 *
 * @since 0.1.0
 * @category models
 */
export interface DiscoveryOptions {
  /** Only this service name (`$SRV.<VERB>.<service>`). */
  readonly service?: string | undefined
  /** Only this instance (`$SRV.<VERB>.<service>.<id>`); needs `service`. */
  readonly id?: string | undefined
  /** How long to collect answers (default 500 ms). */
  readonly window?: Duration.DurationInput | undefined
  /** Stop as soon as this many answered. */
  readonly maxResponses?: number | undefined
}

/**
 * The errors of `execute` / `query` for a definition.
 *
 * @since 0.1.0
 * @category models
 */
export type ExecuteError<C extends Command.Any> = Command.Error<C> | CommandTransportError | CommandServiceError

/**
 * The client.
 *
 * @example
 * ```ts
 * import { Effect } from "effect"
 * import { CommandClient } from "effect-nats"
 * import { PayInvoice } from "./billing.js"
 *
 * const program = Effect.gen(function*() {
 *   const client = yield* CommandClient.CommandClient
 *   const { paid } = yield* client.execute(PayInvoice, "inv-1", { amount: 42 }, { timeout: "2 seconds" })
 * }).pipe(
 *   Effect.catchTags({
 *     InvoiceNotFound: (e) => Effect.logWarning(`no invoice ${e.invoiceId} (${e.code})`),
 *     CommandTransportError: (e) => Effect.logError(e.message)
 *   })
 * )
 * ```
 *
 * @since 0.1.0
 * @category tags
 */
export class CommandClient extends Context.Tag("effect-nats/CommandClient")<CommandClient, {
  /** Run a command; succeed with its result or fail with a typed failure, a service error or a transport error. */
  readonly execute: <C extends Command.Any<"command">>(
    command: C,
    aggregateId: string | undefined,
    payload: Command.Payload<C>,
    options?: ExecuteOptions
  ) => Effect.Effect<Command.Success<C>, ExecuteError<C>, Command.Context<C>>
  /** Run a query. */
  readonly query: <C extends Command.Any<"query">>(
    query: C,
    aggregateId: string | undefined,
    payload: Command.Payload<C>,
    options?: ExecuteOptions
  ) => Effect.Effect<Command.Success<C>, ExecuteError<C>, Command.Context<C>>
  /** Like `execute` / `query`, with the response metadata. */
  readonly executeWithMetadata: <C extends Command.Any>(
    command: C,
    aggregateId: string | undefined,
    payload: Command.Payload<C>,
    options?: ExecuteOptions
  ) => Effect.Effect<Response<Command.Success<C>>, ExecuteError<C>, Command.Context<C>>
  /**
   * Handle the events published on an event's subject, over core NATS (no
   * acks, no redelivery: use a Consumer for that), until the scope closes.
   * Messages that do not decode and handler failures are logged and skipped.
   */
  readonly subscribe: <A, I, RS, E, R>(
    event: Event.Event<string, A, I, RS>,
    handle: (envelope: Envelope.Envelope<A>) => Effect.Effect<void, E, R>,
    options?: { readonly queue?: string | undefined }
  ) => Effect.Effect<void, NatsError.NatsError, Scope.Scope | RS | R>
  /** `$SRV.PING`: who is up. */
  readonly ping: (
    options?: DiscoveryOptions
  ) => Effect.Effect<ReadonlyArray<micro.PingResponse>, NatsError.NatsError | Subject.InvalidSubjectError>
  /** `$SRV.INFO`: names, versions, endpoints. */
  readonly info: (
    options?: DiscoveryOptions
  ) => Effect.Effect<ReadonlyArray<micro.InfoResponse>, NatsError.NatsError | Subject.InvalidSubjectError>
  /** `$SRV.STATS`: per-endpoint requests, errors, processing time. */
  readonly stats: (
    options?: DiscoveryOptions
  ) => Effect.Effect<ReadonlyArray<micro.StatsResponse>, NatsError.NatsError | Subject.InvalidSubjectError>
}>() {}

interface Codecs {
  readonly encodeRequest: Codec.Codec<unknown, unknown>
  readonly encodePayload: Codec.Codec<unknown, unknown>
  readonly decodeSuccess: Codec.Codec<unknown, unknown>
  readonly decodeFailure: (u: unknown) => Effect.Effect<unknown, ParseResult.ParseError, unknown>
  readonly span: { readonly kind: "client"; readonly captureStackTrace: false; readonly attributes: Record<string, unknown> }
}

const codecCache = new WeakMap<Command.Any, Codecs>()

const codecsFor = (command: Command.Any): Codecs => {
  let codecs = codecCache.get(command)
  if (codecs === undefined) {
    codecs = {
      encodeRequest: Codec.encoder(Command.request(command.payload) as Schema.Schema<unknown, unknown, unknown>),
      encodePayload: Codec.encoder(command.payload as Schema.Schema<unknown, unknown, unknown>),
      decodeSuccess: Codec.decoder(command.success as Schema.Schema<unknown, unknown, unknown>),
      decodeFailure: Schema.decodeUnknown(command.failure as Schema.Schema.Any),
      span: {
        kind: "client",
        captureStackTrace: false,
        attributes: {
          [Tracing.Attributes.system]: "nats",
          [Tracing.Attributes.destination]: command.subject,
          [Tracing.Attributes.operationType]: "send",
          [Tracing.Attributes.operationName]: "send"
        }
      }
    }
    codecCache.set(command, codecs)
  }
  return codecs
}

const decodeResponseBody = Schema.decodeUnknownEither(Schema.parseJson(Command.Response))
const textEncoder = new TextEncoder()
const textDecoder = new TextDecoder()

/**
 * A success response as `Command.Response` decodes it, checked by hand (it is
 * every answer but errors); `undefined` for anything else, which the Schema
 * then decodes (or rejects, and says why).
 */
const successNow = (msg: Msg): typeof Command.Response.Type | undefined => {
  let json: unknown
  try {
    json = JSON.parse(textDecoder.decode(msg.data))
  } catch {
    return undefined
  }
  if (!isRecord(json) || json["success"] !== true || json["error"] !== undefined || !isRecord(json["metadata"])) return undefined
  const { correlationId, durationMs, requestId, timestamp } = json["metadata"]
  if (typeof correlationId !== "string" || typeof durationMs !== "number") return undefined
  if (requestId !== undefined && typeof requestId !== "string") return undefined
  const at = parseUtc(timestamp)
  if (at === undefined) return undefined
  return {
    success: true,
    ...("result" in json ? { result: json["result"] } : {}),
    metadata: { ...(requestId !== undefined ? { requestId } : {}), correlationId, timestamp: at, durationMs }
  }
}

const transportError = (subject: string) => (e: NatsError.NatsError): CommandTransportError =>
  new CommandTransportError({
    reason: e._tag === "NatsTimeoutError" ? "Timeout" : e._tag === "NatsNoRespondersError" ? "NoResponders" : "RequestFailed",
    subject,
    message: e.message,
    cause: e
  })

const PubAck = Schema.parseJson(Schema.Struct({ stream: Schema.String, seq: Schema.Number }))
const decodePubAck = Schema.decodeUnknownOption(PubAck)

/** A stream whose subjects include the command subject acks the request before the service can answer. */
const isPubAck = (msg: Msg): string | undefined => Option.getOrUndefined(Option.map(decodePubAck(msg.string()), (a) => a.stream))

/** The service error from the micro headers, for answers that are not our JSON. */
const fromHeaders = (subject: string, msg: Msg): Option.Option<CommandServiceError> => {
  const code = msg.headers?.get(micro.ErrorCodeHeader) ?? ""
  return code === "" ? Option.none() : Option.some(
    new CommandServiceError({ subject, code, message: msg.headers?.get(micro.ErrorHeader) ?? "" })
  )
}

const malformedResult = (subject: string) => (cause: ParseResult.ParseError) =>
  new CommandTransportError({
    reason: "MalformedResponse",
    subject,
    message: `the result from ${subject} does not match the success schema: ${ParseResult.TreeFormatter.formatErrorSync(cause)}`,
    cause
  })

/** The success (synchronously when the Schemas allow it: the usual case), or the failure. */
const decodeResponse = (
  command: Command.Any,
  codecs: Codecs,
  msg: Msg,
  limits: Limits.Resolved
): Effect.Effect<Response<unknown>, unknown, unknown> => {
  // over the limits: refused before anything parses or walks it
  const refused = Json.exceeds(msg.data, limits.maxDepth, limits.maxBytes)
  if (refused !== undefined) {
    return Either.left(
      new CommandTransportError({
        reason: "MalformedResponse",
        subject: command.subject,
        message: `response from ${command.subject} refused: ${refused.message}`,
        cause: refused
      })
    )
  }
  const fast = successNow(msg)
  const body = fast !== undefined ? Either.right(fast) : decodeResponseBody(msg.string())
  if (Either.isRight(body) && body.right.success) {
    const metadata = body.right.metadata
    const result = codecs.decodeSuccess(body.right.result)
    const done = Codec.sync(result)
    if (done !== undefined) {
      return Either.isRight(done) ? Either.right({ result: done.right, metadata }) : Either.left(malformedResult(command.subject)(done.left))
    }
    return Effect.mapBoth(result, { onFailure: malformedResult(command.subject), onSuccess: (result) => ({ result, metadata }) })
  }
  return Effect.gen(function*() {
    const subject = command.subject
    if (Either.isLeft(body)) {
      const fromHeader = fromHeaders(subject, msg)
      if (Option.isSome(fromHeader)) return yield* fromHeader.value
      const pubAck = isPubAck(msg)
      return yield* new CommandTransportError({
        reason: "MalformedResponse",
        subject,
        message: pubAck === undefined
          ? `malformed response from ${subject}: ${ParseResult.TreeFormatter.formatErrorSync(body.left)}`
          : `JetStream stream ${pubAck} captured the request on ${subject} and answered first: ` +
            `keep command and query subjects out of stream subjects`,
        cause: body.left
      })
    }
    const response = body.right
    const error = response.error ?? {
      code: msg.headers?.get(micro.ErrorCodeHeader) ?? "",
      message: msg.headers?.get(micro.ErrorHeader) ?? ""
    }
    const typed = error.details === undefined ? Option.none() : yield* Effect.option(codecs.decodeFailure(error.details))
    if (Option.isSome(typed)) return yield* Effect.fail(typed.value)
    return yield* new CommandServiceError({
      subject,
      code: error.code,
      message: error.message,
      ...(error.details !== undefined ? { details: error.details } : {})
    })
  })
}

/**
 * Build the client.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<CommandClient["Type"], never, NatsClient> =>
  Effect.gen(function*() {
    const nats = yield* NatsClient
    const nc = nats.connection
    const limits = Limits.resolve(yield* Limits.Limits, nc.info?.max_payload)
    const defaultTimeout = Duration.decode(options.timeout ?? "5 seconds")

    const executeWithMetadata = <C extends Command.Any>(
      command: C,
      aggregateId: string | undefined,
      payload: Command.Payload<C>,
      callOptions: ExecuteOptions = {}
    ): Effect.Effect<Response<Command.Success<C>>, ExecuteError<C>, Command.Context<C>> => {
      const codecs = codecsFor(command)
      const subject = command.subject
      const retry = callOptions.retry ?? options.retry
      const timeout = callOptions.timeout ?? defaultTimeout
      const encodeError = (cause: ParseResult.ParseError) =>
        new CommandTransportError({
          reason: "Encode",
          subject,
          message: `cannot encode the request for ${subject}: ${ParseResult.TreeFormatter.formatErrorSync(cause)}`,
          cause
        })
      const program = (context: FiberContext, span: Tracer.Span | undefined) => {
        const now = context.clock.unsafeCurrentTimeMillis()
        const requestId = callOptions.requestId ?? uuidv7(now)
        const correlationId = callOptions.correlationId ?? context.causation?.correlationId ?? requestId
        const causationId = callOptions.causationId ?? context.causation?.id
        const userId = callOptions.userId ?? options.userId
        // `span`: the CLIENT span when a tracer records (see below), else the caller's, if any
        const send = (encoded: unknown) => {
          let h: MsgHdrs | undefined
          if (span !== undefined || callOptions.headers !== undefined) {
            h = natsHeaders()
            if (span !== undefined) Tracing.inject(span, h)
            if (callOptions.headers) for (const k in callOptions.headers) h.set(k, callOptions.headers[k]!)
          }
          const data = textEncoder.encode(JSON.stringify(encoded))
          const requested = nats.request(subject, data, { timeout, headers: h }).pipe(Effect.mapError(transportError(subject)))
          const response = Effect.flatMap(
            retry === undefined ? requested : Effect.retry(requested, { schedule: retry, while: isRetryable }),
            (msg) => decodeResponse(command, codecs, msg, limits)
          )
          return context.recording
            ? Effect.zipRight(
              Effect.annotateCurrentSpan({
                [Tracing.Attributes.messageId]: requestId,
                [Tracing.Attributes.conversationId]: correlationId
              }),
              response
            )
            : response
        }
        // the usual case: only the payload goes through its Schema, the envelope is written as `Command.request` encodes it
        const encodedPayload = requestId === "" || correlationId === "" ? undefined : Codec.sync(codecs.encodePayload(payload))
        if (encodedPayload !== undefined && Either.isRight(encodedPayload)) {
          return send({
            ...(aggregateId !== undefined ? { aggregateId } : {}),
            payload: encodedPayload.right,
            metadata: {
              requestId,
              correlationId,
              ...(causationId !== undefined ? { causationId } : {}),
              ...(userId !== undefined ? { userId } : {}),
              timestamp: new Date(now).toISOString()
            }
          })
        }
        const encoded = codecs.encodeRequest({
          ...(aggregateId !== undefined ? { aggregateId } : {}),
          payload,
          metadata: {
            requestId,
            correlationId,
            ...(causationId !== undefined ? { causationId } : {}),
            ...(userId !== undefined ? { userId } : {}),
            timestamp: DateTime.unsafeMake(now)
          }
        })
        const done = Codec.sync(encoded)
        if (done === undefined) return Effect.flatMap(Effect.mapError(encoded, encodeError), send)
        return Either.isRight(done) ? send(done.right) : Effect.fail(encodeError(done.left))
      }
      // a CLIENT span only when a tracer records it
      return Effect.flatMap(fiberContext, (context) =>
        context.recording
          ? Effect.withSpan(
            Effect.flatMap(fiberContext, (inner) => program(context, inner.span)),
            `send ${subject}`,
            codecs.span
          )
          : program(context, context.span)) as Effect.Effect<Response<Command.Success<C>>, ExecuteError<C>, Command.Context<C>>
    }

    const execute = <C extends Command.Any>(
      command: C,
      aggregateId: string | undefined,
      payload: Command.Payload<C>,
      callOptions?: ExecuteOptions
    ) => Effect.map(executeWithMetadata(command, aggregateId, payload, callOptions), (r) => r.result)

    const subscribe = <A, I, RS, E, R>(
      event: Event.Event<string, A, I, RS>,
      handle: (envelope: Envelope.Envelope<A>) => Effect.Effect<void, E, R>,
      subscribeOptions: { readonly queue?: string | undefined } = {}
    ): Effect.Effect<void, NatsError.NatsError, Scope.Scope | RS | R> =>
      Effect.gen(function*() {
        const decode = Codec.decoder(Schema.parseJson(event.envelope), { errors: "all" })
        const recording = yield* Tracing.isRecording
        const queue = yield* Effect.acquireRelease(Queue.unbounded<Msg>(), Queue.shutdown)
        yield* Effect.acquireRelease(
          Effect.try({
            try: () =>
              nc.subscribe(event.subject, {
                ...(subscribeOptions.queue !== undefined ? { queue: subscribeOptions.queue } : {}),
                callback: (err, msg) => {
                  if (err === null) Queue.unsafeOffer(queue, msg)
                }
              }),
            catch: NatsError.fromCause("CommandClient.subscribe", event.subject, nats.servers)
          }),
          (sub) => Effect.sync(() => sub.unsubscribe()).pipe(Effect.ignore)
        )
        const attributes = {
          [Tracing.Attributes.system]: "nats",
          [Tracing.Attributes.destination]: event.subject,
          [Tracing.Attributes.operationType]: "process",
          [Tracing.Attributes.operationName]: "process"
        }
        const one = (msg: Msg) => {
          const refused = Json.exceeds(msg.data, limits.maxDepth, limits.maxBytes)
          if (refused !== undefined) {
            return Effect.logWarning(`CommandClient.subscribe: a message on ${msg.subject} is refused: ${refused.message}`)
          }
          const handled = decode(msg.string()).pipe(
            Effect.matchEffect({
              onFailure: (e) =>
                Effect.logWarning(
                  `CommandClient.subscribe: a message on ${msg.subject} does not decode: ${
                    ParseResult.TreeFormatter.formatErrorSync(e)
                  }`
                ),
              onSuccess: (envelope) =>
                handle(envelope).pipe(
                  Envelope.withCausation({
                    id: envelope.id,
                    correlationId: envelope.correlationId,
                    tenantId: envelope.tenantId
                  }),
                  Effect.catchAllCause((cause) =>
                    Effect.logError(`CommandClient.subscribe: the handler of ${envelope.type} failed`, cause)
                  )
                )
            })
          )
          // a CONSUMER span only when a tracer records it
          return recording
            ? Effect.withSpan(handled, `process ${msg.subject}`, {
              kind: "consumer",
              captureStackTrace: false,
              attributes,
              ...Option.match(Tracing.extract(msg.headers), { onNone: () => ({ root: true }), onSome: (parent) => ({ parent }) })
            })
            : handled
        }
        // whatever one message does (a defect included), the subscriber goes on with the next
        yield* Queue.take(queue).pipe(
          Effect.flatMap((msg) =>
            Effect.catchAllCause(
              Effect.suspend(() => one(msg)),
              (cause) => Effect.logError(`CommandClient.subscribe: a message on ${msg.subject} failed`, cause)
            )
          ),
          Effect.forever,
          Effect.forkScoped
        )
        yield* nats.flush
      })

    const discover = <A, I>(verb: micro.Verb, schema: Schema.Schema<A, I>, discovery: DiscoveryOptions = {}) =>
      Effect.gen(function*() {
        const service = discovery.service === undefined ? undefined : yield* Subject.token(discovery.service)
        const id = discovery.id === undefined || service === undefined ? undefined : yield* Subject.token(discovery.id)
        const subject = micro.controlSubject(verb, service, id)
        const max = discovery.maxResponses ?? Number.POSITIVE_INFINITY
        const received: Array<Msg> = []
        const enough = yield* Deferred.make<void>()
        const inbox = createInbox()
        yield* Effect.acquireRelease(
          Effect.try({
            try: () =>
              nc.subscribe(inbox, {
                callback: (err, msg) => {
                  // an empty message is the server's "no responders" status
                  if (err !== null || msg.data.length === 0) return
                  received.push(msg)
                  if (received.length >= max) Deferred.unsafeDone(enough, Effect.void)
                }
              }),
            catch: NatsError.fromCause(`CommandClient.${verb.toLowerCase()}`, inbox, nats.servers)
          }),
          (sub) => Effect.sync(() => sub.unsubscribe()).pipe(Effect.ignore)
        )
        yield* nats.publish(subject, Empty, { reply: inbox })
        yield* Effect.race(Deferred.await(enough), Effect.sleep(discovery.window ?? "500 millis"))
        const decode = Schema.decodeUnknownEither(Schema.parseJson(schema))
        const out: Array<A> = []
        for (const msg of received.slice(0, max)) {
          const refused = Json.exceeds(msg.data, limits.maxDepth, limits.maxBytes)
          if (refused !== undefined) {
            yield* Effect.logWarning(`CommandClient: ignoring a ${verb} response: ${refused.message}`)
            continue
          }
          const decoded = decode(msg.string())
          if (Either.isRight(decoded)) out.push(decoded.right)
          else {
            yield* Effect.logWarning(
              `CommandClient: ignoring a malformed ${verb} response: ${ParseResult.TreeFormatter.formatErrorSync(decoded.left)}`
            )
          }
        }
        return out as ReadonlyArray<A>
      }).pipe(Effect.scoped)

    return CommandClient.of({
      execute,
      query: execute,
      executeWithMetadata,
      subscribe,
      ping: (o) => discover("PING", micro.PingResponse, o),
      info: (o) => discover("INFO", micro.InfoResponse, o),
      stats: (o) => discover("STATS", micro.StatsResponse, o)
    })
  })

/**
 * The client layer; needs {@link NatsClient}.
 *
 * @example
 * ```ts
 * import { Layer, Schedule } from "effect"
 * import { CommandClient, NatsClient } from "effect-nats"
 *
 * const ClientLive = CommandClient.layer({ timeout: "2 seconds", retry: Schedule.recurs(2) }).pipe(
 *   Layer.provide(NatsClient.layerConfig())
 * )
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer = (options: Options = {}): Layer.Layer<CommandClient, never, NatsClient> =>
  Layer.effect(CommandClient, make(options))
