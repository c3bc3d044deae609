/**
 * The typed client of command services: `execute` a command or run a
 * `query` and get the decoded success, or one of the command's typed
 * failures decoded back to the same class, or a transport error. Plus
 * micro-protocol discovery (`ping` / `info` / `stats`, see
 * `internal/discovery.ts`) and a core-NATS `subscribe` for the events the
 * services publish (`internal/eventSubscriber.ts`).
 *
 * Each call is a CLIENT span `send <subject>` whose `traceparent` goes with
 * the request, when a tracer records (decided when the client is built: the
 * rule of `Tracing.isRecording`); correlation and causation default to the
 * message being handled (`Envelope.current`), so a command sent from a
 * handler continues its flow.
 *
 * @since 0.1.0
 */
import { headers as natsHeaders, type Msg, type MsgHdrs } from "@nats-io/nats-core"
import {
  Context,
  Data,
  DateTime,
  Duration,
  Effect,
  Either,
  Layer,
  Option,
  ParseResult,
  Schedule,
  Schema,
  type Scope
} from "effect"
import type * as Command from "./Command.js"
import type * as Envelope from "./Envelope.js"
import type * as Event from "./Event.js"
import * as Codec from "./internal/codec.js"
import * as CommandCodec from "./internal/commandCodec.js"
import { discover } from "./internal/discovery.js"
import * as Eager from "./internal/eager.js"
import { subscribe } from "./internal/eventSubscriber.js"
import { type FiberContext, fiberContext } from "./internal/fiberContext.js"
import * as Json from "./internal/json.js"
import * as micro from "./internal/micro.js"
import { type MessagingSpan, messagingSpan } from "./internal/spans.js"
import { uuidv7 } from "./internal/uuid.js"
import * as ParseIssues from "./internal/parseIssues.js"
import * as Limits from "./Limits.js"
import { NatsClient } from "./NatsClient.js"
import type * as NatsError from "./NatsError.js"
import type * as Subject from "./Subject.js"
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
  readonly encodePayload: Codec.Codec<unknown, unknown>
  readonly decodeSuccess: Codec.Codec<unknown, unknown>
  readonly decodeFailure: Codec.Codec<unknown, unknown>
  readonly span: MessagingSpan
}

const codecCache = new WeakMap<Command.Any, Codecs>()

/** A definition's codecs, compiled once. */
const codecsFor = (command: Command.Any): Codecs => {
  let codecs = codecCache.get(command)
  if (codecs === undefined) {
    codecs = {
      encodePayload: Codec.encoder(command.payload as Schema.Schema<unknown, unknown, unknown>),
      decodeSuccess: Codec.decoder(command.success as Schema.Schema<unknown, unknown, unknown>),
      decodeFailure: Codec.decoder(command.failure as Schema.Schema<unknown, unknown, unknown>),
      span: messagingSpan("client", "send", command.subject)
    }
    codecCache.set(command, codecs)
  }
  return codecs
}

const textEncoder = new TextEncoder()

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

const malformed = (subject: string, message: string, cause: unknown) =>
  new CommandTransportError({ reason: "MalformedResponse", subject, message, cause })

/** An answer that is not a response: the micro error headers of a service that is not ours, a PubAck, or garbage. */
const notAResponse = (subject: string, msg: Msg, why: string, cause: unknown): CommandServiceError | CommandTransportError => {
  const code = msg.headers?.get(micro.ErrorCodeHeader) ?? ""
  if (code !== "") return new CommandServiceError({ subject, code, message: msg.headers?.get(micro.ErrorHeader) ?? "" })
  const pubAck = isPubAck(msg)
  return malformed(
    subject,
    pubAck === undefined
      ? `malformed response from ${subject}: ${why}`
      : `JetStream stream ${pubAck} captured the request on ${subject} and answered first: ` +
        `keep command and query subjects out of stream subjects`,
    cause
  )
}

/** The error of a failed response: the typed failure its details decode to, else a service error. */
const failure = (
  subject: string,
  codecs: Codecs,
  msg: Msg,
  response: CommandCodec.Response
): Effect.Effect<never, unknown, unknown> => {
  const error = response.error ?? {
    code: msg.headers?.get(micro.ErrorCodeHeader) ?? "",
    message: msg.headers?.get(micro.ErrorHeader) ?? ""
  }
  const serviceError = new CommandServiceError({
    subject,
    code: error.code,
    message: error.message,
    ...(error.details !== undefined ? { details: error.details } : {})
  })
  if (error.details === undefined) return Either.left(serviceError)
  return Eager.match(codecs.decodeFailure(error.details), () => Either.left(serviceError), (typed) => Either.left(typed))
}

/** The success (synchronously when the Schemas allow it: the usual case), or the failure. */
const decodeResponse = (
  subject: string,
  codecs: Codecs,
  msg: Msg,
  limits: Limits.Resolved
): Effect.Effect<Response<unknown>, unknown, unknown> => {
  // over the limits: refused before anything parses or walks it
  const json = Json.parse(msg.data, limits.maxDepth, limits.maxBytes)
  if (Either.isLeft(json)) {
    return Either.left(
      json.left.reason === "InvalidJson"
        ? notAResponse(subject, msg, json.left.message, json.left)
        : malformed(subject, `response from ${subject} refused: ${json.left.message}`, json.left)
    )
  }
  const response = CommandCodec.decodeResponse(json.right)
  if (Either.isLeft(response)) {
    return Either.left(notAResponse(subject, msg, ParseIssues.describe(response.left), response.left))
  }
  if (!response.right.success) return failure(subject, codecs, msg, response.right)
  const metadata = response.right.metadata
  return Eager.match(
    codecs.decodeSuccess(response.right.result),
    (cause) =>
      Either.left(malformed(
        subject,
        `the result from ${subject} does not match the success schema: ${ParseIssues.describe(cause)}`,
        cause
      )),
    (result) => Either.right({ result, metadata })
  )
}

/** One call of `execute` / `query`: what its steps read. */
interface Call {
  readonly nats: NatsClient["Type"]
  readonly limits: Limits.Resolved
  readonly subject: string
  readonly codecs: Codecs
  readonly aggregateId: string | undefined
  readonly payload: unknown
  readonly options: ExecuteOptions
  readonly userId: string | undefined
  readonly timeout: Duration.DurationInput
  readonly retry: Schedule.Schedule<unknown, CommandTransportError> | undefined
}

interface Ids {
  readonly requestId: string
  readonly correlationId: string
}

/** The request's ids: given, or from the message being handled, or new. */
const idsOf = (call: Call, context: FiberContext): Ids => {
  const requestId = call.options.requestId ?? uuidv7(context.clock.unsafeCurrentTimeMillis())
  return { requestId, correlationId: call.options.correlationId ?? context.causation?.correlationId ?? requestId }
}

const encodeError = (subject: string, cause: ParseResult.ParseError) =>
  new CommandTransportError({
    reason: "Encode",
    subject,
    message: `cannot encode the request for ${subject}: ${ParseIssues.describe(cause)}`,
    cause
  })

/** The request body: the payload through its Schema, in the envelope (`Command.request`). */
const encode = (call: Call, context: FiberContext, ids: Ids): Effect.Effect<unknown, CommandTransportError, unknown> => {
  const causationId = call.options.causationId ?? context.causation?.id
  return Eager.match(
    call.codecs.encodePayload(call.payload),
    (cause) => Either.left(encodeError(call.subject, cause)),
    (payload) =>
      Either.mapLeft(
        CommandCodec.encodeRequest({
          ...(call.aggregateId !== undefined ? { aggregateId: call.aggregateId } : {}),
          payload,
          metadata: {
            requestId: ids.requestId,
            correlationId: ids.correlationId,
            ...(causationId !== undefined ? { causationId } : {}),
            ...(call.userId !== undefined ? { userId: call.userId } : {}),
            timestamp: DateTime.unsafeMake(context.clock.unsafeCurrentTimeMillis())
          }
        }),
        (cause) => encodeError(call.subject, cause)
      )
  )
}

/** The one request path: encode, send (with the current span's `traceparent`), decode the response. */
const send = (call: Call, context: FiberContext, ids: Ids): Effect.Effect<Response<unknown>, unknown, unknown> =>
  Eager.flatMap(encode(call, context, ids), (body) => {
    // the current span (the CLIENT span when traced, else the caller's, if any) goes with the request
    let h: MsgHdrs | undefined
    const extra = call.options.headers
    if (context.span !== undefined || extra !== undefined) {
      h = natsHeaders()
      if (context.span !== undefined) Tracing.inject(context.span, h)
      if (extra !== undefined) for (const k in extra) h.set(k, extra[k]!)
    }
    const requested = call.nats.request(call.subject, textEncoder.encode(JSON.stringify(body)), {
      timeout: call.timeout,
      headers: h
    }).pipe(Effect.mapError(transportError(call.subject)))
    return Effect.flatMap(
      call.retry === undefined ? requested : Effect.retry(requested, { schedule: call.retry, while: isRetryable }),
      (msg) => decodeResponse(call.subject, call.codecs, msg, call.limits)
    )
  })

/**
 * Build the client.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<CommandClient["Type"], never, NatsClient> =>
  Effect.gen(function*() {
    const nats = yield* NatsClient
    const limits = Limits.resolve(yield* Limits.Limits, nats.connection.info?.max_payload)
    const defaultTimeout = Duration.decode(options.timeout ?? "5 seconds")
    // read once: CLIENT spans or not, for the client's lifetime (see `Tracing.isRecording`)
    const tracing = yield* Tracing.isRecording

    const executeWithMetadata = <C extends Command.Any>(
      command: C,
      aggregateId: string | undefined,
      payload: Command.Payload<C>,
      callOptions: ExecuteOptions = {}
    ): Effect.Effect<Response<Command.Success<C>>, ExecuteError<C>, Command.Context<C>> => {
      const call: Call = {
        nats,
        limits,
        subject: command.subject,
        codecs: codecsFor(command),
        aggregateId,
        payload,
        options: callOptions,
        userId: callOptions.userId ?? options.userId,
        timeout: callOptions.timeout ?? defaultTimeout,
        retry: callOptions.retry ?? options.retry
      }
      return (tracing
        // in a CLIENT span: its ids as attributes, its traceparent with the request
        ? Effect.withSpan(
          Effect.flatMap(fiberContext, (context) => {
            const ids = idsOf(call, context)
            return Effect.zipRight(
              Effect.annotateCurrentSpan({
                [Tracing.Attributes.messageId]: ids.requestId,
                [Tracing.Attributes.conversationId]: ids.correlationId
              }),
              send(call, context, ids)
            )
          }),
          `send ${call.subject}`,
          call.codecs.span
        )
        : Effect.flatMap(fiberContext, (context) => send(call, context, idsOf(call, context)))) as Effect.Effect<
          Response<Command.Success<C>>,
          ExecuteError<C>,
          Command.Context<C>
        >
    }

    const execute = <C extends Command.Any>(
      command: C,
      aggregateId: string | undefined,
      payload: Command.Payload<C>,
      callOptions?: ExecuteOptions
    ) => Effect.map(executeWithMetadata(command, aggregateId, payload, callOptions), (r) => r.result)

    return CommandClient.of({
      execute,
      query: execute,
      executeWithMetadata,
      subscribe: (event, handle, subscribeOptions = {}) => subscribe(nats, limits, event, handle, subscribeOptions),
      ping: (o) => discover(nats, limits, "PING", micro.PingResponse, o),
      info: (o) => discover(nats, limits, "INFO", micro.InfoResponse, o),
      stats: (o) => discover(nats, limits, "STATS", micro.StatsResponse, o)
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
