/** An in-memory stream: subjects, sequences, limits, the `Nats-Msg-Id` dedup window, publish expectations, retention. */
import {
  DiscardPolicy,
  JetStreamApiCodes,
  type PubAck,
  type PurgeOpts,
  RetentionPolicy,
  type StreamConfig,
  type StreamInfo,
  type StreamInfoRequestOptions
} from "@nats-io/jetstream"
import { type MsgHdrs } from "@nats-io/nats-core"
import { Filter, matches } from "./subjects.js"
import { isoOf, toMillis } from "./units.js"
import { apiError } from "./errors.js"
import { MemoryConsumer } from "./consumer.js"
import type { Engine } from "./jetstream.js"
import type { Stored } from "./stored.js"

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
