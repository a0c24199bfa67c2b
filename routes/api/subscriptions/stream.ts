import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { eventsAwaitingReadability, listEvents } from '../../../db/events.js'
import { findSubscription } from '../../../db/subscriptions.js'
import { apiError } from '../../../lib/api-error.js'
import { toEventBody } from '../../../lib/events.js'
import { openEventStream, type FrameSource } from '../../../lib/inbox/event-stream.js'
import { encodeCursor, streamResumePosition } from '../../../lib/positions.js'
import { createSlots } from '../../../lib/slots.js'
import { subscriptionNotFound } from '../../../lib/subscriptions.js'
import { organizationOf } from '../../../plugins/app/auth.js'
import { StreamResumeHeaders, StreamResumeQuery } from '../../../schemas/common.js'
import { errorResponses } from '../../../schemas/errors.js'
import { SubscriptionParams } from '../../../schemas/subscriptions.js'

// Events read per look at the log; a look goes on until it has sent everything readable.
const BATCH = 100

/**
 * A subscription's events as Server-Sent Events: each matching event in log order with its position as `id:`, so
 * a client reconnecting with Last-Event-ID gets exactly the events after the last one it had. Read-only: the
 * stream neither leases nor acks, and the subscription's position stays where its leases put it. Capped per
 * organization and process at INBOX_STREAMS_PER_ORGANIZATION, counted apart from the inbox's streams.
 */
const routes: FastifyPluginAsyncTypebox = async (fastify) => {
  const heartbeatMs = fastify.config.INBOX_STREAM_HEARTBEAT_SECONDS * 1000
  const maxStreams = fastify.config.INBOX_STREAMS_PER_ORGANIZATION
  const streams = createSlots(maxStreams)

  fastify.get('/subscriptions/:id/stream', {
    // Open for as long as the client likes: not counted among the requests in progress (OVERLOAD_MAX_IN_FLIGHT).
    config: { longLived: true },
    schema: {
      tags: ['subscriptions'],
      operationId: 'streamSubscription',
      summary: 'Server-Sent Events: the subscription\'s events in log order, each with its position as id; resumes after Last-Event-ID',
      params: SubscriptionParams,
      querystring: StreamResumeQuery,
      headers: StreamResumeHeaders,
      response: {
        200: {
          description: 'An endless text/event-stream: a `retry:` hint, then one frame per event (`id:` its position, `data:` the event as GET /api/events/{id} answers it), and comment lines as heartbeats',
          content: { 'text/event-stream': { schema: { type: 'string', example: 'retry: 2000\n\nid: MTIzLjQ1\ndata: {"event_id":"…","type":"order.created",…}\n\n' } } }
        },
        ...errorResponses(400, 401, 404, 429, 503)
      }
    }
  }, async (request, reply) => {
    const organizationId = organizationOf(request).id
    const subscription = await findSubscription(fastify.pg, organizationId, request.params.id)
    if (!subscription) throw subscriptionNotFound(request.params.id)
    // Where to start: after the last event the client had, else after the given cursor, else at the subscription's position.
    let after = streamResumePosition(request.headers['last-event-id'], request.query.after) ?? { txid: subscription.floor_txid, seq: subscription.floor_seq }

    const release = streams.acquire(organizationId)
    if (!release) throw apiError('tooManyRequests', 'too_many_streams', `At most ${maxStreams} subscription streams per organization may be open at once; close one first`)

    const frames: FrameSource = async (write, _arrived, ended) => {
      for (;;) {
        const rows = await listEvents(fastify.pg, organizationId, {
          status: null, deliveryStatus: null, type: null, since: null, after, limit: BATCH, typePatterns: subscription.event_types
        })
        for (const row of rows.slice(0, BATCH)) {
          if (ended.aborted) return
          await write(`id: ${encodeCursor(row)}\ndata: ${JSON.stringify(toEventBody(row))}\n\n`)
          after = row
        }
        if (rows.length <= BATCH || ended.aborted) return
      }
    }
    openEventStream(request, reply, {
      arrivals: fastify.wakeUps,
      organizationId,
      heartbeatMs,
      onEnd: release,
      frames,
      eventsAwaitingReadability: () => eventsAwaitingReadability(fastify.pg, organizationId),
      onError: (error) => request.log.warn({ err: error }, 'subscription stream failed; the client reconnects')
    })
  })
}

export default routes
