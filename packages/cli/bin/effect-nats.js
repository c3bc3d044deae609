#!/usr/bin/env node
// effect-nats launcher: the built CLI (dist/main.js) when present, else the
// TypeScript sources through tsx (in the repository, before a build).
import { spawn } from "node:child_process"
import { existsSync } from "node:fs"
import * as os from "node:os"
import { fileURLToPath } from "node:url"

const built = new URL("../dist/main.js", import.meta.url)

if (existsSync(built)) {
  await import(built.href)
} else {
  let tsx
  try {
    tsx = import.meta.resolve("tsx")
  } catch {
    console.error("effect-nats: dist/main.js is missing (run `npm run build`) and tsx is not installed to run the sources")
    process.exit(1)
  }
  const child = spawn(
    process.execPath,
    ["--conditions=source", "--import", tsx, fileURLToPath(new URL("../src/main.ts", import.meta.url)), ...process.argv.slice(2)],
    { stdio: "inherit" }
  )
  // Ctrl-C reaches the child from the terminal (same process group): forwarding
  // it too would be a second SIGINT, which makes runMain exit at once. SIGTERM
  // is usually sent to this process only: pass it on.
  process.on("SIGINT", () => {})
  process.on("SIGTERM", () => child.kill("SIGTERM"))
  child.on("error", (error) => {
    console.error(`effect-nats: ${error.message}`)
    process.exit(1)
  })
  child.on("exit", (code, signal) => {
    process.exit(code ?? 128 + (signal !== null ? (os.constants.signals[signal] ?? 0) : 0))
  })
}
