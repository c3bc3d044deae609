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
 */
import {
  AckPolicy,
  type ConsumeOptions,
  type ConsumerConfig,
  type ConsumerInfo,
  type ConsumerMessages,
  type ConsumerNotification,
  type ConsumerUpdateConfig,
  DeliverPolicy,
  type DeliveryInfo,
  DiscardPolicy,
  JetStreamApiCodes,
  JetStreamApiError,
  type JetStreamAccountStats,
  type JetStreamPublishOptions,
  type JsMsg,
  type Lister,
  type MsgRequest,
  type OrderedConsumerOptions,
  type PubAck,
  type PurgeOpts,
  type PurgeResponse,
  ReplayPolicy,
  RetentionPolicy,
  StorageType,
  type StoredMsg,
  type StreamConfig,
  type StreamInfo,
  type StreamInfoRequestOptions,
  type StreamUpdateConfig
} from "@nats-io/jetstream"
import { jserrors } from "@nats-io/jetstream/internal"
import {
  ClosedConnectionError,
  headers as natsHeaders,
  type MsgHdrs,
  NoRespondersError,
  nuid,
  type Payload,
  RequestError,
  type WithRequired
} from "@nats-io/nats-core"
import type { JetStream } from "effect-nats"
import { AsyncQueue, type Bus, copyHeaders, type MemoryConnection, type Timers, toBytes, type Wire } from "./bus.js"
import { Filter, isFilter, isSubset, matches, overlaps } from "./subjects.js"

const encoder = new TextEncoder()
const decoder = new TextDecoder()

const NANOS_PER_MILLI = 1_000_000
const toMillis = (ns: number): number => Math.floor(ns / NANOS_PER_MILLI)
const defaultDuplicateWindow = 120_000 * NANOS_PER_MILLI
const defaultAckWait = 30_000 * NANOS_PER_MILLI

// ---------------------------------------------------------------------------------------------
// errors, as nats.js raises them from the server's answers

const apiError = (code: number, errCode: number, description: string): JetStreamApiError => {
  const e = { code, err_code: errCode, description }
  if (errCode === JetStreamApiCodes.StreamNotFound) return new jserrors.StreamNotFoundError(e)
  if (errCode === JetStreamApiCodes.ConsumerNotFound) return new jserrors.ConsumerNotFoundError(e)
  return new JetStreamApiError(e)
}

const streamNotFound = () => apiError(404, JetStreamApiCodes.StreamNotFound, "stream not found")
const consumerNotFound = () => apiError(404, JetStreamApiCodes.ConsumerNotFound, "consumer not found")

/** What `js.publish` throws when no stream captures the subject (no responders to the request). */
const noStream = (subject: string): Error => {
  const cause = new NoRespondersError(subject)
  return new jserrors.JetStreamNotEnabled("jetstream is not enabled", {
    cause: new RequestError(cause.message, { cause })
  })
}

const validName = (kind: string, name: string): void => {
  if (name === "") throw new Error(`${kind} name required`)
  for (const c of [".", "*", ">", "/", "\\", " ", "\t", "\n", "\r"]) {
    if (name.includes(c)) throw new Error(`invalid ${kind} name - ${kind} name cannot contain '${c}'`)
  }
}

// ---------------------------------------------------------------------------------------------
// stored messages

/** A message as a stream stores it. */
export interface Stored {
  readonly seq: number
  readonly subject: string
  readonly data: Uint8Array
  readonly headers: MsgHdrs | undefined
  /** Epoch millis (Effect's Clock). */
  readonly time: number
  readonly size: number
}

const isoOf = (millis: number): string => new Date(millis).toISOString()

class MemoryStoredMsg implements StoredMsg {
  readonly subject: string
  readonly seq: number
  readonly header: MsgHdrs
  readonly data: Uint8Array
  readonly time: Date
  readonly timestamp: string
  readonly lastSequence = 0
  readonly pending = -1
  constructor(m: Stored) {
    this.subject = m.subject
    this.seq = m.seq
    this.header = copyHeaders(m.headers) ?? natsHeaders()
    this.data = m.data.slice()
    this.time = new Date(m.time)
    this.timestamp = this.time.toISOString()
  }

  json<T>(reviver?: (key: string, value: unknown) => unknown): T {
    return JSON.parse(this.string(), reviver) as T
  }

  string(): string {
    return decoder.decode(this.data)
  }
}

// ---------------------------------------------------------------------------------------------
// streams

export class MemoryStream {
  config: StreamConfig
  readonly created: string
  readonly messages = new Map<number, Stored>()
  /** seqs per subject, ascending */
  private readonly bySubject = new Map<string, Array<number>>()
  private readonly dedup = new Map<string, { readonly seq: number; readonly at: number }>()
  readonly consumers = new Map<string, MemoryConsumer>()
  lastSeq = 0
  lastTime = 0
  bytes = 0
  private lastMsgId = ""
  private filters: Array<Filter>

  constructor(readonly engine: Engine, config: StreamConfig) {
    this.config = config
    this.created = isoOf(engine.timers.now())
    this.filters = config.subjects.map((s) => new Filter(s))
  }

  get name(): string {
    return this.config.name
  }

  reconfigure(config: StreamConfig): void {
    this.config = config
    this.filters = config.subjects.map((s) => new Filter(s))
    this.enforceLimits()
    for (const c of this.consumers.values()) c.schedule()
  }

  captures(subject: string): boolean {
    for (const f of this.filters) if (f.matches(subject)) return true
    return false
  }

  get firstSeq(): number {
    const first = this.messages.keys().next()
    if (!first.done) return first.value
    return this.lastSeq > 0 ? this.lastSeq + 1 : 0
  }

  /** Drop messages older than `max_age` (by the Clock). */
  expire(): void {
    const maxAge = this.config.max_age
    if (!(maxAge > 0)) return
    const cutoff = this.engine.timers.now() - toMillis(maxAge)
    for (const m of this.messages.values()) {
      if (m.time > cutoff) break
      this.remove(m.seq)
    }
  }

  private pruneDedup(now: number): void {
    const window = toMillis(this.config.duplicate_window)
    for (const [id, entry] of this.dedup) {
      if (entry.at + window > now) break
      this.dedup.delete(id)
    }
  }

  lastBySubject(subject: string): number | undefined {
    const seqs = this.bySubject.get(subject)
    return seqs === undefined ? undefined : seqs[seqs.length - 1]
  }

  /** Store a message; the PubAck, or the API error the server would answer. */
  store(subject: string, data: Uint8Array, headers: MsgHdrs | undefined): PubAck {
    const now = this.engine.timers.now()
    this.expire()
    const msgId = headers?.get("Nats-Msg-Id") ?? ""
    if (msgId !== "") {
      this.pruneDedup(now)
      const seen = this.dedup.get(msgId)
      if (seen !== undefined) return { stream: this.name, seq: seen.seq, duplicate: true }
    }
    if (headers !== undefined) {
      const expectedStream = headers.get("Nats-Expected-Stream")
      if (expectedStream !== "" && expectedStream !== this.name) {
        throw apiError(400, 10060, "expected stream does not match")
      }
      const expectedLast = headers.get("Nats-Expected-Last-Sequence")
      if (expectedLast !== "" && Number(expectedLast) !== this.lastSeq) {
        throw apiError(400, JetStreamApiCodes.StreamWrongLastSequence, `wrong last sequence: ${this.lastSeq}`)
      }
      const expectedId = headers.get("Nats-Expected-Last-Msg-Id")
      if (expectedId !== "" && expectedId !== this.lastMsgId) {
        throw apiError(400, 10070, `wrong last msg ID: ${this.lastMsgId}`)
      }
      const expectedSubject = headers.get("Nats-Expected-Last-Subject-Sequence")
      if (expectedSubject !== "") {
        const last = this.lastBySubject(subject) ?? 0
        if (Number(expectedSubject) !== last) {
          throw apiError(400, JetStreamApiCodes.StreamWrongLastSequence, `wrong last sequence: ${last}`)
        }
      }
    }
    const size = subject.length + data.length + (headers === undefined ? 0 : headersSize(headers)) + 16
    const maxMsgSize = this.config.max_msg_size
    if (maxMsgSize > -1 && data.length > maxMsgSize) {
      throw apiError(400, 10054, "message size exceeds maximum allowed")
    }
    if (this.config.discard === DiscardPolicy.New) {
      if (this.config.max_msgs > 0 && this.messages.size >= this.config.max_msgs) {
        throw apiError(503, 10077, "maximum messages exceeded")
      }
      if (this.config.max_bytes > 0 && this.bytes + size > this.config.max_bytes) {
        throw apiError(503, 10078, "maximum bytes exceeded")
      }
    }
    const rollup = headers?.get("Nats-Rollup") ?? ""
    if (rollup !== "" && !this.config.allow_rollup_hdrs) throw apiError(400, 10115, "rollup not permitted")

    const seq = ++this.lastSeq
    const stored: Stored = { seq, subject, data, headers, time: now, size }
    this.messages.set(seq, stored)
    const seqs = this.bySubject.get(subject)
    if (seqs === undefined) this.bySubject.set(subject, [seq])
    else seqs.push(seq)
    this.bytes += size
    this.lastTime = now
    if (msgId !== "") {
      this.dedup.set(msgId, { seq, at: now })
      this.lastMsgId = msgId
    }
    if (rollup === "sub") {
      for (const s of [...(this.bySubject.get(subject) ?? [])]) if (s !== seq) this.remove(s)
    } else if (rollup === "all") {
      for (const s of [...this.messages.keys()]) if (s !== seq) this.remove(s)
    }
    this.enforceLimits(subject)
    if (this.config.retention === RetentionPolicy.Interest && !this.hasInterest(subject)) this.remove(seq)
    for (const c of this.consumers.values()) if (c.wants(subject)) c.schedule()
    return { stream: this.name, seq, duplicate: false }
  }

  /** Apply the limits (per subject: to `subject` only, or to every subject). */
  private enforceLimits(subject?: string): void {
    const perSubject = this.config.max_msgs_per_subject
    if (perSubject > 0) {
      const lists = subject === undefined ? [...this.bySubject.values()] : [this.bySubject.get(subject) ?? []]
      for (const seqs of lists) {
        while (seqs.length > perSubject) this.remove(seqs[0]!)
      }
    }
    if (this.config.discard !== DiscardPolicy.New) {
      const maxMsgs = this.config.max_msgs
      while (maxMsgs > 0 && this.messages.size > maxMsgs) this.remove(this.firstSeq)
      const maxBytes = this.config.max_bytes
      while (maxBytes > 0 && this.bytes > maxBytes && this.messages.size > 0) this.remove(this.firstSeq)
    }
  }

  private hasInterest(subject: string): boolean {
    for (const c of this.consumers.values()) if (c.wants(subject)) return true
    return false
  }

  remove(seq: number): boolean {
    const m = this.messages.get(seq)
    if (m === undefined) return false
    this.messages.delete(seq)
    this.bytes -= m.size
    const seqs = this.bySubject.get(m.subject)
    if (seqs !== undefined) {
      const i = seqs.indexOf(seq)
      if (i >= 0) seqs.splice(i, 1)
      if (seqs.length === 0) this.bySubject.delete(m.subject)
    }
    return true
  }

  /** A consumer is done with `seq` (acked or termed): what the retention policy does with it. */
  settled(seq: number): void {
    const retention = this.config.retention
    if (retention === RetentionPolicy.Workqueue) {
      this.remove(seq)
    } else if (retention === RetentionPolicy.Interest) {
      const m = this.messages.get(seq)
      if (m === undefined) return
      for (const c of this.consumers.values()) {
        if (c.wants(m.subject) && !c.isDone(seq)) return
      }
      this.remove(seq)
    }
  }

  /** First stored seq > `after` whose subject passes `wants`. */
  nextAfter(after: number, wants: (subject: string) => boolean): Stored | undefined {
    this.expire()
    for (let seq = Math.max(after + 1, this.firstSeq); seq <= this.lastSeq; seq++) {
      const m = this.messages.get(seq)
      if (m !== undefined && wants(m.subject)) return m
    }
    return undefined
  }

  countAfter(after: number, wants: (subject: string) => boolean): number {
    let n = 0
    for (const m of this.messages.values()) if (m.seq > after && wants(m.subject)) n++
    return n
  }

  purge(opts: PurgeOpts | undefined): number {
    const filter = opts?.filter
    const candidates = [...this.messages.values()].filter((m) => filter === undefined || matches(filter, m.subject))
    let victims = candidates
    if (opts !== undefined && "seq" in opts && typeof opts.seq === "number") {
      const below = opts.seq
      victims = candidates.filter((m) => m.seq < below)
    } else if (opts !== undefined && "keep" in opts && typeof opts.keep === "number") {
      victims = candidates.slice(0, Math.max(0, candidates.length - opts.keep))
    }
    for (const m of victims) this.remove(m.seq)
    if (filter === undefined && !(opts !== undefined && ("seq" in opts || "keep" in opts))) this.dedup.clear()
    return victims.length
  }

  info(opts?: Partial<StreamInfoRequestOptions>): StreamInfo {
    this.expire()
    const first = this.messages.values().next()
    const firstTime = first.done ? 0 : first.value.time
    const deleted: Array<number> = []
    for (let seq = this.firstSeq; seq <= this.lastSeq && seq > 0; seq++) if (!this.messages.has(seq)) deleted.push(seq)
    const state: StreamInfo["state"] = {
      messages: this.messages.size,
      bytes: this.bytes,
      first_seq: this.firstSeq,
      first_ts: isoOf(firstTime),
      last_seq: this.lastSeq,
      last_ts: isoOf(this.lastTime),
      num_deleted: deleted.length,
      deleted: opts?.deleted_details === true ? deleted : [],
      lost: { msgs: null, bytes: 0 },
      consumer_count: this.consumers.size,
      num_subjects: this.bySubject.size
    }
    if (opts?.subjects_filter !== undefined && opts.subjects_filter !== "") {
      const subjects: Record<string, number> = {}
      for (const [subject, seqs] of this.bySubject) {
        if (matches(opts.subjects_filter, subject)) subjects[subject] = seqs.length
      }
      state.subjects = subjects
    }
    return {
      config: structuredClone(this.config),
      created: this.created,
      state,
      ts: isoOf(this.engine.timers.now()),
      total: 0,
      offset: 0,
      limit: 0
    }
  }
}

const headersSize = (h: MsgHdrs): number => {
  let n = 12
  for (const [k, values] of h) for (const v of values) n += k.length + v.length + 4
  return n
}

// ---------------------------------------------------------------------------------------------
// consumers

interface Pending {
  consumerSeq: number
  deliveries: number
  /** On the redelivery queue (ack wait expired, or nak without delay). */
  queued: boolean
  cancel: (() => void) | undefined
}

export class MemoryConsumer {
  config: ConsumerConfig
  readonly created: string
  private filters: Array<Filter> = []
  /** `delivered.stream_seq`: the last stream sequence delivered (redeliveries aside). */
  cursor: number
  private consumerSeq = 0
  readonly pending = new Map<number, Pending>()
  private rdq: Array<number> = []
  private readonly sessions: Array<ConsumeSession> = []
  private next = 0
  private scheduled = false
  private lastActive = 0
  deleted = false

  constructor(readonly stream: MemoryStream, readonly name: string, config: ConsumerConfig, readonly ephemeral: boolean) {
    this.config = config
    this.created = isoOf(stream.engine.timers.now())
    this.setFilters()
    this.cursor = this.startCursor()
  }

  private get timers(): Timers {
    return this.stream.engine.timers
  }

  private setFilters(): void {
    const subjects = this.config.filter_subjects ?? (this.config.filter_subject ? [this.config.filter_subject] : [])
    this.filters = subjects.map((s) => new Filter(s))
  }

  reconfigure(config: ConsumerConfig): void {
    this.config = config
    this.setFilters()
    this.schedule()
  }

  private startCursor(): number {
    const s = this.stream
    switch (this.config.deliver_policy) {
      case DeliverPolicy.New:
        return s.lastSeq
      case DeliverPolicy.Last: {
        let last: number | undefined
        for (const m of s.messages.values()) if (this.wants(m.subject)) last = m.seq
        return last === undefined ? s.lastSeq : last - 1
      }
      case DeliverPolicy.StartSequence:
        return Math.max(0, (this.config.opt_start_seq ?? 1) - 1)
      case DeliverPolicy.StartTime: {
        const from = Date.parse(this.config.opt_start_time ?? "")
        for (const m of s.messages.values()) if (m.time >= from) return m.seq - 1
        return s.lastSeq
      }
      default:
        return 0
    }
  }

  wants = (subject: string): boolean => {
    if (this.filters.length === 0) return true
    for (const f of this.filters) if (f.matches(subject)) return true
    return false
  }

  get ackNone(): boolean {
    return this.config.ack_policy === AckPolicy.None
  }

  private get maxDeliver(): number {
    return this.config.max_deliver ?? -1
  }

  /** Ack wait for the n-th delivery (the backoff entry when a backoff is set). */
  private ackWaitFor(deliveries: number): number {
    const backoff = this.config.backoff
    if (backoff !== undefined && backoff.length > 0) return toMillis(backoff[Math.min(deliveries, backoff.length) - 1]!)
    return toMillis(this.config.ack_wait ?? defaultAckWait)
  }

  /** Has this consumer acked (or given up on) `seq`? */
  isDone(seq: number): boolean {
    return seq <= this.cursor && !this.pending.has(seq)
  }

  attach(session: ConsumeSession): void {
    this.sessions.push(session)
    this.schedule()
  }

  detach(session: ConsumeSession): void {
    const i = this.sessions.indexOf(session)
    if (i >= 0) this.sessions.splice(i, 1)
  }

  schedule(): void {
    if (this.scheduled || this.deleted) return
    this.scheduled = true
    queueMicrotask(() => {
      this.scheduled = false
      this.pump()
    })
  }

  private takeSession(): ConsumeSession | undefined {
    for (let i = 0; i < this.sessions.length; i++) {
      const s = this.sessions[(this.next + i) % this.sessions.length]!
      if (s.credit() > 0) {
        this.next = (this.next + i + 1) % Math.max(1, this.sessions.length)
        return s
      }
    }
    return undefined
  }

  /** Deliver what can be delivered: redeliveries first (lowest sequence first), then new messages. */
  private pump(): void {
    if (this.deleted) return
    this.stream.expire()
    for (;;) {
      const session = this.takeSession()
      if (session === undefined) return
      let message: Stored | undefined
      while (message === undefined && this.rdq.length > 0) {
        const seq = this.rdq.shift()!
        const p = this.pending.get(seq)
        if (p === undefined || !p.queued) continue
        p.queued = false
        const m = this.stream.messages.get(seq)
        if (m === undefined) {
          this.pending.delete(seq)
          continue
        }
        if (this.maxDeliver > 0 && p.deliveries >= this.maxDeliver) {
          // the server stops here, at the next pull, and tells whoever listens
          this.pending.delete(seq)
          this.stream.engine.advisory(
            `$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.${this.stream.name}.${this.name}`,
            {
              type: "io.nats.jetstream.advisory.v1.max_deliver",
              stream: this.stream.name,
              consumer: this.name,
              stream_seq: seq,
              deliveries: p.deliveries
            }
          )
          // the message stays in the stream (also on a workqueue stream): the advisory's reader fetches it
          continue
        }
        message = m
      }
      if (message === undefined) {
        const maxAckPending = this.config.max_ack_pending ?? 1000
        if (!this.ackNone && maxAckPending > 0 && this.pending.size >= maxAckPending) return
        message = this.stream.nextAfter(this.cursor, this.wants)
        if (message === undefined) return
        this.cursor = message.seq
      }
      this.deliver(message, session)
    }
  }

  private deliver(m: Stored, session: ConsumeSession): void {
    const now = this.timers.now()
    this.lastActive = now
    const consumerSeq = ++this.consumerSeq
    let deliveries = 1
    if (!this.ackNone) {
      const previous = this.pending.get(m.seq)
      previous?.cancel?.()
      deliveries = (previous?.deliveries ?? 0) + 1
      const p: Pending = { consumerSeq, deliveries, queued: false, cancel: undefined }
      this.pending.set(m.seq, p)
      this.arm(m.seq, p, this.ackWaitFor(deliveries))
    }
    const stream = this.stream
    const after = this.cursor
    const wants = this.wants
    let pending: number | undefined
    const info: DeliveryInfo = {
      domain: "",
      stream: stream.name,
      consumer: this.name,
      deliveryCount: deliveries,
      streamSequence: m.seq,
      deliverySequence: consumerSeq,
      timestampNanos: m.time * NANOS_PER_MILLI,
      // counted when read (counting on every delivery would make consuming a long stream quadratic)
      get pending() {
        return pending ??= stream.countAfter(after, wants)
      },
      redelivered: deliveries > 1
    }
    session.push(new MemoryJsMsg(this, m, info, session.live))
  }

  private arm(seq: number, p: Pending, millis: number): void {
    p.cancel?.()
    p.cancel = this.timers.after(millis, () => {
      p.cancel = undefined
      if (this.pending.get(seq) !== p || this.deleted) return
      this.requeue(seq, p)
    })
  }

  private requeue(seq: number, p: Pending): void {
    p.cancel?.()
    p.cancel = undefined
    if (!p.queued) {
      p.queued = true
      let i = this.rdq.length
      while (i > 0 && this.rdq[i - 1]! > seq) i--
      this.rdq.splice(i, 0, seq)
    }
    this.schedule()
  }

  private drop(seq: number): Pending | undefined {
    const p = this.pending.get(seq)
    if (p === undefined) return undefined
    p.cancel?.()
    this.pending.delete(seq)
    if (p.queued) {
      const i = this.rdq.indexOf(seq)
      if (i >= 0) this.rdq.splice(i, 1)
    }
    return p
  }

  ack(seq: number): boolean {
    if (this.drop(seq) === undefined) return false
    this.stream.settled(seq)
    this.schedule()
    return true
  }

  nak(seq: number, delayMillis: number): void {
    const p = this.pending.get(seq)
    if (p === undefined) return
    if (delayMillis > 0) {
      if (p.queued) {
        p.queued = false
        const i = this.rdq.indexOf(seq)
        if (i >= 0) this.rdq.splice(i, 1)
      }
      // as the server: the ack-wait deadline moves to now - ack_wait + delay (+ the backoff entry for this delivery)
      const ackWait = toMillis(this.config.ack_wait ?? defaultAckWait)
      this.arm(seq, p, Math.max(0, delayMillis - ackWait + this.ackWaitFor(p.deliveries)))
    } else {
      this.requeue(seq, p)
    }
  }

  term(seq: number, reason: string): void {
    const p = this.drop(seq)
    if (p === undefined) return
    this.stream.engine.advisory(
      `$JS.EVENT.ADVISORY.CONSUMER.MSG_TERMINATED.${this.stream.name}.${this.name}`,
      {
        type: "io.nats.jetstream.advisory.v1.terminated",
        stream: this.stream.name,
        consumer: this.name,
        consumer_seq: p.consumerSeq,
        stream_seq: seq,
        deliveries: p.deliveries,
        ...(reason !== "" ? { reason } : {})
      }
    )
    this.stream.settled(seq)
    this.schedule()
  }

  working(seq: number): void {
    const p = this.pending.get(seq)
    if (p === undefined || p.queued) return
    this.arm(seq, p, this.ackWaitFor(p.deliveries))
  }

  close(): void {
    this.deleted = true
    for (const p of this.pending.values()) p.cancel?.()
    for (const s of [...this.sessions]) s.abandon()
  }

  info(): ConsumerInfo {
    this.stream.expire()
    let ackFloorStream = this.cursor
    let ackFloorConsumer = this.consumerSeq
    let redelivered = 0
    for (const [seq, p] of this.pending) {
      ackFloorStream = Math.min(ackFloorStream, seq - 1)
      ackFloorConsumer = Math.min(ackFloorConsumer, p.consumerSeq - 1)
      if (p.deliveries > 1) redelivered++
    }
    const lastActive = this.lastActive === 0 ? undefined : isoOf(this.lastActive)
    return {
      stream_name: this.stream.name,
      name: this.name,
      created: this.created,
      config: structuredClone(this.config),
      delivered: { consumer_seq: this.consumerSeq, stream_seq: this.cursor, ...(lastActive ? { last_active: lastActive } : {}) },
      ack_floor: { consumer_seq: ackFloorConsumer, stream_seq: ackFloorStream },
      num_ack_pending: this.pending.size,
      num_redelivered: redelivered,
      num_waiting: this.sessions.length,
      num_pending: this.stream.countAfter(this.cursor, this.wants),
      push_bound: false,
      ts: isoOf(this.timers.now())
    } as unknown as ConsumerInfo
  }
}

/** A message delivered by an in-memory consumer; settles like nats.js's `JsMsgImpl`. */
export class MemoryJsMsg implements JsMsg {
  didAck = false
  readonly sid = 0
  readonly data: Uint8Array
  readonly headers: MsgHdrs | undefined
  readonly subject: string

  constructor(
    private readonly consumer: MemoryConsumer,
    stored: Stored,
    readonly info: DeliveryInfo,
    private readonly live: () => boolean
  ) {
    this.data = stored.data.slice()
    this.headers = copyHeaders(stored.headers)
    this.subject = stored.subject
  }

  get redelivered(): boolean {
    return this.info.deliveryCount > 1
  }

  get seq(): number {
    return this.info.streamSequence
  }

  get time(): Date {
    return new Date(toMillis(this.info.timestampNanos))
  }

  get timestamp(): string {
    return this.time.toISOString()
  }

  get timestampNanos(): bigint {
    return BigInt(this.info.timestampNanos)
  }

  private settle(f: () => void): void {
    if (this.didAck) return
    this.didAck = true
    // an ack on a closed connection is lost, as it is with nats.js
    if (!this.consumer.ackNone && this.live()) f()
  }

  ack(): void {
    this.settle(() => this.consumer.ack(this.seq))
  }

  nak(millis?: number): void {
    this.settle(() => this.consumer.nak(this.seq, millis ?? 0))
  }

  working(): void {
    if (!this.didAck && !this.consumer.ackNone && this.live()) this.consumer.working(this.seq)
  }

  next(): void {
    this.ack()
  }

  term(reason = ""): void {
    this.settle(() => this.consumer.term(this.seq, reason))
  }

  ackAck(): Promise<boolean> {
    if (this.didAck) return Promise.resolve(false)
    this.didAck = true
    if (!this.live()) return Promise.reject(new ClosedConnectionError())
    if (!this.consumer.ackNone) this.consumer.ack(this.seq)
    return Promise.resolve(true)
  }

  json<T>(): T {
    return JSON.parse(this.string()) as T
  }

  string(): string {
    return decoder.decode(this.data)
  }
}

/** One `consume()`: a callback, or an async iterator of messages. */
export class ConsumeSession implements ConsumerMessages {
  private readonly queue: AsyncQueue<JsMsg> | undefined
  private readonly callback: ((m: JsMsg) => void | Promise<never>) | undefined
  private readonly maxMessages: number
  private received = 0
  private processed = 0
  private isClosed = false
  private readonly closedPromise: Promise<void | Error>
  private resolveClosed!: (v: void | Error) => void
  private readonly statusQueues = new Set<AsyncQueue<ConsumerNotification>>()

  /** Is the connection this session runs on still open? */
  readonly live: () => boolean

  constructor(
    private readonly consumer: MemoryConsumer,
    opts: ConsumeOptions | undefined,
    connection: MemoryConnection | undefined
  ) {
    this.live = () => connection === undefined || !connection.isClosed()
    connection?.onClose(() => void this.close())
    this.maxMessages = Math.max(1, (opts as { max_messages?: number } | undefined)?.max_messages ?? 100)
    this.callback = opts?.callback
    this.queue = this.callback === undefined ? new AsyncQueue<JsMsg>() : undefined
    this.closedPromise = new Promise((resolve) => {
      this.resolveClosed = resolve
    })
  }

  /** How many more messages this session takes now (an iterator only takes what its buffer holds). */
  credit(): number {
    if (this.isClosed) return 0
    return this.queue === undefined ? this.maxMessages : this.maxMessages - this.queue.size
  }

  push(msg: JsMsg): void {
    this.received++
    if (this.callback !== undefined) {
      try {
        const r = this.callback(msg)
        if (r instanceof Promise) r.catch(() => undefined)
      } catch {
        // nats.js does not stop a consumer whose callback throws
      }
      this.processed++
    } else {
      this.queue!.push(msg)
    }
  }

  /** The consumer was deleted: nothing more will come. */
  abandon(): void {
    for (const q of this.statusQueues) q.push({ type: "consumer_deleted", code: 409, description: "consumer deleted" })
  }

  [Symbol.asyncIterator](): AsyncIterator<JsMsg> {
    const queue = this.queue
    if (queue === undefined) throw new Error("a consumer with a callback is not iterable")
    const next = () => {
      const r = queue.next()
      // taking a message frees a place in the buffer: pull more
      void r.then((x) => {
        if (!x.done) this.processed++
        this.consumer.schedule()
      })
      return r
    }
    return { next, return: () => this.close().then(() => ({ value: undefined, done: true as const })) }
  }

  stop(err?: Error): void {
    void this.finish(err)
  }

  close(): Promise<void | Error> {
    return this.finish(undefined)
  }

  private finish(err: Error | undefined): Promise<void | Error> {
    if (!this.isClosed) {
      this.isClosed = true
      this.consumer.detach(this)
      // what was pulled before the close is still yielded
      this.queue?.end()
      for (const q of this.statusQueues) q.end()
      this.resolveClosed(err)
    }
    return this.closedPromise
  }

  closed(): Promise<void | Error> {
    return this.closedPromise
  }

  status(): AsyncIterable<ConsumerNotification> {
    const q = new AsyncQueue<ConsumerNotification>()
    if (this.isClosed) q.end()
    else this.statusQueues.add(q)
    return { [Symbol.asyncIterator]: () => q }
  }

  getProcessed(): number {
    return this.processed
  }

  getPending(): number {
    return this.queue?.size ?? 0
  }

  getReceived(): number {
    return this.received
  }
}

// ---------------------------------------------------------------------------------------------
// the engine and its handles

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

