/**
 * The testcontainers path, loaded lazily so that machines without Docker never
 * pay for importing it.
 *
 * @internal
 */
import type { ContainerRuntimeClient, StartedTestContainer } from "testcontainers"

/** @internal */
export interface FileToCopy {
  readonly source: string
  readonly target: string
}

/** @internal */
export interface ContainerSpec {
  readonly image: string
  readonly command?: ReadonlyArray<string>
  readonly environment?: Readonly<Record<string, string>>
  /** container port, and an optional fixed host port (kept across restarts) */
  readonly port: { readonly container: number; readonly host?: number }
  readonly tmpfs?: Readonly<Record<string, string>>
  readonly contents?: ReadonlyArray<{ readonly content: string; readonly target: string }>
  readonly files?: ReadonlyArray<FileToCopy>
  readonly readyLog: RegExp
  readonly readyLogTimes?: number
  readonly startupTimeoutMillis: number
}

/** A started container and the runtime client to stop/start/kill it in place. @internal */
export interface RunningContainer {
  readonly container: StartedTestContainer
  readonly client: ContainerRuntimeClient
  readonly host: string
  readonly port: number
}

/** @internal */
export const startContainer = async (spec: ContainerSpec): Promise<RunningContainer> => {
  const tc = await import("testcontainers")
  let builder = new tc.GenericContainer(spec.image)
    .withExposedPorts(spec.port.host !== undefined ? { container: spec.port.container, host: spec.port.host } : spec.port.container)
    .withWaitStrategy(tc.Wait.forLogMessage(spec.readyLog, spec.readyLogTimes ?? 1))
    .withStartupTimeout(spec.startupTimeoutMillis)
  if (spec.command !== undefined) builder = builder.withCommand([...spec.command])
  if (spec.environment !== undefined) builder = builder.withEnvironment({ ...spec.environment })
  if (spec.tmpfs !== undefined) builder = builder.withTmpFs({ ...spec.tmpfs })
  if (spec.contents !== undefined && spec.contents.length > 0) {
    builder = builder.withCopyContentToContainer(spec.contents.map((c) => ({ content: c.content, target: c.target })))
  }
  if (spec.files !== undefined && spec.files.length > 0) {
    builder = builder.withCopyFilesToContainer(spec.files.map((f) => ({ source: f.source, target: f.target })))
  }
  const container = await builder.start()
  const client = await tc.getContainerRuntimeClient()
  return { container, client, host: container.getHost(), port: container.getMappedPort(spec.port.container) }
}

/** Stop in place (the container is kept, so `start` brings back the same store). @internal */
export const stopInPlace = (running: RunningContainer, timeoutMillis: number): Promise<void> =>
  running.client.container.stop(running.client.container.getById(running.container.getId()), { timeout: timeoutMillis })

/** @internal */
export const startInPlace = (running: RunningContainer): Promise<void> =>
  running.client.container.start(running.client.container.getById(running.container.getId()))

/** @internal */
export const killInPlace = async (running: RunningContainer): Promise<void> => {
  await running.client.container.getById(running.container.getId()).kill({ signal: "SIGKILL" })
}

/** Stop and remove. @internal */
export const removeContainer = async (running: RunningContainer): Promise<void> => {
  await running.container.stop({ timeout: 5000, remove: true, removeVolumes: true })
}
