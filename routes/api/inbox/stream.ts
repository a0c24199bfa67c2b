import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { countEventsAfter, eventsAwaitingReadability, lastReadablePosition } from '../../../db/events.js'
import { apiError } from '../../../lib/api-error.js'
import { openEventStream, type FrameSource } from '../../../lib/inbox/event-stream.js'
import { encodeCursor, START, streamResumePosition } from '../../../lib/positions.js'
import { createSlots } from '../../../lib/slots.js'
import { organizationOf } from '../../../plugins/app/auth.js'
import { StreamResumeHeaders, StreamResumeQuery } from '../../../schemas/common.js'
import { errorResponses } from '../../../schemas/errors.js'

// Events counted per frame: a backlog after a long absence comes as several frames rather than one slow count.
const COUNT_LIMIT = 10_000

/**
 * Server-Sent Events (lib/inbox/event-stream.ts): a frame saying how many events arrived for the organization,
 * with the position of the last of them as its `id:`, so a client reconnecting with Last-Event-ID is told of
 * everything that arrived while it was away; the events themselves are then leased or listed through the other
 * endpoints. Each organization may hold INBOX_STREAMS_PER_ORGANIZATION streams open on this process; an open
 * stream costs a socket and a subscription for as long as the client likes.
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
      summary: 'Server-Sent Events stream: {"count": n} when new events arrive, with the last one\'s position as id; resumes after Last-Event-ID',
      querystring: StreamResumeQuery,
      headers: StreamResumeHeaders,
      response: {
        200: {
          description: 'An endless text/event-stream: a `retry:` hint, then frames `id: <position of the last event counted>` + `data: {"count": n}`, and comment lines as heartbeats',
          content: { 'text/event-stream': { schema: { type: 'string', example: ': connected\n\nretry: 2000\n\nid: MTIzLjQ1\ndata: {"count": 3}\n\n' } } }
        },
        ...errorResponses(400, 401, 429, 503)
      }
    }
  }, async (request, reply) => {
    const organization = organizationOf(request)
    // Where counting starts: after the last position the client was told of, else after a given cursor, else now.
    let after = streamResumePosition(request.headers['last-event-id'], request.query.after)
    const release = streams.acquire(organization.id)
    if (!release) {
      throw apiError('tooManyRequests', 'too_many_streams', `At most ${fastify.config.INBOX_STREAMS_PER_ORGANIZATION} event streams per organization may be open at once; close one first`)
    }
    const frames: FrameSource = async (write, _arrived, ended) => {
      let from = after ??= await lastReadablePosition(fastify.pg, organization.id) ?? START
      for (;;) {
        const { count, last } = await countEventsAfter(fastify.pg, organization.id, from, COUNT_LIMIT)
        if (last === null || ended.aborted) return
        await write(`id: ${encodeCursor(last)}\ndata: ${JSON.stringify({ count })}\n\n`)
        after = from = last
        if (count < COUNT_LIMIT) return
      }
    }
    openEventStream(request, reply, {
      arrivals: fastify.wakeUps,
      organizationId: organization.id,
      heartbeatMs,
      onEnd: release,
      frames,
      eventsAwaitingReadability: () => eventsAwaitingReadability(fastify.pg, organization.id),
      onError: (error) => request.log.warn({ err: error }, 'inbox stream failed; the client reconnects')
    })
  })
}

export default routes
