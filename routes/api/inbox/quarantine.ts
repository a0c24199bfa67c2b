import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { requeueQuarantined } from '../../../db/events.js'
import { apiError } from '../../../lib/api-error.js'
import { toEventBody } from '../../../lib/events.js'
import { organizationOf } from '../../../plugins/app/auth.js'
import { errorResponses } from '../../../schemas/errors.js'
import { Event, EventParams } from '../../../schemas/events.js'
import { ref } from '../../../schemas/ref.js'

/** Events leased INBOX_MAX_LEASES times without an ack are quarantined; this puts one back in the queue. */
const routes: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.post('/inbox/quarantine/:id/requeue', {
    schema: {
      tags: ['inbox'],
      operationId: 'requeueEvent',
      summary: 'Put a quarantined event back in the queue with lease_count 0',
      params: EventParams,
      response: { 200: ref(Event, { description: 'The event, pending again' }), ...errorResponses(400, 401, 404, 413, 415, 429, 503) }
    }
  }, async (request) => {
    const organization = organizationOf(request)
    const row = await requeueQuarantined(fastify.pg, organization.id, request.params.id)
    if (!row) throw apiError('notFound', 'not_found', `No quarantined event ${request.params.id}`)
    fastify.wakeUps.announceEvents(organization.id, 1)
    return toEventBody(row)
  })
}

export default routes
