import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { errorResponses } from '../../schemas/errors.js'
import { CacheStats, IngestStats } from '../../schemas/health.js'
import { ref } from '../../schemas/ref.js'

// Open when STATS_TOKEN is unset (the empty requirement), else its bearer token.
const statsSecurity: Array<Record<string, string[]>> = [{}, { statsToken: [] }]

/** Process statistics; with STATS_TOKEN set every route here needs `Authorization: Bearer <STATS_TOKEN>`. */
const routes: FastifyPluginAsyncTypebox = async (fastify) => {
  // This plugin is encapsulated: the hook guards its routes only (/metrics has METRICS_TOKEN, routes/metrics).
  fastify.addHook('preValidation', fastify.requireStatsToken)

  fastify.get('/stats/cache', {
    schema: {
      operationId: 'getCacheStats',
      tags: ['health'],
      summary: 'Dedup cache statistics of this process',
      security: statsSecurity,
      response: { 200: ref(CacheStats, { description: 'Cache statistics' }), ...errorResponses(401, 429, 503) }
    }
  }, async () => fastify.dedup.stats())

  fastify.get('/stats/ingest', {
    schema: {
      operationId: 'getIngestStats',
      tags: ['health'],
      summary: 'Group commit statistics of this process: shared INSERTs, the events they held, the largest',
      security: statsSecurity,
      response: { 200: ref(IngestStats, { description: 'Group commit statistics' }), ...errorResponses(401, 429, 503) }
    }
  }, async () => fastify.groupCommit.stats())
}

export default routes
