/**
 * The NATS micro protocol (ADR-32, `io.nats.micro.v1`), implemented directly
 * on nats-core: discovery subjects, the PING / INFO / STATS response schemas,
 * and per-endpoint statistics (times in nanoseconds, as Go's `time.Duration`).
 *
 * @internal
 */
import type { Msg, NatsConnection, Subscription } from "@nats-io/nats-core"
import { Schema } from "effect"

/** Root of all control subjects. */
export const apiPrefix = "$SRV"

/** The queue group of endpoints unless configured otherwise. */
export const defaultQueueGroup = "q"

/** Headers of an error response. */
export const ErrorHeader = "Nats-Service-Error"
export const ErrorCodeHeader = "Nats-Service-Error-Code"

export const PingResponseType = "io.nats.micro.v1.ping_response"
export const InfoResponseType = "io.nats.micro.v1.info_response"
export const StatsResponseType = "io.nats.micro.v1.stats_response"

export type Verb = "PING" | "INFO" | "STATS"

export const verbs: ReadonlyArray<Verb> = ["PING", "INFO", "STATS"]

/** `$SRV.<VERB>`, `$SRV.<VERB>.<name>` or `$SRV.<VERB>.<name>.<id>`. */
export const controlSubject = (verb: Verb, name?: string, id?: string): string =>
  [apiPrefix, verb, ...(name === undefined ? [] : [name]), ...(name === undefined || id === undefined ? [] : [id])].join(".")

/** Service and endpoint names accepted by the stock micro libraries. */
export const validName = /^[A-Za-z0-9\-_]+$/

/** The SemVer regular expression the stock micro libraries check versions with. */
export const validVersion =
  /^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?(?:\+([0-9a-zA-Z-]+(?:\.[0-9a-zA-Z-]+)*))?$/

// Go services send `null` for a nil map.
const Metadata = Schema.optional(Schema.NullOr(Schema.Record({ key: Schema.String, value: Schema.String })))

const identity = {
  name: Schema.String,
  id: Schema.String,
  version: Schema.String,
  metadata: Metadata
}

export const PingResponse = Schema.Struct({ type: Schema.Literal(PingResponseType), ...identity })
export type PingResponse = typeof PingResponse.Type

export const EndpointInfo = Schema.Struct({
  name: Schema.String,
  subject: Schema.String,
  queue_group: Schema.String,
  metadata: Metadata
})
export type EndpointInfo = typeof EndpointInfo.Type

export const InfoResponse = Schema.Struct({
  type: Schema.Literal(InfoResponseType),
  ...identity,
  description: Schema.String,
  endpoints: Schema.Array(EndpointInfo)
})
export type InfoResponse = typeof InfoResponse.Type

const Nanos = Schema.Int.pipe(Schema.nonNegative())

export const EndpointStats = Schema.Struct({
  name: Schema.String,
  subject: Schema.String,
  queue_group: Schema.String,
  num_requests: Schema.Int,
  num_errors: Schema.Int,
  last_error: Schema.String,
  processing_time: Nanos,
  average_processing_time: Nanos,
  data: Schema.optional(Schema.Unknown)
})
export type EndpointStats = typeof EndpointStats.Type

export const StatsResponse = Schema.Struct({
  type: Schema.Literal(StatsResponseType),
  ...identity,
  started: Schema.String,
  endpoints: Schema.Array(EndpointStats)
})
export type StatsResponse = typeof StatsResponse.Type

/** One endpoint of a service and its running statistics. */
export class Endpoint {
  numRequests = 0
  numErrors = 0
  lastError = ""
  processingTime = 0n

  constructor(
    readonly name: string,
    readonly subject: string,
    readonly queueGroup: string,
    readonly metadata: Readonly<Record<string, string>> | null
  ) {}

  /** Count one handled request; `error` is `"<code>:<description>"` as nats.go reports it. */
  record(nanos: bigint, error: string | undefined): void {
    this.numRequests++
    this.processingTime += nanos
    if (error !== undefined) {
      this.numErrors++
      this.lastError = error
    }
  }

  /** Count an error that is not a handled request (a subscription error). */
  fail(error: string): void {
    this.numErrors++
    this.lastError = error
  }

  info(): EndpointInfo {
    return { name: this.name, subject: this.subject, queue_group: this.queueGroup, metadata: this.metadata }
  }

  stats(): EndpointStats {
    return {
      name: this.name,
      subject: this.subject,
      queue_group: this.queueGroup,
      num_requests: this.numRequests,
      num_errors: this.numErrors,
      last_error: this.lastError,
      processing_time: Number(this.processingTime),
      average_processing_time: this.numRequests === 0 ? 0 : Number(this.processingTime / BigInt(this.numRequests))
    }
  }
}

export interface ServiceConfig {
  readonly name: string
  readonly id: string
  readonly version: string
  readonly description: string
  readonly metadata: Readonly<Record<string, string>>
  /** ISO 8601 */
  readonly started: string
  readonly endpoints: ReadonlyArray<Endpoint>
}

export const ping = (s: ServiceConfig): PingResponse => ({
  type: PingResponseType,
  name: s.name,
  id: s.id,
  version: s.version,
  metadata: s.metadata
})

export const info = (s: ServiceConfig): InfoResponse => ({
  type: InfoResponseType,
  name: s.name,
  id: s.id,
  version: s.version,
  metadata: s.metadata,
  description: s.description,
  endpoints: s.endpoints.map((e) => e.info())
})

export const stats = (s: ServiceConfig): StatsResponse => ({
  type: StatsResponseType,
  name: s.name,
  id: s.id,
  version: s.version,
  metadata: s.metadata,
  started: s.started,
  endpoints: s.endpoints.map((e) => e.stats())
})

/**
 * Subscribe the nine control subjects (three verbs, each for all services,
 * for this name, for this instance). Each request is answered synchronously
 * from the current state.
 */
export const subscribeControl = (
  nc: Pick<NatsConnection, "subscribe">,
  service: ServiceConfig,
  onError: (subject: string, error: Error) => void
): Array<Subscription> => {
  const encoder = new TextEncoder()
  const answer = (verb: Verb): string => {
    switch (verb) {
      case "PING":
        return JSON.stringify(ping(service))
      case "INFO":
        return JSON.stringify(info(service))
      case "STATS":
        return JSON.stringify(stats(service))
    }
  }
  const subs: Array<Subscription> = []
  try {
    for (const verb of verbs) {
      for (const subject of [
        controlSubject(verb),
        controlSubject(verb, service.name),
        controlSubject(verb, service.name, service.id)
      ]) {
        subs.push(nc.subscribe(subject, {
          callback: (err: Error | null, msg: Msg) => {
            if (err !== null) return onError(subject, err)
            try {
              msg.respond(encoder.encode(answer(verb)))
            } catch (e) {
              onError(subject, e instanceof Error ? e : new Error(String(e)))
            }
          }
        }))
      }
    }
  } catch (e) {
    for (const sub of subs) {
      try {
        sub.unsubscribe()
      } catch {
        // the connection is closed
      }
    }
    throw e
  }
  return subs
}
