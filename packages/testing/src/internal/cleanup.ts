/**
 * Last-resort cleanup when the test process exits without closing its scopes
 * (an uncaught error, `process.exit`, a worker torn down): SIGKILL the child
 * processes still registered, run the registered synchronous hooks and remove
 * the registered temp dirs. Only synchronous work is possible in an 'exit' handler.
 *
 * @internal
 */
import { type ChildProcess, spawnSync } from "node:child_process"
import * as fs from "node:fs"

const children = new Set<ChildProcess>()
const hooks = new Set<() => void>()
const dirs = new Set<string>()
let installed = false

const runAll = (): void => {
  for (const child of children) {
    try {
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
    } catch {
      // the process is gone already
    }
  }
  children.clear()
  for (const hook of hooks) {
    try {
      hook()
    } catch {
      // best effort
    }
  }
  hooks.clear()
  for (const dir of dirs) {
    try {
      fs.rmSync(dir, { recursive: true, force: true })
    } catch {
      // best effort
    }
  }
  dirs.clear()
}

const install = (): void => {
  if (installed) return
  installed = true
  process.once("exit", runAll)
}

/** @internal */
export const trackChild = (child: ChildProcess): void => {
  install()
  children.add(child)
  child.once("exit", () => children.delete(child))
}

/** @internal */
export const untrackChild = (child: ChildProcess): void => {
  children.delete(child)
}

/** @internal */
export const trackHook = (hook: () => void): () => void => {
  install()
  hooks.add(hook)
  return () => {
    hooks.delete(hook)
  }
}

/** @internal */
export const trackDir = (dir: string): void => {
  install()
  dirs.add(dir)
}

/** @internal */
export const untrackDir = (dir: string): void => {
  dirs.delete(dir)
}

const OWNER_FILE = "owner.pid"

/** Record this process as the owner of `dir` (for `sweepStale` in later runs). @internal */
export const markOwner = (dir: string): void => {
  fs.writeFileSync(`${dir}/${OWNER_FILE}`, String(process.pid))
}

const zombie = (pid: number): boolean => {
  if (process.platform !== "linux") return false
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, "utf8")
    return stat.slice(stat.lastIndexOf(")") + 2, stat.lastIndexOf(")") + 3) === "Z"
  } catch {
    return false
  }
}

const alive = (pid: number): boolean => {
  try {
    process.kill(pid, 0)
    return !zombie(pid)
  } catch (e) {
    // EPERM: exists, owned by someone else
    return typeof e === "object" && e !== null && "code" in e && e.code === "EPERM"
  }
}

/** @internal */
export const isAlive = alive

const swept = new Set<string>()

/**
 * Once per process and prefix: remove temp dirs `<tmp>/<prefix>*` left behind by
 * test processes that died without cleaning up (e.g. SIGKILL). A dir is stale
 * when its `owner.pid` names a process that is gone; dirs without the file are
 * left alone. `beforeRemove` may stop a server still running in the dir.
 *
 * @internal
 */
export const sweepStale = (tmp: string, prefix: string, beforeRemove?: (dir: string) => void): void => {
  if (swept.has(prefix)) return
  swept.add(prefix)
  let entries: Array<string> = []
  try {
    entries = fs.readdirSync(tmp).filter((e) => e.startsWith(prefix))
  } catch {
    return
  }
  for (const entry of entries) {
    const dir = `${tmp}/${entry}`
    try {
      const owner = Number(fs.readFileSync(`${dir}/${OWNER_FILE}`, "utf8").trim())
      if (!Number.isInteger(owner) || owner <= 0 || alive(owner)) continue
      beforeRemove?.(dir)
      fs.rmSync(dir, { recursive: true, force: true })
    } catch {
      // not ours, or racing with another sweeper
    }
  }
}

/** Does process `pid` run a command line containing `name`? @internal */
export const processLooksLike = (pid: number, name: string): boolean => {
  if (!alive(pid)) return false
  try {
    if (process.platform === "linux") return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").includes(name)
    const ps = spawnSync("ps", ["-p", String(pid), "-o", "command="], { encoding: "utf8", timeout: 2000 })
    return typeof ps.stdout === "string" && ps.stdout.includes(name)
  } catch {
    return false
  }
}

/** Signal the process whose pid is the first line of `pidFile` if it runs `name`; wait up to `waitMillis` for it to go. @internal */
export const stopOrphan = (pidFile: string, name: string, signal: NodeJS.Signals, waitMillis: number): void => {
  let pid: number
  try {
    pid = Number(fs.readFileSync(pidFile, "utf8").split("\n")[0]?.trim())
  } catch {
    return
  }
  if (!Number.isInteger(pid) || pid <= 0 || !processLooksLike(pid, name)) return
  try {
    process.kill(pid, signal)
  } catch {
    return
  }
  const pause = new Int32Array(new SharedArrayBuffer(4))
  const deadline = Date.now() + waitMillis
  while (alive(pid) && Date.now() < deadline) Atomics.wait(pause, 0, 0, 10)
}
