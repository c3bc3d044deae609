/**
 * A real, throwaway Postgres for tests and demos: a fresh cluster in a temp dir
 * on a free loopback port (trust auth, user `postgres`, fsync off), stopped and
 * removed when the scope closes.
 *
 * Source, in order: `PG_URL`, testcontainers (`postgres:16`) when a Docker engine
 * answers, else local binaries (`/usr/lib/postgresql/<highest>/bin`, PATH, the usual
 * places), found (or, as root on Debian/Ubuntu, installed) by {@link Provision.resolve}.
 * Postgres refuses to run as root: as root, the cluster belongs to the `postgres`
 * OS user and `initdb` / `pg_ctl` run through `runuser -u postgres --`.
 *
 * @since 0.1.0
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Context, Data, Effect, Layer, type Scope } from "effect"
import { markOwner, stopOrphan, sweepStale, trackDir, trackHook, untrackDir } from "./internal/cleanup.js"
import * as Containers from "./internal/containers.js"
import { dockerAnswers, freePort, hostPort } from "./internal/net.js"
import { findExecutable, isExecutable, live, run, type RunResult } from "./internal/process.js"
import * as Provision from "./Provision.js"

/**
 * Where the server comes from.
 *
 * @since 0.1.0
 * @category models
 */
export type Source = "env" | "container" | "binary"

/**
 * A running Postgres.
 *
 * @since 0.1.0
 * @category tags
 */
export class PostgresTestServer extends Context.Tag("@effect-nats/testing/PostgresTestServer")<PostgresTestServer, {
  /** `postgres://postgres@127.0.0.1:PORT/postgres`; for the `env` source, `PG_URL` as given */
  readonly url: string
  readonly port: number
  readonly source: Source
}>() {}

/**
 * @since 0.1.0
 * @category errors
 */
export class PostgresTestServerError extends Data.TaggedError("PostgresTestServerError")<{
  readonly reason: "BinaryNotFound" | "InitFailed" | "StartFailed" | "StopFailed" | "ContainerFailed"
  readonly message: string
  readonly cause?: unknown
}> {}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** directory holding `initdb` and `pg_ctl` (default: the highest `/usr/lib/postgresql/<v>/bin`, then PATH) */
  readonly binDir?: string
  /** sources to try, in order (default `["env", "container", "binary"]`) */
  readonly sources?: ReadonlyArray<Source>
  /** container image; default `postgres:16` */
  readonly image?: string
  /**
   * Keep `fsync` and `full_page_writes` on, as a production server does
   * (default false: tests run faster without; benchmarks of commit-bound
   * work want them on).
   */
  readonly durable?: boolean
}

/** The server's durability settings (`-c` flags), fsync off unless `durable`. */
const durability = (options: Options): string => options.durable === true ? "" : " -c fsync=off -c full_page_writes=off"

const notFoundHelp = (): string =>
  `Install Postgres (here: \`${Provision.installCommand("postgres", Provision.currentHost())}\`; ` +
  "Debian/Ubuntu: `apt-get install postgresql`; macOS: `brew install postgresql@16`), " +
  "or set PG_URL to a running server, or start a Docker engine."

const fail = (reason: PostgresTestServerError["reason"], message: string, cause?: unknown) =>
  new PostgresTestServerError({ reason, message, ...(cause !== undefined ? { cause } : {}) })

/** `binDir` when given; else the dir that {@link Provision.resolve} finds (or, as root on Debian/Ubuntu, installs). */
const findBinDir = (options: Options): Effect.Effect<string, PostgresTestServerError> =>
  options.binDir !== undefined
    ? isExecutable(path.join(options.binDir, "initdb")) && isExecutable(path.join(options.binDir, "pg_ctl"))
      ? Effect.succeed(options.binDir)
      : Effect.fail(fail("BinaryNotFound", `initdb/pg_ctl not found in binDir ${options.binDir}. ${notFoundHelp()}`))
    : Provision.resolve("postgres", { steps: ["binary", "install"], neededBy: "PostgresTestServer" }).pipe(
      Effect.flatMap((found) =>
        found._tag === "Binary"
          ? Effect.succeed(found.path)
          : Effect.dieMessage(`Provision.resolve gave ${found._tag} for the binary step`)
      ),
      Effect.mapError((e) => fail("BinaryNotFound", e.message, e))
    )

const describe = (r: RunResult): string =>
  `${r.exit.signal !== null ? `signal ${r.exit.signal}` : `exit code ${r.exit.code}`}${r.output.length > 0 ? `:\n${r.output}` : ""}`

const readTail = (file: string, lines: number): string => {
  try {
    return fs.readFileSync(file, "utf8").split("\n").filter((l) => l.length > 0).slice(-lines).join("\n")
  } catch {
    return ""
  }
}

const postmasterPid = (dataDir: string): number | undefined => {
  try {
    const pid = Number(fs.readFileSync(path.join(dataDir, "postmaster.pid"), "utf8").split("\n")[0])
    return Number.isInteger(pid) && pid > 0 ? pid : undefined
  } catch {
    return undefined
  }
}

/** How to run a Postgres tool: directly, or as the `postgres` OS user when we are root. */
interface Runner {
  readonly owner: { readonly uid: number; readonly gid: number } | undefined
  readonly run: (command: string, args: ReadonlyArray<string>, cwd: string, timeoutMillis: number) => Effect.Effect<RunResult>
}

const makeRunner: Effect.Effect<Runner, PostgresTestServerError> = Effect.gen(function*() {
  if (typeof process.getuid !== "function" || process.getuid() !== 0) {
    return { owner: undefined, run: (command, args, cwd, timeoutMillis) => run(command, args, { cwd, timeoutMillis }) }
  }
  const runuser = findExecutable("runuser", ["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
  if (runuser === undefined) {
    return yield* fail("BinaryNotFound", "running as root needs `runuser` (util-linux) to run Postgres as the postgres user")
  }
  const id = (flag: string) =>
    run("id", [flag, "postgres"], { timeoutMillis: 5000 }).pipe(
      Effect.flatMap((r) => {
        const n = Number(r.output.trim())
        return r.exit.code === 0 && Number.isInteger(n)
          ? Effect.succeed(n)
          : Effect.fail(fail(
            "BinaryNotFound",
            "Postgres refuses to run as root and there is no `postgres` OS user " +
              "(create one, e.g. `useradd -r postgres`, or run the tests as a non-root user)"
          ))
      })
    )
  const uid = yield* id("-u")
  const gid = yield* id("-g")
  return {
    owner: { uid, gid },
    run: (command, args, cwd, timeoutMillis) => run(runuser, ["-u", "postgres", "--", command, ...args], { cwd, timeoutMillis })
  }
})

// ---------------------------------------------------------------------------
// binary
// ---------------------------------------------------------------------------

const fromBinary = (options: Options): Effect.Effect<PostgresTestServer["Type"], PostgresTestServerError, Scope.Scope> =>
  Effect.gen(function*() {
    const binDir = yield* findBinDir(options)
    const runner = yield* makeRunner
    const dir = yield* Effect.acquireRelease(
      Effect.try({
        try: () => {
          // a test process killed by SIGKILL leaves its daemonized postgres behind: stop those first
          sweepStale(os.tmpdir(), "effect-nats-pg-", (stale) => stopOrphan(path.join(stale, "data", "postmaster.pid"), "postgres", "SIGQUIT", 2000))
          const d = fs.mkdtempSync(path.join(os.tmpdir(), "effect-nats-pg-"))
          trackDir(d)
          markOwner(d)
          if (runner.owner !== undefined) fs.chownSync(d, runner.owner.uid, runner.owner.gid)
          return d
        },
        catch: (cause) => fail("StartFailed", `cannot create a temp dir: ${String(cause)}`, cause)
      }),
      (d) =>
        Effect.promise(() => fs.promises.rm(d, { recursive: true, force: true })).pipe(
          Effect.zipRight(Effect.sync(() => untrackDir(d))),
          Effect.catchAllDefect((e) => Effect.logWarning(`PostgresTestServer: could not remove ${d}`, e))
        )
    )
    const dataDir = path.join(dir, "data")
    const logFile = path.join(dir, "log")
    const pgCtl = path.join(binDir, "pg_ctl")

    const initdb = yield* runner.run(
      path.join(binDir, "initdb"),
      ["-D", dataDir, "-A", "trust", "-U", "postgres", "-N", "-E", "UTF8", "--locale=C"],
      dir,
      120_000
    ).pipe(live)
    if (initdb.exit.code !== 0) return yield* fail("InitFailed", `initdb failed (${describe(initdb)})`)

    // If the test process exits without closing the scope: immediate shutdown.
    const untrackHook = trackHook(() => {
      const pid = postmasterPid(dataDir)
      if (pid !== undefined) process.kill(pid, "SIGQUIT")
    })
    // registered after the dir, so it runs before the dir is removed
    yield* Effect.addFinalizer(() =>
      Effect.gen(function*() {
        if (postmasterPid(dataDir) === undefined) return
        const stopped = yield* runner.run(pgCtl, ["-D", dataDir, "stop", "-m", "fast", "-w", "-t", "10"], dir, 15_000)
        const pid = postmasterPid(dataDir)
        if (stopped.exit.code !== 0 && pid !== undefined) {
          yield* Effect.logWarning(`PostgresTestServer: pg_ctl stop failed (${describe(stopped)}); killing ${pid}`)
          yield* Effect.sync(() => {
            try {
              process.kill(pid, "SIGKILL")
            } catch {
              // gone
            }
          })
        }
      }).pipe(Effect.ensuring(Effect.sync(untrackHook)), live)
    )

    for (let attempt = 1;; attempt++) {
      const port = yield* freePort.pipe(Effect.mapError((cause) => fail("StartFailed", `no free port: ${cause.message}`, cause)))
      const serverOptions = `-p ${port} -k '${dir}' -c listen_addresses=127.0.0.1${durability(options)}`
      const started = yield* runner.run(
        pgCtl,
        ["-D", dataDir, "-o", serverOptions, "-l", logFile, "-w", "-t", "30", "start"],
        dir,
        40_000
      ).pipe(live)
      if (started.exit.code === 0) {
        return PostgresTestServer.of({ url: `postgres://postgres@127.0.0.1:${port}/postgres`, port, source: "binary" })
      }
      const log = readTail(logFile, 20)
      if (!/could not bind|address already in use/i.test(log) || attempt >= 3) {
        return yield* fail("StartFailed", `pg_ctl start failed (${describe(started)})\nserver log:\n${log}`)
      }
    }
  })

// ---------------------------------------------------------------------------
// env, container
// ---------------------------------------------------------------------------

const fromEnv = (url: string): Effect.Effect<PostgresTestServer["Type"], PostgresTestServerError> => {
  const hp = hostPort(url, 5432)
  return hp === undefined
    ? Effect.fail(fail("StartFailed", `PG_URL is not a valid URL: ${url}`))
    : Effect.succeed(PostgresTestServer.of({ url, port: hp.port, source: "env" }))
}

const fromContainer = (options: Options): Effect.Effect<PostgresTestServer["Type"], PostgresTestServerError, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.tryPromise({
      try: () =>
        Containers.startContainer({
          image: options.image ?? "postgres:16",
          environment: { POSTGRES_HOST_AUTH_METHOD: "trust" },
          command: durability(options).trim().split(" ").filter((part) => part !== ""),
          port: { container: 5432 },
          tmpfs: { "/var/lib/postgresql/data": "rw" },
          // the entrypoint starts a temporary server for init, then the real one
          readyLog: /database system is ready to accept connections/,
          readyLogTimes: 2,
          startupTimeoutMillis: 60_000
        }),
      catch: (cause) => fail("ContainerFailed", `could not start a postgres container: ${String(cause)}`, cause)
    }),
    (running) =>
      Effect.tryPromise(() => Containers.removeContainer(running)).pipe(
        Effect.timeout(15_000),
        Effect.catchAll((e) => Effect.logWarning("PostgresTestServer: removing the container failed", e)),
        live
      )
  ).pipe(
    Effect.map((running) => {
      const host = running.host === "localhost" ? "127.0.0.1" : running.host
      return PostgresTestServer.of({ url: `postgres://postgres@${host}:${running.port}/postgres`, port: running.port, source: "container" })
    })
  )

/**
 * Start a Postgres (see the module doc for the source order) in the current scope.
 *
 * @since 0.1.0
 * @category constructors
 */
export const make = (options: Options = {}): Effect.Effect<PostgresTestServer["Type"], PostgresTestServerError, Scope.Scope> =>
  Effect.gen(function*() {
    const sources = options.sources ?? ["env", "container", "binary"]
    let containerError: PostgresTestServerError | undefined
    for (const source of sources) {
      if (source === "env") {
        const url = process.env["PG_URL"]
        if (url !== undefined && url.trim().length > 0) return yield* fromEnv(url.trim())
      } else if (source === "container") {
        if (!(yield* dockerAnswers)) continue
        const result = yield* Effect.either(fromContainer(options))
        if (result._tag === "Right") return result.right
        containerError = result.left
        yield* Effect.logWarning(`PostgresTestServer: container start failed, trying the next source: ${result.left.message}`)
      } else {
        return yield* fromBinary(options)
      }
    }
    return yield* (containerError ??
      fail("BinaryNotFound", `no Postgres source available (tried ${sources.join(", ")}). ${notFoundHelp()}`))
  }).pipe(live)

/**
 * A layer with a throwaway Postgres for the layer's lifetime; @effect/sql-pg
 * connects with `PgClient.layer({ url: Redacted.make(server.url) })`.
 *
 * @example
 * ```ts
 * import { PostgresTestServer } from "@effect-nats/testing"
 * import { layer } from "@effect/vitest"
 * import { Effect } from "effect"
 *
 * layer(PostgresTestServer.layer)("outbox on Postgres", (it) => {
 *   it.effect("has a url", () =>
 *     Effect.map(PostgresTestServer.PostgresTestServer, (pg) => pg.url))
 * })
 * ```
 *
 * @since 0.1.0
 * @category layers
 */
export const layer: Layer.Layer<PostgresTestServer, PostgresTestServerError> = Layer.scoped(PostgresTestServer, make())

/**
 * Like `layer`, with options.
 *
 * @since 0.1.0
 * @category layers
 */
export const layerWith = (options: Options): Layer.Layer<PostgresTestServer, PostgresTestServerError> =>
  Layer.scoped(PostgresTestServer, make(options))
