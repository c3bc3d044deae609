/**
 * JSON bodies within limits: depth and size are checked on the raw bytes,
 * by one loop without recursion, before `JSON.parse` and before anything
 * recursive (Schema decoding, error formatting, `JSON.stringify`) sees them.
 *
 * @internal
 */
import { Either } from "effect"

/** Why a body was refused. */
export interface Problem {
  readonly reason: "TooDeep" | "TooLarge"
  readonly message: string
}

const QUOTE = 0x22
const BACKSLASH = 0x5c
const OPEN_ARRAY = 0x5b
const CLOSE_ARRAY = 0x5d
const OPEN_OBJECT = 0x7b
const CLOSE_OBJECT = 0x7d

/** Are there more than `max` opening brackets in the bytes (inside strings or not)? */
const hasMoreThan = (bytes: Uint8Array, max: number): boolean => {
  let count = 0
  for (let i = bytes.indexOf(OPEN_OBJECT); i !== -1; i = bytes.indexOf(OPEN_OBJECT, i + 1)) {
    if (++count > max) return true
  }
  for (let i = bytes.indexOf(OPEN_ARRAY); i !== -1; i = bytes.indexOf(OPEN_ARRAY, i + 1)) {
    if (++count > max) return true
  }
  return false
}

/**
 * Does the nesting of arrays and objects go deeper than `maxDepth`? Brackets
 * inside strings do not count (UTF-8 continuation bytes are all >= 0x80, so
 * they never look like a bracket or a quote). Works on any bytes, JSON or
 * not: it only over-counts what `JSON.parse` would refuse anyway.
 */
export const tooDeep = (bytes: Uint8Array, maxDepth: number): boolean => {
  // `maxDepth + 1` levels need that many opening brackets (counted first with the native `indexOf`: a
  // usual body has a few, and the scan below costs a step per byte)
  if (bytes.length <= maxDepth || !hasMoreThan(bytes, maxDepth)) return false
  let depth = 0
  const n = bytes.length
  for (let i = 0; i < n; i++) {
    const b = bytes[i]!
    if (b === QUOTE) {
      // skip the string
      for (i++; i < n; i++) {
        const c = bytes[i]!
        if (c === BACKSLASH) i++
        else if (c === QUOTE) break
      }
    } else if (b === OPEN_ARRAY || b === OPEN_OBJECT) {
      if (++depth > maxDepth) return true
    } else if (b === CLOSE_ARRAY || b === CLOSE_OBJECT) {
      depth--
    }
  }
  return false
}

/** The first limit the bytes go over, if any. */
export const exceeds = (bytes: Uint8Array, maxDepth: number, maxBytes: number): Problem | undefined => {
  if (bytes.length > maxBytes) {
    return { reason: "TooLarge", message: `body of ${bytes.length} bytes exceeds the limit of ${maxBytes}` }
  }
  if (tooDeep(bytes, maxDepth)) {
    return { reason: "TooDeep", message: `nesting deeper than ${maxDepth} levels` }
  }
  return undefined
}

const textDecoder = new TextDecoder()

/** Parse JSON within the limits. */
export const parse = (
  bytes: Uint8Array,
  maxDepth: number,
  maxBytes: number
): Either.Either<unknown, { readonly reason: Problem["reason"] | "InvalidJson"; readonly message: string }> => {
  const problem = exceeds(bytes, maxDepth, maxBytes)
  if (problem !== undefined) return Either.left(problem)
  try {
    return Either.right(JSON.parse(textDecoder.decode(bytes)))
  } catch (e) {
    return Either.left({ reason: "InvalidJson", message: `invalid JSON: ${e instanceof Error ? e.message : String(e)}` })
  }
}
