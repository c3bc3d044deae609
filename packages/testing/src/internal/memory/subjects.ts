/**
 * NATS subject rules, as the server applies them: `.`-separated tokens, `*`
 * matches one token, `>` (last token only) matches one or more.
 */

const whitespace = /\s/

/** A subject a message can be published on: non-empty tokens, no wildcards, no whitespace. */
export const isPublishable = (subject: string): boolean => {
  if (subject.length === 0 || whitespace.test(subject)) return false
  for (const t of subject.split(".")) {
    if (t.length === 0 || t === "*" || t === ">") return false
  }
  return true
}

/** A subject a subscription or a stream can listen on (wildcards allowed, `>` last). */
export const isFilter = (subject: string): boolean => {
  if (subject.length === 0 || whitespace.test(subject)) return false
  const tokens = subject.split(".")
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i]!
    if (t.length === 0) return false
    if (t === ">" && i !== tokens.length - 1) return false
  }
  return true
}

/** A pre-split filter, matched against subjects without allocating. */
export class Filter {
  readonly tokens: ReadonlyArray<string>
  readonly literal: boolean
  constructor(readonly pattern: string) {
    this.tokens = pattern.split(".")
    this.literal = !this.tokens.some((t) => t === "*" || t === ">")
  }

  matches(subject: string): boolean {
    if (this.literal) return subject === this.pattern
    return matchTokens(this.tokens, subject.split("."))
  }
}

const matchTokens = (pattern: ReadonlyArray<string>, subject: ReadonlyArray<string>): boolean => {
  for (let i = 0; i < pattern.length; i++) {
    const p = pattern[i]!
    if (p === ">") return subject.length > i
    if (i >= subject.length) return false
    if (p !== "*" && p !== subject[i]) return false
  }
  return pattern.length === subject.length
}

/** Does `subject` match the filter `pattern`? */
export const matches = (pattern: string, subject: string): boolean =>
  pattern === subject || matchTokens(pattern.split("."), subject.split("."))

/** Can some subject match both filters? (the server's "subjects overlap" check) */
export const overlaps = (a: string, b: string): boolean => {
  const ta = a.split(".")
  const tb = b.split(".")
  for (let i = 0; i < Math.max(ta.length, tb.length); i++) {
    const x = ta[i]
    const y = tb[i]
    if (x === ">" || y === ">") return x !== undefined && y !== undefined
    if (x === undefined || y === undefined) return false
    if (x !== "*" && y !== "*" && x !== y) return false
  }
  return true
}

/** Is every subject matching `inner` also matched by `outer`? */
export const isSubset = (inner: string, outer: string): boolean => {
  const ti = inner.split(".")
  const to = outer.split(".")
  for (let i = 0; i < to.length; i++) {
    const o = to[i]!
    const x = ti[i]
    if (o === ">") return x !== undefined
    if (x === undefined) return false
    if (x === ">") return false
    if (o === "*") continue
    if (x === "*" || x !== o) return false
  }
  return ti.length === to.length
}
