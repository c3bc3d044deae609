/**
 * One local `nats-server` process on a fixed port with its config file and store
 * in a throwaway dir: find the binary, create the dir, start (wait for `INFO`),
 * stop (SIGTERM, then SIGKILL), kill (SIGKILL). Used by `NatsTestServer` (one
 * node) and `NatsTestCluster` (one per node).
 *
 * @internal
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Data, Effect, Schedule, type Scope } from "effect"
import * as Provision from "../Provision.js"
import { markOwner, stopOrphan, sweepStale, trackDir, untrackDir } from "./cleanup.js"
import { firstLine } from "./net.js"
import { isExecutable, killNow, live, type Proc, spawnTracked, terminate } from "./process.js"

/**
 * A test server or cluster could not be started, stopped or asked something.
 *
 * @example
 * ```ts
 * import { NatsTestServer } from "@effect-nats/testing"
 * import { Effect } from "effect"
 *
 * NatsTestServer.make().pipe(
 *   Effect.catchTag("NatsTestServerError", (e) => Effect.logWarning(`no server (${e.reason}): ${e.message}`))
 * )
 * ```
 *
 * @since 0.1.0
 * @category errors
 */
export class NatsTestServerError extends Data.TaggedError("NatsTestServerError")<{
  readonly reason:
    | "BinaryNotFound"
    | "StartFailed"
    | "StopFailed"
    | "ContainerFailed"
    | "Unsupported"
    | "UnknownNode"
    | "RequestFailed"
    | "Timeout"
  readonly message: string
  readonly cause?: unknown
}> {}

/** @internal */
export const q = (s: string): string => JSON.stringify(s)

/** @internal */
export const notFoundHelp = (): string =>
  `Install it (here: \`${Provision.installCommand("nats-server", Provision.currentHost())}\`; ` +
  "Debian/Ubuntu: `apt-get install nats-server`; macOS: `brew install nats-server`), " +
  "or set NATS_URL to a running server, or start a Docker engine."

/** @internal */
export const STOP_GRACE_MILLIS = 5000
const PID_FILE = "nats-server.pid"

/** The `version` of an `INFO {...}` line. @internal */
export const parseVersion = (infoLine: string): string => {
  if (!infoLine.startsWith("INFO ")) return "unknown"
  try {
    const info: unknown = JSON.parse(infoLine.slice(5))
    if (typeof info === "object" && info !== null && "version" in info && typeof info.version === "string") {
      return info.version
    }
  } catch {
    // not JSON
  }
  return "unknown"
}

/** Poll `host:port` every 10 ms until it sends its INFO line; fail when `dead()` or after `timeoutMillis`. @internal */
export const awaitInfo = (
  host: string,
  port: number,
  timeoutMillis: number,
  dead: () => string | undefined
): Effect.Effect<string, NatsTestServerError> =>
  Effect.suspend(() => {
    const why = dead()
    return why !== undefined
      ? Effect.fail(new NatsTestServerError({ reason: "StartFailed", message: why }))
      : firstLine(host, port, 1000).pipe(
        Effect.mapError((cause) => new NatsTestServerError({ reason: "StartFailed", message: cause.message, cause }))
      )
  }).pipe(
    Effect.retry({ schedule: Schedule.spaced("10 millis"), while: () => dead() === undefined }),
    Effect.timeoutFail({
      duration: timeoutMillis,
      onTimeout: () =>
        new NatsTestServerError({
          reason: "StartFailed",
          message: `nats-server did not answer on ${host}:${port} within ${timeoutMillis} ms`
        })
    }),
    live
  )

/** `binaryPath` when given, else {@link Provision.resolve} (PATH, the usual dirs, apt-get as root). @internal */
export const findBinary = (binaryPath: string | undefined, neededBy: string): Effect.Effect<string, NatsTestServerError> =>
  binaryPath !== undefined
    ? isExecutable(binaryPath)
      ? Effect.succeed(binaryPath)
      : Effect.fail(
        new NatsTestServerError({
          reason: "BinaryNotFound",
          message: `nats-server not found: binaryPath ${binaryPath} is not an executable file. ${notFoundHelp()}`
        })
      )
    : Provision.resolve("nats-server", { steps: ["binary", "install"], neededBy }).pipe(
      Effect.flatMap((found) =>
        found._tag === "Binary"
          ? Effect.succeed(found.path)
          : Effect.dieMessage(`Provision.resolve gave ${found._tag} for the binary step`)
      ),
      Effect.mapError((e) => new NatsTestServerError({ reason: "BinaryNotFound", message: e.message, cause: e }))
    )

/**
 * A fresh `effect-nats-nats-*` dir under the OS temp dir, removed when the scope
 * closes (stale dirs of dead test processes are swept first, their servers killed).
 *
 * @internal
 */
export const tempDir = (label: string): Effect.Effect<string, NatsTestServerError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.try({
      try: () => {
        sweepStale(os.tmpdir(), "effect-nats-nats-", (stale) => stopOrphan(path.join(stale, PID_FILE), "nats-server", "SIGKILL", 1000))
        const d = fs.mkdtempSync(path.join(os.tmpdir(), "effect-nats-nats-"))
        trackDir(d)
        markOwner(d)
        return d
      },
      catch: (cause) => new NatsTestServerError({ reason: "StartFailed", message: `cannot create a temp dir: ${String(cause)}`, cause })
    }),
    (d) =>
      Effect.promise(() => fs.promises.rm(d, { recursive: true, force: true })).pipe(
        Effect.zipRight(Effect.sync(() => untrackDir(d))),
        Effect.catchAllDefect((e) => Effect.logWarning(`${label}: could not remove ${d}`, e))
      )
  )

/** One server process's controls. @internal */
export interface Node {
  readonly port: number
  readonly storeDir: string
  /** start on the same port and store dir and wait for `INFO`; no-op when running */
  readonly start: Effect.Effect<void, NatsTestServerError>
  /** SIGTERM (bounded wait, then SIGKILL); no-op when stopped */
  readonly stop: Effect.Effect<void, NatsTestServerError>
  /** SIGKILL this node's own process; no-op when stopped */
  readonly kill: Effect.Effect<void, NatsTestServerError>
  /** the running process's id */
  readonly pid: () => number | undefined
  readonly version: () => string
}

/**
 * A `nats-server` in `dir` (config `nats-server.conf`, store `js/`, pid file)
 * listening on `port`: writes the config (`render(storeDir)` plus the pid file)
 * and starts it. The process is stopped when the scope closes, before `dir`
 * (acquired earlier) is removed.
 *
 * @internal
 */
export const node = (options: {
  readonly binary: string
  readonly dir: string
  readonly port: number
  readonly render: (storeDir: string) => string
  readonly startTimeoutMillis: number
  readonly label: string
}): Effect.Effect<Node, NatsTestServerError, Scope.Scope> =>
  Effect.gen(function*() {
    const { binary, dir, label, port, startTimeoutMillis } = options
    const storeDir = path.join(dir, "js")
    const configFile = path.join(dir, "nats-server.conf")
    let current: Proc | undefined
    let version = "unknown"
    yield* Effect.addFinalizer(() =>
      Effect.suspend(() => {
        const proc = current
        current = undefined
        return proc === undefined ? Effect.void : terminate(proc, STOP_GRACE_MILLIS).pipe(
          Effect.flatMap((done) => done ? Effect.void : Effect.logWarning(`${label}: pid ${proc.child.pid} did not exit`))
        )
      }).pipe(live)
    )
    yield* Effect.tryPromise({
      try: () => fs.promises.writeFile(configFile, options.render(storeDir) + `pid_file: ${q(path.join(dir, PID_FILE))}\n`, { mode: 0o600 }),
      catch: (cause) => new NatsTestServerError({ reason: "StartFailed", message: `cannot write ${configFile}`, cause })
    })
    const start = Effect.gen(function*() {
      if (current !== undefined && !current.hasExited()) return
      const proc = spawnTracked(binary, ["-c", configFile], { cwd: dir })
      current = proc
      const dead = (): string | undefined => {
        const exit = proc.exitInfo()
        if (exit === undefined) return undefined
        const how = exit.signal !== null ? `signal ${exit.signal}` : `code ${exit.code}`
        return `nats-server exited (${how}) before answering on 127.0.0.1:${port}:\n${proc.output.lastLines(30)}`
      }
      const line = yield* awaitInfo("127.0.0.1", port, startTimeoutMillis, dead).pipe(
        Effect.mapError((e) =>
          new NatsTestServerError({
            reason: "StartFailed",
            message: dead() ?? `${e.message}; last log lines:\n${proc.output.lastLines(30)}`,
            cause: e
          })
        ),
        Effect.tapError(() => killNow(proc, 2000))
      )
      version = parseVersion(line)
    })
    const stopProc = (how: "term" | "kill"): Effect.Effect<void, NatsTestServerError> =>
      Effect.suspend(() => {
        const proc = current
        if (proc === undefined || proc.hasExited()) return Effect.sync(() => (current = undefined))
        return (how === "term" ? terminate(proc, STOP_GRACE_MILLIS) : killNow(proc, STOP_GRACE_MILLIS)).pipe(
          Effect.flatMap((done) =>
            done
              ? Effect.sync(() => (current = undefined))
              : Effect.fail(new NatsTestServerError({ reason: "StopFailed", message: `nats-server pid ${proc.child.pid} did not exit` }))
          )
        )
      })
    yield* start
    return {
      port,
      storeDir,
      start: live(start),
      stop: live(stopProc("term")),
      kill: live(stopProc("kill")),
      pid: () => current !== undefined && !current.hasExited() ? current.child.pid : undefined,
      version: () => version
    }
  })

/** Is this start failure a port another process took meanwhile? @internal */
export const portTaken = (e: NatsTestServerError): boolean => /address already in use/i.test(e.message)
