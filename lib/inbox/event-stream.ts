import type { FastifyReply, FastifyRequest } from 'fastify'
import type { EventArrivals } from '../wake-ups/event-arrivals.js'

// Arrivals this close together become one look.
const COALESCE_MS = 100

/**
 * What a stream sends: called once when it opens (`arrived` null) and after each coalesced run of arrivals (with
 * their count; 0 after the wake-up connection came back, when arrivals may have been missed). It writes frames with
 * `write`, which waits while the client is slow to read. Runs never overlap; arrivals during a run make another.
 */
export type FrameSource = (write: (frame: string) => Promise<void>, arrived: number | null, ended: AbortSignal) => Promise<void>

// How long an EventSource waits before it reconnects (the `retry:` hint every stream opens with).
const RECONNECT_MS = 2000

// Looks for events waiting behind an older transaction: soon at first, then less often while they keep waiting.
const LOOK_AGAIN_FIRST_MS = 100
const LOOK_AGAIN_MAX_MS = 5000

/**
 * A stream's schedule of looks without an arrival: given whether events still wait to become readable, the
 * milliseconds to the next look (doubling while they wait), or undefined once none wait.
 */
function lookAgainSchedule (): (waiting: boolean) => number | undefined {
  let delay = LOOK_AGAIN_FIRST_MS
  return (waiting) => {
    if (!waiting) {
      delay = LOOK_AGAIN_FIRST_MS
      return undefined
    }
    const now = delay
    delay = Math.min(2 * delay, LOOK_AGAIN_MAX_MS)
    return now
  }
}

export interface EventStreamOptions {
  arrivals: Pick<EventArrivals, 'subscribe' | 'closing'>
  organizationId: string
  heartbeatMs: number
  /** Called once when the stream ends, whoever ends it (frees the organization's stream slot). */
  onEnd: () => void
  frames: FrameSource
  /**
   * Whether committed events wait behind an older transaction (db/events.ts eventsAwaitingReadability): asked
   * after each run, since no arrival announces them once they become readable; the stream then looks again.
   */
  eventsAwaitingReadability: () => Promise<boolean>
  /** A run of `frames` failed (the database is away): the stream ends, and the client reconnects. */
  onError: (error: unknown) => void
}

/**
 * Turns a hijacked reply into a Server-Sent Events stream fed by `frames` as the organization's events arrive,
 * with a comment line as heartbeat and a clean end when the client leaves or the process closes. Everything it
 * holds (subscription, timers, the slot) is released in one place, `end`.
 */
export function openEventStream (request: FastifyRequest, reply: FastifyReply, { arrivals, organizationId, heartbeatMs, onEnd, frames, eventsAwaitingReadability, onError }: EventStreamOptions): void {
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
  stream.write(`: connected\n\nretry: ${RECONNECT_MS}\n\n`)

  const ended = new AbortController()
  const write = async (frame: string) => {
    if (ended.signal.aborted || stream.write(frame)) return
    await new Promise<void>((resolve) => {
      const done = () => {
        stream.off('drain', done)
        ended.signal.removeEventListener('abort', done)
        resolve()
      }
      stream.on('drain', done)
      ended.signal.addEventListener('abort', done, { once: true })
    })
  }

  let arrived = 0
  let running = false
  let again = false
  let coalesceTimer: NodeJS.Timeout | undefined
  const lookAgain = lookAgainSchedule()
  const run = async (count: number | null) => {
    running = true
    let lookAgainMs: number | undefined
    try {
      await frames(write, count, ended.signal)
      if (!ended.signal.aborted) lookAgainMs = lookAgain(await eventsAwaitingReadability())
    } catch (error) {
      onError(error)
      end()
    } finally {
      running = false
    }
    if (ended.signal.aborted) return
    if (again) look()
    else if (lookAgainMs !== undefined) coalesceTimer ??= setTimeout(look, lookAgainMs)
  }
  const look = () => {
    coalesceTimer = undefined
    again = running
    if (running) return
    const count = arrived
    arrived = 0
    void run(count)
  }
  const unsubscribe = arrivals.subscribe(organizationId, (count) => {
    arrived += count
    coalesceTimer ??= setTimeout(look, COALESCE_MS)
  })
  const heartbeat = setInterval(() => stream.write(': heartbeat\n\n'), heartbeatMs)

  const end = () => {
    if (ended.signal.aborted) return
    ended.abort()
    onEnd()
    unsubscribe()
    clearInterval(heartbeat)
    clearTimeout(coalesceTimer)
    arrivals.closing.removeEventListener('abort', end)
    if (!stream.writableEnded) stream.end()
  }
  stream.once('close', end)
  // A client that left while its key was being looked up has already had its 'close': end (and free the slot) now.
  if (arrivals.closing.aborted || request.raw.socket.destroyed) {
    end()
    return
  }
  arrivals.closing.addEventListener('abort', end, { once: true })
  void run(null)
}
