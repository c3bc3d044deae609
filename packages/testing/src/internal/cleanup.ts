/**
 * Last-resort cleanup when the test process exits without closing its scopes
 * (an uncaught error, `process.exit`, a worker torn down): SIGKILL the child
 * processes still registered, run the registered synchronous hooks and remove
 * the registered temp dirs. Only synchronous work is possible in an 'exit' handler.
 *
 * @internal
 */
import type { ChildProcess } from "node:child_process"
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
