/**
 * KV buckets in memory, stored as nats.js stores them: a stream `KV_<bucket>`
 * on `$KV.<bucket>.>`, one subject per key, revisions are stream sequences,
 * deletes are `KV-Operation: DEL` markers, `create` and `update` are
 * publishes with an expected last subject sequence, the bucket TTL is the
 * stream's `max_age` (so it follows Effect's `Clock`).
 */
import { DiscardPolicy, type JetStreamPublishOptions, RetentionPolicy, StorageType, type StoredMsg } from "@nats-io/jetstream"
import type { KvEntry, KvOptions, KvStatus } from "@nats-io/kv"
import { Empty, headers as natsHeaders, type Payload } from "@nats-io/nats-core"
import type { JetStream } from "effect-nats"
import type { Engine } from "./jetstream.js"

const validKey = /^[-/=.\w]+$/
const validBucket = /^[-\w]+$/
const decoder = new TextDecoder()
const NANOS_PER_MILLI = 1_000_000

const validateKey = (k: string): void => {
  if (k.startsWith(".") || k.endsWith(".") || !validKey.test(k)) throw new Error(`invalid key: ${k}`)
}

const entryOf = (bucket: string, prefixLength: number, sm: StoredMsg): KvEntry => {
  const operation = (sm.header.get("KV-Operation") || "PUT") as KvEntry["operation"]
  return {
    bucket,
    key: sm.subject.substring(prefixLength),
    rawKey: sm.subject.substring(prefixLength),
    value: sm.data,
    created: sm.time,
    revision: sm.seq,
    delta: 0,
    operation,
    length: sm.data.length,
    json: <T>() => JSON.parse(decoder.decode(sm.data)) as T,
    string: () => decoder.decode(sm.data)
  }
}

class MemoryKv implements JetStream.KvStore {
  private readonly stream: string
  private readonly prefix: string

  constructor(private readonly engine: Engine, private readonly bucket: string) {
    this.stream = `KV_${bucket}`
    this.prefix = `$KV.${bucket}.`
  }

  private put_(k: string, data: Payload, previousSeq: number | undefined): Promise<number> {
    try {
      validateKey(k)
      const opts: Partial<JetStreamPublishOptions> = {}
      if (previousSeq !== undefined) {
        const h = natsHeaders()
        h.set("Nats-Expected-Last-Subject-Sequence", `${previousSeq}`)
        opts.headers = h
      }
      return Promise.resolve(this.engine.publish(this.prefix + k, data, opts).seq)
    } catch (e) {
      return Promise.reject(e)
    }
  }

  get(k: string, opts?: { revision: number }): Promise<KvEntry | null> {
    try {
      validateKey(k)
      const sm = this.engine.getMessage(
        this.stream,
        opts !== undefined && opts.revision > 0 ? { seq: opts.revision } : { last_by_subj: this.prefix + k }
      )
      if (sm === null || sm.subject !== this.prefix + k) return Promise.resolve(null)
      return Promise.resolve(entryOf(this.bucket, this.prefix.length, sm))
    } catch (e) {
      return Promise.reject(e)
    }
  }

  async create(k: string, data: Payload): Promise<number> {
    try {
      return await this.put_(k, data, 0)
    } catch (first) {
      const e = await this.get(k)
      if (e?.operation === "DEL" || e?.operation === "PURGE") return this.put_(k, data, e.revision)
      throw first
    }
  }

  update(k: string, data: Payload, version: number): Promise<number> {
    return this.put_(k, data, version)
  }

  put(k: string, data: Payload, opts?: Partial<{ previousSeq: number }>): Promise<number> {
    return this.put_(k, data, opts?.previousSeq)
  }

  private mark(k: string, op: "DEL" | "PURGE", previousSeq: number | undefined): Promise<void> {
    try {
      validateKey(k)
      const h = natsHeaders()
      h.set("KV-Operation", op)
      if (op === "PURGE") h.set("Nats-Rollup", "sub")
      if (previousSeq) h.set("Nats-Expected-Last-Subject-Sequence", `${previousSeq}`)
      this.engine.publish(this.prefix + k, Empty, { headers: h })
      return Promise.resolve()
    } catch (e) {
      return Promise.reject(e)
    }
  }

  delete(k: string, opts?: Partial<{ previousSeq: number }>): Promise<void> {
    return this.mark(k, "DEL", opts?.previousSeq)
  }

  purge(k: string, opts?: Partial<{ previousSeq: number }>): Promise<void> {
    return this.mark(k, "PURGE", opts?.previousSeq)
  }

  status(): Promise<KvStatus> {
    try {
      const info = this.engine.stream(this.stream).info()
      return Promise.resolve({
        bucket: this.bucket,
        values: info.state.messages,
        history: info.config.max_msgs_per_subject,
        ttl: Math.floor(info.config.max_age / NANOS_PER_MILLI),
        streamInfo: info,
        size: info.state.bytes,
        storage: info.config.storage,
        replicas: info.config.num_replicas,
        description: info.config.description ?? "",
        max_bytes: info.config.max_bytes,
        maxValueSize: info.config.max_msg_size,
        markerTTL: 0,
        backingStore: "JetStream"
      } as unknown as KvStatus)
    } catch (e) {
      return Promise.reject(e)
    }
  }
}

/** `new Kvm(js)` in memory: `create` opens a bucket, creating its stream when missing. */
export const kvManager = (engine: Engine): JetStream.KvManager => ({
  create: (name: string, opts?: Partial<KvOptions>) => {
    try {
      if (!validBucket.test(name)) throw new Error(`invalid bucket name: ${name}`)
      const stream = `KV_${name}`
      if (!engine.streams.has(stream)) {
        const ttl = opts?.ttl ?? 0
        const maxAge = ttl * NANOS_PER_MILLI
        engine.addStream({
          name: stream,
          subjects: [`$KV.${name}.>`],
          retention: RetentionPolicy.Limits,
          max_msgs_per_subject: opts?.history ?? 1,
          max_bytes: opts?.max_bytes ?? -1,
          max_msg_size: opts?.maxValueSize ?? -1,
          storage: opts?.storage ?? StorageType.File,
          num_replicas: opts?.replicas ?? 1,
          discard: DiscardPolicy.New,
          allow_rollup_hdrs: true,
          deny_delete: true,
          allow_direct: true,
          max_age: maxAge,
          ...(maxAge > 0 && maxAge < 120_000 * NANOS_PER_MILLI ? { duplicate_window: maxAge } : {}),
          ...(opts?.description !== undefined ? { description: opts.description } : {})
        })
      }
      return Promise.resolve(new MemoryKv(engine, name))
    } catch (e) {
      return Promise.reject(e)
    }
  }
})
