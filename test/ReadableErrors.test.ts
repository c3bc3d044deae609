import { describe, expect, it } from "@effect/vitest"
import { Either, Schema } from "effect"
import { failureMessage } from "../src/internal/commandReply.js"
import * as ParseIssues from "../src/internal/parseIssues.js"

class OutOfStock extends Schema.TaggedError<OutOfStock>()("OutOfStock", { sku: Schema.String, left: Schema.Number }) {
  readonly code = "409"
}

class Described extends Schema.TaggedError<Described>()("Described", { sku: Schema.String }) {
  readonly code = "409"
  override get message() {
    return `no ${this.sku} left`
  }
}

class WithMessage extends Schema.TaggedError<WithMessage>()("WithMessage", { message: Schema.String }) {
  readonly code = "400"
}

describe("errors a user reads", () => {
  it("a decode failure is one line per field: path and problem, no Schema signature", () => {
    const Order = Schema.Struct({ payload: Schema.Struct({ qty: Schema.Positive, sku: Schema.String }) })
    const result = Schema.decodeUnknownEither(Order, { errors: "all" })({ payload: { qty: -1 } })
    if (Either.isRight(result)) throw new Error("decoded")
    expect(ParseIssues.describe(result.left)).toBe("payload.qty: Expected a positive number, actual -1; payload.sku: is missing")
    const root = Schema.decodeUnknownEither(Schema.String)(7)
    if (Either.isRight(root)) throw new Error("decoded")
    expect(ParseIssues.describe(root.left)).toBe("(root): Expected string, actual 7")
  })

  it("a typed failure without its own message is written by its tag and fields", () => {
    const error = new OutOfStock({ sku: "none", left: 0 })
    expect(failureMessage(error, Schema.encodeSync(OutOfStock)(error))).toBe("OutOfStock { sku: \"none\", left: 0 }")
  })

  it("a typed failure's own message, a getter or a field, is kept", () => {
    const described = new Described({ sku: "pen" })
    expect(failureMessage(described, Schema.encodeSync(Described)(described))).toBe("no pen left")
    const withMessage = new WithMessage({ message: "bad quantity" })
    expect(failureMessage(withMessage, Schema.encodeSync(WithMessage)(withMessage))).toBe("bad quantity")
  })
})
