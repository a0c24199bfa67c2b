import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox'
import { apiError } from '../../../lib/api-error.js'
import { createSlots } from '../../../lib/slots.js'
import { organizationOf } from '../../../plugins/app/auth.js'
import { errorResponses } from '../../../schemas/errors.js'

// Notifications arriving this close together become one frame.
const COALESCE_MS = 100

/**
 * Server-Sent Events: `data: {"count": n}` when n new events arrive for the organization, a comment line as
 * heartbeat, and a clean end when the client leaves or the server shuts down. Events themselves are then
 * leased or listed through the other endpoints. Each organization may hold INBOX_STREAMS_PER_ORGANIZATION
 * streams open on this process; an open stream costs a socket and a subscription for as long as the client likes.
 */
const routes: FastifyPluginAsyncTypebox = async (fastify) => {
  const heartbeatMs = fastify.config.INBOX_STREAM_HEARTBEAT_SECONDS * 1000
  const streams = createSlots(fastify.config.INBOX_STREAMS_PER_ORGANIZATION)

  fastify.get('/inbox/stream', {
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
    const { eventSignals } = fastify
    reply.hijack()
    const stream = reply.raw
    // Headers set before hijacking (rate-limit counters) still go out.
    for (const [name, value] of Object.entries(reply.getHeaders())) {
      if (value !== undefined) stream.setHeader(name, value)
    }
    stream.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-accel-buffering': 'no',
      'x-request-id': request.id
    })
    stream.write(': connected\n\n')

    let pending = 0
    let flushTimer: NodeJS.Timeout | undefined
    const flush = () => {
      flushTimer = undefined
      stream.write(`data: ${JSON.stringify({ count: pending })}\n\n`)
      pending = 0
    }
    const unsubscribe = eventSignals.subscribe(organization.id, (count) => {
      pending += count
      flushTimer ??= setTimeout(flush, COALESCE_MS)
    })
    const heartbeat = setInterval(() => stream.write(': heartbeat\n\n'), heartbeatMs)

    const end = () => {
      release()
      unsubscribe()
      clearInterval(heartbeat)
      clearTimeout(flushTimer)
      eventSignals.closing.removeEventListener('abort', end)
      if (!stream.writableEnded) stream.end()
    }
    stream.once('close', end)
    // A client that left while its key was being looked up has already had its 'close': end (and free the slot) now.
    if (eventSignals.closing.aborted || request.raw.socket.destroyed) end()
    else eventSignals.closing.addEventListener('abort', end, { once: true })
  })
}

export default routes
