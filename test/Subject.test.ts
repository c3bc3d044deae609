import { describe, expect, it } from "@effect/vitest"
import { Effect, Either } from "effect"
import { Subject } from "effect-nats"
import * as fc from "fast-check"

// The specification, written out independently of the implementation's regexes.
const separators = ["."]
const wildcards = ["*", ">"]
/** C0, DEL and C1 controls. */
const controls = [
  ...Array.from({ length: 0x20 }, (_, i) => String.fromCharCode(i)),
  ...Array.from({ length: 0x9f - 0x7f + 1 }, (_, i) => String.fromCharCode(0x7f + i))
]
/** Unicode White_Space (plus the BOM, which JS treats as a space). */
const spaces = [
  " ", "\u00a0", "\u1680",
  ...Array.from({ length: 0x200a - 0x2000 + 1 }, (_, i) => String.fromCharCode(0x2000 + i)),
  "\u2028", "\u2029", "\u202f", "\u205f", "\u3000", "\ufeff"
]
const forbidden = new Set([...separators, ...wildcards, ...controls, ...spaces])

/** The reasons a token holding exactly one forbidden character `c` may be refused with. */
const reasonsFor = (c: string): ReadonlyArray<Subject.InvalidReason> => {
  if (separators.includes(c)) return ["Separator"]
  if (wildcards.includes(c)) return ["Wildcard"]
  const isControl = controls.includes(c)
  const isSpace = spaces.includes(c) || /\s/u.test(c)
  if (isControl && isSpace) return ["Control", "Whitespace"] // e.g. tab, newline, NEL
  if (isControl) return ["Control"]
  if (c === "\u2028" || c === "\u2029" || c === "\ufeff") return ["Control", "Whitespace"]
  return ["Whitespace"]
}

const isSafe = (s: string): boolean => [...s].every((c) => !forbidden.has(c))
const strip = (s: string): string => [...s].filter((c) => !forbidden.has(c)).join("")

/** Tokens the spec accepts: any unicode (incl. emoji, accents, `$`, `{}`, zero-width chars), 1..256 UTF-16 units. */
const safeToken = (maxLength = 256): fc.Arbitrary<string> =>
  fc.oneof(
    fc.string({ unit: "binary", minLength: 1, maxLength: 40 }).map(strip),
    fc.string({ unit: "grapheme", minLength: 1, maxLength: 20 }).map(strip),
    fc.string({
      unit: fc.constantFrom("a", "Z", "0", "-", "_", "é", "日", "😀", "$", "{", "}", ":", "\u200b", "#"),
      minLength: 1,
      maxLength: 256
    })
  ).filter((s) => s.length > 0 && s.length <= maxLength)

/** A safe token with one forbidden character inserted somewhere. */
const hostileToken = fc.tuple(safeToken(100), fc.constantFrom(...forbidden), fc.nat()).map(([safe, bad, at]) => {
  const i = at % (safe.length + 1)
  return { token: safe.slice(0, i) + bad + safe.slice(i), bad }
})

const makeEither = (...tokens: ReadonlyArray<string>) => Effect.runSync(Effect.either(Subject.make(...tokens)))

describe("Subject", () => {
  describe("validateToken", () => {
    it("accepts every non-empty token of at most 256 chars free of '.', '*', '>', whitespace and controls", () => {
      fc.assert(
        fc.property(safeToken(), (token) => {
          expect(isSafe(token)).toBe(true)
          expect(Subject.validateToken(token)).toEqual(Either.right(token))
        }),
        { numRuns: 500 }
      )
    })

    it("refuses a lone surrogate (UTF-8 would turn it into U+FFFD: another subject), accepts a pair", () => {
      for (const token of ["a\ud800", "\udc00b", "x\udc00\ud800y"]) {
        const result = Subject.validateToken(token)
        expect(Either.isLeft(result) && result.left.reason).toBe("Encoding")
      }
      expect(Subject.validateToken("emoji-\ud83d\ude00")).toEqual(Either.right("emoji-\ud83d\ude00"))
    })

    it("assertName throws the typed InvalidSubjectError, prefixed with what was being defined", () => {
      const thrown = (() => {
        try {
          return Subject.assertName("Billing.x", "Event.make type", 3)
        } catch (e) {
          return e
        }
      })()
      expect(thrown).toBeInstanceOf(Subject.InvalidSubjectError)
      expect(thrown).toMatchObject({ reason: "Convention" })
      expect(String((thrown as Subject.InvalidSubjectError).message)).toMatch(/^Event\.make type: /)
    })

    it("refuses any token containing a forbidden character, with the reason for that character", () => {
      fc.assert(
        fc.property(hostileToken, ({ bad, token }) => {
          const result = Subject.validateToken(token)
          expect(Either.isLeft(result)).toBe(true)
          if (Either.isLeft(result)) {
            expect(result.left._tag).toBe("InvalidSubjectError")
            expect(result.left.token).toBe(token)
            expect(reasonsFor(bad)).toContain(result.left.reason)
            expect(result.left.message).toContain("invalid subject token")
          }
        }),
        { numRuns: 1000 }
      )
    })

    it("refuses every single forbidden character, each with its reason", () => {
      for (const c of forbidden) {
        const result = Subject.validateToken(`id${c}1`)
        expect(Either.isLeft(result), JSON.stringify(c)).toBe(true)
        if (Either.isLeft(result)) expect(reasonsFor(c), JSON.stringify(c)).toContain(result.left.reason)
      }
      const reason = (t: string) => Either.match(Subject.validateToken(t), { onLeft: (e) => e.reason, onRight: () => "ok" })
      expect(reason("a.b")).toBe("Separator")
      expect(reason(">")).toBe("Wildcard")
      expect(reason("*")).toBe("Wildcard")
      expect(reason("x y")).toBe("Whitespace")
      expect(reason("x\u3000y")).toBe("Whitespace")
      expect(reason("x\u0000y")).toBe("Control")
      expect(reason("x\u007fy")).toBe("Control")
    })

    it("length bounds: empty is refused, 256 chars accepted, 257 refused", () => {
      const reason = (t: string) => Either.match(Subject.validateToken(t), { onLeft: (e) => e.reason, onRight: () => "ok" })
      expect(reason("")).toBe("Empty")
      expect(reason("a".repeat(Subject.maxTokenLength))).toBe("ok")
      expect(Subject.maxTokenLength).toBe(256)
      expect(reason("a".repeat(257))).toBe("TooLong")
      // the message of a long token is shortened, not the whole token
      const long = Subject.validateToken("x".repeat(10_000))
      expect(Either.isLeft(long) && long.left.message.length < 200).toBe(true)
    })

    it("token() is the same check as an Effect", () => {
      expect(Effect.runSync(Subject.token("inv-42"))).toBe("inv-42")
      const e = Effect.runSync(Effect.flip(Subject.token("a.b")))
      expect(e.reason).toBe("Separator")
    })
  })

  describe("make", () => {
    it("refuses hostile user data instead of routing elsewhere", () => {
      for (const [hostile, reason] of [
        ["a.b", "Separator"],
        [">", "Wildcard"],
        ["*", "Wildcard"],
        ["inv.>", "Separator"],
        ["x y", "Whitespace"],
        ["", "Empty"],
        ["a\r\nPUB x 1", "Control"],
        ["a\tb", "Control"]
      ] as const) {
        const result = makeEither("billing", "invoice", hostile, "issued")
        expect(Either.isLeft(result), JSON.stringify(hostile)).toBe(true)
        if (Either.isLeft(result)) {
          expect(result.left.token).toBe(hostile)
          expect(result.left.reason).toBe(reason)
        }
      }
    })

    it("property: joining accepted tokens and splitting on '.' gives back exactly the tokens", () => {
      fc.assert(
        fc.property(fc.array(safeToken(), { minLength: 1, maxLength: 8 }), (tokens) => {
          const result = makeEither(...tokens)
          expect(Either.isRight(result)).toBe(true)
          if (Either.isRight(result)) {
            expect(result.right.split(".")).toEqual(tokens)
            // and nothing in it can act as a wildcard or break the protocol line
            expect(/[*>\s]/u.test(result.right)).toBe(false)
          }
        }),
        { numRuns: 500 }
      )
    })

    it("property: any hostile token anywhere in the list makes make fail with that token", () => {
      fc.assert(
        fc.property(
          fc.array(safeToken(50), { maxLength: 4 }),
          hostileToken,
          fc.array(safeToken(50), { maxLength: 4 }),
          (before, { token }, after) => {
            const result = makeEither(...before, token, ...after)
            expect(Either.isLeft(result)).toBe(true)
            if (Either.isLeft(result)) expect(result.left.token).toBe(token)
          }
        ),
        { numRuns: 500 }
      )
    })
  })

  describe("template", () => {
    it("fills typed placeholders with validated tokens", () => {
      const subject = Subject.template("a.{x}.b")
      expect(Effect.runSync(subject({ x: "inv-1" }))).toBe("a.inv-1.b")
      const orders = Subject.template("tenants.{tenant}.orders.{order}")
      expect(Effect.runSync(orders({ tenant: "acme", order: "o-1" }))).toBe("tenants.acme.orders.o-1")

      // @ts-expect-error a missing placeholder is a type error
      void orders({ tenant: "acme" })
      // @ts-expect-error an unknown placeholder is a type error
      void subject({ y: "1" })
    })

    it("refuses hostile values and values that are missing at runtime", () => {
      const subject = Subject.template("a.{x}.b")
      for (const hostile of ["a.b", ">", "*", "x y", ""]) {
        const e = Effect.runSync(Effect.flip(subject({ x: hostile })))
        expect(e._tag).toBe("InvalidSubjectError")
        expect(e.token).toBe(hostile)
      }
      const missing = Effect.runSync(Effect.flip(subject({} as { x: string })))
      expect(missing.reason).toBe("Empty")
    })

    it("property: a template filled with accepted tokens has one level per placeholder", () => {
      const subject = Subject.template("t.{tenant}.orders.{order}")
      fc.assert(
        fc.property(safeToken(), safeToken(), (tenant, order) => {
          const s = Effect.runSync(subject({ tenant, order }))
          expect(s.split(".")).toEqual(["t", tenant, "orders", order])
        })
      )
    })

    it("a malformed fixed part of the pattern is a programming error, thrown at definition", () => {
      expect(() => Subject.template("Billing.{id}")).toThrow(/lowercase/)
      expect(() => Subject.template("a..{id}")).toThrow()
      expect(() => Subject.template("a.>")).toThrow()
      expect(() => Subject.template("a.{bad-name}")).toThrow()
    })
  })

  describe("validateName", () => {
    it("accepts the <context>.<aggregate>.<event> convention", () => {
      expect(Subject.validateName("billing.invoice.issued", 3)).toEqual(Either.right("billing.invoice.issued"))
      expect(Subject.validateName("user-service.account_v2.created", 3)).toEqual(Either.right("user-service.account_v2.created"))
      expect(Either.isRight(Subject.validateName("orders.command.order.place"))).toBe(true)
    })

    it("refuses upper case, wrong token counts and bad tokens", () => {
      const reason = (name: string, tokens?: number) =>
        Either.match(Subject.validateName(name, tokens), { onLeft: (e) => e.reason, onRight: () => "ok" })
      expect(reason("Billing.invoice.issued", 3)).toBe("Convention")
      expect(reason("billing.invoiceIssued", 3)).toBe("Convention")
      expect(reason("billing.invoice", 3)).toBe("Convention")
      expect(reason("billing.invoice.issued.extra", 3)).toBe("Convention")
      expect(reason("billing.in voice.issued", 3)).toBe("Whitespace")
      expect(reason("billing..issued", 3)).toBe("Empty")
      expect(reason("billing.*.issued", 3)).toBe("Wildcard")
      expect(reason("billing.invoice.é", 3)).toBe("Convention")
      expect(reason("-billing.invoice.issued", 3)).toBe("Convention")
      const e = Subject.validateName("billing.invoice", 3)
      expect(Either.isLeft(e) && e.left.message).toContain("3")
    })

    it("assertName throws with the definition's description", () => {
      expect(() => Subject.assertName("Billing.Invoice.Issued", "Event.make", 3)).toThrow(/^Event\.make: /)
      expect(Subject.assertName("billing.invoice.issued", "Event.make", 3)).toBe("billing.invoice.issued")
    })
  })
})
