import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { Type } from 'typebox'

const routes: FastifyPluginAsyncTypebox = async (fastify) => {
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
        })
      }
    }
  }, async () => fastify.dedup.stats())
}

export default routes
