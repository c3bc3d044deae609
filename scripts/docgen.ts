/**
 * The API reference, generated from the doc comments: one HTML page per
 * public module (those each package's `index.ts` exports as a namespace),
 * every export with its signature, its comment, its `@example`, `@since`
 * and `@category`, and an index of the packages. Pages are self-contained
 * (no script, no network), written to `docs/api/`.
 *
 * `npm run docs` writes them; test/ApiReference.test.ts checks that the
 * pages in git are what the comments say now and loads each in Chromium.
 */
import * as fs from "node:fs"
import * as path from "node:path"
import { fileURLToPath } from "node:url"

export const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..")
export const apiDir = path.join(root, "docs", "api")

/** One documented export. */
export interface Entry {
  readonly name: string
  readonly kind: string
  readonly signature: string
  readonly doc: string
  readonly examples: ReadonlyArray<string>
  readonly since: string | undefined
  readonly category: string
}

/** One public module: `Publisher` of `effect-nats`. */
export interface Module {
  readonly pkg: string
  readonly name: string
  readonly source: string
  readonly doc: string
  readonly entries: ReadonlyArray<Entry>
}

/** The packages: name and source folder. */
export const packages = (): ReadonlyArray<{ readonly name: string; readonly dir: string }> => [
  { name: "effect-nats", dir: "src" },
  ...fs.readdirSync(path.join(root, "packages")).sort().map((dir) => ({
    name: (JSON.parse(fs.readFileSync(path.join(root, "packages", dir, "package.json"), "utf8")) as { name: string }).name,
    dir: path.join("packages", dir, "src")
  }))
]

/** The modules a package's `index.ts` exports (`export * as Name from "./Name.js"`). */
export const modulesOf = (dir: string): ReadonlyArray<string> =>
  [...fs.readFileSync(path.join(root, dir, "index.ts"), "utf8").matchAll(/export \* as (\w+) from "\.\/(\w+)\.js"/g)]
    .map((m) => path.join(dir, `${m[2]}.ts`))

interface Comment {
  readonly text: string
  readonly examples: Array<string>
  readonly tags: Record<string, string>
}

/** A doc comment's lines without the ` * `: the text, each ```ts example, and its tags. */
const parseComment = (lines: ReadonlyArray<string>): Comment => {
  const text: Array<string> = []
  const examples: Array<string> = []
  const tags: Record<string, string> = {}
  let example: Array<string> | undefined
  for (const line of lines) {
    if (example !== undefined) {
      if (line.trim() === "```") {
        examples.push(example.join("\n"))
        example = undefined
      } else example.push(line)
      continue
    }
    if (line.trim() === "```ts") example = []
    else if (/^@(\w+)/.test(line.trim())) {
      const [, tag, value] = /^@(\w+)\s*(.*)$/.exec(line.trim())!
      if (tag !== "example") tags[tag!] = value!
    } else text.push(line)
  }
  return { text: text.join("\n").trim(), examples, tags }
}

const commentLines = (raw: string): Array<string> =>
  raw.replace(/^\/\*\*/, "").replace(/\*\/$/, "").split("\n").map((l) => l.replace(/^\s*\* ?/, ""))

/**
 * A function's or constant's declaration without its body: scan at bracket
 * depth 0 for the initializer's `=`; an arrow function keeps its parameters
 * and return type (up to the `=>` after them), a constant its type or the
 * start of its value.
 */
const headOf = (text: string): string => {
  let depth = 0
  let init = -1
  let closedParams = false
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!
    if (text.startsWith("=>", i)) {
      if (depth === 0 && init >= 0 && closedParams) return text.slice(0, i).trimEnd()
      i++
      continue
    }
    if ("([{<".includes(c)) depth++
    else if (")]}>".includes(c)) {
      depth--
      if (depth === 0 && c === ")" && init >= 0) closedParams = true
    } else if (c === "=" && depth === 0 && init < 0) {
      init = i
      const value = text.slice(i + 1).trimStart()
      const annotated = /^(export\s+)?const\s+\w+\s*:/.test(text.slice(0, i))
      if (annotated && !/^(<|\()/.test(value)) return text.slice(0, i).trimEnd()
      if (!/^(<|\()/.test(value)) return (text.slice(0, i + 1) + " " + value.split("\n")[0]!).slice(0, 160)
    } else if (c === "\n" && depth === 0 && init < 0 && /\S/.test(text.slice(0, i)) && !/[,(<:|&]\s*$/.test(text.slice(0, i))) {
      return text.slice(0, i)
    }
  }
  return text.split("\n")[0]!
}

/** The declaration as a reader wants it: an interface or type whole, a class's first line, else its head. */
const signatureOf = (lines: ReadonlyArray<string>, kind: string): string => {
  if (kind === "class" || kind === "abstract class") return lines[0]!.replace(/\s*\{\s*$/, "").replace(/^export /, "")
  if (kind === "interface" || kind === "type") {
    const out: Array<string> = []
    for (const line of lines.slice(0, 80)) {
      out.push(line)
      if (out.length === 1 && !/[{(<,|&=]\s*$/.test(line)) break
      if (out.length > 1 && /^[}\]>)]/.test(line)) break
    }
    return out.join("\n").replace(/^export /, "")
  }
  // the declaration up to the next blank line or comment: enough for its head
  const end = lines.findIndex((l, i) => i > 0 && (l.trim() === "" || l.trimStart().startsWith("/**")))
  return headOf(lines.slice(0, end < 0 ? 40 : end).join("\n")).replace(/^export /, "")
}

/** Read one module's doc comments. */
export const readModule = (pkg: string, source: string): Module => {
  const text = fs.readFileSync(path.join(root, source), "utf8")
  const lines = text.split("\n")
  const head = /^\/\*\*[\s\S]*?\*\//.exec(text)
  const entries: Array<Entry> = []
  for (let i = 0; i < lines.length; i++) {
    const decl = /^export (?:declare )?(const|class|interface|type|function|abstract class)\s+(\w+)/.exec(lines[i]!)
    if (decl === null) continue
    // the comment right above the declaration
    let end = i - 1
    if (end < 0 || lines[end]!.trim() !== "*/") continue
    let start = end
    while (start > 0 && !lines[start]!.trimStart().startsWith("/**")) start--
    const comment = parseComment(commentLines(lines.slice(start, end + 1).join("\n")))
    entries.push({
      name: decl[2]!,
      kind: decl[1]!,
      signature: signatureOf(lines.slice(i), decl[1]!),
      doc: comment.text,
      examples: comment.examples,
      since: comment.tags["since"],
      category: comment.tags["category"] ?? "other"
    })
  }
  return {
    pkg,
    name: path.basename(source, ".ts"),
    source,
    doc: head === null ? "" : parseComment(commentLines(head[0])).text,
    entries
  }
}

/** Every public module of every package. */
export const readAll = (): ReadonlyArray<Module> =>
  packages().flatMap((p) => modulesOf(p.dir).map((source) => readModule(p.name, source)))

const escape = (s: string): string => s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;")

/** `code` and {@link X}, in escaped text. */
const inline = (s: string): string =>
  escape(s).replace(/\{@link\s+([^}]+)\}/g, "<code>$1</code>").replace(/`([^`]+)`/g, "<code>$1</code>")

/** A comment's first sentence, on one line. */
const summary = (text: string): string => {
  const flat = text.split(/\n\s*\n/)[0]!.replace(/\s+/g, " ").trim()
  const end = flat.search(/\.(\s|$)/)
  return end < 0 ? flat : flat.slice(0, end + 1)
}

/** A comment's text: paragraphs, `- ` lists, `code` and {@link X}. */
const prose = (text: string): string =>
  text.split(/\n\s*\n/).filter((p) => p.trim() !== "").map((para) => {
    const lines = para.split("\n")
    if (lines.every((l) => /^\s*- /.test(l) || /^\s{2,}\S/.test(l))) {
      const items = para.split(/\n(?=\s*- )/).map((item) => `<li>${inline(item.replace(/^\s*- /, ""))}</li>`)
      return `<ul>${items.join("")}</ul>`
    }
    return `<p>${inline(para)}</p>`
  }).join("\n")

const pageFile = (m: Pick<Module, "pkg" | "name">): string => `${m.pkg.replace(/^@/, "").replace("/", "-")}/${m.name}.html`

const style = `body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#1b1b1b}
pre{background:#f4f4f4;padding:.75rem;overflow:auto;border-radius:4px}code{font-family:ui-monospace,monospace;font-size:90%}
h3{margin-top:2rem;border-top:1px solid #ddd;padding-top:1rem}.meta{color:#666;font-size:85%}nav a{margin-right:.5rem}`

const page = (title: string, body: string, up: string): string =>
  `<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>${escape(title)}</title>\n<style>${style}</style>\n</head>\n<body>\n${
    up === "" ? "" : `<nav><a href="${up}">API reference</a></nav>\n`
  }${body}\n</body>\n</html>\n`

/** The page of one module. */
export const renderModule = (m: Module): string => {
  const categories = [...new Set(m.entries.map((e) => e.category))].sort()
  const toc = categories.map((c) =>
    `<li>${escape(c)}: ${
      m.entries.filter((e) => e.category === c).map((e) => `<a href="#${e.name}">${e.name}</a>`).join(", ")
    }</li>`
  ).join("\n")
  const entries = categories.flatMap((c) => m.entries.filter((e) => e.category === c)).map((e) =>
    `<section class="entry">\n<h3 id="${e.name}">${e.name} <span class="meta">${escape(e.kind)} · ${escape(e.category)}${
      e.since === undefined ? "" : ` · since ${escape(e.since)}`
    }</span></h3>\n<pre><code>${escape(e.signature)}</code></pre>\n${prose(e.doc)}\n${
      e.examples.map((x) => `<p class="meta">Example</p>\n<pre><code>${escape(x)}</code></pre>`).join("\n")
    }\n</section>`
  ).join("\n")
  return page(
    `${m.name} · ${m.pkg}`,
    `<h1>${m.name}</h1>\n<p class="meta"><code>import { ${m.name} } from "${m.pkg}"</code> · source <code>${m.source}</code></p>\n${
      prose(m.doc)
    }\n<h2>Exports</h2>\n<ul>\n${toc}\n</ul>\n${entries}`,
    "../index.html"
  )
}

/** The index: each package and its modules. */
export const renderIndex = (modules: ReadonlyArray<Module>): string => {
  const pkgs = [...new Set(modules.map((m) => m.pkg))]
  const body = pkgs.map((pkg) =>
    `<h2>${escape(pkg)}</h2>\n<ul>\n${
      modules.filter((m) => m.pkg === pkg).map((m) =>
        `<li><a href="${pageFile(m)}">${m.name}</a>: ${inline(summary(m.doc))}</li>`
      ).join("\n")
    }\n</ul>`
  ).join("\n")
  return page("effect-nats API reference", `<h1>effect-nats API reference</h1>\n<p>Generated from the doc comments by <code>npm run docs</code>.</p>\n${body}`, "")
}

/** Every page: path under `docs/api/` and its HTML. */
export const render = (): ReadonlyArray<{ readonly file: string; readonly html: string }> => {
  const modules = readAll()
  return [{ file: "index.html", html: renderIndex(modules) }, ...modules.map((m) => ({ file: pageFile(m), html: renderModule(m) }))]
}

/** Write the pages to `dir` (replacing what was there). */
export const write = (dir: string = apiDir): ReadonlyArray<string> => {
  const pages = render()
  fs.rmSync(dir, { recursive: true, force: true })
  for (const p of pages) {
    fs.mkdirSync(path.dirname(path.join(dir, p.file)), { recursive: true })
    fs.writeFileSync(path.join(dir, p.file), p.html)
  }
  return pages.map((p) => p.file)
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const files = write()
  console.log(`docs: ${files.length} pages in ${path.relative(root, apiDir)}/`)
}
