/**
 * Loopback networking helpers: a free port, a TCP probe, Docker detection.
 *
 * @internal
 */
import * as fs from "node:fs"
import * as net from "node:net"
import * as os from "node:os"
import * as path from "node:path"
import { Effect } from "effect"

/** A port that was free a moment ago (bind port 0 on 127.0.0.1, read it, close). @internal */
export const freePort: Effect.Effect<number, Error> = Effect.async<number, Error>((resume) => {
  const server = net.createServer()
  server.unref()
  server.once("error", (e) => resume(Effect.fail(e)))
  server.listen({ port: 0, host: "127.0.0.1", exclusive: true }, () => {
    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    server.close(() => resume(port > 0 ? Effect.succeed(port) : Effect.fail(new Error("no port assigned"))))
  })
  return Effect.sync(() => {
    server.close()
  })
})

/**
 * Connect to `host:port` and return the first line the peer sends (for NATS: the
 * `INFO {...}` line). Fails on refusal, on close before a line, or after `timeoutMillis`.
 *
 * @internal
 */
export const firstLine = (host: string, port: number, timeoutMillis: number): Effect.Effect<string, Error> =>
  Effect.async<string, Error>((resume) => {
    let buffer = ""
    let done = false
    const socket = net.connect({ host, port })
    const finish = (result: Effect.Effect<string, Error>) => {
      if (done) return
      done = true
      clearTimeout(timer)
      socket.destroy()
      resume(result)
    }
    const timer = setTimeout(() => finish(Effect.fail(new Error(`no line from ${host}:${port} in ${timeoutMillis} ms`))), timeoutMillis)
    socket.setEncoding("utf8")
    socket.on("data", (chunk: string) => {
      buffer += chunk
      const end = buffer.indexOf("\r\n")
      if (end >= 0) finish(Effect.succeed(buffer.slice(0, end)))
    })
    socket.once("error", (e) => finish(Effect.fail(e)))
    socket.once("close", () => finish(Effect.fail(new Error(`${host}:${port} closed the connection`))))
    return Effect.sync(() => {
      done = true
      clearTimeout(timer)
      socket.destroy()
    })
  })

/** Does `host:port` accept a TCP connection (within `timeoutMillis`)? @internal */
export const accepts = (host: string, port: number, timeoutMillis: number): Effect.Effect<boolean> =>
  Effect.async<boolean>((resume) => {
    let done = false
    const socket = net.connect({ host, port })
    const finish = (ok: boolean) => {
      if (done) return
      done = true
      clearTimeout(timer)
      socket.destroy()
      resume(Effect.succeed(ok))
    }
    const timer = setTimeout(() => finish(false), timeoutMillis)
    socket.once("connect", () => finish(true))
    socket.once("error", () => finish(false))
    return Effect.sync(() => {
      done = true
      clearTimeout(timer)
      socket.destroy()
    })
  })

/** `GET /_ping` on a Docker unix socket; `true` when the engine answers 200. */
const pingSocket = (socketPath: string, timeoutMillis: number): Effect.Effect<boolean> =>
  Effect.async<boolean>((resume) => {
    let done = false
    let response = ""
    const socket = net.connect({ path: socketPath })
    const finish = (ok: boolean) => {
      if (done) return
      done = true
      clearTimeout(timer)
      socket.destroy()
      resume(Effect.succeed(ok))
    }
    const timer = setTimeout(() => finish(false), timeoutMillis)
    socket.setEncoding("utf8")
    socket.once("connect", () => socket.write("GET /_ping HTTP/1.0\r\nHost: docker\r\n\r\n"))
    socket.on("data", (chunk: string) => {
      response += chunk
      if (response.includes("\r\n")) finish(/^HTTP\/1\.[01] 200/.test(response))
    })
    socket.once("error", () => finish(false))
    socket.once("close", () => finish(false))
    return Effect.sync(() => {
      done = true
      clearTimeout(timer)
      socket.destroy()
    })
  })

/**
 * Cheap check that a Docker engine answers: `DOCKER_HOST` set (testcontainers will
 * try it), or a known Docker socket that answers `/_ping` within 500 ms.
 *
 * @internal
 */
export const dockerAnswers: Effect.Effect<boolean> = Effect.suspend(() => {
  const dockerHost = process.env["DOCKER_HOST"]
  if (dockerHost !== undefined && dockerHost.length > 0) return Effect.succeed(true)
  const home = os.homedir()
  const runtimeDir = process.env["XDG_RUNTIME_DIR"]
  const candidates = [
    "/var/run/docker.sock",
    path.join(home, ".docker", "run", "docker.sock"),
    path.join(home, ".docker", "desktop", "docker.sock"),
    path.join(home, ".colima", "default", "docker.sock"),
    path.join(home, ".rd", "docker.sock"),
    ...(runtimeDir !== undefined ? [path.join(runtimeDir, "docker.sock")] : [])
  ].filter((p) => {
    try {
      return fs.statSync(p).isSocket()
    } catch {
      return false
    }
  })
  if (candidates.length === 0) return Effect.succeed(false)
  return Effect.forEach(candidates, (p) => pingSocket(p, 500), { concurrency: "unbounded" }).pipe(
    Effect.map((results) => results.some((ok) => ok))
  )
})

/** Host and port of the first server in a `nats://a:1,nats://b:2` or `postgres://u@h:p/db` URL. @internal */
export const hostPort = (url: string, defaultPort: number): { readonly host: string; readonly port: number } | undefined => {
  const first = url.split(",")[0]?.trim() ?? ""
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(first) ? first : `nats://${first}`
  try {
    const parsed = new URL(withScheme)
    const host = parsed.hostname.replace(/^\[(.*)\]$/, "$1")
    const port = parsed.port === "" ? defaultPort : Number(parsed.port)
    return host.length > 0 && Number.isInteger(port) ? { host, port } : undefined
  } catch {
    return undefined
  }
}
