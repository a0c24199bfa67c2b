import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { acknowledgeOne } from '../../../lib/inbox/acknowledge.js'
import { organizationOf } from '../../../plugins/app/auth.js'
import { AckOneRoute } from '../../../schemas/events.js'

const routes: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.post('/events/:id/ack', { schema: { ...AckOneRoute, operationId: 'ackEvent' } },
    async (request) => await acknowledgeOne(fastify.pg, organizationOf(request).id, request.params.id))
}

export default routes
