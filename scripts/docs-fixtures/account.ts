/**
 * What the doc-comment `@example`s import as `./account.js`: a user's
 * event-sourced aggregate, written with the public API only.
 */
import { Effect, Schema } from "effect"
import { Aggregate, Event } from "effect-nats"

const Deposited = Event.make({ type: "bank.account.deposited", aggregate: "Account", schema: Schema.Struct({ amount: Schema.Number }) })
const Withdrawn = Event.make({ type: "bank.account.withdrawn", aggregate: "Account", schema: Schema.Struct({ amount: Schema.Number }) })

export const Account = Aggregate.make({
  events: [Deposited, Withdrawn],
  initial: { balance: 0 },
  evolve: (state, event) =>
    event.type === "bank.account.deposited"
      ? { balance: state.balance + event.data.amount }
      : { balance: state.balance - event.data.amount },
  decide: (command: { readonly withdraw: number }, state) =>
    command.withdraw > state.balance
      ? Effect.fail("insufficient funds" as const)
      : Effect.succeed([{ type: "bank.account.withdrawn" as const, data: { amount: command.withdraw } }])
})
