/**
 * `npm test` sets itself up: once, before any test worker starts, make sure a
 * nats-server and PostgreSQL can be had (`NATS_URL` / `PG_URL`, local binaries,
 * a Docker engine, or, as root on Debian/Ubuntu, `apt-get install`), with
 * `Provision.resolve` from `@effect-nats/testing`, the same code the test
 * layers and `npm run demo` use. A present server costs a file check.
 *
 * When a server cannot be had, this says so up front and again at the end,
 * naming the test files that need it; those tests then fail (the layers give
 * the same message). They never skip.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { Effect, Either } from "effect"
import * as Provision from "./packages/testing/src/Provision.js"

const root = path.dirname(new URL(import.meta.url).pathname)
const testDirs = ["test", ...["packages", "examples"].flatMap((top) => {
  try {
    return fs.readdirSync(path.join(root, top)).map((name) => path.join(top, name, "test"))
  } catch {
    return []
  }
})]

const read = (file: string): string => {
  try {
    return fs.readFileSync(file, "utf8")
  } catch {
    return ""
  }
}

/** Test files that mention `marker`, themselves or in a local module they import. */
const testsUsing = (marker: RegExp): ReadonlyArray<string> =>
  testDirs.flatMap((dir) => {
    let files: Array<string> = []
    try {
      files = fs.readdirSync(path.join(root, dir)).filter((f) => f.endsWith(".test.ts"))
    } catch {
      return []
    }
    return files.filter((f) => {
      const text = read(path.join(root, dir, f))
      if (marker.test(text)) return true
      const locals = [...text.matchAll(/from "\.\/([^"]+?)(?:\.js|\.ts)?"/g)].map((m) => path.join(root, dir, `${m[1]}.ts`))
      return locals.some((local) => marker.test(read(local)))
    }).map((f) => path.join(dir, f))
  })

const NEEDS: Record<Provision.Server, { readonly marker: RegExp; readonly label: string }> = {
  "nats-server": { marker: /NatsTestServer|NatsTestCluster|NatsLive/, label: "nats-server" },
  postgres: { marker: /PostgresTestServer/, label: "PostgreSQL" }
}

const describe = (found: Provision.Found): string =>
  found._tag === "Env" ? found.url : found._tag === "Container" ? "Docker (testcontainers)" : found.path

export default async function setup(): Promise<() => void> {
  const started = Date.now()
  const problems: Array<string> = []
  const lines: Array<string> = []
  for (const server of ["nats-server", "postgres"] as const) {
    const result = await Effect.runPromise(
      Effect.either(Provision.resolve(server, { neededBy: "npm test", say: (line) => console.log(`[test setup] ${line}`) }))
    )
    if (Either.isRight(result)) {
      lines.push(`${server}: ${describe(result.right)}`)
    } else {
      const tests = testsUsing(NEEDS[server].marker)
      problems.push(
        `${NEEDS[server].label} is missing, so these ${tests.length} test files will fail: ${tests.join(", ")}\n  ${result.left.message}`
      )
    }
  }
  console.log(`[test setup] servers: ${lines.join("; ") || "none"} (checked in ${Date.now() - started} ms)`)
  const report = () => {
    for (const problem of problems) console.error(`\n[test setup] ${problem}\n`)
  }
  report()
  return report
}
