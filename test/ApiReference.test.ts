import { describe, expect, it } from "@effect/vitest"
import { execFile } from "node:child_process"
import * as fs from "node:fs"
import * as os from "node:os"
import * as path from "node:path"
import { pathToFileURL } from "node:url"
import { Effect } from "effect"
import * as Docgen from "../scripts/docgen.js"

// The API reference (docs/api/, `npm run docs`) is generated from the doc comments: the pages in
// git must be what the comments say now, and each must load in a real browser (headless Chromium,
// Debian's `chromium` package; .ci/run installs it) with its title, every export and working links.
const pages = Docgen.render()
const modules = Docgen.readAll()

/** The page's DOM after Chromium loaded it. */
const dumpDom = (file: string) =>
  Effect.acquireUseRelease(
    Effect.sync(() => fs.mkdtempSync(path.join(os.tmpdir(), "effect-nats-chromium-"))),
    (profile) =>
      Effect.async<string, Error>((resume) => {
        execFile("chromium", [
          "--headless",
          "--no-sandbox",
          "--disable-gpu",
          `--user-data-dir=${profile}`,
          "--dump-dom",
          pathToFileURL(file).href
        ], { timeout: 30_000, maxBuffer: 16 * 1024 * 1024 }, (error, stdout) => {
          resume(error === null ? Effect.succeed(stdout) : Effect.fail(new Error(`chromium (apt-get install chromium): ${error.message}`)))
        })
      }),
    (profile) => Effect.sync(() => fs.rmSync(profile, { recursive: true, force: true }))
  )

describe("API reference", () => {
  it("covers every public module of every package, and the pages in git are what the doc comments say", () => {
    expect([...new Set(modules.map((m) => m.pkg))]).toEqual([
      "effect-nats",
      "@effect-nats/cli",
      "@effect-nats/opentelemetry",
      "@effect-nats/sql",
      "@effect-nats/testing"
    ])
    for (const m of modules) expect(m.entries.length, `${m.pkg} ${m.name}`).toBeGreaterThan(0)
    const inGit = (dir: string): Array<string> =>
      fs.readdirSync(dir, { withFileTypes: true }).flatMap((d) =>
        d.isDirectory() ? inGit(path.join(dir, d.name)) : [path.relative(Docgen.apiDir, path.join(dir, d.name))]
      )
    expect(inGit(Docgen.apiDir).sort(), "run `npm run docs`").toEqual(pages.map((p) => p.file).sort())
    for (const p of pages) {
      expect(fs.readFileSync(path.join(Docgen.apiDir, p.file), "utf8") === p.html, `${p.file} is stale: run \`npm run docs\``).toBe(true)
    }
  })

  it.live("each page loads in headless Chromium: its title, every export, and links that resolve", () =>
    Effect.forEach(pages, (p) =>
      Effect.gen(function*() {
        const file = path.join(Docgen.apiDir, p.file)
        const dom = yield* dumpDom(file)
        const m = modules.find((m) => p.file.endsWith(`/${m.name}.html`) && p.file.startsWith(m.pkg.replace(/^@/, "").replace("/", "-")))
        const title = /<h1>([^<]*)<\/h1>/.exec(dom)?.[1]
        expect(title, p.file).toBe(m === undefined ? "effect-nats API reference" : m.name)
        if (m !== undefined) {
          expect(dom.match(/<section class="entry">/g)?.length, p.file).toBe(m.entries.length)
          for (const e of m.entries) expect(dom, `${p.file}#${e.name}`).toContain(`id="${e.name}"`)
        } else {
          expect(dom.match(/<li><a href=/g)?.length).toBe(modules.length)
        }
        for (const [, href] of dom.matchAll(/href="([^"#]+)(?:#[^"]*)?"/g)) {
          expect(fs.existsSync(path.resolve(path.dirname(file), href!)), `${p.file} -> ${href}`).toBe(true)
        }
      }), { concurrency: 3, discard: true }), 180_000)
})
