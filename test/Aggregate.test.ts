import { describe, expect, it, layer } from "@effect/vitest"
import { InMemoryNats, NatsTestServer } from "@effect-nats/testing"
import { Deferred, Effect, Either, Fiber, Layer, Ref, Schedule, Schema } from "effect"
import { Aggregate, Consumer, DeadLetter, Envelope, Event, Handler, JetStream, Publisher, Subject } from "effect-nats"
import { eventually, PipelineLive, unique } from "./utils.js"

const Opened = Event.make({ type: "bank.account.opened", aggregate: "Account", schema: Schema.Struct({ owner: Schema.String }) })
const DepositedV1 = Schema.Struct({ cents: Schema.Number })
const Deposited = Event.make({
  type: "bank.account.deposited",
  aggregate: "Account",
  schema: Schema.Struct({ amount: Schema.Number }),
  versions: Event.history(DepositedV1, (v1) => ({ amount: v1.cents / 100 }))
})

type Command = { readonly _tag: "Open"; readonly owner: string } | { readonly _tag: "Deposit"; readonly amount: number }

const Account = Aggregate.make({
  events: [Opened, Deposited],
  initial: { open: false, balance: 0 },
  evolve: (state, event) => {
    switch (event.type) {
      case "bank.account.opened":
        return { ...state, open: true }
      case "bank.account.deposited":
        return { ...state, balance: state.balance + event.data.amount }
    }
  },
  decide: (command: Command, state) => {
    switch (command._tag) {
      case "Open":
        return state.open ? Effect.fail("already open" as const) : Effect.succeed([{ type: "bank.account.opened" as const, data: { owner: command.owner } }])
      case "Deposit":
        return state.open
          ? Effect.succeed([{ type: "bank.account.deposited" as const, data: { amount: command.amount } }])
          : Effect.fail("not open" as const)
    }
  }
})

/** The same aggregate, its subjects in 4 partitions. */
const PartitionedAccount = Aggregate.make({ ...Account, partitions: 4 })

/** A stream on the aggregate's subjects for the duration of the scope. */
const bankStream = (aggregate: Aggregate.Any & { readonly subjects: string } = Account) =>
  Effect.gen(function*() {
    const js = yield* JetStream.JetStream
    const name = unique("BANK")
    yield* Effect.acquireRelease(
      js.ensureStream({ name, subjects: [aggregate.subjects], storage: "memory" }),
      () => Effect.promise(() => js.manager.streams.delete(name).catch(() => false))
    )
    return name
  })

/** Where an aggregate's events are stored, written out (not through `Aggregate.subject`). */
const storedSubject = (aggregate: Aggregate.Any, id: string) =>
  aggregate.partitions === undefined ? `bank.account.events.${id}` : `bank.account.events.${Subject.partition(id, aggregate.partitions)}.${id}`

describe("Aggregate", () => {
  it("refuses events of another aggregate, and hostile ids", () => {
    const Other = Event.make({ type: "bank.card.issued", aggregate: "Card", schema: Schema.Struct({}) })
    expect(() => Aggregate.make({ events: [Opened, Other], initial: 0, evolve: (s) => s, decide: () => Effect.succeed([]) })).toThrow(/not an event of bank.account/)
    expect(Account.subjects).toBe("bank.account.events.*")
    for (const id of ["a.b", "*", ">", "x y", ""]) {
      expect(Either.isLeft(Effect.runSync(Effect.either(Account.subject(id))))).toBe(true)
    }
    expect(Effect.runSync(Account.subject("acc-1"))).toBe("bank.account.events.acc-1")
    expect(Account.partitionSubjects).toEqual(["bank.account.events.*"])
    expect(Account.serverMapping).toBeUndefined()
  })

  it("partitions: the partition token before the id, one filter per partition, the server mapping; a bad count throws", () => {
    expect(PartitionedAccount.subjects).toBe("bank.account.events.*.*")
    expect(PartitionedAccount.partitionSubjects).toEqual([0, 1, 2, 3].map((k) => `bank.account.events.${k}.*`))
    expect(PartitionedAccount.serverMapping).toEqual({
      "bank.account.events.*": "bank.account.events.{{partition(4,1)}}.{{wildcard(1)}}"
    })
    const ids = Array.from({ length: 40 }, (_, i) => `acc-${i}`)
    for (const id of ids) {
      expect(Effect.runSync(PartitionedAccount.subject(id))).toBe(`bank.account.events.${Subject.partition(id, 4)}.${id}`)
    }
    // the ids spread over every partition
    expect(new Set(ids.map((id) => Subject.partition(id, 4))).size).toBe(4)
    for (const id of ["a.b", "*", ">", "x y", ""]) {
      expect(Either.isLeft(Effect.runSync(Effect.either(PartitionedAccount.subject(id))))).toBe(true)
    }
    for (const partitions of [0, -1, 2.5, Number.NaN]) {
      expect(() => Aggregate.make({ ...Account, partitions })).toThrow(/partitions must be a positive integer/)
    }
    expect(Aggregate.make({ ...Account, partitions: 1 }).partitionSubjects).toEqual(["bank.account.events.0.*"])
  })

  layer(PipelineLive, { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    for (const Acc of [Account, PartitionedAccount]) {
      const label = Acc.partitions === undefined ? "unpartitioned" : `${Acc.partitions} partitions`
      it.scoped(`${label}: commands fold and append; a load reads the aggregate's own subject (old versions migrated)`, () =>
        Effect.gen(function*() {
          const stream = yield* bankStream(Acc)
          const js = yield* JetStream.JetStream
          const accounts = yield* Aggregate.repository(Acc, { stream })
          expect(yield* Effect.flip(accounts.execute("acc-1", { _tag: "Deposit", amount: 5 }))).toBe("not open")
          yield* accounts.execute("acc-1", { _tag: "Open", owner: "ada" })
          const after = yield* accounts.execute("acc-1", { _tag: "Deposit", amount: 5 })
          expect(after).toMatchObject({ version: 2, state: { open: true, balance: 5 } })
          yield* accounts.execute("acc-2", { _tag: "Open", owner: "alan" })
          // a v1 deposit stored by older code
          const old = JSON.stringify({ id: "old-1", type: "bank.account.deposited", timestamp: "2026-01-01T00:00:00Z", correlationId: "c", aggregateId: "acc-1", aggregateType: "Account", version: 3, schemaVersion: 1, data: { cents: 250 } })
          yield* Effect.promise(() => js.client.publish(storedSubject(Acc, "acc-1"), new TextEncoder().encode(old)))
          const loaded = yield* accounts.load("acc-1")
          expect(loaded).toMatchObject({ version: 3, state: { balance: 7.5 } })
          const stored = yield* Effect.promise(() => js.manager.streams.getMessage(stream, { seq: 2 }))
          const envelope = stored!.json<Envelope.Encoded<unknown>>()
          expect(stored!.subject).toBe(storedSubject(Acc, "acc-1"))
          expect(envelope).toMatchObject({ type: "bank.account.deposited", aggregateId: "acc-1", aggregateType: "Account", version: 2, schemaVersion: 2 })
          expect(yield* accounts.load("nobody")).toMatchObject({ version: 0, sequence: 0, state: { open: false } })
          expect((yield* Effect.flip(accounts.load("a.b")))._tag).toBe("InvalidSubjectError")
        }))

      it.scoped(`${label}: two writers racing on one aggregate: exactly one wins per version, the other gets ConcurrencyConflict, then retries`, () =>
        Effect.gen(function*() {
          const stream = yield* bankStream(Acc)
          const js = yield* JetStream.JetStream
          const plain = yield* Aggregate.repository(Acc, { stream })
          yield* plain.execute("acc-r", { _tag: "Open", owner: "grace" })

          // both decide against version 1, then both append
          const bothLoaded = yield* Deferred.make<void>()
          let waiting = 0
          const Racing = Aggregate.make({
            ...Acc,
            decide: (command: Command, state, current) =>
              Effect.zipRight(
                Effect.suspend(() => ++waiting === 2 ? Deferred.succeed(bothLoaded, undefined) : Deferred.await(bothLoaded)),
                Account.decide(command, state, current)
              )
          })
          const racing = yield* Aggregate.repository(Racing, { stream })
          const results = yield* Effect.all(
            [racing.execute("acc-r", { _tag: "Deposit", amount: 1 }), racing.execute("acc-r", { _tag: "Deposit", amount: 2 })].map(Effect.either),
            { concurrency: 2 }
          )
          const wins = results.filter(Either.isRight)
          const losses = results.filter(Either.isLeft)
          expect(wins).toHaveLength(1)
          expect(losses).toHaveLength(1)
          expect(losses[0]!.left).toMatchObject({ _tag: "ConcurrencyConflict", aggregateId: "acc-r" })
          expect(wins[0]!.right.version).toBe(2)

          // with a retry Schedule, many racing writers all land, each version exactly once
          const retrying = yield* Aggregate.repository(Acc, { stream, retry: Schedule.recurs(50) })
          const fibers = yield* Effect.forEach(Array.from({ length: 4 }, (_, w) => w), (w) =>
            Effect.fork(Effect.forEach(Array.from({ length: 5 }), () => retrying.execute("acc-r", { _tag: "Deposit", amount: 10 + w }), { discard: true })))
          yield* Fiber.joinAll(fibers)
          const final = yield* plain.load("acc-r")
          expect(final.version).toBe(22)
          expect(final.state.balance).toBe(wins[0]!.right.state.balance + 5 * (10 + 11 + 12 + 13))
          const info = yield* js.streamInfo(stream)
          const versions: Array<number> = []
          for (let seq = 1; seq <= info.state.last_seq; seq++) {
            const m = yield* Effect.promise(() => js.manager.streams.getMessage(stream, { seq }))
            if (m?.subject === storedSubject(Acc, "acc-r")) versions.push(m.json<{ version: number }>().version)
          }
          expect(versions).toEqual(Array.from({ length: 22 }, (_, i) => i + 1))
        }))

      it.scoped(`${label}: snapshots in KV: a load starts from the latest snapshot and reads only the events after it`, () =>
        Effect.gen(function*() {
          const stream = yield* bankStream(Acc)
          const js = yield* JetStream.JetStream
          const bucket = unique("snap")
          const accounts = yield* Aggregate.repository(Acc, {
            stream,
            snapshots: { bucket, every: 3, schema: Schema.Struct({ open: Schema.Boolean, balance: Schema.Number }) }
          })
          yield* accounts.execute("acc-s", { _tag: "Open", owner: "x" })
          for (let i = 0; i < 4; i++) yield* accounts.execute("acc-s", { _tag: "Deposit", amount: 1 })
          const kv = yield* Effect.promise(() => js.kvm.create(bucket))
          const snap = yield* Effect.promise(() => kv.get("acc-s"))
          expect(snap!.json()).toEqual({ version: 3, sequence: 3, state: { open: true, balance: 2 } })
          // the proof that a load starts at the snapshot: a snapshot that says more than the events
          yield* Effect.promise(() => kv.put("acc-s", JSON.stringify({ version: 3, sequence: 3, state: { open: true, balance: 100 } })))
          expect(yield* accounts.load("acc-s")).toMatchObject({ version: 5, sequence: 5, state: { balance: 102 } })
          // a snapshot that does not decode is ignored
          yield* Effect.promise(() => kv.put("acc-s", "{\"nope\":1}"))
          expect(yield* accounts.load("acc-s")).toMatchObject({ version: 5, state: { balance: 4 } })
          yield* Effect.promise(() => js.manager.streams.delete(`KV_${bucket}`))
        }))
    }

    it.scoped("one durable consumer per partition: together every event exactly once, each aggregate on its own partition, in order", () =>
      Effect.gen(function*() {
        const stream = yield* bankStream(PartitionedAccount)
        const accounts = yield* Aggregate.repository(PartitionedAccount, { stream })
        // partition → aggregate → versions, in the order handled
        const seen = yield* Ref.make(new Map<number, Map<string, Array<number>>>())
        const record = (k: number) => (e: Envelope.Envelope<unknown>) =>
          Effect.zipRight(
            Effect.sleep(`${(e.version * 7) % 4} millis`),
            Ref.update(seen, (m) => {
              const byId = m.get(k) ?? new Map<string, Array<number>>()
              byId.set(e.aggregateId, [...(byId.get(e.aggregateId) ?? []), e.version])
              return new Map(m).set(k, byId)
            })
          )
        yield* Effect.forEach(PartitionedAccount.partitionSubjects, (filterSubject, k) =>
          Consumer.make({
            stream,
            durable: unique(`bank_p${k}`),
            filterSubject,
            orderBy: "aggregate",
            concurrency: 4,
            pullBatch: 5,
            handlers: [Handler.make(Opened, record(k)), Handler.make(Deposited, record(k))]
          }), { discard: true })
        const ids = Array.from({ length: 12 }, (_, i) => `acc-${i}`)
        const deposits = 7
        yield* Effect.forEach(ids, (id) =>
          Effect.zipRight(
            accounts.execute(id, { _tag: "Open", owner: id }),
            Effect.forEach(Array.from({ length: deposits }), () => accounts.execute(id, { _tag: "Deposit", amount: 1 }), { discard: true })
          ), { concurrency: "unbounded", discard: true })
        const total = Effect.map(Ref.get(seen), (m) => [...m.values()].flatMap((byId) => [...byId.values()]).flat().length)
        yield* eventually(Effect.map(total, (n) => n >= ids.length * (deposits + 1)))
        yield* Effect.sleep("100 millis") // a duplicate would arrive now
        expect(yield* total).toBe(ids.length * (deposits + 1))
        const byPartition = yield* Ref.get(seen)
        expect(byPartition.size).toBeGreaterThan(1)
        for (const id of ids) {
          const readers = [...byPartition].filter(([, byId]) => byId.has(id)).map(([k]) => k)
          expect(readers, id).toEqual([Subject.partition(id, 4)])
          expect(byPartition.get(readers[0]!)!.get(id), id).toEqual(Array.from({ length: deposits + 1 }, (_, v) => v + 1))
        }
      }))
  })

  // the in-memory test double: a fresh server per test
  const MemoryLive = Layer.mergeAll(DeadLetter.layer(), Publisher.layer()).pipe(Layer.provideMerge(InMemoryNats.layer()))

  it.scoped("a partitioned aggregate on the in-memory transport: append, load, ConcurrencyConflict", () =>
    Effect.gen(function*() {
      const stream = yield* bankStream(PartitionedAccount)
      const js = yield* JetStream.JetStream
      const accounts = yield* Aggregate.repository(PartitionedAccount, { stream })
      yield* accounts.execute("acc-1", { _tag: "Open", owner: "ada" })
      yield* accounts.execute("acc-1", { _tag: "Deposit", amount: 5 })
      expect(yield* accounts.load("acc-1")).toMatchObject({ version: 2, sequence: 2, state: { open: true, balance: 5 } })
      const stored = yield* Effect.promise(() => js.manager.streams.getMessage(stream, { seq: 2 }))
      expect(stored!.subject).toBe(storedSubject(PartitionedAccount, "acc-1"))
      // a writer that loaded before the deposit: refused
      const Stale = Aggregate.make({
        ...PartitionedAccount,
        decide: (command: Command, state, current) =>
          current.version === 2
            ? Effect.zipRight(accounts.execute("acc-1", { _tag: "Deposit", amount: 1 }), PartitionedAccount.decide(command, state, current))
            : PartitionedAccount.decide(command, state, current)
      })
      const stale = yield* Aggregate.repository(Stale, { stream })
      expect(yield* Effect.flip(stale.execute("acc-1", { _tag: "Deposit", amount: 1 }))).toMatchObject({ _tag: "ConcurrencyConflict", expected: 2 })
    }).pipe(Effect.provide(MemoryLive)))

  // a publisher outside the toolkit writes the unpartitioned subject; the server mapping partitions it
  const mapping = `mappings = {\n${
    Object.entries(PartitionedAccount.serverMapping!).map(([from, to]) => `  "${from}": "${to}"`).join("\n")
  }\n}`
  const MappedLive = Layer.mergeAll(DeadLetter.layer(), Publisher.layer()).pipe(
    Layer.provideMerge(NatsTestServer.layerJetStream({ extraConfig: mapping }))
  )

  layer(MappedLive, { excludeTestServices: true, timeout: "60 seconds" })((it) => {
    it.scoped("serverMapping: an event published on <ctx>.<agg>.events.<id> lands on the aggregate's partitioned subject and loads", () =>
      Effect.gen(function*() {
        const stream = yield* bankStream(PartitionedAccount)
        const js = yield* JetStream.JetStream
        const message = yield* Publisher.build(Opened, { owner: "eve" }, { aggregateId: "acc-m", version: 1 })
        const ack = yield* Effect.promise(() => js.client.publish("bank.account.events.acc-m", message.payload))
        const stored = yield* Effect.promise(() => js.manager.streams.getMessage(stream, { seq: ack.seq }))
        expect(stored!.subject).toBe(storedSubject(PartitionedAccount, "acc-m"))
        const accounts = yield* Aggregate.repository(PartitionedAccount, { stream })
        expect(yield* accounts.load("acc-m")).toMatchObject({ version: 1, sequence: ack.seq, state: { open: true, balance: 0 } })
        // the toolkit appends after it, on the same subject
        expect(yield* accounts.execute("acc-m", { _tag: "Deposit", amount: 3 })).toMatchObject({ version: 2, state: { balance: 3 } })
        expect(yield* accounts.load("acc-m")).toMatchObject({ version: 2, state: { open: true, balance: 3 } })
      }))
  })
})
