/**
 * Core NATS in memory: subjects with wildcards, queue groups, reply subjects,
 * "no responders" status replies, and the connections that use them.
 *
 * Deliveries are asynchronous (a microtask after the publish), in publish
 * order per subscription, as a server would deliver them. Timers (request and
 * subscription timeouts) go through {@link Timers}, i.e. Effect's `Clock`.
 */
import {
  ClosedConnectionError,
  createInbox,
  DrainingConnectionError,
  Empty,
  headers as natsHeaders,
  InvalidArgumentError,
  InvalidSubjectError,
  type Msg,
  type MsgCallback,
  type MsgHdrs,
  MsgHdrsImpl,
  NoRespondersError,
  type Payload,
  type PublishOptions,
  RequestError,
  type RequestOptions,
  type ServerInfo,
  type Status,
  type Subscription,
  type SubscriptionOptions,
  TimeoutError
} from "@nats-io/nats-core"
import type { NatsClient } from "effect-nats"
import { Filter, isFilter, isPublishable } from "./subjects.js"

/** The clock of the in-memory server: Effect's `Clock`, so that `TestClock` drives it. */
export interface Timers {
  /** Epoch millis. */
  readonly now: () => number
  /** Run `f` after `millis`; returns a cancel function. */
  readonly after: (millis: number, f: () => void) => () => void
}

const encoder = new TextEncoder()
const decoder = new TextDecoder()

/** The bytes of a payload, copied (what is on the wire does not change when the caller's buffer does). */
export const toBytes = (payload: Payload | undefined): Uint8Array =>
  payload === undefined ? Empty : typeof payload === "string" ? encoder.encode(payload) : payload.slice()

/** A copy of headers, as the receiver of a message would decode them. */
export const copyHeaders = (h: MsgHdrs | undefined): MsgHdrs | undefined => {
  if (h === undefined) return undefined
  if (h instanceof MsgHdrsImpl) return MsgHdrsImpl.decode(h.encode())
  const copy = natsHeaders(h.code, h.description)
  for (const [k, values] of h) for (const v of values) copy.append(k, v)
  return copy
}

/** A message as it travels: subject, payload, headers, reply subject. */
export interface Wire {
  readonly subject: string
  readonly data: Uint8Array
  readonly headers: MsgHdrs | undefined
  readonly reply: string | undefined
}

/** A received core message. */
export class MemoryMsg implements Msg {
  declare reply?: string
  declare headers?: MsgHdrs
  constructor(
    readonly subject: string,
    readonly sid: number,
    readonly data: Uint8Array,
    headers: MsgHdrs | undefined,
    reply: string | undefined,
    private readonly bus: Bus
  ) {
    if (headers !== undefined) this.headers = headers
    if (reply !== undefined && reply !== "") this.reply = reply
  }

  respond(payload?: Payload, opts?: PublishOptions): boolean {
    if (this.reply === undefined) return false
    this.bus.publish({
      subject: this.reply,
      data: toBytes(payload),
      headers: copyHeaders(opts?.headers),
      reply: opts?.reply
    })
    return true
  }

  json<T>(reviver?: (key: string, value: unknown) => unknown): T {
    return JSON.parse(this.string(), reviver) as T
  }

  string(): string {
    return decoder.decode(this.data)
  }
}

/** An async queue with `stop` (ends after what is buffered). */
class AsyncQueue<T> implements AsyncIterator<T> {
  private readonly buffer: Array<T> = []
  private readonly waiting: Array<(r: IteratorResult<T>) => void> = []
  private done = false

  push(value: T): void {
    if (this.done) return
    const w = this.waiting.shift()
    if (w !== undefined) w({ value, done: false })
    else this.buffer.push(value)
  }

  end(): void {
    this.done = true
    for (const w of this.waiting.splice(0)) w({ value: undefined, done: true })
  }

  get size(): number {
    return this.buffer.length
  }

  next(): Promise<IteratorResult<T>> {
    if (this.buffer.length > 0) return Promise.resolve({ value: this.buffer.shift()!, done: false })
    if (this.done) return Promise.resolve({ value: undefined, done: true })
    return new Promise((resolve) => this.waiting.push(resolve))
  }

  return(): Promise<IteratorResult<T>> {
    this.buffer.length = 0
    this.end()
    return Promise.resolve({ value: undefined, done: true })
  }
}

export { AsyncQueue }

/** A subscription on the in-memory bus. */
export class MemorySubscription implements Subscription {
  readonly closed: Promise<void | Error>
  callback: MsgCallback<Msg>
  private resolveClosed!: (v: void | Error) => void
  private readonly filter: Filter
  private readonly queue: AsyncQueue<Msg> | undefined
  private received = 0
  private processed = 0
  private max: number | undefined
  private isClosedFlag = false
  private draining = false
  private cancelTimeout: (() => void) | undefined
  private inFlight = 0
  private drained: Array<() => void> = []

  constructor(
    private readonly bus: Bus,
    readonly sid: number,
    readonly subject: string,
    readonly group: string | undefined,
    options: SubscriptionOptions,
    private readonly onClose: (sub: MemorySubscription) => void
  ) {
    this.closed = new Promise((resolve) => {
      this.resolveClosed = resolve
    })
    this.filter = new Filter(subject)
    this.max = options.max !== undefined && options.max > 0 ? options.max : undefined
    const callback = options.callback
    if (callback !== undefined) {
      this.queue = undefined
      this.callback = callback
    } else {
      const queue = new AsyncQueue<Msg>()
      this.queue = queue
      this.callback = (err, msg) => {
        if (err === null) queue.push(msg)
      }
    }
    if (options.timeout !== undefined && options.timeout > 0) {
      this.cancelTimeout = bus.timers.after(options.timeout, () => {
        this.cancelTimeout = undefined
        if (this.isClosedFlag || this.received > 0) return
        const error = new TimeoutError()
        try {
          this.callback(error, {} as Msg)
        } finally {
          this.close(error)
        }
      })
    }
  }

  matches(subject: string): boolean {
    return !this.isClosedFlag && !this.draining && this.filter.matches(subject)
  }

  /** Deliver a message (called in a microtask after the publish). */
  deliver(wire: Wire): void {
    if (this.isClosedFlag) return
    if (this.max !== undefined && this.received >= this.max) return
    this.received++
    if (this.cancelTimeout !== undefined) {
      this.cancelTimeout()
      this.cancelTimeout = undefined
    }
    const msg = new MemoryMsg(wire.subject, this.sid, wire.data, wire.headers, wire.reply, this.bus)
    try {
      this.callback(null, msg)
    } catch {
      // nats.js reports callback errors on the status stream; the subscription keeps going
    }
    this.processed++
    if (this.max !== undefined && this.received >= this.max) this.close()
  }

  /** A delivery was scheduled for this subscription. */
  enqueued(): void {
    this.inFlight++
  }

  /** A scheduled delivery ran. */
  settled(): void {
    this.inFlight--
    if (this.inFlight === 0) for (const f of this.drained.splice(0)) f()
  }

  close(error?: Error): void {
    if (this.isClosedFlag) return
    this.isClosedFlag = true
    if (this.cancelTimeout !== undefined) this.cancelTimeout()
    this.queue?.end()
    this.onClose(this)
    this.resolveClosed(error)
  }

  unsubscribe(max?: number): void {
    if (max !== undefined && max > 0) {
      this.max = max
      if (this.received >= max) this.close()
      return
    }
    this.close()
  }

  drain(): Promise<void> {
    if (this.isClosedFlag) return this.closed.then(() => undefined)
    this.draining = true
    return new Promise<void>((resolve) => {
      const finish = () => {
        this.close()
        resolve()
      }
      if (this.inFlight === 0) queueMicrotask(finish)
      else this.drained.push(finish)
    })
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.drain()
  }

  isDraining(): boolean {
    return this.draining && !this.isClosedFlag
  }

  isClosed(): boolean {
    return this.isClosedFlag
  }

  getSubject(): string {
    return this.subject
  }

  getReceived(): number {
    return this.received
  }

  getProcessed(): number {
    return this.queue === undefined ? this.processed : this.processed - this.queue.size
  }

  getPending(): number {
    return this.queue === undefined ? 0 : this.queue.size
  }

  getID(): number {
    return this.sid
  }

  getMax(): number | undefined {
    return this.max
  }

  [Symbol.asyncIterator](): AsyncIterator<Msg> {
    if (this.queue === undefined) throw new Error("a subscription with a callback is not iterable")
    return this.queue
  }
}

/**
 * What a stream does with a message published on a subject it captures:
 * `undefined` when no stream captures it, else the JSON answer (a PubAck or
 * an API error) for the reply subject.
 */
export type StreamCapture = (wire: Wire) => { readonly answer: unknown } | undefined

/** The in-memory server's core: routes messages between subscriptions (and to streams). */
export class Bus {
  private readonly subs = new Set<MemorySubscription>()
  private readonly roundRobin = new Map<string, number>()
  private nextSid = 1
  /** Set by the JetStream engine: stores what streams capture. */
  capture: StreamCapture = () => undefined

  constructor(readonly timers: Timers) {}

  subscribe(subject: string, options: SubscriptionOptions, onClose: (sub: MemorySubscription) => void = () => {}) {
    const sub = new MemorySubscription(this, this.nextSid++, subject, options.queue, options, (s) => {
      this.subs.delete(s)
      onClose(s)
    })
    this.subs.add(sub)
    return sub
  }

  /** Route a message; `true` when something (a subscription or a stream) took it. */
  publish(wire: Wire): boolean {
    const delivered = this.route(wire)
    const stored = this.capture(wire)
    if (stored !== undefined && wire.reply !== undefined) {
      this.publish({ subject: wire.reply, data: encoder.encode(JSON.stringify(stored.answer)), headers: undefined, reply: undefined })
    }
    const taken = delivered > 0 || stored !== undefined
    if (!taken && wire.reply !== undefined) {
      // the server answers a message with a reply subject that nobody takes with a 503 status message
      this.publish({ subject: wire.reply, data: Empty, headers: natsHeaders(503, "No Responders"), reply: undefined })
    }
    return taken
  }

  /** Deliver a message to the matching subscriptions (one per queue group); returns how many. */
  route(wire: Wire): number {
    const targets: Array<MemorySubscription> = []
    let groups: Map<string, Array<MemorySubscription>> | undefined
    for (const sub of this.subs) {
      if (!sub.matches(wire.subject)) continue
      if (sub.group === undefined) targets.push(sub)
      else {
        groups ??= new Map()
        const members = groups.get(sub.group)
        if (members === undefined) groups.set(sub.group, [sub])
        else members.push(sub)
      }
    }
    if (groups !== undefined) {
      for (const [group, members] of groups) {
        const n = this.roundRobin.get(group) ?? 0
        this.roundRobin.set(group, n + 1)
        targets.push(members[n % members.length]!)
      }
    }
    for (const sub of targets) {
      sub.enqueued()
      queueMicrotask(() => {
        try {
          sub.deliver(wire)
        } finally {
          sub.settled()
        }
      })
    }
    return targets.length
  }

}

const closedStatus = (): AsyncIterable<Status> & { end(): void } => {
  const iterators = new Set<AsyncQueue<Status>>()
  let ended = false
  return {
    [Symbol.asyncIterator]() {
      const q = new AsyncQueue<Status>()
      if (ended) q.end()
      else iterators.add(q)
      return q
    },
    end() {
      ended = true
      for (const q of iterators) q.end()
      iterators.clear()
    }
  }
}

/**
 * A connection to the in-memory server. Implements the part of nats.js's
 * `NatsConnection` that effect-nats uses ({@link NatsClient.Connection}).
 */
export class MemoryConnection implements NatsClient.Connection {
  info: ServerInfo
  private readonly subs = new Set<MemorySubscription>()
  private closedFlag = false
  private draining = false
  private readonly closedPromise: Promise<void | Error>
  private resolveClosed!: (v: void | Error) => void
  private readonly statusSources: Array<ReturnType<typeof closedStatus>> = []
  private readonly closeHooks = new Set<() => void>()

  constructor(private readonly bus: Bus, info: ServerInfo, private readonly onClosed: () => void = () => {}) {
    this.info = info
    this.closedPromise = new Promise((resolve) => {
      this.resolveClosed = resolve
    })
  }

  /** Throws what nats.js throws on a closed or draining connection. */
  checkOpen(): void {
    if (this.closedFlag) throw new ClosedConnectionError()
    if (this.draining) throw new DrainingConnectionError()
  }

  /** Run `f` when the connection closes (what lives on it stops). */
  onClose(f: () => void): () => void {
    this.closeHooks.add(f)
    return () => this.closeHooks.delete(f)
  }

  private check(subject: string, publishing: boolean): void {
    this.checkOpen()
    if (publishing ? !isPublishable(subject) : !isFilter(subject)) throw new InvalidSubjectError(subject)
  }

  private checkPayload(data: Uint8Array): Uint8Array {
    if (data.length > this.info.max_payload) throw InvalidArgumentError.format("payload", "max_payload size exceeded")
    return data
  }

  publish(subject: string, payload?: Payload, options?: PublishOptions): void {
    this.check(subject, true)
    this.bus.publish({
      subject,
      data: this.checkPayload(toBytes(payload)),
      headers: copyHeaders(options?.headers),
      reply: options?.reply === "" ? undefined : options?.reply
    })
  }

  subscribe(subject: string, opts: SubscriptionOptions = {}): Subscription {
    this.check(subject, false)
    const sub = this.bus.subscribe(subject, opts, (s) => this.subs.delete(s))
    this.subs.add(sub)
    return sub
  }

  request(subject: string, payload?: Payload, opts: RequestOptions = { timeout: 1000 }): Promise<Msg> {
    let data: Uint8Array
    try {
      this.check(subject, true)
      data = this.checkPayload(toBytes(payload))
    } catch (e) {
      return Promise.reject(e)
    }
    const timeout = opts.timeout || 1000
    if (timeout < 1) return Promise.reject(InvalidArgumentError.format("timeout", "must be greater than 0"))
    return new Promise<Msg>((resolve, reject) => {
      let done = false
      const inbox = createInbox()
      const sub = this.bus.subscribe(inbox, {
        max: 1,
        callback: (err, msg) => {
          if (done) return
          done = true
          cancel()
          if (err !== null) reject(err)
          else if (msg.data.length === 0 && msg.headers?.code === 503) {
            const cause = new NoRespondersError(subject)
            reject(new RequestError(cause.message, { cause }))
          } else resolve(msg)
        }
      }, (s) => this.subs.delete(s))
      this.subs.add(sub)
      const cancel = this.bus.timers.after(timeout, () => {
        if (done) return
        done = true
        sub.unsubscribe()
        reject(new TimeoutError())
      })
      this.bus.publish({ subject, data, headers: copyHeaders(opts.headers), reply: inbox })
    })
  }

  flush(): Promise<void> {
    if (this.closedFlag) return Promise.reject(new ClosedConnectionError())
    // everything published before has been routed; let the deliveries scheduled so far run
    return new Promise((resolve) => queueMicrotask(resolve))
  }

  async drain(): Promise<void> {
    if (this.closedFlag) throw new ClosedConnectionError()
    if (this.draining) throw new DrainingConnectionError()
    this.draining = true
    await Promise.all([...this.subs].map((s) => s.drain()))
    this.finish()
  }

  close(): Promise<void> {
    this.finish()
    return Promise.resolve()
  }

  private finish(): void {
    if (this.closedFlag) return
    this.closedFlag = true
    for (const f of [...this.closeHooks]) f()
    this.closeHooks.clear()
    for (const s of [...this.subs]) s.close()
    for (const s of this.statusSources) s.end()
    this.onClosed()
    this.resolveClosed()
  }

  closed(): Promise<void | Error> {
    return this.closedPromise
  }

  isClosed(): boolean {
    return this.closedFlag
  }

  isDraining(): boolean {
    return this.draining && !this.closedFlag
  }

  getServer(): string {
    return `${this.info.host}:${this.info.port}`
  }

  status(): AsyncIterable<Status> {
    const source = closedStatus()
    if (this.closedFlag) source.end()
    else this.statusSources.push(source)
    return source
  }

  rtt(): Promise<number> {
    return this.flush().then(() => 0)
  }
}
