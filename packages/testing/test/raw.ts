/**
 * A minimal raw NATS text-protocol session over node:net, for asserting on what
 * the server really says (no client library involved).
 */
import * as net from "node:net"
import { Effect } from "effect"

export interface RawSession {
  /** the INFO line's JSON */
  readonly info: Record<string, unknown>
  readonly send: (text: string) => Effect.Effect<void>
  /** wait until the received text (after INFO) matches, return all of it */
  readonly waitFor: (pattern: RegExp, timeoutMillis?: number) => Effect.Effect<string, Error>
  readonly received: () => string
}

/** Connect, read INFO; the socket is closed with the scope. */
export const connect = (port: number, host = "127.0.0.1") =>
  Effect.acquireRelease(
    Effect.async<{ socket: net.Socket; info: Record<string, unknown>; state: { text: string; listeners: Set<() => void> } }, Error>((resume) => {
      const socket = net.connect({ host, port })
      socket.setEncoding("utf8")
      const state = { text: "", listeners: new Set<() => void>() }
      let info: Record<string, unknown> | undefined
      socket.on("data", (chunk: string) => {
        state.text += chunk
        if (info === undefined) {
          const end = state.text.indexOf("\r\n")
          if (end < 0) return
          const line = state.text.slice(0, end)
          state.text = state.text.slice(end + 2)
          const parsed: unknown = JSON.parse(line.replace(/^INFO /, ""))
          info = typeof parsed === "object" && parsed !== null ? { ...parsed } : {}
          resume(Effect.succeed({ socket, info, state }))
        }
        for (const l of state.listeners) l()
      })
      socket.once("error", (e) => {
        if (info === undefined) resume(Effect.fail(e))
      })
      socket.once("close", () => {
        for (const l of state.listeners) l()
      })
    }),
    ({ socket }) => Effect.sync(() => socket.destroy())
  ).pipe(
    Effect.map(({ info, socket, state }): RawSession => ({
      info,
      received: () => state.text,
      send: (text) =>
        Effect.async<void>((resume) => {
          socket.write(text, () => resume(Effect.void))
        }),
      waitFor: (pattern, timeoutMillis = 5000) =>
        Effect.async<string, Error>((resume) => {
          const check = () => {
            if (pattern.test(state.text)) {
              done()
              resume(Effect.succeed(state.text))
            } else if (socket.destroyed) {
              done()
              resume(Effect.fail(new Error(`connection closed; received: ${state.text}`)))
            }
          }
          const timer = setTimeout(() => {
            done()
            resume(Effect.fail(new Error(`timed out waiting for ${pattern}; received: ${state.text}`)))
          }, timeoutMillis)
          const done = () => {
            clearTimeout(timer)
            state.listeners.delete(check)
          }
          state.listeners.add(check)
          check()
          return Effect.sync(done)
        })
    }))
  )

/** CONNECT with the given fields, then PING. */
export const connectLine = (fields: Record<string, unknown>): string =>
  `CONNECT ${JSON.stringify({ verbose: false, pedantic: false, protocol: 1, headers: true, ...fields })}\r\nPING\r\n`

/** PUB with a payload. */
export const pub = (subject: string, replyTo: string, payload: string): string =>
  `PUB ${subject} ${replyTo} ${Buffer.byteLength(payload)}\r\n${payload}\r\n`

/** Does the port accept a TCP connection right now? */
export const accepts = (port: number): Effect.Effect<boolean> =>
  Effect.async<boolean>((resume) => {
    const socket = net.connect({ host: "127.0.0.1", port })
    socket.once("connect", () => {
      socket.destroy()
      resume(Effect.succeed(true))
    })
    socket.once("error", () => {
      socket.destroy()
      resume(Effect.succeed(false))
    })
  })
