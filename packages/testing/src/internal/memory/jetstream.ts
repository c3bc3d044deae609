/**
 * JetStream in memory: streams (subjects, sequences, limits, `Nats-Msg-Id`
 * dedup window, publish expectations), durable pull consumers (ack, nak with
 * delay, term, working, ack_wait, max_deliver with its advisory,
 * max_ack_pending, backoff), and the nats.js-shaped handles effect-nats uses
 * (`JetStream.Client`, `JetStream.Manager`).
 *
 * The server is the reference: where nats-server behaves in a particular way
 * (a duplicate answers with the original sequence, a redelivery goes before
 * new messages, the max-deliveries advisory is sent on the next pull, a
 * workqueue stream deletes what is acked or termed), this does the same.
 *
 * This file is the engine and its nats.js-shaped handles; the parts live
 * beside it: `stream.ts` (a stream), `consumer.ts` (a durable pull consumer,
 * its `JsMsg` and `consume()` sessions), `stored.ts` (stored messages),
 * `errors.ts` (API errors as nats.js raises them), `units.ts`.
 */
import {
  AckPolicy,
  type ConsumeOptions,
  type ConsumerConfig,
  type ConsumerInfo,
  type ConsumerUpdateConfig,
  DeliverPolicy,
  DiscardPolicy,
  JetStreamApiError,
  type JetStreamAccountStats,
  type JetStreamPublishOptions,
  type Lister,
  type MsgRequest,
  type OrderedConsumerOptions,
  type PubAck,
  type PurgeResponse,
  ReplayPolicy,
  RetentionPolicy,
  StorageType,
  type StoredMsg,
  type StreamConfig,
  type StreamInfo,
  type StreamUpdateConfig
} from "@nats-io/jetstream"
import { headers as natsHeaders, nuid, type Payload, type WithRequired } from "@nats-io/nats-core"
import type { JetStream } from "effect-nats"
import { type Bus, copyHeaders, type MemoryConnection, type Timers, toBytes, type Wire } from "./bus.js"
import { isFilter, isSubset, matches, overlaps } from "./subjects.js"
import { defaultAckWait, defaultDuplicateWindow, isoOf } from "./units.js"
import { apiError, consumerNotFound, noStream, streamNotFound, validName } from "./errors.js"
import { MemoryConsumer, ConsumeSession } from "./consumer.js"
import { MemoryStoredMsg, type Stored } from "./stored.js"
import { MemoryStream } from "./stream.js"
const encoder = new TextEncoder()

const lister = <T>(items: () => Array<T>): Lister<T> => {
  let done = false
  return {
    next: () => {
      if (done) return Promise.resolve([])
      done = true
      return Promise.resolve(items())
    },
    [Symbol.asyncIterator]: async function*() {
      for (const item of items()) yield item
    }
  }
}

const streamDefaults = (cfg: WithRequired<Partial<StreamConfig>, "name">): StreamConfig => {
  const maxAge = cfg.max_age ?? 0
  const dw = cfg.duplicate_window ??
    (maxAge > 0 && maxAge < defaultDuplicateWindow ? maxAge : defaultDuplicateWindow)
  const out = {
    subjects: [cfg.name],
    retention: RetentionPolicy.Limits,
    max_consumers: -1,
    max_msgs: -1,
    max_bytes: -1,
    max_age: 0,
    max_msgs_per_subject: -1,
    max_msg_size: -1,
    discard: DiscardPolicy.Old,
    storage: StorageType.File,
    num_replicas: 1,
    sealed: false,
    deny_delete: false,
    deny_purge: false,
    allow_rollup_hdrs: false,
    allow_direct: false,
    mirror_direct: false,
    ...cfg,
    duplicate_window: dw
  }
  return out as StreamConfig
}

const consumerDefaults = (cfg: Partial<ConsumerConfig>, name: string): ConsumerConfig => {
  const out: Record<string, unknown> = {
    ack_policy: AckPolicy.Explicit,
    deliver_policy: DeliverPolicy.All,
    replay_policy: ReplayPolicy.Instant,
    ack_wait: defaultAckWait,
    max_deliver: -1,
    max_ack_pending: 1000,
    max_waiting: 512,
    num_replicas: 0,
    ...cfg,
    name
  }
  if (cfg.backoff !== undefined && cfg.backoff.length > 0) out["ack_wait"] = cfg.backoff[0]
  if (out["ack_policy"] === AckPolicy.None) out["max_ack_pending"] = -1
  return out as ConsumerConfig
}

/** The in-memory JetStream: streams and consumers on a {@link Bus}. */
export class Engine {
  readonly streams = new Map<string, MemoryStream>()
  apiCalls = 0
  apiErrors = 0

  constructor(readonly bus: Bus) {
    bus.capture = (wire) => this.captureCore(wire)
  }

  get timers(): Timers {
    return this.bus.timers
  }

  advisory(subject: string, body: Record<string, unknown>): void {
    const payload = { ...body, id: nuid.next(), timestamp: isoOf(this.timers.now()) }
    this.bus.publish({ subject, data: encoder.encode(JSON.stringify(payload)), headers: undefined, reply: undefined })
  }

  streamFor(subject: string): MemoryStream | undefined {
    for (const s of this.streams.values()) if (s.captures(subject)) return s
    return undefined
  }

  stream(name: string): MemoryStream {
    const s = this.streams.get(name)
    if (s === undefined) throw streamNotFound()
    return s
  }

  consumer(stream: string, name: string): MemoryConsumer {
    const c = this.stream(stream).consumers.get(name)
    if (c === undefined) throw consumerNotFound()
    return c
  }

  /** A core publish on a subject a stream captures is stored; the answer goes to the reply subject. */
  private captureCore(wire: Wire): { readonly answer: unknown } | undefined {
    const stream = this.streamFor(wire.subject)
    if (stream === undefined) return undefined
    try {
      const ack = stream.store(wire.subject, wire.data, wire.headers)
      // as the server writes it: `duplicate` only when true
      return { answer: ack.duplicate ? ack : { stream: ack.stream, seq: ack.seq } }
    } catch (e) {
      if (e instanceof JetStreamApiError) return { answer: { error: e.apiError() } }
      throw e
    }
  }

  /** What `js.publish` does. */
  publish(subject: string, payload: Payload | undefined, options: Partial<JetStreamPublishOptions> | undefined): PubAck {
    const data = toBytes(payload)
    let h = copyHeaders(options?.headers)
    const ensure = () => (h ??= natsHeaders())
    if (options?.msgID) ensure().set("Nats-Msg-Id", options.msgID)
    const expect = options?.expect
    if (expect?.streamName) ensure().set("Nats-Expected-Stream", expect.streamName)
    if (expect?.lastSequence !== undefined) ensure().set("Nats-Expected-Last-Sequence", `${expect.lastSequence}`)
    if (expect?.lastMsgID) ensure().set("Nats-Expected-Last-Msg-Id", expect.lastMsgID)
    if (expect?.lastSubjectSequence !== undefined) {
      ensure().set("Nats-Expected-Last-Subject-Sequence", `${expect.lastSubjectSequence}`)
    }
    if (options?.ttl !== undefined) ensure().set("Nats-TTL", options.ttl)
    // subscribers of the subject see the message, as they do on a server
    this.bus.route({ subject, data, headers: h, reply: undefined })
    const stream = this.streamFor(subject)
    if (stream === undefined) throw noStream(subject)
    return stream.store(subject, data, h)
  }

  addStream(cfg: WithRequired<Partial<StreamConfig>, "name">): StreamInfo {
    validName("stream", cfg.name)
    const config = streamDefaults(cfg)
    this.validateStream(config)
    const existing = this.streams.get(cfg.name)
    if (existing !== undefined) {
      if (JSON.stringify(existing.config) === JSON.stringify(config)) return existing.info()
      throw apiError(400, 10058, "stream name already in use with a different configuration")
    }
    const stream = new MemoryStream(this, config)
    this.streams.set(cfg.name, stream)
    return stream.info()
  }

  private validateStream(config: StreamConfig): void {
    for (const subject of config.subjects) {
      if (!isFilter(subject)) throw apiError(400, 10052, `invalid subject: ${subject}`)
    }
    for (const other of this.streams.values()) {
      if (other.name === config.name) continue
      for (const a of config.subjects) {
        for (const b of other.config.subjects) {
          if (overlaps(a, b)) throw apiError(400, 10065, "subjects overlap with an existing stream")
        }
      }
    }
    if (config.max_age > 0 && config.duplicate_window > config.max_age) {
      throw apiError(400, 10052, "stream configuration for duplicate window can not be larger than max age")
    }
  }

  updateStream(name: string, cfg: Partial<StreamUpdateConfig>): StreamInfo {
    validName("stream", name)
    const stream = this.stream(name)
    const update = cfg as Partial<StreamConfig>
    if (update.retention !== undefined && update.retention !== stream.config.retention) {
      throw apiError(500, 10052, "stream configuration update can not change retention policy")
    }
    if (update.storage !== undefined && update.storage !== stream.config.storage) {
      throw apiError(500, 10052, "stream configuration update can not change storage type")
    }
    const merged = { ...stream.config, ...cfg, name } as StreamConfig
    if (cfg.duplicate_window === undefined && cfg.max_age !== undefined) {
      merged.duplicate_window = streamDefaults({ name, max_age: cfg.max_age }).duplicate_window
    }
    this.validateStream(merged)
    stream.reconfigure(merged)
    return stream.info()
  }

  deleteStream(name: string): boolean {
    const stream = this.stream(name)
    for (const c of stream.consumers.values()) c.close()
    stream.consumers.clear()
    this.streams.delete(name)
    return true
  }

  addConsumer(streamName: string, cfg: Partial<ConsumerConfig>): ConsumerInfo {
    const stream = this.stream(streamName)
    const name = cfg.durable_name ?? cfg.name ?? nuid.next()
    validName("durable", name)
    if (cfg.deliver_subject !== undefined) {
      throw apiError(400, 10000, "push consumers are not supported by the in-memory JetStream (use pull consumers)")
    }
    const config = consumerDefaults(cfg, name)
    this.validateConsumer(stream, config)
    const existing = stream.consumers.get(name)
    if (existing !== undefined) {
      if (config.deliver_policy !== existing.config.deliver_policy || config.ack_policy !== existing.config.ack_policy) {
        throw apiError(400, 10013, "consumer name already in use")
      }
      existing.reconfigure({ ...existing.config, ...cfg, name } as ConsumerConfig)
      return existing.info()
    }
    const consumer = new MemoryConsumer(stream, name, config, cfg.durable_name === undefined)
    stream.consumers.set(name, consumer)
    return consumer.info()
  }

  private validateConsumer(stream: MemoryStream, config: ConsumerConfig): void {
    const filters = config.filter_subjects ?? (config.filter_subject ? [config.filter_subject] : [])
    for (const f of filters) {
      if (!isFilter(f) || !stream.config.subjects.some((s) => isSubset(f, s))) {
        throw apiError(400, 10093, "consumer filter subject is not a valid subset of the interest subjects")
      }
    }
    const backoff = config.backoff
    if (backoff !== undefined && backoff.length > 0) {
      const maxDeliver = config.max_deliver ?? -1
      if (maxDeliver > 0 && maxDeliver <= backoff.length) {
        throw apiError(400, 10116, "max deliver is required to be > length of backoff values")
      }
    }
  }

  updateConsumer(streamName: string, name: string, cfg: Partial<ConsumerUpdateConfig>): ConsumerInfo {
    const consumer = this.consumer(streamName, name)
    const merged = { ...consumer.config, ...cfg, name } as ConsumerConfig
    if (cfg.backoff !== undefined && cfg.backoff.length > 0 && cfg.ack_wait === undefined) merged.ack_wait = cfg.backoff[0]!
    this.validateConsumer(consumer.stream, merged)
    consumer.reconfigure(merged)
    return consumer.info()
  }

  deleteConsumer(streamName: string, name: string): boolean {
    const stream = this.stream(streamName)
    const consumer = stream.consumers.get(name)
    if (consumer === undefined) throw consumerNotFound()
    consumer.close()
    stream.consumers.delete(name)
    return true
  }

  /** `consumers.get(stream)` without a name: an ordered consumer (no acks, every message once, in order). */
  ordered(streamName: string, opts: Partial<OrderedConsumerOptions> | undefined): MemoryConsumer {
    const stream = this.stream(streamName)
    const name = `${opts?.name_prefix ?? "ordered"}_${nuid.next()}`
    const filters = opts?.filter_subjects
    const config = consumerDefaults({
      ack_policy: AckPolicy.None,
      deliver_policy: opts?.deliver_policy ?? DeliverPolicy.All,
      ...(opts?.opt_start_seq !== undefined ? { opt_start_seq: opts.opt_start_seq } : {}),
      ...(opts?.opt_start_time !== undefined ? { opt_start_time: opts.opt_start_time } : {}),
      ...(typeof filters === "string" ? { filter_subject: filters } : Array.isArray(filters) ? { filter_subjects: filters } : {}),
      mem_storage: true,
      num_replicas: 1
    }, name)
    const consumer = new MemoryConsumer(stream, name, config, true)
    stream.consumers.set(name, consumer)
    return consumer
  }

  /** A nats.js-shaped `Consumer` handle over a consumer. */
  handle(consumer: MemoryConsumer, removeOnClose: boolean, connection: MemoryConnection | undefined): JetStream.PullConsumer {
    return {
      consume: (opts?: ConsumeOptions) => {
        if (consumer.deleted) return Promise.reject(consumerNotFound())
        try {
          connection?.checkOpen()
        } catch (e) {
          return Promise.reject(e)
        }
        const session = new ConsumeSession(consumer, opts, connection)
        consumer.attach(session)
        if (removeOnClose) {
          void session.closed().then(() => {
            if (!consumer.deleted) {
              consumer.close()
              consumer.stream.consumers.delete(consumer.name)
            }
          })
        }
        return Promise.resolve(session)
      },
      info: () => consumer.deleted ? Promise.reject(consumerNotFound()) : Promise.resolve(consumer.info())
    }
  }

  getMessage(streamName: string, query: MsgRequest | { seq?: number; next_by_subj: string }): StoredMsg | null {
    const stream = this.stream(streamName)
    stream.expire()
    let found: Stored | undefined
    if ("last_by_subj" in query) {
      const seq = stream.lastBySubject(query.last_by_subj)
      if (seq !== undefined) found = stream.messages.get(seq)
      else if (query.last_by_subj.includes("*") || query.last_by_subj.includes(">")) {
        for (const m of stream.messages.values()) if (matches(query.last_by_subj, m.subject)) found = m
      }
    } else if ("next_by_subj" in query) {
      const from = query.seq ?? 0
      for (const m of stream.messages.values()) {
        if (m.seq >= from && matches(query.next_by_subj, m.subject)) {
          found = m
          break
        }
      }
    } else {
      found = stream.messages.get(query.seq)
    }
    return found === undefined ? null : new MemoryStoredMsg(found)
  }

  deleteMessage(streamName: string, seq: number): boolean {
    const stream = this.stream(streamName)
    if (stream.config.deny_delete) throw apiError(400, 10057, "message delete not permitted")
    if (!stream.remove(seq)) throw apiError(400, 10057, "no message found")
    return true
  }

  accountInfo(): JetStreamAccountStats {
    let consumers = 0
    let bytes = 0
    for (const s of this.streams.values()) {
      consumers += s.consumers.size
      bytes += s.bytes
    }
    return {
      type: "io.nats.jetstream.api.v1.account_info_response",
      memory: 0,
      storage: bytes,
      streams: this.streams.size,
      consumers,
      limits: {
        max_memory: -1,
        max_storage: -1,
        max_streams: -1,
        max_consumers: -1,
        max_ack_pending: -1,
        memory_max_stream_bytes: -1,
        storage_max_stream_bytes: -1,
        max_bytes_required: false
      },
      api: { total: this.apiCalls, errors: this.apiErrors, level: 1 }
    } as unknown as JetStreamAccountStats
  }

  /** Run an API call as a promise, counted like the server's API stats. */
  call<A>(f: () => A, connection?: MemoryConnection): Promise<A> {
    this.apiCalls++
    try {
      connection?.checkOpen()
      return Promise.resolve(f())
    } catch (e) {
      this.apiErrors++
      return Promise.reject(e)
    }
  }

  /** `JetStream.Client` on a connection. */
  client(connection?: MemoryConnection): JetStream.Client {
    return {
      publish: (subject, payload, options) => {
        try {
          connection?.checkOpen()
          return Promise.resolve(this.publish(subject, payload, options))
        } catch (e) {
          return Promise.reject(e)
        }
      },
      consumers: {
        get: (stream, name) =>
          this.call(() => {
            if (typeof name === "string") return this.handle(this.consumer(stream, name), false, connection)
            return this.handle(this.ordered(stream, name), true, connection)
          }, connection)
      }
    }
  }

  /** `JetStream.Manager` on a connection. */
  manager(connection?: MemoryConnection): JetStream.Manager {
    const call = <A>(f: () => A): Promise<A> => this.call(f, connection)
    return {
      getAccountInfo: () => call(() => this.accountInfo()),
      streams: {
        info: (name, opts) => call(() => this.stream(name).info(opts)),
        add: (cfg) => call(() => this.addStream(cfg)),
        update: (name, cfg) => call(() => this.updateStream(name, cfg)),
        delete: (name) => call(() => this.deleteStream(name)),
        purge: (name, opts) =>
          call((): PurgeResponse => {
            const stream = this.stream(name)
            if (stream.config.deny_purge) throw apiError(400, 10056, "stream purge not permitted")
            return { success: true, purged: stream.purge(opts) }
          }),
        list: (subject) =>
          lister(() =>
            [...this.streams.values()]
              .filter((s) => subject === undefined || subject === "" || s.config.subjects.some((x) => overlaps(x, subject)))
              .map((s) => s.info())
          ),
        names: (subject) =>
          lister(() =>
            [...this.streams.values()]
              .filter((s) => subject === undefined || subject === "" || s.config.subjects.some((x) => overlaps(x, subject)))
              .map((s) => s.name)
          ),
        find: (subject) =>
          call(() => {
            const s = this.streamFor(subject)
            if (s === undefined) throw new Error("no stream matches subject")
            return s.name
          }),
        getMessage: (name, query) => call(() => this.getMessage(name, query)),
        deleteMessage: (name, seq) => call(() => this.deleteMessage(name, seq))
      },
      consumers: {
        info: (stream, name) => call(() => this.consumer(stream, name).info()),
        add: (stream, cfg) => call(() => this.addConsumer(stream, cfg)),
        update: (stream, name, cfg) => call(() => this.updateConsumer(stream, name, cfg)),
        delete: (stream, name) => call(() => this.deleteConsumer(stream, name)),
        list: (stream) => lister(() => [...this.stream(stream).consumers.values()].map((c) => c.info()))
      }
    }
  }
}
