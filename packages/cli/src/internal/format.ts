/** Plain-text formatting helpers for the CLI's output. @internal */

/** Left-aligned columns separated by two spaces; the last column is not padded. */
export const table = (header: ReadonlyArray<string>, rows: ReadonlyArray<ReadonlyArray<string>>): string => {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)))
  const line = (cells: ReadonlyArray<string>) =>
    cells.map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i] ?? 0))).join("  ").trimEnd()
  return [line(header), ...rows.map(line)].join("\n")
}

/** `label value` lines with the labels padded to one width; multi-line values are indented. */
export const fields = (entries: ReadonlyArray<readonly [string, string]>, indent = "  "): string => {
  const width = Math.max(0, ...entries.map(([k]) => k.length))
  const pad = " ".repeat(width + 2)
  return entries
    .map(([k, v]) => `${indent}${k.padEnd(width)}  ${v.split("\n").join(`\n${indent}${pad}`)}`)
    .join("\n")
}

/** Indent every line. */
export const indent = (text: string, by = "  "): string =>
  text.split("\n").map((l) => (l === "" ? l : by + l)).join("\n")

const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"] as const

/** 1536 → "1.5 KiB". */
export const bytes = (n: number): string => {
  if (!Number.isFinite(n) || n < 0) return String(n)
  let value = n
  let unit = 0
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024
    unit++
  }
  const digits = unit === 0 || value >= 100 ? 0 : value >= 10 ? 1 : 2
  return `${value.toFixed(digits).replace(/\.0+$/, "")} ${units[unit]}`
}

/** A JetStream limit: -1 (or 0 for some byte limits) means unlimited. */
export const limit = (n: number, format: (n: number) => string = String): string =>
  n < 0 ? "unlimited" : format(n)

/** "used / limit". */
export const usage = (used: number, max: number, format: (n: number) => string = String): string =>
  `${format(used)} / ${limit(max, format)}`
