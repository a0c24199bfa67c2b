import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { apiError } from '../../../lib/api-error.js'
import { openEventStream } from '../../../lib/inbox/event-stream.js'
import { createSlots } from '../../../lib/slots.js'
import { organizationOf } from '../../../plugins/app/auth.js'
import { errorResponses } from '../../../schemas/errors.js'

/**
 * Server-Sent Events (lib/inbox/event-stream.ts): a frame when new events arrive for the organization; the
 * events themselves are then leased or listed through the other endpoints. Each organization may hold
 * INBOX_STREAMS_PER_ORGANIZATION streams open on this process; an open stream costs a socket and a subscription
 * for as long as the client likes.
 */
const routes: FastifyPluginAsyncTypebox = async (fastify) => {
  const heartbeatMs = fastify.config.INBOX_STREAM_HEARTBEAT_SECONDS * 1000
  const streams = createSlots(fastify.config.INBOX_STREAMS_PER_ORGANIZATION)

  fastify.get('/inbox/stream', {
    // Open for as long as the client likes: not counted among the requests in progress (OVERLOAD_MAX_IN_FLIGHT).
    config: { longLived: true },
    schema: {
      operationId: 'streamInbox',
      tags: ['inbox'],
      summary: 'Server-Sent Events stream: {"count": n} when new events arrive; heartbeat comments',
      response: {
        200: {
          description: 'An endless text/event-stream: frames `data: {"count": n}`, and comment lines as heartbeats',
          content: { 'text/event-stream': { schema: { type: 'string', example: ': connected\n\ndata: {"count": 3}\n\n' } } }
        },
        ...errorResponses(401, 429, 503)
      }
    }
  }, async (request, reply) => {
    const organization = organizationOf(request)
    const release = streams.acquire(organization.id)
    if (!release) {
      throw apiError('tooManyRequests', 'too_many_streams', `At most ${fastify.config.INBOX_STREAMS_PER_ORGANIZATION} event streams per organization may be open at once; close one first`)
    }
    openEventStream(request, reply, {
      arrivals: fastify.wakeUps,
      organizationId: organization.id,
      heartbeatMs,
      onEnd: release,
      frames: async (write, arrived) => { if (arrived !== null) await write(`data: ${JSON.stringify({ count: arrived })}\n\n`) },
      onError: (error) => request.log.warn({ err: error }, 'inbox stream failed')
    })
  })
}

export default routes
