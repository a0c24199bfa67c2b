import type { FastifyReply, FastifyRequest } from 'fastify'
import type { EventArrivals } from '../wake-ups/event-arrivals.js'

// Arrivals this close together become one frame.
const COALESCE_MS = 100

export interface EventStreamOptions {
  arrivals: Pick<EventArrivals, 'subscribe' | 'closing'>
  organizationId: string
  heartbeatMs: number
  /** Called once when the stream ends, whoever ends it (frees the organization's stream slot). */
  onEnd: () => void
}

/**
 * Turns a hijacked reply into a Server-Sent Events stream: `data: {"count": n}` when n new events arrive for the
 * organization, a comment line as heartbeat, and a clean end when the client leaves or the process closes.
 * Everything it holds (subscription, timers, the slot) is released in one place, `end`.
 */
export function openEventStream (request: FastifyRequest, reply: FastifyReply, { arrivals, organizationId, heartbeatMs, onEnd }: EventStreamOptions): void {
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
  const unsubscribe = arrivals.subscribe(organizationId, (count) => {
    pending += count
    flushTimer ??= setTimeout(flush, COALESCE_MS)
  })
  const heartbeat = setInterval(() => stream.write(': heartbeat\n\n'), heartbeatMs)

  const end = () => {
    onEnd()
    unsubscribe()
    clearInterval(heartbeat)
    clearTimeout(flushTimer)
    arrivals.closing.removeEventListener('abort', end)
    if (!stream.writableEnded) stream.end()
  }
  stream.once('close', end)
  // A client that left while its key was being looked up has already had its 'close': end (and free the slot) now.
  if (arrivals.closing.aborted || request.raw.socket.destroyed) end()
  else arrivals.closing.addEventListener('abort', end, { once: true })
}
