import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { errorBody } from '../../plugins/errors.js'
import { ErrorResponse } from '../../schemas/errors.js'

const PoolStats = Type.Object({
  total: Type.Integer({ description: 'Clients open' }),
  idle: Type.Integer({ description: 'Clients open and not checked out' }),
  waiting: Type.Integer({ description: 'Queries waiting for a client' })
})

// Liveness answers from memory, so it stays unmetered (orchestrators poll it); readiness queries the database and
// is counted per client address like any request without a key.
const unmetered = { rateLimit: false } as const

const routes: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.get('/health', {
    config: unmetered,
    schema: {
      tags: ['health'],
      summary: 'Liveness: answers without touching the database',
      response: { 200: Type.Object({ status: Type.Literal('ok') }) }
    }
  }, async () => ({ status: 'ok' as const }))

  fastify.get('/health/ready', {
    schema: {
      tags: ['health'],
      summary: 'Readiness: the database answers; includes connection pool totals',
      response: {
        200: Type.Object({ status: Type.Literal('ok'), database: Type.Literal('ok'), pool: PoolStats }),
        503: Type.Intersect([ErrorResponse, Type.Object({ pool: PoolStats })])
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
