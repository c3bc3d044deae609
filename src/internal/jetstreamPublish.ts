import { type ApiError, JetStreamApiError, JetStreamError, type PubAck } from "@nats-io/jetstream"
import { createInbox, errors, type Msg } from "@nats-io/nats-core"
import type { PublishFn } from "../JetStream.js"
import type { Connection } from "../NatsClient.js"

interface Pending {
  readonly subject: string
  readonly resolve: (ack: PubAck) => void
  readonly reject: (error: unknown) => void
  readonly timer: ReturnType<typeof setTimeout>
}

const decoder = new TextDecoder()

/** A PubAck from its JSON answer, or the error nats.js's `js.publish` raises for it. */
const parseAck = (msg: Msg): PubAck => {
  const answer = JSON.parse(decoder.decode(msg.data)) as Partial<PubAck> & { readonly error?: ApiError }
  if (answer.error !== undefined) throw new JetStreamApiError(answer.error)
  if (answer.stream === "" || answer.stream === undefined) throw new JetStreamError("invalid ack response")
  const ack = answer as PubAck
  ack.duplicate = answer.duplicate ?? false
  return ack
}

/**
 * JetStream publishes on one reply subscription per connection. A JetStream
 * publish is a core publish to the subject, with a reply subject, answered
 * with a PubAck; `js.publish` makes each one a nats.js request (a timer, a
 * deferred, async frames, and an `Error` with a stack trace when the request
 * is settled), which costs more than the publish itself: measured here, the
 * Publisher at window 1000 does ~0.54x raw `js.publish` on `js.publish` and
 * ~0.8x on this. Written against the public {@link Connection} only, so an
 * in-memory connection runs it as a server does. Failures are the errors
 * nats.js gives: a timeout, "no responders" (no stream on the subject), a
 * JetStream API error, a publish permission violation, a closed connection.
 */
class Pipeline {
  private readonly prefix: string
  private readonly pending = new Map<string, Pending>()
  private readonly status: AsyncIterator<unknown>
  private next = 0
  closed = false

  constructor(private readonly nc: Connection, inboxPrefix: string) {
    this.prefix = `${createInbox(inboxPrefix)}.`
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
        this.nc.publish(subject, payload, headers === undefined ? { reply: this.prefix + token } : { reply: this.prefix + token, headers })
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
      p.resolve(parseAck(msg))
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

/**
 * The JetStream publish of a connection (the `JetStream` service's
 * `publish`): pipelined on one reply subscription, made on the first publish
 * and again after the connection closed it.
 */
export const pipelined = (nc: Connection, inboxPrefix: string): PublishFn => {
  let pipeline: Pipeline | undefined
  return (subject, payload, headers, timeout) => {
    if (pipeline === undefined || pipeline.closed) {
      if (nc.isClosed()) return Promise.reject(new errors.ClosedConnectionError())
      try {
        pipeline = new Pipeline(nc, inboxPrefix)
      } catch (e) {
        return Promise.reject(e) // e.g. draining
      }
    }
    return pipeline.publish(subject, payload, headers, timeout)
  }
}
