import { type JetStreamClient, JetStreamError, type PubAck } from "@nats-io/jetstream"
import { JetStreamClientImpl } from "@nats-io/jetstream/internal"
import { createInbox, errors, type Msg, type MsgHdrs } from "@nats-io/nats-core"
import type { NatsConnectionImpl } from "@nats-io/nats-core/internal"

/** Publish one message to JetStream and get its PubAck (what `js.publish(subject, payload, { headers, timeout })` does). */
export type PublishFn = (subject: string, payload: Uint8Array, headers: MsgHdrs, timeout: number) => Promise<PubAck>

interface Pending {
  readonly subject: string
  readonly resolve: (ack: PubAck) => void
  readonly reject: (error: unknown) => void
  readonly timer: ReturnType<typeof setTimeout>
}

/**
 * JetStream publishes on one reply subscription per connection. A JetStream
 * publish is a request to the subject answered with a PubAck; `js.publish`
 * makes each one a nats.js request (a timer, a deferred, async frames, and an
 * `Error` with a stack trace when the request is settled), which costs more
 * than the publish itself: measured here, this is ~2-3x the rate of
 * `js.publish` at 1000 in flight. The answers are read as `js.publish` reads
 * them (`parseJsResponse`), and failures are the errors nats.js gives: a
 * timeout, "no responders" (no stream on the subject), a JetStream API
 * error, a publish permission violation, a closed connection.
 */
class Pipeline {
  private readonly prefix: string
  private readonly pending = new Map<string, Pending>()
  private readonly status: AsyncIterator<unknown>
  private next = 0
  closed = false

  constructor(private readonly nc: NatsConnectionImpl, private readonly client: JetStreamClientImpl) {
    this.prefix = `${createInbox(nc.options.inboxPrefix)}.`
    const sub = nc.subscribe(`${this.prefix}*`, { callback: (err, msg) => this.answer(err, msg) })
    // a denied publish is reported on the connection, not answered: fail the oldest publish to that subject
    const status = nc.status()[Symbol.asyncIterator]()
    this.status = status
    void (async () => {
      for (let next = await status.next(); !next.done; next = await status.next()) {
        const s = next.value
        if (s.type === "error" && s.error instanceof errors.PermissionViolationError && s.error.operation === "publish") {
          for (const [token, p] of this.pending) {
            if (p.subject === s.error.subject) {
              this.settle(token, p)
              p.reject(s.error)
              break
            }
          }
        }
      }
    })()
    void sub.closed.then(() => this.close(new errors.RequestError("connection closed")))
  }

  publish: PublishFn = (subject, payload, headers, timeout) =>
    new Promise<PubAck>((resolve, reject) => {
      const token = (this.next++).toString(36)
      const timer = setTimeout(() => {
        this.pending.delete(token)
        reject(new errors.TimeoutError())
      }, timeout)
      const p: Pending = { subject, resolve, reject, timer }
      this.pending.set(token, p)
      try {
        this.nc.publish(subject, payload, { reply: this.prefix + token, headers })
      } catch (e) {
        this.settle(token, p)
        reject(e)
      }
    })

  private settle(token: string, p: Pending): void {
    clearTimeout(p.timer)
    this.pending.delete(token)
  }

  private answer(err: Error | null, msg: Msg): void {
    const token = msg.subject.slice(this.prefix.length)
    const p = this.pending.get(token)
    if (p === undefined) return // answered after its timeout
    this.settle(token, p)
    if (err !== null) return p.reject(err)
    if (msg.data.length === 0 && msg.headers?.code === 503) return p.reject(new errors.NoRespondersError(p.subject))
    try {
      const ack = this.client.parseJsResponse(msg) as PubAck
      if (ack.stream === "" || ack.stream === undefined) throw new JetStreamError("invalid ack response")
      ack.duplicate = ack.duplicate ? ack.duplicate : false
      p.resolve(ack)
    } catch (e) {
      p.reject(e)
    }
  }

  private close(error: Error): void {
    this.closed = true
    void this.status.return?.()
    for (const [token, p] of this.pending) {
      this.settle(token, p)
      p.reject(error)
    }
  }
}

const pipelines = new WeakMap<object, Pipeline>()

/**
 * The publish function for a JetStream client: pipelined on its connection
 * (shared by every publisher of that connection), or the client's own
 * `publish` for a client that is not nats.js's (a test double).
 */
export const publisherFor = (client: Pick<JetStreamClient, "publish">): PublishFn => {
  if (!(client instanceof JetStreamClientImpl)) {
    return (subject, payload, headers, timeout) => client.publish(subject, payload, { headers, timeout })
  }
  const nc = client.nc
  return (subject, payload, headers, timeout) => {
    let pipeline = pipelines.get(nc)
    if (pipeline === undefined || pipeline.closed) {
      if (nc.isClosed()) return Promise.reject(new errors.ClosedConnectionError())
      try {
        pipeline = new Pipeline(nc, client)
      } catch (e) {
        return Promise.reject(e) // e.g. draining
      }
      pipelines.set(nc, pipeline)
    }
    return pipeline.publish(subject, payload, headers, timeout)
  }
}
