/**
 * README code blocks are code: every ```ts block of README.md and the
 * package READMEs is written to `.docs-check/` (inside the repo, so the
 * workspace packages resolve as a user's imports would) and type-checked
 * with tsc against the public API. A block that is deliberately a fragment
 * is preceded by `<!-- not-checked: why -->`; a block preceded by
 * `<!-- runs: test -->` (a vitest file) or `<!-- runs: main -->` (a program)
 * is also run, by test/Docs.test.ts.
 *
 * `npm run check-docs` exits non-zero when a block stops compiling.
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

/** Write every checked block to `.docs-check/`, with a tsconfig extending the project's. */
export const writeBlocks = (): Array<Block> => {
  const blocks = readmes().flatMap(blocksOf)
  fs.rmSync(outDir, { recursive: true, force: true })
  fs.mkdirSync(outDir, { recursive: true })
  fs.writeFileSync(
    path.join(outDir, "tsconfig.json"),
    JSON.stringify({ extends: "../tsconfig.base.json", compilerOptions: { noEmit: true }, include: ["*.ts"] }, null, 2)
  )
  for (const block of blocks) {
    if (block.notChecked === undefined) fs.writeFileSync(block.file, `// ${block.source}\n${block.code}`)
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
  console.log(`check-docs: ${blocks.length - skipped.length} blocks type-checked, ${skipped.length} fragments not checked`)
  for (const b of skipped) console.log(`  not checked: ${b.source} (${b.notChecked})`)
  if (!result.ok) {
    console.error(result.output)
    process.exitCode = 1
  }
}
