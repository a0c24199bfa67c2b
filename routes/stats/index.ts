import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'
import { errorResponses } from '../../schemas/errors.js'

/** Process statistics; with STATS_TOKEN set every route here needs `Authorization: Bearer <STATS_TOKEN>`. */
const routes: FastifyPluginAsyncTypebox = async (fastify) => {
  // This plugin is encapsulated: the hook guards its routes only (and /metrics, once it is added here).
  fastify.addHook('preValidation', fastify.requireStatsToken)

  fastify.get('/stats/cache', {
    schema: {
      tags: ['health'],
      summary: 'Dedup cache statistics of this process',
      response: {
        200: Type.Object({
          size: Type.Integer(),
          max_size: Type.Integer(),
          hits: Type.Integer(),
          misses: Type.Integer()
        }),
        ...errorResponses(401)
      }
    }
  }, async () => fastify.dedup.stats())

  fastify.get('/stats/ingest', {
    schema: {
      tags: ['health'],
      summary: 'Group commit statistics of this process: shared INSERTs, the events they held, the largest',
      response: {
        200: Type.Object({
          groups: Type.Integer({ description: 'shared INSERT statements written' }),
          events: Type.Integer({ description: 'events they carried' }),
          largest_group: Type.Integer(),
          isolated_failures: Type.Integer({ description: 'writes that failed when retried alone after their group failed' }),
          overloaded: Type.Integer({ description: 'writes refused with 503 overloaded because the queue was full' })
        }),
        ...errorResponses(401)
      }
    }
  }, async () => fastify.groupCommit.stats())
}

export default routes
