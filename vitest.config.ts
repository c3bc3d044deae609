import { defineConfig } from "vitest/config"
import projects from "./vitest.workspace.js"

export default defineConfig({
  test: {
    projects,
    // once, before the workers: find (or, as root on Debian/Ubuntu, install) nats-server and PostgreSQL
    globalSetup: ["./vitest.globalSetup.ts"],
    // servers are real processes: keep files in parallel but bounded on a 2-core machine
    maxWorkers: 2,
    minWorkers: 1
  }
})
