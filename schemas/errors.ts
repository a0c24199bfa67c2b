import { Type, type Static, type TSchemaOptions } from 'typebox'
import { ref } from './ref.js'

export const ErrorResponse = Type.Object({
  statusCode: Type.Integer({ description: 'HTTP status code' }),
  error: Type.String({ description: 'HTTP status text' }),
  code: Type.String({ description: 'Stable machine-readable error code, e.g. validation_failed' }),
  message: Type.String({ description: 'Human-readable explanation' })
}, { $id: 'Error', title: 'Error', description: 'The body of every 4xx and 5xx answer' })

export type ErrorBody = Static<typeof ErrorResponse>

/** An answer's header as the OpenAPI document shows it (the route schemas carry them for the document only). */
export interface HeaderSchema {
  type: 'string' | 'integer'
  description: string
  format?: string
}

export const RETRY_AFTER: HeaderSchema = { type: 'integer', description: 'Seconds to wait before retrying' }

/** Sent by the rate limiter with every answer of a metered route, unless the caller's tier is unlimited. */
export const RATE_LIMIT_HEADERS: Record<string, HeaderSchema> = {
  'X-RateLimit-Limit': { type: 'integer', description: 'Requests allowed per minute to this caller (its tier, or RATE_LIMIT_ANONYMOUS without a valid key)' },
  'X-RateLimit-Remaining': { type: 'integer', description: 'Requests left in the current minute' },
  'X-RateLimit-Reset': { type: 'integer', description: 'Seconds until the budget is full again' }
}

export type ErrorStatus = 400 | 401 | 403 | 404 | 409 | 413 | 415 | 429 | 503

const ERRORS: Record<ErrorStatus | 500, TSchemaOptions> = {
  400: { description: 'Invalid request (code validation_failed, invalid_json, invalid_cursor, ...)' },
  401: { description: 'Missing or invalid credentials (code missing_api_key, invalid_api_key, invalid_admin_token, invalid_stats_token, invalid_metrics_token)' },
  403: { description: 'Not allowed without the admin token (code tier_requires_admin_token)' },
  404: { description: 'Not found (code not_found, lease_not_found)' },
  409: { description: 'A per-organization cap is reached (code webhook_limit_reached), or the key was rotated by another request meanwhile (code key_already_rotated)' },
  413: { description: 'Body larger than 256 KiB (code payload_too_large), on any route that reads a body' },
  415: { description: 'A body whose Content-Type is not application/json (code unsupported_media_type)' },
  429: {
    description: 'Rate limit exceeded (code rate_limited, with Retry-After), or too many open streams or long polls (code too_many_streams, too_many_long_polls)',
    headers: { 'Retry-After': { ...RETRY_AFTER, description: 'With code rate_limited: seconds until the budget is full again' }, ...RATE_LIMIT_HEADERS }
  },
  500: { description: 'Internal error (code internal_error; the details are in the server log)' },
  503: {
    description: 'The database is unreachable (code database_unavailable), or the server sheds load: its event loop or memory is over a bound, or the queue of events waiting to be stored is full (code overloaded, with Retry-After)',
    headers: { 'Retry-After': { ...RETRY_AFTER, description: 'With code overloaded: seconds to wait before sending again' } }
  }
}

/**
 * The error answers a route can give (500 is always possible), each a reference to the one Error schema with
 * its description and the headers it carries.
 */
export function errorResponses (...statusCodes: ErrorStatus[]) {
  return Object.fromEntries([...statusCodes, 500].map((status) => [status, ref(ErrorResponse, ERRORS[status as ErrorStatus | 500])]))
}
