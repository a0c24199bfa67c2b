import { httpErrors, type HttpError } from '@fastify/sensible'
import { STATUS_CODES } from 'node:http'
import type { FastifyError } from 'fastify'
import type { ErrorBody } from '../schemas/errors.js'

type ErrorKind = 'badRequest' | 'unauthorized' | 'forbidden' | 'notFound' | 'conflict' | 'tooManyRequests' | 'serviceUnavailable'

/** An HTTP error carrying the stable machine-readable `code` that the error handler puts in the body. */
export function apiError (kind: ErrorKind, code: string, message: string): HttpError {
  return Object.assign(httpErrors[kind](message), { code })
}

/** The body of every 4xx/5xx answer: {statusCode, error, code, message}. */
export function errorBody (statusCode: number, code: string, message: string): ErrorBody {
  return { statusCode, error: STATUS_CODES[statusCode] ?? 'Error', code, message }
}

// Fastify's own error codes that are the client's fault, with the code we promise instead.
const FRAMEWORK_CODES: Record<string, string> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'payload_too_large',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'unsupported_media_type',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'invalid_json',
  FST_ERR_CTP_INVALID_JSON_BODY: 'invalid_json',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'invalid_content_length',
  FST_ERR_BAD_URL: 'invalid_url',
  FST_ERR_MAX_PARAM_LENGTH: 'path_parameter_too_long'
}

// The router's own messages repeat the whole path (up to the header limit); these say what is wrong instead.
const FRAMEWORK_MESSAGES: Record<string, string> = {
  FST_ERR_BAD_URL: 'The path is not valid percent-encoded UTF-8',
  FST_ERR_MAX_PARAM_LENGTH: 'A path parameter is longer than 100 characters (no id of this API is)'
}

// SQLSTATEs caused by the client's data that reach the database despite validation.
const CLIENT_DATA_SQLSTATES: Record<string, string> = {
  '22P05': 'PostgreSQL cannot store the \\u0000 character or unpaired surrogates in JSON; remove them from the payload',
  '22021': 'text contains a character PostgreSQL cannot store (such as \\u0000)',
  '22P02': 'a value is not valid JSON text for PostgreSQL (for example an unpaired UTF-16 surrogate such as \\ud800)'
}

// Errors that mean the database is down or restarting rather than that the request was wrong.
const UNAVAILABLE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND', '57P01', '57P02', '57P03', '53300'])
// The same from pg itself, which gives these no code: a connection lost under a query (a pooled client whose
// connection died while a request held it answers the next query so), or no connection to be had in time (waiting
// for a pooled one, or opening a new one whose handshake did not finish within the connect timeout).
const UNAVAILABLE_MESSAGES = /^(Connection terminated( unexpectedly| due to connection timeout)?|Client has encountered a connection error and is not queryable|timeout exceeded when trying to connect)$/i

/** The headers an error asks its answer to carry (Retry-After on a 503 overloaded or a 429), if any. */
export function answerHeadersOf (error: unknown): Record<string, string | number> | undefined {
  const headers = (error as { headers?: unknown } | null)?.headers
  return headers !== null && typeof headers === 'object' ? headers as Record<string, string | number> : undefined
}

function snakeCase (text: string): string {
  return text.toLowerCase().replace(/[^a-z0-9]+/g, '_').replace(/^_|_$/g, '')
}

/** The answer for anything thrown while handling a request: client errors keep their message, the rest are generic. */
export function describeError (error: FastifyError & { sqlState?: string }): ErrorBody {
  if (error.validation) {
    return errorBody(400, 'validation_failed', error.message)
  }
  const code = error.code ?? ''
  const clientDataMessage = CLIENT_DATA_SQLSTATES[code]
  if (clientDataMessage) return errorBody(400, 'unsupported_character', clientDataMessage)
  if (UNAVAILABLE_CODES.has(code) || UNAVAILABLE_MESSAGES.test(error.message)) {
    return errorBody(503, 'database_unavailable', 'The database is not reachable right now; retry shortly')
  }
  const statusCode = error.statusCode ?? 500
  if (statusCode === 503 && code === 'overloaded') return errorBody(503, code, error.message)
  if (statusCode >= 500) return errorBody(statusCode, 'internal_error', 'Something went wrong on our side; it has been logged')
  if (statusCode === 400 && error instanceof SyntaxError) return errorBody(400, 'invalid_json', `Body is not valid JSON: ${error.message}`)
  const stableCode = FRAMEWORK_CODES[code] ?? (/^[a-z][a-z0-9_]*$/.test(code) ? code : snakeCase(STATUS_CODES[statusCode] ?? 'error'))
  return errorBody(statusCode, stableCode, FRAMEWORK_MESSAGES[code] ?? error.message)
}
