/**
 * The chaos harness: sizes (issue counts, `--quick` tenths, env overrides),
 * the result record every scenario returns, child processes that are always
 * killed when their scope closes, and small waiting / stream-reading helpers.
 *
 * Everything here is bounded: every wait has a timeout, every child a SIGKILL
 * in its finalizer, every server a scope.
 */
import * as ChildProcess from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { NatsTestServer } from "@effect-nats/testing"
import { Duration, Effect, Layer, Option, Schedule, type Scope } from "effect"
import { JetStream, NatsClient, type NatsError } from "effect-nats"

/** The repository root (children run with this cwd). */
export const repo = path.resolve(import.meta.dirname, "../..")

// ---------------------------------------------------------------------------
// sizes
// ---------------------------------------------------------------------------

/**
 * A count from the environment (`CHAOS_<NAME>`), else the full or quick default.
 * Values are clamped to at least `min`.
 */
export const count = (name: string, full: number, quick: number, isQuick: boolean, min = 1): number => {
  const raw = process.env[`CHAOS_${name}`]
  const parsed = raw === undefined || raw.trim() === "" ? Number.NaN : Number(raw)
  const value = Number.isFinite(parsed) ? parsed : isQuick ? quick : full
  return Math.max(min, Math.floor(value))
}

// ---------------------------------------------------------------------------
// results
// ---------------------------------------------------------------------------

/** One scenario's figures. `lost` and `duplicateEffects` must be 0; `failures` lists broken checks. */
export interface Result {
  readonly scenario: string
  readonly ok: boolean
  readonly sent: number
  readonly effects: number
  readonly lost: number
  readonly duplicateEffects: number
  readonly durationMs: number
  readonly failures: ReadonlyArray<string>
  readonly figures: Readonly<Record<string, unknown>>
  /** Lines for the reader only (not in the JSON line). */
  readonly notes: ReadonlyArray<string>
}

/** Collects checks and figures while a scenario runs. */
export class Report {
  private readonly started = performance.now()
  readonly failures: Array<string> = []
  readonly figures: Record<string, unknown> = {}
  readonly notes: Array<string> = []
  sent = 0
  effects = 0
  lost = 0
  duplicateEffects = 0

  constructor(readonly scenario: string) {}

  /** Record a figure (printed, and part of the JSON line). */
  set(name: string, value: unknown): void {
    this.figures[name] = value
  }

  /** A line for the reader (printed with the figures, not in the JSON line). */
  note(line: string): void {
    this.notes.push(line)
  }

  /** A check: when it does not hold, the scenario fails with `what`. */
  check(ok: boolean, what: string): boolean {
    if (!ok) this.failures.push(what)
    return ok
  }

  /** Log a progress line for this scenario (stderr, so stdout stays figures + JSON; quiet under vitest). */
  log(line: string): void {
    if (process.env["VITEST"] !== undefined && process.env["CHAOS_VERBOSE"] !== "1") return
    const t = ((performance.now() - this.started) / 1000).toFixed(1).padStart(6)
    process.stderr.write(`[${t}s ${this.scenario}] ${line}\n`)
  }

  result(): Result {
    this.check(this.lost === 0, `${this.lost} acknowledged message(s) lost`)
    this.check(this.duplicateEffects === 0, `${this.duplicateEffects} effect(s) happened twice`)
    return {
      scenario: this.scenario,
      ok: this.failures.length === 0,
      sent: this.sent,
      effects: this.effects,
      lost: this.lost,
      duplicateEffects: this.duplicateEffects,
      durationMs: Math.round(performance.now() - this.started),
      failures: [...this.failures],
      figures: { ...this.figures },
      notes: [...this.notes]
    }
  }
}

/** The JSON line of a result: the fixed fields first, then the figures. */
export const jsonLine = (r: Result): string =>
  JSON.stringify({
    scenario: r.scenario,
    ok: r.ok,
    sent: r.sent,
    effects: r.effects,
    lost: r.lost,
    duplicateEffects: r.duplicateEffects,
    ...r.figures,
    durationMs: r.durationMs,
    ...(r.failures.length > 0 ? { failures: r.failures } : {})
  })

/** The figures as aligned text lines. */
export const describeResult = (r: Result): string => {
  const rows: Array<[string, unknown]> = [
    ["sent", r.sent],
    ["effects", r.effects],
    ["lost", r.lost],
    ["duplicateEffects", r.duplicateEffects],
    ...Object.entries(r.figures),
    ["duration", `${(r.durationMs / 1000).toFixed(1)} s`]
  ]
  const width = Math.max(...rows.map(([k]) => k.length))
  const lines = rows.map(([k, v]) => `  ${k.padEnd(width)}  ${typeof v === "string" ? v : JSON.stringify(v)}`)
  const head = `${r.ok ? "PASS" : "FAIL"} ${r.scenario}`
  const notes = r.notes.map((n) => `  - ${n}`)
  const fails = r.failures.map((f) => `  ! ${f}`)
  return [head, ...lines, ...notes, ...fails].join("\n")
}

// ---------------------------------------------------------------------------
// randomness (seeded, so a failing run can be repeated with CHAOS_SEED)
// ---------------------------------------------------------------------------

/** mulberry32: a small seeded PRNG. */
export const rng = (seed: number) => {
  let a = seed >>> 0
  const next = () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
  return {
    next,
    /** integer in [lo, hi] */
    int: (lo: number, hi: number) => lo + Math.floor(next() * (hi - lo + 1)),
    pick: <A>(xs: ReadonlyArray<A>): A => xs[Math.floor(next() * xs.length)]!
  }
}

/** The run's seed: `CHAOS_SEED`, else random (printed, so a run can be repeated). */
export const seed: number = (() => {
  const raw = Number(process.env["CHAOS_SEED"])
  return Number.isFinite(raw) && raw > 0 ? Math.floor(raw) : Math.floor(Math.random() * 2 ** 31) + 1
})()

// ---------------------------------------------------------------------------
// temp dirs, servers
// ---------------------------------------------------------------------------

/** A temp dir for the scope, removed after. */
export const tempDir = (prefix: string) =>
  Effect.acquireRelease(
    Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), `effect-nats-chaos-${prefix}-`))),
    (dir) => Effect.sync(() => fs.rmSync(dir, { recursive: true, force: true }))
  )

/**
 * A nats-server of our own (never an external NATS_URL: scenarios restart and
 * kill it), on a free loopback port, plus a client and JetStream on it.
 */
export const natsLayer = (
  options: NatsTestServer.Options = {},
  client: Omit<NatsClient.Options, "servers"> = {}
): Layer.Layer<
  NatsTestServer.NatsTestServer | NatsClient.NatsClient | JetStream.JetStream,
  NatsTestServer.NatsTestServerError | NatsError.NatsError
> =>
  NatsTestServer.layerJetStream(
    { sources: ["container", "binary"], ...options },
    { reconnectTimeWait: "250 millis", reconnectJitter: "50 millis", drainTimeout: "5 seconds", ...client }
  )

// ---------------------------------------------------------------------------
// waiting
// ---------------------------------------------------------------------------

/** Poll `check` every `every` until it holds; `false` when `timeout` passed first. */
export const waitUntil = <E, R>(
  check: Effect.Effect<boolean, E, R>,
  timeout: Duration.DurationInput,
  every: Duration.DurationInput = "50 millis"
): Effect.Effect<boolean, E, R> =>
  check.pipe(
    Effect.flatMap((ok) => ok ? Effect.succeed(true) : Effect.fail(NotYet)),
    Effect.retry({ schedule: Schedule.spaced(every), while: (e) => e === NotYet }),
    Effect.timeoutOption(timeout),
    Effect.map(Option.getOrElse(() => false)),
    Effect.catchIf((e): e is typeof NotYet => e === NotYet, () => Effect.succeed(false))
  )

const NotYet: unique symbol = Symbol("NotYet")

// ---------------------------------------------------------------------------
// child processes
// ---------------------------------------------------------------------------

let setpriv: string | null | undefined
/** On Linux, `setpriv --pdeathsig KILL`: the kernel kills the child if this process dies (even by SIGKILL). */
const deathSignal = (): string | null => {
  if (setpriv !== undefined) return setpriv
  setpriv = null
  if (process.platform === "linux") {
    for (const candidate of ["/usr/bin/setpriv", "/bin/setpriv"]) {
      if (!fs.existsSync(candidate)) continue
      const help = ChildProcess.spawnSync(candidate, ["--help"], { encoding: "utf8", timeout: 2000 })
      if (typeof help.stdout === "string" && help.stdout.includes("--pdeathsig")) setpriv = candidate
      break
    }
  }
  return setpriv
}

const alive = new Set<ChildProcess.ChildProcess>()
let exitHook = false
const killAllOnExit = () => {
  if (exitHook) return
  exitHook = true
  process.once("exit", () => {
    for (const child of alive) {
      try {
        child.kill("SIGKILL")
      } catch {
        // gone
      }
    }
  })
}

/** How a child process ended. */
export interface ExitInfo {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

/** A running fixture. */
export interface Child {
  readonly pid: number
  readonly running: () => boolean
  /** Resolves when the process has exited. */
  readonly exited: Effect.Effect<ExitInfo>
  /** Wait up to `timeout` for the exit. */
  readonly awaitExit: (timeout: Duration.DurationInput) => Effect.Effect<Option.Option<ExitInfo>>
  readonly signal: (sig: NodeJS.Signals) => Effect.Effect<void>
  /** SIGKILL and wait (bounded) for the exit. */
  readonly kill: Effect.Effect<ExitInfo>
  /** The last lines of its output (stdout + stderr). */
  readonly tail: (n?: number) => string
}

/**
 * Run `chaos/fixtures/<name>.ts` in a child process
 * (`node --conditions=source --import tsx`, cwd = repo). Lines it prints on
 * stdout go to `onLine`; the tail of its output is kept for diagnostics
 * (echoed live with `CHAOS_VERBOSE=1`). The child is SIGKILLed when the scope
 * closes (and when this process exits, on Linux even by SIGKILL).
 */
export const spawnFixture = (
  name: string,
  env: Readonly<Record<string, string>>,
  onLine: (line: string) => void = () => undefined
): Effect.Effect<Child, never, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.sync((): Child => {
      const file = path.join(repo, "chaos", "fixtures", `${name}.ts`)
      const args = ["--conditions=source", "--import", "tsx", file]
      const wrapper = deathSignal()
      const [command, argv] = wrapper === null
        ? [process.execPath, args]
        : [wrapper, ["--pdeathsig", "KILL", "--", process.execPath, ...args]]
      const child = ChildProcess.spawn(command, argv, {
        cwd: repo,
        env: { ...process.env, ...env },
        stdio: ["ignore", "pipe", "pipe"]
      })
      killAllOnExit()
      alive.add(child)
      let info: ExitInfo | undefined
      const exited = new Promise<ExitInfo>((resolve) =>
        child.once("exit", (code, signal) => {
          alive.delete(child)
          info = { code, signal }
          resolve(info)
        })
      )
      const verbose = process.env["CHAOS_VERBOSE"] === "1"
      let tailText = ""
      const keep = (chunk: string) => {
        tailText = (tailText + chunk).slice(-16_384)
        if (verbose) process.stderr.write(chunk.replace(/^(?=.)/gm, `    [${name} ${child.pid}] `))
      }
      let partial = ""
      child.stdout.setEncoding("utf8").on("data", (chunk: string) => {
        keep(chunk)
        const lines = (partial + chunk).split("\n")
        partial = lines.pop() ?? ""
        for (const line of lines) onLine(line)
      })
      child.stderr.setEncoding("utf8").on("data", keep)
      const awaitExit = (timeout: Duration.DurationInput) =>
        info !== undefined
          ? Effect.succeed(Option.some(info))
          : Effect.promise(() => exited).pipe(Effect.timeoutOption(timeout))
      const signal = (sig: NodeJS.Signals) =>
        Effect.sync(() => {
          if (info !== undefined) return
          try {
            child.kill(sig)
          } catch {
            // gone
          }
        })
      return {
        pid: child.pid ?? -1,
        running: () => info === undefined,
        exited: Effect.promise(() => exited),
        awaitExit,
        signal,
        kill: Effect.zipRight(signal("SIGKILL"), Effect.promise(() => exited)),
        tail: (n = 20) => tailText.split("\n").filter((l) => l.length > 0).slice(-n).join("\n")
      }
    }),
    (child) =>
      child.running()
        ? Effect.zipRight(child.signal("SIGKILL"), Effect.ignore(child.awaitExit("10 seconds")))
        : Effect.void
  )

// ---------------------------------------------------------------------------
// reading a stream
// ---------------------------------------------------------------------------

/** One stored message. */
export interface Stored {
  readonly seq: number
  readonly subject: string
  readonly msgId: string | undefined
  readonly headers: Readonly<Record<string, string>>
  readonly data: Uint8Array
}

/**
 * Every message of a stream, in stream order, read with an ordered consumer
 * (fast for tens of thousands of messages). Bounded by `timeout`.
 */
export const readStream = (stream: string, timeout: Duration.DurationInput = "60 seconds") =>
  Effect.gen(function*() {
    const js = yield* JetStream.JetStream
    const info = yield* js.streamInfo(stream)
    const last = info.state.last_seq
    if (info.state.messages === 0) return []
    // one whole read, from the first message; a request that times out (a cluster that is still
    // electing or catching up after a restart) starts the read again, within `timeout`
    const readOnce = Effect.tryPromise(async () => {
      const out: Array<Stored> = []
      const consumer = await js.client.consumers.get(stream)
      const messages = await consumer.consume({ max_messages: 1000 })
      for await (const m of messages) {
        const headers: Record<string, string> = {}
        if (m.headers) for (const [k, v] of m.headers) headers[k] = v[0] ?? ""
        out.push({ seq: m.seq, subject: m.subject, msgId: m.headers?.get("Nats-Msg-Id"), headers, data: m.data })
        if (m.seq >= last) break
      }
      await messages.close().catch(() => undefined)
      return out
    })
    return yield* readOnce.pipe(Effect.retry(Schedule.spaced("250 millis")), Effect.timeout(timeout), Effect.orDie)
  })

/** Figures of a list of durations in ms: count, p50, max. */
export const spread = (xs: ReadonlyArray<number>) => {
  if (xs.length === 0) return { n: 0 }
  const s = [...xs].sort((a, b) => a - b)
  return { n: s.length, p50: Math.round(s[Math.floor(s.length / 2)]!), max: Math.round(s[s.length - 1]!) }
}

/** Milliseconds since `start` (performance clock). */
export const since = (start: number) => Math.round(performance.now() - start)

/** Human duration. */
export const fmt = (d: Duration.DurationInput) => Duration.format(Duration.decode(d))
