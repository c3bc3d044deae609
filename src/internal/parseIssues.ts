/**
 * The one way a Schema decode failure is told to a user (a `400`, a dead
 * letter, a log line): each issue as `path: message`, e.g.
 * `payload.qty: Expected a positive number, actual -1`, never the Schema's
 * whole signature.
 *
 * @internal
 */
import { ParseResult } from "effect"

/** One failed field: where (`[]` for the value itself) and what is wrong. */
export interface Issue {
  readonly path: ReadonlyArray<string | number>
  readonly message: string
}

/** Every issue of a decode failure. */
export const issues = (error: ParseResult.ParseError): Array<Issue> =>
  ParseResult.ArrayFormatter.formatErrorSync(error).map((issue) => ({
    path: issue.path.map((p) => typeof p === "symbol" ? String(p) : p),
    message: issue.message
  }))

/** Issues on one line: `payload.qty: Expected a positive number, actual -1; payload.sku: is missing`. */
export const describeIssues = (list: ReadonlyArray<Issue>): string =>
  list.map((i) => `${i.path.length > 0 ? i.path.join(".") : "(root)"}: ${i.message}`).join("; ")

/** A decode failure on one line (see {@link describeIssues}). */
export const describe = (error: ParseResult.ParseError): string => describeIssues(issues(error))
