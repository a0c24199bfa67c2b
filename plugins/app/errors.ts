import fp from 'fastify-plugin'
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import { answerHeadersOf, describeError, errorBody } from '../../lib/api-error.js'

/**
 * Every 4xx/5xx leaves as {statusCode, error, code, message}. 5xx bodies are generic: the details (SQL,
 * stack) go to the log only.
 */
export default fp(async (fastify) => {
  fastify.setErrorHandler((error: FastifyError, request: FastifyRequest, reply: FastifyReply) => {
    const body = describeError(error)
    if (body.code === 'overloaded') {
      // Shed load logs nothing beyond its access line: under overload, log lines would be more load.
    } else if (body.statusCode >= 500) request.log.error({ err: error }, 'request failed')
    else request.log.info({ code: body.code, message: body.message }, 'request rejected')
    // Errors may carry headers of their answer (Retry-After on 503 overloaded).
    const headers = answerHeadersOf(error)
    if (headers !== undefined) reply.headers(headers)
    return reply.code(body.statusCode).send(body)
  })

  fastify.setNotFoundHandler((request, reply) =>
    reply.code(404).send(errorBody(404, 'not_found', `Route ${request.method} ${request.url.split('?')[0]} not found`)))
}, { name: 'errors' })
