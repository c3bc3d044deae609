/** An in-memory durable pull consumer, its messages (`JsMsg`) and its `consume()` sessions. */
import {
  AckPolicy,
  type ConsumeOptions,
  type ConsumerConfig,
  type ConsumerInfo,
  type ConsumerMessages,
  type ConsumerNotification,
  DeliverPolicy,
  type DeliveryInfo,
  type JsMsg
} from "@nats-io/jetstream"
import { ClosedConnectionError, type MsgHdrs } from "@nats-io/nats-core"
import { AsyncQueue, copyHeaders, type MemoryConnection, type Timers } from "./bus.js"
import { Filter } from "./subjects.js"
import { defaultAckWait, isoOf, NANOS_PER_MILLI, toMillis } from "./units.js"
import type { MemoryStream } from "./stream.js"
import type { Stored } from "./stored.js"
const decoder = new TextDecoder()

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
