import type { IncomingMessage, Server, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { answerHeadersOf, apiError, errorBody } from './api-error.js'
import type { Config } from './config.js'
import { requestIdOf } from './logging.js'

export type OverloadSettings = Pick<Config,
  'OVERLOAD_MAX_EVENT_LOOP_DELAY_MS' | 'OVERLOAD_MAX_HEAP_USED_MB' | 'OVERLOAD_MAX_RSS_MB' | 'OVERLOAD_SAMPLE_INTERVAL_MS' | 'OVERLOAD_RETRY_AFTER_SECONDS'>

const TOO_MANY_IN_PROGRESS = 'too many requests in progress'

const MB = 1024 * 1024

// A connection told to wait is not read for at most this long, whatever its Retry-After says.
const MAX_HOLD_MS = 10_000

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

/** The Retry-After in seconds an error's answer carries, or 0. */
export function retryAfterOf (error: unknown): number {
  const seconds = Number(answerHeadersOf(error)?.['retry-after'])
  return Number.isFinite(seconds) && seconds > 0 ? seconds : 0
}

/** The 503 of a shed request: the same code and header as a full ingest queue's. */
export function shedError (retryAfterSeconds: number, reason: string): Error {
  return Object.assign(apiError('serviceUnavailable', 'overloaded', shedMessage(retryAfterSeconds, reason)), { headers: { 'retry-after': String(retryAfterSeconds) } })
}

const shedBodies = new Map<string, Buffer>()

/**
 * The same 503 written straight to the HTTP response, for requests refused before Fastify sees them. The connection
 * stays open: a refusal that closed it sent every client that ignores Retry-After to reconnect at once, and at
 * thousands of connections those reconnections filled the listen queue, so that a new connection (a client whose
 * refusal had closed its last one) waited seconds before its first request was read (bench/results/2026-12-06-overload.md).
 * Instead the gate reads nothing more from it until its Retry-After has passed (createShedGate).
 */
export function writeShedAnswer (response: ServerResponse, requestId: string, retryAfterSeconds: number, reason: string): void {
  const key = `${retryAfterSeconds}:${reason}`
  let body = shedBodies.get(key)
  if (body === undefined) shedBodies.set(key, body = Buffer.from(JSON.stringify(errorBody(503, 'overloaded', shedMessage(retryAfterSeconds, reason)))))
  response.writeHead(503, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': body.length,
    'retry-after': String(retryAfterSeconds),
    'x-request-id': requestId
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
  /** Calls `fn` after `ms` and returns what cancels it; setTimeout by default (tests bring their own clock). */
  later?: Later
}

/** Calls `fn` after `ms`; returns what cancels it. */
type Later = (ms: number, fn: () => void) => () => void

function setTimer (ms: number, fn: () => void): () => void {
  const timer = setTimeout(fn, ms)
  return () => clearTimeout(timer)
}

/** The libuv stream under a net.Socket (Node's `_handle`, outside its typed API). */
interface StreamHandle { readStart: () => number, readStop: () => number }

function streamHandleOf (socket: Socket): StreamHandle | undefined {
  const handle = (socket as unknown as { _handle?: Partial<StreamHandle> | null })._handle
  return typeof handle?.readStart === 'function' && typeof handle.readStop === 'function' ? handle as StreamHandle : undefined
}

/**
 * Reads nothing more from a connection for `ms`: what the client sends meanwhile waits in the kernel, costing this
 * process nothing. socket.pause() does not do it: an HTTP server's parser reads the stream handle directly, so the
 * handle itself stops and starts reading (without one, nothing is held).
 */
function holdConnection (socket: Socket, ms: number, later: Later): void {
  const handle = streamHandleOf(socket)
  if (handle === undefined || socket.destroyed) return
  handle.readStop()
  const cancel = later(ms, () => {
    socket.off('close', cancel)
    if (!socket.destroyed) streamHandleOf(socket)?.readStart()
  })
  socket.once('close', cancel)
}

export interface ShedGate {
  /** Takes note of a route as it is added: whether it is ever shed, whether it counts in progress. */
  addRoute: (url: string, config: ShedRouteConfig | undefined) => void
  /** `listener` behind the gate: a request over a bound is answered 503 here and never reaches it. */
  guard: (listener: RequestListener) => RequestListener
  /** Once `response` is sent, its connection is not read for `retryAfterSeconds` (the app's own 503s). */
  holdAfter: (response: ServerResponse, retryAfterSeconds: number) => void
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
 *
 * Most load generators, and many clients, ignore Retry-After and ask again at once. So a connection answered 503
 * with Retry-After (here, or by the app: a full ingest queue) is not read until the Retry-After has passed (at most
 * MAX_HOLD_MS); its next request is then let in or refused as any other. A client that waits as asked never
 * notices. Refusals answered at once came straight back and took the time of the requests let in (accepted
 * requests fell to a fifth under overload, bench/results/2026-12-04-overload.md); closing the connection instead
 * filled the listen queue with reconnections, where a new connection waited seconds, as the server accepts one
 * connection per turn of its event loop (bench/results/2026-12-06-overload.md).
 */
export function createShedGate (options: ShedGateOptions): ShedGate {
  const { maxInFlight, retryAfterSeconds, later = setTimer } = options
  // Between half and all of the wait asked for, at random: connections refused together are not read together again.
  const holdFor = (seconds: number) => Math.min(seconds * 1000, MAX_HOLD_MS) * (0.5 + Math.random() / 2)
  // Routes that answer under pressure, and those not counted in progress; none has path parameters, so the
  // request's path finds them.
  const unshed = new Set<string>()
  const uncounted = new Set<string>()
  let inFlight = 0

  const holdAfter = (response: ServerResponse, seconds: number) => {
    // Taken now: once sent, the response has let go of its socket.
    const { socket } = response
    if (socket !== null) response.once('finish', () => holdConnection(socket, holdFor(seconds), later))
  }
  const refuse = (request: IncomingMessage, response: ServerResponse, reason: string) => {
    options.onShed()
    holdAfter(response, retryAfterSeconds)
    writeShedAnswer(response, requestIdOf(request.headers), retryAfterSeconds, reason)
  }

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
      if (reason !== undefined) return refuse(request, response, reason)
      if (counted) {
        inFlight++
        response.once('close', () => { inFlight-- })
      }
      listener(request, response)
    },
    holdAfter
  }
}

/** Puts the HTTP server's one request listener (Fastify's) behind `guard`. */
export function guardRequestListener (server: Server, guard: (listener: RequestListener) => RequestListener): void {
  const [listener, ...others] = server.listeners('request') as RequestListener[]
  if (listener === undefined || others.length > 0) throw new Error('expected the HTTP server to have exactly one request listener, Fastify\'s')
  server.removeListener('request', listener)
  server.on('request', guard(listener))
}
