import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { redeliverEvent } from '../../../db/deliveries.js'
import { findEvent } from '../../../db/events.js'
import { findWebhook } from '../../../db/webhooks.js'
import { apiError } from '../../../lib/api-error.js'
import { organizationOf } from '../../../plugins/app/auth.js'
import { errorResponses } from '../../../schemas/errors.js'
import { EventParams } from '../../../schemas/events.js'
import { ref } from '../../../schemas/ref.js'
import { RedeliverBody, RedeliverResult } from '../../../schemas/webhooks.js'

/** Sending an event to its webhooks again, whatever became of its earlier deliveries. */
const routes: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.post('/events/:id/redeliver', {
    // The body is optional: no body means every matching endpoint.
    preValidation: async (request) => { request.body ??= {} },
    schema: {
      tags: ['webhooks'],
      operationId: 'redeliverEvent',
      summary: 'Queue the event again to every matching endpoint, or to webhook_id only',
      params: EventParams,
      body: ref(RedeliverBody),
      response: { 202: ref(RedeliverResult, { description: 'Queued' }), ...errorResponses(400, 401, 404, 413, 415, 429, 503) }
    }
  }, async (request, reply) => {
    const organization = organizationOf(request)
    if (!await findEvent(fastify.pg, organization.id, request.params.id)) throw apiError('notFound', 'not_found', `Event ${request.params.id} not found`)
    const webhookId = request.body.webhook_id ?? null
    if (webhookId !== null && !await findWebhook(fastify.pg, organization.id, webhookId)) throw apiError('notFound', 'not_found', `Webhook ${webhookId} not found`)
    const queued = await redeliverEvent(fastify.pg, organization.id, request.params.id, webhookId)
    if (queued > 0) fastify.wakeUps.announceDeliveries(queued)
    return reply.code(202).send({ queued })
  })
}

export default routes
