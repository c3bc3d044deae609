/**
 * Scenario 6 — hostile subject tokens.
 *
 * Generated strings (dots, wildcards, whitespace, control characters,
 * unicode, protocol fragments, empty, very long) are used as:
 *
 * - an aggregate id in `Subject.make` and in a `Subject.template` subject;
 * - a command name in `Command.make`;
 * - an aggregate id given to `Publisher.publish` (it goes into the envelope
 *   and the `Aggregate-Id` header, never into the subject);
 * - a message id given to `Publisher.publish` (`Nats-Msg-Id` and envelope id).
 *
 * Guarantee shown: each one is refused with a typed error (`InvalidSubjectError`,
 * `PublishError`), or used as it is: a subject built from it has exactly the
 * intended tokens, and a probe published on it reaches that subject and no
 * other (a `>` subscriber sees every message); headers never carry a mangled
 * or injected value; nothing published is poison for its consumers.
 */
import { Effect, Either, Exit, Schema } from "effect"
import { Command, JetStream, NatsClient, Publisher, Subject } from "effect-nats"
import { OrderPlaced } from "../lib/events.js"
import { natsLayer, readStream, Report, type Result, rng, seed, waitUntil } from "../lib/harness.js"

export interface Options {
  readonly strings: number
}

export const name = "hostile-subjects"

const atoms: Record<string, ReadonlyArray<string>> = {
  dots: [".", "..", "a.b", ".x", "x."],
  wildcards: ["*", ">", "*>", "a*", ">b", "**"],
  whitespace: [
    " ", "\t", "\n", "\r", "\r\n", "\u000b", "\u000c", "\u0085", "\u00a0", "\u1680", "\u2000", "\u200a",
    "\u2028", "\u2029", "\u202f", "\u205f", "\u3000", "\ufeff"
  ],
  controls: ["\u0000", "\u0001", "\u0007", "\u001b", "\u007f", "\u0080", "\u009f"],
  unicode: [
    "é", "ß", "日本", "😀", "👩‍💻", "\u200b", "\u200d", "\u202e", "e\u0301", "\ud800", "\udfff", "Ω", "İ", "ﬀ", "ｆｕｌｌ", "١٢٣"
  ],
  protocol: [
    "\r\nPUB x 1\r\n", "PING\r\n", "$JS", "$SYS", "_INBOX", "%2E", "%2A", "\\.", "/", ":", "{", "}", "\"", "'", "`",
    "#", "&", "?", "=", "+", "~", "|", "<", "@", "!", ";", ",", "(", ")", "[", "]"
  ],
  plain: ["a", "z", "A", "Z", "0", "9", "inv-42", "order_1", "user", "-", "_", "x-y_z"]
}
const categories = Object.keys(atoms)

/** The strings: fixed edge cases, then random compositions of atoms. */
export const hostileStrings = (n: number, seedValue: number): Array<string> => {
  const random = rng(seedValue)
  const fixed = [
    "", " ", ".", "*", ">", "a.b", "a.>", "*.*", "a b", " a", "a ", "\t", "\r\n", "\u0000",
    "a".repeat(255), "a".repeat(256), "a".repeat(257), "b".repeat(1000), "c".repeat(10_000), "😀".repeat(128), "😀".repeat(129),
    "billing.invoice.issued", "$JS.API.STREAM.DELETE.X", "_INBOX.x", "inv-1\r\nNats-Msg-Id: evil", "x\r\n\r\nPUB evil 1"
  ]
  const out = fixed.slice(0, n)
  while (out.length < n) {
    const parts = random.int(1, 6)
    let s = ""
    for (let i = 0; i < parts; i++) {
      const category = random.pick(categories)
      s += random.pick(atoms[category]!)
    }
    // now and then very long
    if (random.next() < 0.02) s = s.repeat(random.int(20, 400))
    out.push(s)
  }
  return out
}

/** The spec of a subject token, written independently of Subject's regexes. */
const tokenAllowed = (s: string): boolean =>
  s.length > 0 && s.length <= Subject.maxTokenLength && !/[.*>]/.test(s) && !/\s/u.test(s) &&
  !/[\u0000-\u001f\u007f-\u009f\u2028\u2029\ufeff]/u.test(s) &&
  // a lone surrogate cannot be sent: UTF-8 turns it into U+FFFD (another subject)
  !/\p{Cs}/u.test(s)

/** The command / definition name convention. */
const nameAllowed = (s: string): boolean => s.length <= Subject.maxTokenLength && /^[a-z0-9][a-z0-9_-]*$/.test(s)

const isTagged = (u: unknown, tag: string): boolean =>
  typeof u === "object" && u !== null && "_tag" in u && (u as { _tag: unknown })._tag === tag

/** Run the scenario (its clock starts when it runs). */
export const run = (options: Options): Effect.Effect<Result> => Effect.suspend(() => runNow(options))

const runNow = (options: Options): Effect.Effect<Result> => {
  const report = new Report(name)
  return Effect.gen(function*() {
    const nats = yield* NatsClient.NatsClient
    const js = yield* JetStream.JetStream
    yield* js.ensureStream({ name: "CHAOS_HOSTILE", subjects: ["chaos.order.>"], storage: "memory" })
    const strings = hostileStrings(options.strings, seed ^ 0x56)
    report.sent = strings.length

    // every message on the server: which probe arrived on which subject
    const seen = new Map<string, Array<string>>()
    const decoder = new TextDecoder()
    const sub = nats.connection.subscribe(">", {
      callback: (err, msg) => {
        if (err !== null) return
        // a probe: {"probe":"<key>"}, or an envelope whose data.orderId is "publish-..."
        const text = decoder.decode(msg.data)
        const marker = text.includes("\"probe\":\"") ? "\"probe\":\"" : "\"orderId\":\"publish-"
        const at = text.indexOf(marker)
        if (at === -1) return
        const from = marker.endsWith("publish-") ? at + marker.length - "publish-".length : at + marker.length
        const probe = text.slice(from, text.indexOf("\"", from))
        seen.set(probe, [...(seen.get(probe) ?? []), msg.subject])
      }
    })
    const unsubscribe = Effect.sync(() => sub.isClosed() || sub.unsubscribe())
    yield* Effect.addFinalizer(() => unsubscribe)
    yield* nats.flush

    const expected = new Map<string, string>()
    const probe = (key: string, subject: string) =>
      Effect.zipRight(
        Effect.sync(() => expected.set(key, subject)),
        nats.publish(subject, JSON.stringify({ probe: key }))
      )
    const tally: Record<string, { accepted: number; refusedTyped: number; refusedUntyped: number; wrong: number }> = {}
    const count = (surface: string, what: "accepted" | "refusedTyped" | "refusedUntyped" | "wrong", detail?: string) => {
      const t = (tally[surface] ??= { accepted: 0, refusedTyped: 0, refusedUntyped: 0, wrong: 0 })
      t[what]++
      if (what === "wrong" || what === "refusedUntyped") {
        if (t.wrong + t.refusedUntyped <= 3) report.check(false, `${surface}: ${detail}`)
      }
    }
    const show = (s: string) => JSON.stringify(s.length > 40 ? s.slice(0, 40) + "…" : s)

    // 1. Subject.make with the string as the aggregate id token
    const template = Subject.template("chaos.tenants.{tenant}.orders.{order}")
    for (let i = 0; i < strings.length; i++) {
      const s = strings[i]!
      const made = yield* Effect.either(Subject.make("chaos", "agg", s, "created"))
      if (Either.isLeft(made)) {
        if (!isTagged(made.left, "InvalidSubjectError")) count("Subject.make", "refusedUntyped", `${show(s)} refused untyped`)
        else if (tokenAllowed(s)) count("Subject.make", "wrong", `${show(s)} refused but allowed by the spec (${made.left.reason})`)
        else count("Subject.make", "refusedTyped")
      } else if (!tokenAllowed(s) || made.right !== `chaos.agg.${s}.created` || made.right.split(".").length !== 4) {
        count("Subject.make", "wrong", `${show(s)} accepted as ${show(made.right)}`)
      } else {
        count("Subject.make", "accepted")
        yield* probe(`make-${i}`, made.right)
      }

      // 2. a template subject
      const filled = yield* Effect.either(template({ tenant: s, order: `o-${i}` }))
      if (Either.isLeft(filled)) {
        if (!isTagged(filled.left, "InvalidSubjectError")) count("Subject.template", "refusedUntyped", `${show(s)} refused untyped`)
        else if (tokenAllowed(s)) count("Subject.template", "wrong", `${show(s)} refused but allowed by the spec`)
        else count("Subject.template", "refusedTyped")
      } else if (!tokenAllowed(s) || filled.right.split(".").length !== 5) {
        count("Subject.template", "wrong", `${show(s)} accepted as ${show(filled.right)}`)
      } else {
        count("Subject.template", "accepted")
        yield* probe(`template-${i}`, filled.right)
      }

      // 3. a command name
      let command: Command.Any | undefined
      let thrown: unknown
      try {
        command = Command.make({ service: "chaos", aggregate: "agg", name: s, payload: Schema.Struct({}), success: Schema.Void })
      } catch (e) {
        thrown = e
      }
      if (command === undefined) {
        if (!isTagged(thrown, "InvalidSubjectError")) count("Command.make", "refusedUntyped", `${show(s)} refused with an untyped ${String(thrown).slice(0, 80)}`)
        else if (nameAllowed(s)) count("Command.make", "wrong", `${show(s)} refused but allowed by the convention`)
        else count("Command.make", "refusedTyped")
      } else if (!nameAllowed(s) || command.subject !== `chaos.command.agg.${s}` || command.subject.split(".").length !== 4) {
        count("Command.make", "wrong", `${show(s)} accepted as ${show(command.subject)}`)
      } else {
        count("Command.make", "accepted")
        yield* probe(`command-${i}`, command.subject)
      }
    }

    // 4 and 5. the publisher: as aggregate id (never in the subject) and as message id
    const publisher = yield* Publisher.make({ window: 128 })
    const published = new Map<string, { readonly s: string; readonly as: "aggregateId" | "id" }>()
    // a message id used for the first time must be stored, not dropped as a duplicate of another id
    let distinctDropped = 0
    yield* Effect.forEach(
      // ids: each distinct string once (publishing one id twice is a legitimate duplicate)
      strings.flatMap((s, i) => [
        { s, i, as: "aggregateId" as const },
        ...(strings.indexOf(s) === i ? [{ s, i, as: "id" as const }] : [])
      ]),
      ({ as, i, s }) => {
        const key = `publish-${as}-${i}`
        const surface = `Publisher (${as})`
        const meta = as === "aggregateId" ? { aggregateId: s } : { id: s }
        return Effect.exit(publisher.publish(OrderPlaced, { orderId: key, n: i }, meta)).pipe(
          Effect.map((exit) => {
            if (Exit.isSuccess(exit)) {
              expected.set(key, OrderPlaced.subject)
              published.set(key, { s, as })
              if (as === "id" && exit.value.duplicate) {
                distinctDropped++
                // (the probe itself still reached its subject: the `>` subscriber sees the publish)
                count(surface, "wrong", `${show(s)}: a new id, but JetStream dropped it as a duplicate of another id`)
              }
            } else if (exit.cause._tag === "Fail" && isTagged(exit.cause.error, "PublishError")) {
              if (as === "aggregateId") count(surface, "wrong", `${show(s)} refused: ${exit.cause.error.message.slice(0, 100)}`)
              else count(surface, "refusedTyped")
            } else {
              count(surface, "refusedUntyped", `${show(s)} failed with a defect or an untyped error: ${String(exit.cause).slice(0, 160)}`)
            }
          })
        )
      },
      { concurrency: 128, discard: true }
    )
    yield* nats.flush
    const all = yield* waitUntil(Effect.sync(() => [...expected.keys()].every((k) => seen.has(k))), "30 seconds", "100 millis")
    report.check(all, `${[...expected.keys()].filter((k) => !seen.has(k)).length} probes never arrived`)

    yield* unsubscribe
    // every probe on exactly its subject, once; nothing anywhere else
    let misrouted = 0
    for (const [key, subjects] of seen) {
      const want = expected.get(key)
      if (want === undefined || subjects.length !== 1 || subjects[0] !== want) {
        misrouted++
        if (misrouted <= 3) report.check(false, `probe ${key} arrived on ${JSON.stringify(subjects)}, expected ${JSON.stringify(want)}`)
      }
    }

    // what the publisher stored: the body round-trips, headers are exact or absent, consumers can decode it
    const decode = Schema.decodeUnknownEither(OrderPlaced.envelope)
    const bodies = (yield* readStream("CHAOS_HOSTILE")).map((m) => ({ body: decoder.decode(m.data), headers: m.headers }))
    for (const m of bodies) {
      const env = JSON.parse(m.body) as { data?: { orderId?: string }; aggregateId?: string; id?: string }
      const key = env.data?.orderId ?? ""
      const p = published.get(key)
      if (p === undefined) continue
      const surface = `Publisher (${p.as})`
      const header = p.as === "aggregateId" ? m.headers["Aggregate-Id"] : m.headers["Nats-Msg-Id"]
      const body = p.as === "aggregateId" ? env.aggregateId : env.id
      const headerOk = header === undefined || header === p.s
      const consumable = Either.isRight(decode(JSON.parse(m.body)))
      if (body !== p.s || !headerOk || !consumable || (p.as === "id" && header !== p.s)) {
        count(
          surface,
          "wrong",
          `${show(p.s)}: body ${show(String(body))}, header ${header === undefined ? "absent" : show(header)}` +
            (consumable ? "" : ", and its consumers cannot decode it (poison)")
        )
      } else count(surface, "accepted")
    }

    report.effects = seen.size
    report.lost = [...expected.keys()].filter((k) => !seen.has(k)).length
    report.duplicateEffects = [...seen.values()].filter((xs) => xs.length > 1).length
    report.check(misrouted === 0, `${misrouted} probe(s) reached another subject`)
    report.set("strings", strings.length)
    report.set("probes", expected.size)
    report.set("misrouted", misrouted)
    report.set("distinctIdsDroppedAsDuplicates", distinctDropped)
    report.set("surfaces", tally)

  }).pipe(
    // the scope (children, consumers, clients) closes before the server goes away
    Effect.scoped,
    Effect.provide(natsLayer()),
    Effect.catchAllCause((cause) => Effect.sync(() => void report.check(false, `scenario crashed: ${cause}`))),
    Effect.map(() => report.result())
  )
}
