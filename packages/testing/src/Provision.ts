/**
 * Finding, or installing, the servers that the tests and the demo run against:
 * `nats-server` and PostgreSQL. One implementation, used by `npm run demo`, by the
 * test suite's global setup (`vitest.globalSetup.ts`) and by the
 * `NatsTestServer` / `PostgresTestServer` layers.
 *
 * Steps, tried in the order given (default `["env", "binary", "container", "install"]`):
 * - `env`: `NATS_URL` / `PG_URL` is set;
 * - `binary`: a `nats-server` executable (Postgres: a dir holding `initdb` and
 *   `pg_ctl`) on PATH or in the usual places (Debian, Homebrew, `~/go/bin`, ...);
 *   a file check, well under a millisecond when present;
 * - `container`: a Docker engine answers (testcontainers will start the server);
 * - `install`: as root on Debian/Ubuntu, `apt-get install -y nats-server` (or
 *   `postgresql`), printing one line that says what it installs and why.
 *
 * When every step comes up empty: a {@link ProvisionError} whose message gives the
 * install command for this OS.
 *
 * @since 0.1.0
 */
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { Data, Effect } from "effect"
import { dockerAnswers } from "./internal/net.js"
import { isExecutable, live, run, type RunResult } from "./internal/process.js"

/**
 * The servers this module provides.
 *
 * @since 0.1.0
 * @category models
 */
export type Server = "nats-server" | "postgres"

/**
 * One way of getting a server (see the module doc).
 *
 * @since 0.1.0
 * @category models
 */
export type Step = "env" | "binary" | "container" | "install"

/**
 * Where the server will come from. For `Binary`, `path` is the `nats-server`
 * executable, or for Postgres the dir holding `initdb` and `pg_ctl`;
 * `installed` is `true` when this process installed it just now.
 *
 * @since 0.1.0
 * @category models
 */
export type Found =
  | { readonly _tag: "Env"; readonly url: string }
  | { readonly _tag: "Binary"; readonly path: string; readonly installed: boolean }
  | { readonly _tag: "Container" }

/**
 * No step gave a server (`NotFound`, with the install command for this OS in
 * the message), or `apt-get install` failed (`InstallFailed`, with apt's last lines).
 *
 * @since 0.1.0
 * @category errors
 */
export class ProvisionError extends Data.TaggedError("ProvisionError")<{
  readonly server: Server
  readonly reason: "NotFound" | "InstallFailed"
  readonly message: string
}> {}

/**
 * What the search depends on: the real machine by default ({@link currentHost}),
 * or a described one (tests, messages for another OS).
 *
 * @since 0.1.0
 * @category models
 */
export interface Host {
  readonly platform: NodeJS.Platform
  readonly isRoot: boolean
  /** `ID` and `ID_LIKE` words of `/etc/os-release`, lower case (empty elsewhere) */
  readonly distro: ReadonlyArray<string>
  readonly env: Readonly<Record<string, string | undefined>>
  readonly home: string
  /** the `apt-get` executable, when there is one */
  readonly aptGet: string | undefined
}

const readDistro = (): ReadonlyArray<string> => {
  try {
    const text = fs.readFileSync("/etc/os-release", "utf8")
    const field = (name: string) =>
      (new RegExp(`^${name}=(.*)$`, "m").exec(text)?.[1] ?? "").replace(/^["']|["']$/g, "").toLowerCase()
    return [field("ID"), ...field("ID_LIKE").split(/\s+/)].filter((w) => w.length > 0)
  } catch {
    return []
  }
}

/**
 * This machine.
 *
 * @since 0.1.0
 * @category constructors
 */
export const currentHost = (): Host => ({
  platform: process.platform,
  isRoot: typeof process.getuid === "function" && process.getuid() === 0,
  distro: process.platform === "linux" ? readDistro() : [],
  env: process.env,
  home: os.homedir(),
  aptGet: ["/usr/bin/apt-get", "/bin/apt-get"].find(isExecutable)
})

const pathDirs = (host: Host): ReadonlyArray<string> =>
  (host.env["PATH"] ?? "").split(path.delimiter).filter((d) => d.length > 0)

/**
 * The usual places of a `nats-server` outside PATH (Debian installs it in
 * `/usr/sbin`, which a non-root PATH often lacks; `go install` puts it in `~/go/bin`).
 *
 * @since 0.1.0
 * @category search
 */
export const natsServerDirs = (host: Host): ReadonlyArray<string> => [
  "/usr/sbin",
  "/usr/local/bin",
  "/usr/local/sbin",
  "/usr/bin",
  "/opt/homebrew/bin",
  "/snap/bin",
  ...(host.env["GOBIN"] !== undefined ? [host.env["GOBIN"]] : []),
  ...(host.env["GOPATH"] !== undefined ? [path.join(host.env["GOPATH"], "bin")] : []),
  path.join(host.home, "go", "bin"),
  path.join(host.home, ".local", "bin")
]

/**
 * The usual places of Postgres's `initdb` and `pg_ctl` outside PATH: Debian's
 * `/usr/lib/postgresql/<v>/bin` (highest version first), Homebrew's keg-only
 * `postgresql@<v>`, the PGDG RPMs' `/usr/pgsql-<v>/bin`, Postgres.app.
 *
 * @since 0.1.0
 * @category search
 */
export const postgresDirs = (_host: Host): ReadonlyArray<string> => {
  const versioned = (root: string, toDir: (v: string) => string, match: RegExp): ReadonlyArray<string> => {
    try {
      return fs.readdirSync(root)
        .map((e) => match.exec(e)?.[1])
        .filter((v): v is string => v !== undefined)
        .sort((a, b) => Number(b) - Number(a))
        .map(toDir)
    } catch {
      return []
    }
  }
  return [
    ...versioned("/usr/lib/postgresql", (v) => path.join("/usr/lib/postgresql", v, "bin"), /^(\d+(?:\.\d+)?)$/),
    ...["/opt/homebrew/opt", "/usr/local/opt"].flatMap((root) =>
      versioned(root, (v) => path.join(root, `postgresql@${v}`, "bin"), /^postgresql@(\d+)$/)
    ),
    ...versioned("/usr", (v) => path.join("/usr", `pgsql-${v}`, "bin"), /^pgsql-(\d+)$/),
    "/Applications/Postgres.app/Contents/Versions/latest/bin",
    "/usr/local/pgsql/bin",
    "/usr/local/bin",
    "/opt/homebrew/bin",
    "/usr/bin"
  ]
}

/**
 * The `nats-server` executable on PATH, then in `dirs` (default {@link natsServerDirs}).
 *
 * @since 0.1.0
 * @category search
 */
export const findNatsServer = (host: Host = currentHost(), dirs?: ReadonlyArray<string>): string | undefined =>
  [...pathDirs(host), ...(dirs ?? natsServerDirs(host))].map((d) => path.join(d, "nats-server")).find(isExecutable)

/**
 * The first dir holding both `initdb` and `pg_ctl`: Debian's versioned dirs
 * first (their `initdb` is not on PATH), then PATH, then the other usual places
 * (`dirs`, default {@link postgresDirs}).
 *
 * @since 0.1.0
 * @category search
 */
export const findPostgres = (host: Host = currentHost(), dirs?: ReadonlyArray<string>): string | undefined => {
  const usual = dirs ?? postgresDirs(host)
  const debian = usual.filter((d) => d.startsWith("/usr/lib/postgresql/"))
  const rest = usual.filter((d) => !d.startsWith("/usr/lib/postgresql/"))
  return [...debian, ...pathDirs(host), ...rest].find((d) =>
    isExecutable(path.join(d, "initdb")) && isExecutable(path.join(d, "pg_ctl"))
  )
}

const ENV_VAR: Record<Server, string> = { "nats-server": "NATS_URL", postgres: "PG_URL" }
const APT_PACKAGE: Record<Server, string> = { "nats-server": "nats-server", postgres: "postgresql" }

const isDebianLike = (host: Host): boolean => host.distro.some((w) => w === "debian" || w === "ubuntu")

/**
 * Can this process install with apt-get? Root on Debian/Ubuntu with `apt-get`.
 *
 * @since 0.1.0
 * @category install
 */
export const canInstall = (host: Host): boolean => host.platform === "linux" && host.isRoot && isDebianLike(host) && host.aptGet !== undefined

/**
 * The command a person types on this OS to install the server.
 *
 * @since 0.1.0
 * @category install
 */
export const installCommand = (server: Server, host: Host): string => {
  const sudo = host.isRoot ? "" : "sudo "
  const has = (...ids: ReadonlyArray<string>) => host.distro.some((w) => ids.includes(w))
  const nats = server === "nats-server"
  if (host.platform === "darwin") return nats ? "brew install nats-server" : "brew install postgresql@16"
  if (host.platform === "win32") return nats ? "winget install NATSAuthors.NATSServer" : "winget install PostgreSQL.PostgreSQL.16"
  if (isDebianLike(host)) return `${sudo}apt-get install ${APT_PACKAGE[server]}`
  if (has("fedora", "rhel", "centos")) return nats ? `${sudo}dnf install nats-server` : `${sudo}dnf install postgresql-server`
  if (has("arch")) return nats ? `${sudo}pacman -S nats-server` : `${sudo}pacman -S postgresql`
  if (has("alpine")) return nats ? `${sudo}apk add nats-server` : `${sudo}apk add postgresql`
  if (has("opensuse", "suse")) return nats ? `${sudo}zypper install nats-server` : `${sudo}zypper install postgresql-server`
  return nats
    ? "go install github.com/nats-io/nats-server/v2@latest (or your package manager's nats-server)"
    : "your package manager's PostgreSQL server package"
}

/**
 * @since 0.1.0
 * @category models
 */
export interface Options {
  /** steps to try, in order; default `["env", "binary", "container", "install"]` */
  readonly steps?: ReadonlyArray<Step>
  /** who needs the server, for the messages (e.g. `"the billing demo"`) */
  readonly neededBy?: string
  /** where the progress lines go (default: stderr) */
  readonly say?: (line: string) => void
  /** the machine (default {@link currentHost}) */
  readonly host?: Host
  /** the usual places to look besides PATH (default {@link natsServerDirs} / {@link postgresDirs}) */
  readonly dirs?: ReadonlyArray<string>
}

const sayToStderr = (line: string): void => {
  process.stderr.write(line + "\n")
}

const find = (server: Server, host: Host, dirs: ReadonlyArray<string> | undefined): string | undefined =>
  server === "nats-server" ? findNatsServer(host, dirs) : findPostgres(host, dirs)

// one install at a time in this process; apt-get itself waits for the dpkg lock of other processes
const installLock = Effect.unsafeMakeSemaphore(1)

const lastLines = (r: RunResult): string => r.output.split("\n").slice(-15).join("\n")

/**
 * `apt-get install -y <package>` (after `apt-get update` when the package lists
 * do not know it), then search again. Prints one line before (what and why)
 * and one after (where, in how long).
 *
 * @since 0.1.0
 * @category install
 */
export const install = (
  server: Server,
  options: Options & { readonly why?: string } = {}
): Effect.Effect<string, ProvisionError> =>
  installLock.withPermits(1)(Effect.gen(function*() {
    const host = options.host ?? currentHost()
    const say = options.say ?? sayToStderr
    const already = find(server, host, options.dirs)
    if (already !== undefined) return already
    const apt = host.aptGet
    if (!canInstall(host) || apt === undefined) {
      return yield* new ProvisionError({
        server,
        reason: "InstallFailed",
        message: `cannot install ${server} here: apt-get install needs root on Debian/Ubuntu. Install it: ${installCommand(server, host)}`
      })
    }
    const pkg = APT_PACKAGE[server]
    const started = Date.now()
    say(
      `installing Debian's ${pkg} package (apt-get install -y ${pkg}): ${options.why ?? `${server} is needed and none was found`}; ` +
        "once: later runs find it"
    )
    const env = { DEBIAN_FRONTEND: "noninteractive" }
    const aptInstall = run(apt, ["install", "-y", "-qq", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=300", pkg], {
      env,
      timeoutMillis: 15 * 60_000
    })
    let result = yield* aptInstall
    if (result.exit.code !== 0) {
      // a fresh image has no package lists (or stale ones): update, then try again
      const update = yield* run(apt, ["update", "-qq", "-o", "DPkg::Lock::Timeout=300"], { env, timeoutMillis: 10 * 60_000 })
      if (update.exit.code !== 0) {
        return yield* new ProvisionError({
          server,
          reason: "InstallFailed",
          message: `apt-get update failed (exit ${update.exit.code}):\n${lastLines(update)}\nInstall it yourself: ${
            installCommand(server, host)
          }`
        })
      }
      result = yield* aptInstall
    }
    const found = find(server, host, options.dirs)
    if (result.exit.code !== 0 || found === undefined) {
      return yield* new ProvisionError({
        server,
        reason: "InstallFailed",
        message: `apt-get install -y ${pkg} ${
          result.exit.code !== 0 ? `failed (exit ${result.exit.code})` : `finished but no ${server} was found after it`
        }:\n${lastLines(result)}\nInstall it yourself: ${installCommand(server, host)}`
      })
    }
    say(`installed ${pkg} in ${((Date.now() - started) / 1000).toFixed(1)} s: ${found}`)
    return found
  })).pipe(live)

/**
 * Where the server comes from: the first step that gives one (see the module
 * doc); a `ProvisionError` saying what was tried and how to install it otherwise.
 *
 * @example
 * ```ts
 * import { Provision } from "@effect-nats/testing"
 * import { Effect } from "effect"
 *
 * const program = Effect.gen(function*() {
 *   const found = yield* Provision.resolve("nats-server", { neededBy: "the demo" })
 *   // { _tag: "Binary", path: "/usr/sbin/nats-server", installed: false }
 * })
 * ```
 *
 * @since 0.1.0
 * @category constructors
 */
export const resolve = (server: Server, options: Options = {}): Effect.Effect<Found, ProvisionError> =>
  Effect.gen(function*() {
    const host = options.host ?? currentHost()
    const steps = options.steps ?? ["env", "binary", "container", "install"]
    const tried: Array<string> = []
    for (const step of steps) {
      switch (step) {
        case "env": {
          const url = host.env[ENV_VAR[server]]?.trim()
          if (url !== undefined && url.length > 0) return { _tag: "Env", url } as const
          tried.push(`${ENV_VAR[server]} is not set`)
          break
        }
        case "binary": {
          const found = find(server, host, options.dirs)
          if (found !== undefined) return { _tag: "Binary", path: found, installed: false } as const
          tried.push(
            server === "nats-server"
              ? "no nats-server on PATH nor in the usual places"
              : "no initdb/pg_ctl on PATH nor in the usual places"
          )
          break
        }
        case "container": {
          if (yield* dockerAnswers) return { _tag: "Container" } as const
          tried.push("no Docker engine answers")
          break
        }
        case "install": {
          if (!canInstall(host)) {
            tried.push("installing it needs root on Debian/Ubuntu")
            break
          }
          const why = `${options.neededBy ?? "this run"} needs ${server === "nats-server" ? "a nats-server" : "PostgreSQL"} and ${
            tried.length > 0 ? tried.join(", ") : "none was found"
          }`
          const installed = yield* install(server, { ...options, host, why })
          return { _tag: "Binary", path: installed, installed: true } as const
        }
      }
    }
    return yield* new ProvisionError({
      server,
      reason: "NotFound",
      message: `${options.neededBy ?? "this run"} needs ${server === "nats-server" ? "a nats-server" : "PostgreSQL"}: ${
        tried.join("; ")
      }. Install it: \`${installCommand(server, host)}\`, or set ${ENV_VAR[server]} to a running server, or start a Docker engine.`
    })
  }).pipe(live)
