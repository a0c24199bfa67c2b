import { randomUUID } from 'node:crypto'
import type { LoggerOptions } from 'pino'

/** Request headers that carry credentials; their values never reach the log. */
const REDACTED_HEADERS = ['authorization', 'x-api-key', 'x-admin-token'].map((name) => `req.headers["${name}"]`)

/** Enough frames to show where an error came from; more only at debug and trace, where long lines are expected. */
const STACK_FRAMES = 3
const VERBOSE_LEVELS = new Set(['debug', 'trace'])
const MAX_CAUSES = 5

// A type, not an interface: Fastify's serializer type wants an index signature, which only type aliases satisfy implicitly.
export type SerializedError = {
  type: string
  message: string
  /** PostgreSQL SQLSTATE (`57P01`), Node system error (`ECONNREFUSED`), Redis error code, ... */
  code?: string | number
  stack: string
}

/**
 * Options for every pino logger of the service (the Fastify app, server.ts's start-up log, the worker), so they
 * redact the same headers and write errors the same way.
 */
export function loggerOptions (level: string): LoggerOptions & { serializers: { err: (value: unknown) => SerializedError } } {
  const frames = VERBOSE_LEVELS.has(level) ? Infinity : STACK_FRAMES
  return {
    level,
    redact: { paths: REDACTED_HEADERS, censor: '[redacted]' },
    serializers: { err: (value: unknown) => serializeError(value, frames) }
  }
}

/**
 * pino's standard serializer copies every enumerable property of an error, and pg puts the whole client
 * (connection, socket, parser: 3–5 KB of JSON) on the errors of idle pool clients, so a lost connection logged pages
 * per line. Only what identifies the failure is kept: type, message (with causes), code and the first frames.
 */
export function serializeError (value: unknown, frames = STACK_FRAMES): SerializedError {
  if (!(value instanceof Error)) return { type: typeof value, message: String(value), stack: '' }
  const code = (value as { code?: unknown }).code
  return {
    type: value.constructor.name || value.name,
    message: messageWithCauses(value),
    ...(typeof code === 'string' || typeof code === 'number' ? { code } : {}),
    stack: firstFrames(value.stack ?? '', frames)
  }
}

function messageWithCauses (error: Error): string {
  const parts = [error.message || aggregatedMessages(error)]
  let cause = error.cause
  for (let depth = 0; cause instanceof Error && depth < MAX_CAUSES; depth++, cause = cause.cause) parts.push(cause.message)
  return parts.filter(Boolean).join(': ')
}

/** Node reports a refused connection to a name with several addresses as an AggregateError without a message. */
function aggregatedMessages (error: Error): string {
  if (!(error instanceof AggregateError)) return ''
  return error.errors.map((inner: unknown) => inner instanceof Error ? inner.message : String(inner)).join('; ')
}

/** The `at ...` lines only: the message is already in its own field. */
function firstFrames (stack: string, frames: number): string {
  return stack.split('\n').map((line) => line.trim()).filter((line) => line.startsWith('at ')).slice(0, frames).join('\n')
}

/**
 * A client's X-Request-Id is kept only in this form: it goes into every log line and back in the answer, so
 * anything longer or with other characters (spaces, quotes, control characters, markup) could forge or bloat
 * log lines. UUIDs, ULIDs and most tracing ids fit.
 */
const CLIENT_REQUEST_ID = /^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$/

/** The request's id: the client's X-Request-Id when it has the strict form above, else a new UUID. */
export function requestIdOf (headers: Record<string, string | string[] | undefined>): string {
  const header = headers['x-request-id']
  return typeof header === 'string' && CLIENT_REQUEST_ID.test(header) ? header : randomUUID()
}
