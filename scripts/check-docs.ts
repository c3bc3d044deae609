/**
 * Documentation is code: every ```ts block of README.md and the package
 * READMEs, and every `@example` in the doc comments of the public modules
 * (`src/*.ts`, `packages/* /src/*.ts`), is written to `.docs-check/` (inside
 * the repo, so the workspace packages resolve as a user's imports would) and
 * type-checked with tsc against the public API. The examples import a user's
 * events, commands and handlers as `./events.js`, `./billing.js` and
 * `./handlers.js`: scripts/docs-fixtures/ provides them.
 *
 * A README block that is deliberately a fragment is preceded by
 * `<!-- not-checked: why -->`; a block preceded by `<!-- runs: test -->` (a
 * vitest file) or `<!-- runs: main -->` (a program) is also run, by
 * test/Docs.test.ts.
 *
 * `npm run check-docs` exits non-zero when a block or an example stops compiling.
 */
import { spawnSync } from "node:child_process"
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
export const outDir = path.join(root, ".docs-check")

/** One ```ts block: where it is, what it says, and what is done with it. */
export interface Block {
  /** e.g. `README.md:47` (the fence's line) */
  readonly source: string
  /** the file it is written to, inside `.docs-check/` */
  readonly file: string
  readonly code: string
  /** the reason given by `<!-- not-checked: ... -->` */
  readonly notChecked?: string | undefined
  readonly runs?: "test" | "main" | undefined
}

/** The READMEs whose blocks are checked: the root one and each package's and example's. */
export const readmes = (): Array<string> => [
  "README.md",
  ...["packages", "examples"].flatMap((top) =>
    fs.readdirSync(path.join(root, top)).map((name) => path.join(top, name, "README.md"))
      .filter((file) => fs.existsSync(path.join(root, file)))
  )
]

/** The ```ts blocks of one README, with the marker comment before each. */
export const blocksOf = (readme: string): Array<Block> => {
  const lines = fs.readFileSync(path.join(root, readme), "utf8").split("\n")
  const blocks: Array<Block> = []
  for (let i = 0; i < lines.length; i++) {
    if (lines[i]!.trim() !== "```ts") continue
    const start = i
    const body: Array<string> = []
    for (i++; i < lines.length && lines[i]!.trim() !== "```"; i++) body.push(lines[i]!)
    let before = start - 1
    while (before >= 0 && lines[before]!.trim() === "") before--
    const marker = before >= 0 ? /^<!--\s*(not-checked|runs):\s*(.*?)\s*-->$/.exec(lines[before]!.trim()) : null
    const name = `${readme.replace(/\.md$/, "").replace(/[/\\]/g, "-")}-${start + 1}`
    blocks.push({
      source: `${readme}:${start + 1}`,
      file: path.join(outDir, marker?.[1] === "runs" && marker[2] === "test" ? `${name}.test.ts` : `${name}.ts`),
      code: body.join("\n") + "\n",
      notChecked: marker?.[1] === "not-checked" ? marker[2] : undefined,
      runs: marker?.[1] === "runs" ? (marker[2] === "test" ? "test" : "main") : undefined
    })
  }
  return blocks
}

/** The public modules: what the API reference documents and whose `@example`s are checked. */
export const publicModules = (): Array<string> => [
  "src",
  ...fs.readdirSync(path.join(root, "packages")).map((name) => path.join("packages", name, "src"))
].flatMap((dir) =>
  fs.readdirSync(path.join(root, dir)).filter((f) => f.endsWith(".ts") && f !== "index.ts").map((f) => path.join(dir, f))
)

/** The `@example` blocks of one module's doc comments. */
export const examplesOf = (module: string): Array<Block> => {
  const lines = fs.readFileSync(path.join(root, module), "utf8").split("\n")
  const examples: Array<Block> = []
  for (let i = 0; i < lines.length; i++) {
    if (!/^\s*\*\s*@example\b/.test(lines[i]!)) continue
    while (i < lines.length && !/^\s*\*\s*```ts\s*$/.test(lines[i]!)) i++
    const start = i
    const body: Array<string> = []
    for (i++; i < lines.length && !/^\s*\*\s*```\s*$/.test(lines[i]!); i++) body.push(lines[i]!.replace(/^\s*\* ?/, ""))
    const name = `${module.replace(/\.ts$/, "").replace(/[/\\]/g, "-")}-${start + 1}`
    examples.push({ source: `${module}:${start + 1}`, file: path.join(outDir, "examples", `${name}.ts`), code: body.join("\n") + "\n" })
  }
  return examples
}

const fixtures = path.join(root, "scripts", "docs-fixtures")

/** Write every checked block to `.docs-check/`, with a tsconfig extending the project's. */
export const writeBlocks = (): Array<Block> => {
  const blocks = [...readmes().flatMap(blocksOf), ...publicModules().flatMap(examplesOf)]
  fs.rmSync(outDir, { recursive: true, force: true })
  fs.mkdirSync(path.join(outDir, "examples"), { recursive: true })
  // an example shows a use and may leave what it defines unused
  const compilerOptions = { noEmit: true, noUnusedLocals: false }
  fs.writeFileSync(
    path.join(outDir, "tsconfig.json"),
    JSON.stringify({ extends: "../tsconfig.base.json", compilerOptions, include: ["*.ts", "examples/*.ts"] }, null, 2)
  )
  for (const f of fs.readdirSync(fixtures)) fs.copyFileSync(path.join(fixtures, f), path.join(outDir, "examples", f))
  for (const block of blocks) {
    // `export {}`: each block is a module of its own, whether or not it imports
    if (block.notChecked === undefined) fs.writeFileSync(block.file, `// ${block.source}\n${block.code}export {}\n`)
  }
  return blocks
}

/** Type-check the written blocks: tsc's output (with README lines), and whether it passed. */
export const typecheck = (): { readonly ok: boolean; readonly output: string } => {
  const tsc = spawnSync(process.execPath, [path.join(root, "node_modules/typescript/bin/tsc"), "-p", outDir], {
    cwd: root,
    encoding: "utf8"
  })
  return { ok: tsc.status === 0, output: `${tsc.stdout}${tsc.stderr}` }
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const blocks = writeBlocks()
  const skipped = blocks.filter((b) => b.notChecked !== undefined)
  const result = typecheck()
  console.log(`check-docs: ${blocks.length - skipped.length} README blocks and @examples type-checked, ${skipped.length} fragments not checked`)
  for (const b of skipped) console.log(`  not checked: ${b.source} (${b.notChecked})`)
  if (!result.ok) {
    console.error(result.output)
    process.exitCode = 1
  }
}
