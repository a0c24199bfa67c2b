import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { errorBody } from '../../lib/api-error.js'
import { describePressure } from '../../lib/overload.js'
import { errorResponses } from '../../schemas/errors.js'
import { Liveness, NotReady, Readiness } from '../../schemas/health.js'
import { ref } from '../../schemas/ref.js'

// Liveness answers from memory, so it stays unmetered (orchestrators poll it); readiness queries the database and
// is counted per client address like any request without a key. Neither is shed under pressure: readiness is
// where a load balancer learns of it.
const unmetered = { rateLimit: false, shed: false } as const

const routes: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.get('/health', {
    config: unmetered,
    schema: {
      operationId: 'getHealth',
      tags: ['health'],
      summary: 'Liveness: answers without touching the database',
      security: [],
      response: { 200: ref(Liveness, { description: 'The process is up' }) }
    }
  }, async () => ({ status: 'ok' as const }))

  fastify.get('/health/ready', {
    config: { shed: false },
    schema: {
      operationId: 'getReadiness',
      tags: ['health'],
      summary: 'Readiness: the database answers and requests are not being shed; includes pool totals and the load',
      security: [],
      response: {
        200: ref(Readiness, { description: 'The database answered and the process is within its OVERLOAD_* bounds' }),
        ...errorResponses(429),
        503: ref(NotReady, { description: 'The database did not answer (code database_unavailable), or requests are being shed (code overloaded, with Retry-After)' })
      }
    }
  }, async (request, reply) => {
    const { pool } = fastify.pg
    const poolStats = () => ({ total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount })
    const pressure = () => describePressure(fastify.memoryUsage(), fastify.overloaded())
    // Overloaded first, without a query: a load balancer polls this hardest when the process is busiest.
    if (fastify.overloaded()) {
      return reply.code(503).header('retry-after', String(fastify.config.OVERLOAD_RETRY_AFTER_SECONDS)).send({
        ...errorBody(503, 'overloaded', 'Requests are being shed: event-loop delay or memory is over its bound'),
        pool: poolStats(),
        pressure: pressure()
      })
    }
    try {
      await pool.query('SELECT 1')
      return { status: 'ok' as const, database: 'ok' as const, pool: poolStats(), pressure: pressure() }
    } catch (error) {
      request.log.warn({ err: error }, 'readiness check failed')
      return reply.code(503).send({
        ...errorBody(503, 'database_unavailable', 'The database did not answer'),
        pool: poolStats(),
        pressure: pressure()
      })
    }
  })
}

export default routes
