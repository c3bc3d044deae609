/** JetStream API errors, as nats.js raises them from the server's answers. */
import { JetStreamApiCodes, JetStreamApiError } from "@nats-io/jetstream"
import { jserrors } from "@nats-io/jetstream/internal"
import { NoRespondersError, RequestError } from "@nats-io/nats-core"


export const apiError = (code: number, errCode: number, description: string): JetStreamApiError => {
  const e = { code, err_code: errCode, description }
  if (errCode === JetStreamApiCodes.StreamNotFound) return new jserrors.StreamNotFoundError(e)
  if (errCode === JetStreamApiCodes.ConsumerNotFound) return new jserrors.ConsumerNotFoundError(e)
  return new JetStreamApiError(e)
}

export const streamNotFound = () => apiError(404, JetStreamApiCodes.StreamNotFound, "stream not found")
export const consumerNotFound = () => apiError(404, JetStreamApiCodes.ConsumerNotFound, "consumer not found")

/** What `js.publish` throws when no stream captures the subject (no responders to the request). */
export const noStream = (subject: string): Error => {
  const cause = new NoRespondersError(subject)
  return new jserrors.JetStreamNotEnabled("jetstream is not enabled", {
    cause: new RequestError(cause.message, { cause })
  })
}

export const validName = (kind: string, name: string): void => {
  if (name === "") throw new Error(`${kind} name required`)
  for (const c of [".", "*", ">", "/", "\\", " ", "\t", "\n", "\r"]) {
    if (name.includes(c)) throw new Error(`invalid ${kind} name - ${kind} name cannot contain '${c}'`)
  }
}
