/**
 * Child processes: spawn (no shell) with a bounded output buffer, wait for exit,
 * terminate (SIGTERM, bounded wait, SIGKILL), run a command to completion.
 *
 * @internal
 */
import * as ChildProcess from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { Clock, Effect, Option } from "effect"
import { trackChild, untrackChild } from "./cleanup.js"

const liveClock = Clock.make()

/**
 * Run an effect on the live clock, so servers start and stop in real time even
 * when the caller runs under `TestClock` (e.g. `it.effect` in @effect/vitest).
 *
 * @internal
 */
export const live = <A, E, R>(self: Effect.Effect<A, E, R>): Effect.Effect<A, E, R> =>
  Effect.withClock(self, liveClock)

/** A bounded buffer keeping the tail of a process's output. @internal */
export class OutputBuffer {
  private text = ""
  constructor(private readonly maxChars = 64 * 1024) {}
  append(chunk: Buffer | string): void {
    this.text += typeof chunk === "string" ? chunk : chunk.toString("utf8")
    if (this.text.length > this.maxChars) this.text = this.text.slice(this.text.length - this.maxChars)
  }
  /** The last `n` non-empty lines. */
  lastLines(n = 30): string {
    return this.text.split(/\r?\n/).filter((l) => l.length > 0).slice(-n).join("\n")
  }
}

/** @internal */
export interface ExitInfo {
  readonly code: number | null
  readonly signal: NodeJS.Signals | null
}

/** A spawned, tracked child process. @internal */
export interface Proc {
  readonly child: ChildProcess.ChildProcess
  readonly output: OutputBuffer
  /** Resolves when the process has exited (or failed to spawn). */
  readonly exited: Promise<ExitInfo>
  readonly hasExited: () => boolean
  readonly exitInfo: () => ExitInfo | undefined
  readonly spawnError: () => Error | undefined
}

/** An executable file? @internal */
export const isExecutable = (file: string): boolean => {
  try {
    fs.accessSync(file, fs.constants.X_OK)
    return fs.statSync(file).isFile()
  } catch {
    return false
  }
}

/** The first executable named `name` on PATH, then in `extraDirs`. @internal */
export const findExecutable = (name: string, extraDirs: ReadonlyArray<string>): string | undefined => {
  const pathDirs = (process.env["PATH"] ?? "").split(path.delimiter).filter((d) => d.length > 0)
  for (const dir of [...pathDirs, ...extraDirs]) {
    const candidate = path.join(dir, name)
    if (isExecutable(candidate)) return candidate
  }
  return undefined
}

let pdeathsigWrapper: string | null | undefined
/**
 * On Linux, `setpriv --pdeathsig KILL` makes the kernel SIGKILL the server when
 * the test process dies, even by SIGKILL (an 'exit' handler cannot cover that).
 */
const deathSignalWrapper = (): string | null => {
  if (pdeathsigWrapper !== undefined) return pdeathsigWrapper
  pdeathsigWrapper = null
  if (process.platform === "linux") {
    const setpriv = findExecutable("setpriv", ["/usr/bin", "/bin"])
    if (setpriv !== undefined) {
      const help = ChildProcess.spawnSync(setpriv, ["--help"], { encoding: "utf8", timeout: 2000 })
      if (typeof help.stdout === "string" && help.stdout.includes("--pdeathsig")) pdeathsigWrapper = setpriv
    }
  }
  return pdeathsigWrapper
}

/**
 * Spawn `command` (no shell, not detached), tracked for exit cleanup. Synchronous,
 * so the caller can record the process before anything can interrupt it.
 *
 * @internal
 */
export const spawnTracked = (
  command: string,
  args: ReadonlyArray<string>,
  options: {
    readonly cwd?: string
    readonly killWithParent?: boolean
    /** added to (and overriding) this process's environment */
    readonly env?: Readonly<Record<string, string>>
  } = {}
): Proc => {
  const wrapper = options.killWithParent === false ? null : deathSignalWrapper()
  const [file, argv] = wrapper === null
    ? [command, [...args]] as const
    : [wrapper, ["--pdeathsig", "KILL", "--", command, ...args]] as const
  const child = ChildProcess.spawn(file, argv, {
    stdio: ["ignore", "pipe", "pipe"],
    detached: false,
    shell: false,
    ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
    ...(options.env !== undefined ? { env: { ...process.env, ...options.env } } : {})
  })
  const output = new OutputBuffer()
  let info: ExitInfo | undefined
  let error: Error | undefined
  child.stdout?.on("data", (chunk: Buffer) => output.append(chunk))
  child.stderr?.on("data", (chunk: Buffer) => output.append(chunk))
  const exited = new Promise<ExitInfo>((resolve) => {
    child.once("exit", (code, signal) => {
      info = { code, signal }
      resolve(info)
    })
    child.once("error", (e) => {
      error = e
      output.append(`spawn error: ${e.message}\n`)
      // 'exit' does not follow a failed spawn
      if (child.pid === undefined) {
        info = { code: null, signal: null }
        resolve(info)
      }
    })
  })
  trackChild(child)
  return {
    child,
    output,
    exited,
    hasExited: () => info !== undefined,
    exitInfo: () => info,
    spawnError: () => error
  }
}

/** Wait up to `millis` for the process to exit; `true` when it has. @internal */
export const awaitExit = (proc: Proc, millis: number): Effect.Effect<boolean> =>
  proc.hasExited()
    ? Effect.succeed(true)
    : Effect.promise(() => proc.exited).pipe(
      Effect.as(true),
      Effect.timeoutOption(millis),
      Effect.map(Option.getOrElse(() => false)),
      live
    )

/** Send a signal, ignoring a process that is already gone. @internal */
export const signal = (proc: Proc, sig: NodeJS.Signals): Effect.Effect<void> =>
  Effect.sync(() => {
    if (proc.hasExited()) return
    try {
      proc.child.kill(sig)
    } catch {
      // already gone
    }
  })

/**
 * SIGTERM, wait up to `graceMillis`, then SIGKILL and wait up to 5 s more.
 * `true` when the process has exited.
 *
 * @internal
 */
export const terminate = (proc: Proc, graceMillis: number): Effect.Effect<boolean> =>
  Effect.gen(function*() {
    yield* signal(proc, "SIGTERM")
    if (yield* awaitExit(proc, graceMillis)) return true
    yield* signal(proc, "SIGKILL")
    return yield* awaitExit(proc, 5000)
  }).pipe(Effect.tap((done) => done ? Effect.sync(() => untrackChild(proc.child)) : Effect.void))

/** SIGKILL and wait up to `millis`. @internal */
export const killNow = (proc: Proc, millis: number): Effect.Effect<boolean> =>
  signal(proc, "SIGKILL").pipe(
    Effect.zipRight(awaitExit(proc, millis)),
    Effect.tap((done) => done ? Effect.sync(() => untrackChild(proc.child)) : Effect.void)
  )

/** @internal */
export interface RunResult {
  readonly exit: ExitInfo
  readonly output: string
}

/**
 * Run a command to completion (no shell), bounded by `timeoutMillis` (then SIGKILL).
 * Never fails: a spawn error shows as exit code null with the error in the output.
 *
 * @internal
 */
export const run = (
  command: string,
  args: ReadonlyArray<string>,
  options: { readonly cwd?: string; readonly timeoutMillis: number; readonly env?: Readonly<Record<string, string>> }
): Effect.Effect<RunResult> =>
  Effect.gen(function*() {
    const proc = yield* Effect.sync(() =>
      spawnTracked(command, args, {
        ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
        ...(options.env !== undefined ? { env: options.env } : {}),
        killWithParent: false
      })
    )
    const done = yield* awaitExit(proc, options.timeoutMillis).pipe(Effect.onInterrupt(() => killNow(proc, 2000)))
    if (!done) {
      proc.output.append(`timed out after ${options.timeoutMillis} ms\n`)
      yield* killNow(proc, 2000)
    }
    const exit = proc.exitInfo() ?? { code: null, signal: "SIGKILL" }
    return { exit, output: proc.output.lastLines(40) }
  })
