import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { errorBody } from '../../lib/api-error.js'
import { errorResponses } from '../../schemas/errors.js'
import { Liveness, NotReady, Readiness } from '../../schemas/health.js'
import { ref } from '../../schemas/ref.js'

// Liveness answers from memory, so it stays unmetered (orchestrators poll it); readiness queries the database and
// is counted per client address like any request without a key.
const unmetered = { rateLimit: false } as const

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
    schema: {
      operationId: 'getReadiness',
      tags: ['health'],
      summary: 'Readiness: the database answers; includes connection pool totals',
      security: [],
      response: {
        200: ref(Readiness, { description: 'The database answered' }),
        ...errorResponses(429),
        503: ref(NotReady, { description: 'The database did not answer (code database_unavailable)' })
      }
    }
  }, async (request, reply) => {
    const { pool } = fastify.pg
    const poolStats = () => ({ total: pool.totalCount, idle: pool.idleCount, waiting: pool.waitingCount })
    try {
      await pool.query('SELECT 1')
      return { status: 'ok' as const, database: 'ok' as const, pool: poolStats() }
    } catch (error) {
      request.log.warn({ err: error }, 'readiness check failed')
      return reply.code(503).send({
        ...errorBody(503, 'database_unavailable', 'The database did not answer'),
        pool: poolStats()
      })
    }
  })
}

export default routes
