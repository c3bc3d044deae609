import { describe, expect, it } from "@effect/vitest"
import { Schema } from "effect"
import * as Command from "../src/Command.js"

class Missing extends Schema.TaggedError<Missing>()("Missing", { id: Schema.String }) {
  readonly code = "404"
}

describe("Command definitions", () => {
  it("a command lives on <service>.command.<aggregate>.<name>, a query on .query.", () => {
    const pay = Command.make({
      service: "billing",
      aggregate: "invoice",
      name: "pay",
      payload: Schema.Struct({ amount: Schema.Number }),
      success: Schema.Struct({ paid: Schema.Number }),
      failure: Missing
    })
    expect(Command.isCommand(pay)).toBe(true)
    expect(pay).toMatchObject({ kind: "command", subject: "billing.command.invoice.pay", endpoint: "invoice_pay" })
    const get = Command.query({ service: "billing", aggregate: "invoice", success: Schema.Struct({ amount: Schema.Number }) })
    expect(get).toMatchObject({ kind: "query", name: "get", subject: "billing.query.invoice.get", endpoint: "invoice_get_query" })
    expect(Schema.decodeUnknownSync(get.payload)({})).toEqual({})
    expect(get.failure).toBe(Schema.Never)
  })

  it("names are validated at definition time", () => {
    const base = { service: "billing", aggregate: "invoice", name: "pay", payload: Schema.Struct({}), success: Schema.Struct({}) }
    expect(() => Command.make({ ...base, service: "Billing" })).toThrow(/Command.make service.*lowercase/)
    expect(() => Command.make({ ...base, aggregate: "in.voice" })).toThrow(/Command.make aggregate/)
    expect(() => Command.make({ ...base, name: ">" })).toThrow(/Command.make name/)
    expect(() => Command.query({ service: "billing", aggregate: "invoice", name: "get all", success: Schema.Struct({}) }))
      .toThrow(/Command.query name/)
  })

  it("failures must be tagged and carry a code (type level)", () => {
    class NoCode extends Schema.TaggedError<NoCode>()("NoCode", {}) {}
    const base = { service: "billing", aggregate: "invoice", name: "pay", payload: Schema.Struct({}), success: Schema.Struct({}) }
    // @ts-expect-error NoCode has no `code`
    const bad = Command.make({ ...base, failure: NoCode })
    expect(bad.failure).toBe(NoCode)
    const good = Command.make({ ...base, failure: Schema.Union(Missing) })
    const error: Command.Error<typeof good> = new Missing({ id: "1" })
    expect(error.code).toBe("404")
  })
})
