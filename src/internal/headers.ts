import { type MsgHdrs, MsgHdrsImpl } from "@nats-io/nats-core"

/** What nats.js accepts in a header name (printable ASCII but `:`). */
const validName = /^[!-9;-~]+$/
const lineBreak = /[\r\n]/

/**
 * NATS headers from a record: the same headers as `headers()` plus `set(k, v)`
 * for each entry, without nats.js's scan of every key on each `set` (which
 * makes building nine headers cost more than the publish itself). An entry
 * nats.js would refuse goes through `set`, which throws its usual error.
 */
export const fromRecord = (record: Readonly<Record<string, string>>): MsgHdrs => {
  const h = new MsgHdrsImpl()
  for (const k in record) {
    const v = record[k]!
    if (validName.test(k) && !lineBreak.test(v)) h.headers.set(k, [v.trim()])
    else h.set(k, v)
  }
  return h
}
