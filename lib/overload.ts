import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import { apiError, errorBody } from './api-error.js'
import type { Config } from './config.js'
import { requestIdOf } from './logging.js'

export type OverloadSettings = Pick<Config,
  'OVERLOAD_MAX_EVENT_LOOP_DELAY_MS' | 'OVERLOAD_MAX_HEAP_USED_MB' | 'OVERLOAD_MAX_RSS_MB' | 'OVERLOAD_SAMPLE_INTERVAL_MS' | 'OVERLOAD_RETRY_AFTER_SECONDS'>

const TOO_MANY_IN_PROGRESS = 'too many requests in progress'

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
 * connection each refusal comes straight back, and answering them takes the time the requests let in need. A
 * client that must reconnect first spaces its retries by a connection setup, and the listen backlog queues it
 * outside the process. The overload bench measured both (bench/results/2026-12-04-overload.md). A body still on
 * its way is not waited for either.
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

export type RequestListener = (request: IncomingMessage, response: ServerResponse) => void

/** What a route's config says about shedding. */
export interface ShedRouteConfig {
  /** false: the route answers under pressure too (liveness, readiness, metrics: they must tell what is going on). */
  shed?: boolean
  /** true: the route may wait long (long polls, streams), so it does not count among the requests in progress. */
  longLived?: boolean
}

export interface ShedGateOptions {
  /** Whether a sampled bound is passed now. */
  overloaded: () => boolean
  /** Which bound is passed, in words; asked only while overloaded() is true. */
  reason: () => string
  /** Requests in progress at most (0 = no cap). */
  maxInFlight: number
  retryAfterSeconds: number
  /** Called for each request refused. */
  onShed: () => void
}

export interface ShedGate {
  /** Takes note of a route as it is added: whether it is ever shed, whether it counts in progress. */
  addRoute: (url: string, config: ShedRouteConfig | undefined) => void
  /** `listener` behind the gate: a request over a bound is answered 503 here and never reaches it. */
  guard: (listener: RequestListener) => RequestListener
}

/**
 * Refuses requests in front of the HTTP server's request listener, with writeShedAnswer's fixed answer: at
 * thousands of connections, a refusal that goes through routing, hooks, the error handler and the access log
 * costs several times more, and every refusal is time the requests let in wait for. Refusals get no log line
 * (onShed counts them).
 *
 * Beside the sampled bounds, `maxInFlight` caps the requests let in and not yet answered. Binary shedding alone
 * lets in everything that arrives between two samples under the bound, a burst as large as the connection count
 * that all waits together; this cap keeps the work in progress, and so the time each let-in request waits for
 * the others, bounded.
 */
export function createShedGate (options: ShedGateOptions): ShedGate {
  const { maxInFlight } = options
  // Routes that answer under pressure, and those not counted in progress; none has path parameters, so the
  // request's path finds them.
  const unshed = new Set<string>()
  const uncounted = new Set<string>()
  let inFlight = 0
  return {
    addRoute (url, config) {
      if (config?.shed === false) unshed.add(url)
      if (config?.longLived === true) uncounted.add(url)
    },
    guard: (listener) => (request, response) => {
      const path = (request.url ?? '').split('?', 1)[0] ?? ''
      if (unshed.has(path)) return listener(request, response)
      const counted = maxInFlight > 0 && !uncounted.has(path)
      const reason = options.overloaded() ? options.reason() : counted && inFlight >= maxInFlight ? TOO_MANY_IN_PROGRESS : undefined
      if (reason !== undefined) {
        options.onShed()
        writeShedAnswer(response, requestIdOf(request.headers), options.retryAfterSeconds, reason)
        return
      }
      if (counted) {
        inFlight++
        response.once('close', () => { inFlight-- })
      }
      listener(request, response)
    }
  }
}

/** Puts the HTTP server's one request listener (Fastify's) behind `guard`. */
export function guardRequestListener (server: Server, guard: (listener: RequestListener) => RequestListener): void {
  const [listener, ...others] = server.listeners('request') as RequestListener[]
  if (listener === undefined || others.length > 0) throw new Error('expected the HTTP server to have exactly one request listener, Fastify\'s')
  server.removeListener('request', listener)
  server.on('request', guard(listener))
}
