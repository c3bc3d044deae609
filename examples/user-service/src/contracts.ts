/**
 * The user service's contract, for teams that do not use effect-nats: the
 * AsyncAPI 3.0 document of its commands, query and events, made from the
 * definitions in domain.ts and the user aggregate in Users.ts (its events are
 * stored on each user's subject, `users.user.events.{aggregateId}`). `asyncapi.yaml` next to this package is this
 * document, written by `npx effect-nats asyncapi src/contracts.ts --out asyncapi.yaml`;
 * a test fails when it is stale.
 */
import { AsyncApi } from "effect-nats"
import {
  CreateUser,
  DeactivateUser,
  GetUser,
  QueueGroup,
  ServiceDescription,
  ServiceName,
  ServiceVersion,
  UpdateEmail
} from "./domain.js"
import { UserAggregate } from "./Users.js"

export default AsyncApi.make({
  service: { name: ServiceName, version: ServiceVersion, description: ServiceDescription, queueGroup: QueueGroup },
  aggregates: [UserAggregate],
  commands: [CreateUser, UpdateEmail, DeactivateUser, GetUser]
})
