/** `effect-nats streams ensure <file>`. @internal */
import * as FileSystem from "@effect/platform/FileSystem"
import { Console, Effect } from "effect"
import * as JetStream from "effect-nats/JetStream"
import * as StreamsFile from "../StreamsFile.js"
import { CliError } from "./connection.js"

/** Read and validate the file (before connecting: a bad file needs no server). */
export const readFile = (path: string) =>
  Effect.gen(function*() {
    const fs = yield* FileSystem.FileSystem
    const text = yield* fs.readFileString(path).pipe(
      Effect.mapError((e) => new CliError({ message: `cannot read ${path}: ${e.message}`, cause: e }))
    )
    return yield* StreamsFile.decode(text, path)
  })

const describe = <Info>(kind: string, name: string, result: JetStream.Ensured<Info>): string => {
  switch (result._tag) {
    case "Created":
      return `Created ${kind} ${name}`
    case "Updated":
      return `Updated ${kind} ${name} (${result.changed.join(", ")})`
    case "Unchanged":
      return `Unchanged ${kind} ${name}`
  }
}

/** Ensure every stream, then every consumer, in file order; stop at the first failure. */
export const ensure = (file: StreamsFile.StreamsFile) =>
  Effect.gen(function*() {
    const js = yield* JetStream.JetStream
    for (const stream of file.streams) {
      yield* Console.log(describe("stream", stream.name, yield* js.ensureStream(stream)))
    }
    for (const consumer of file.consumers) {
      const name = `${consumer.stream}/${consumer.durable}`
      yield* Console.log(describe("consumer", name, yield* js.ensureConsumer(consumer)))
    }
    if (file.streams.length === 0 && file.consumers.length === 0) yield* Console.log("Nothing to ensure: the file lists no streams and no consumers.")
  })
