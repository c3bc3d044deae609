/** Messages as a stream stores them, and their nats.js `StoredMsg` view. */
import { type StoredMsg } from "@nats-io/jetstream"
import { headers as natsHeaders, type MsgHdrs } from "@nats-io/nats-core"
import { copyHeaders } from "./bus.js"

const decoder = new TextDecoder()

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

export class MemoryStoredMsg implements StoredMsg {
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
