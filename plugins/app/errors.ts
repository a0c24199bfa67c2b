import fp from 'fastify-plugin'
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import { STATUS_CODES } from 'node:http'
import { errorBody } from '../../lib/api-error.js'
import type { ErrorBody } from '../../schemas/errors.js'

export { errorBody }

// Fastify's own error codes that are the client's fault, with the code we promise instead.
const FRAMEWORK_CODES: Record<string, string> = {
  FST_ERR_CTP_BODY_TOO_LARGE: 'payload_too_large',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'unsupported_media_type',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'invalid_json',
  FST_ERR_CTP_INVALID_JSON_BODY: 'invalid_json',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'invalid_content_length'
}

// SQLSTATEs caused by the client's data that reach the database despite validation.
const CLIENT_DATA_SQLSTATES: Record<string, string> = {
  '22P05': 'PostgreSQL cannot store the \\u0000 character or unpaired surrogates in JSON; remove them from the payload',
  '22021': 'text contains a character PostgreSQL cannot store (such as \\u0000)',
  '22P02': 'a value is not valid JSON text for PostgreSQL (for example an unpaired UTF-16 surrogate such as \\ud800)'
}

// Errors that mean the database is down or restarting rather than that the request was wrong.
const UNAVAILABLE_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND', '57P01', '57P02', '57P03', '53300'])

function snakeCase (text: string): string {
  return text.toLowerCase().replace(/[^a-z0-9]+/g, '_').replace(/^_|_$/g, '')
}

function describe (error: FastifyError & { sqlState?: string }): ErrorBody {
  if (error.validation) {
    return errorBody(400, 'validation_failed', error.message)
  }
  const code = error.code ?? ''
  const clientDataMessage = CLIENT_DATA_SQLSTATES[code]
  if (clientDataMessage) return errorBody(400, 'unsupported_character', clientDataMessage)
  if (UNAVAILABLE_CODES.has(code) || /timeout exceeded when trying to connect/i.test(error.message)) {
    return errorBody(503, 'database_unavailable', 'The database is not reachable right now; retry shortly')
  }
  const statusCode = error.statusCode ?? 500
  if (statusCode === 503 && code === 'overloaded') return errorBody(503, code, error.message)
  if (statusCode >= 500) return errorBody(statusCode, 'internal_error', 'Something went wrong on our side; it has been logged')
  if (statusCode === 400 && error instanceof SyntaxError) return errorBody(400, 'invalid_json', `Body is not valid JSON: ${error.message}`)
  const stableCode = FRAMEWORK_CODES[code] ?? (/^[a-z][a-z0-9_]*$/.test(code) ? code : snakeCase(STATUS_CODES[statusCode] ?? 'error'))
  return errorBody(statusCode, stableCode, error.message)
}

/**
 * Every 4xx/5xx leaves as {statusCode, error, code, message}. 5xx bodies are generic: the details (SQL,
 * stack) go to the log only.
 */
export default fp(async (fastify) => {
  fastify.setErrorHandler((error: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
    const body = describe(error)
    if (body.statusCode >= 500 && body.code !== 'overloaded') request.log.error({ err: error }, 'request failed')
    else request.log.info({ code: body.code, message: body.message }, 'request rejected')
    // Errors may carry headers of their answer (Retry-After on 503 overloaded).
    const { headers } = error as { headers?: unknown }
    if (headers !== null && typeof headers === 'object') reply.headers(headers)
    return reply.code(body.statusCode).send(body)
  })

  fastify.setNotFoundHandler((request, reply) =>
    reply.code(404).send(errorBody(404, 'not_found', `Route ${request.method} ${request.url.split('?')[0]} not found`)))
}, { name: 'errors' })
