import type { ServerResponse } from 'node:http'
import { apiError, errorBody } from './api-error.js'
import type { Config } from './config.js'

export type OverloadSettings = Pick<Config,
  'OVERLOAD_MAX_EVENT_LOOP_DELAY_MS' | 'OVERLOAD_MAX_HEAP_USED_MB' | 'OVERLOAD_MAX_RSS_MB' | 'OVERLOAD_SAMPLE_INTERVAL_MS' | 'OVERLOAD_RETRY_AFTER_SECONDS'>

export const TOO_MANY_IN_PROGRESS = 'too many requests in progress'

const MB = 1024 * 1024

/** What a process measures of itself (@fastify/under-pressure's memoryUsage()). */
export interface ProcessLoad {
  eventLoopDelay: number
  heapUsed: number
  rssBytes: number
}

/** The load as /health/ready reports it, beside whether requests are being shed. */
export interface Pressure {
  overloaded: boolean
  event_loop_delay_ms: number
  heap_used_mb: number
  rss_mb: number
}

export function describePressure (load: ProcessLoad, overloaded: boolean): Pressure {
  return {
    overloaded,
    // Infinity when no sample was taken in a whole interval (the loop was blocked throughout): JSON has no Infinity.
    event_loop_delay_ms: Number.isFinite(load.eventLoopDelay) ? Math.round(load.eventLoopDelay) : -1,
    heap_used_mb: Math.round(load.heapUsed / MB),
    rss_mb: Math.round(load.rssBytes / MB)
  }
}

/** The bounds in the form @fastify/under-pressure takes them (0 leaves a bound off). */
export function pressureBounds (settings: OverloadSettings) {
  return {
    maxEventLoopDelay: settings.OVERLOAD_MAX_EVENT_LOOP_DELAY_MS,
    maxHeapUsedBytes: settings.OVERLOAD_MAX_HEAP_USED_MB * MB,
    maxRssBytes: settings.OVERLOAD_MAX_RSS_MB * MB,
    sampleInterval: settings.OVERLOAD_SAMPLE_INTERVAL_MS,
    retryAfter: settings.OVERLOAD_RETRY_AFTER_SECONDS
  }
}

export type PressureBounds = ReturnType<typeof pressureBounds>

/** Which bound the load is over, in words, checked in @fastify/under-pressure's order. */
export function pressureReason (load: ProcessLoad, bounds: PressureBounds): string {
  if (bounds.maxEventLoopDelay > 0 && load.eventLoopDelay > bounds.maxEventLoopDelay) return 'event loop behind'
  if (bounds.maxHeapUsedBytes > 0 && load.heapUsed > bounds.maxHeapUsedBytes) return 'heap too large'
  if (bounds.maxRssBytes > 0 && load.rssBytes > bounds.maxRssBytes) return 'memory too large'
  return 'busy'
}

const shedMessage = (retryAfterSeconds: number, reason: string) => `The server is overloaded (${reason}); retry in ${retryAfterSeconds} s`

/** The 503 of a shed request: the same code and header as a full ingest queue's. */
export function shedError (retryAfterSeconds: number, reason: string): Error {
  return Object.assign(apiError('serviceUnavailable', 'overloaded', shedMessage(retryAfterSeconds, reason)), { headers: { 'retry-after': String(retryAfterSeconds) } })
}

const shedBodies = new Map<string, Buffer>()

/**
 * The same 503 written straight to the HTTP response, for requests refused before Fastify sees them; it closes
 * the connection. Most load generators, and many clients, ignore Retry-After and ask again at once: on a kept-alive
 * connection they would keep the server busy answering 503s (in the overload bench at 3 000 connections, 680
 * requests/s were let in), while one that must reconnect first spaces its retries (3 549/s). A body still on its
 * way is not waited for either.
 */
export function writeShedAnswer (response: ServerResponse, requestId: string, retryAfterSeconds: number, reason: string): void {
  const key = `${retryAfterSeconds}:${reason}`
  let body = shedBodies.get(key)
  if (body === undefined) shedBodies.set(key, body = Buffer.from(JSON.stringify(errorBody(503, 'overloaded', shedMessage(retryAfterSeconds, reason)))))
  response.writeHead(503, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': body.length,
    'retry-after': String(retryAfterSeconds),
    'x-request-id': requestId,
    connection: 'close'
  })
  response.end(body)
}
