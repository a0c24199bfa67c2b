import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { acknowledgeEvents } from '../../../db/events.js'
import { normalizeIds } from '../../../lib/events.js'
import { acknowledgeOne } from '../../../lib/inbox/acknowledge.js'
import { organizationOf } from '../../../plugins/app/auth.js'
import { errorResponses } from '../../../schemas/errors.js'
import { AckOneRoute, BulkAckBody, BulkAckResult } from '../../../schemas/events.js'
import { ref } from '../../../schemas/ref.js'

/** Acknowledging inbox events by id, one or up to 100 at once. */
const routes: FastifyPluginAsyncTypebox = async (fastify) => {
  fastify.post('/ack/:id', { schema: { ...AckOneRoute, operationId: 'ackEventShort', description: 'The same as POST /api/events/{id}/ack' } },
    async (request) => await acknowledgeOne(fastify.pg, organizationOf(request).id, request.params.id))

  fastify.post('/ack', {
    schema: {
      operationId: 'ackEvents',
      tags: ['inbox'],
      summary: 'Acknowledge up to 100 events; unknown or foreign ids are listed in not_found',
      body: ref(BulkAckBody),
      response: { 200: ref(BulkAckResult, { description: 'Which ids were acknowledged' }), ...errorResponses(400, 401, 413, 415, 429, 503) }
    }
  }, async (request) => {
    const ids = normalizeIds(request.body.event_ids)
    const rows = await acknowledgeEvents(fastify.pg, organizationOf(request).id, ids)
    const acknowledged = new Set(rows.map((row) => row.id))
    return {
      acknowledged: ids.filter((id) => acknowledged.has(id)),
      not_found: ids.filter((id) => !acknowledged.has(id))
    }
  })
}

export default routes
