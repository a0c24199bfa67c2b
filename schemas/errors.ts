import { Type, type Static } from 'typebox'

export const ErrorResponse = Type.Object({
  statusCode: Type.Integer({ description: 'HTTP status code' }),
  error: Type.String({ description: 'HTTP status text' }),
  code: Type.String({ description: 'Stable machine-readable error code, e.g. validation_failed' }),
  message: Type.String({ description: 'Human-readable explanation' })
}, { title: 'Error' })

export type ErrorBody = Static<typeof ErrorResponse>

const errorDescriptions: Record<number, string> = {
  400: 'Invalid request (code validation_failed, invalid_json, invalid_cursor, ...)',
  401: 'Missing or invalid credentials (code missing_api_key, invalid_api_key, invalid_admin_token, invalid_stats_token)',
  403: 'Not allowed without the admin token (code tier_requires_admin_token)',
  404: 'Not found (code not_found)',
  409: 'A per-organization cap is reached (code webhook_limit_reached)',
  413: 'Body larger than 256 KiB (code payload_too_large)',
  415: 'Content-Type is not application/json (code unsupported_media_type)',
  429: 'Rate limit exceeded (code rate_limited; see Retry-After), or too many open streams or long polls (code too_many_streams, too_many_long_polls)',
  503: 'Database unavailable (code database_unavailable)'
}

/** The error responses a route can give, in the shape every 4xx/5xx body has. */
export function errorResponses (...statusCodes: number[]) {
  const common = [429, 500, ...statusCodes]
  return Object.fromEntries(common.map((status) => [status, { ...ErrorResponse, description: errorDescriptions[status] ?? 'Internal error (code internal_error)' }]))
}
