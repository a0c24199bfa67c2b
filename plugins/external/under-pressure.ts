import fp from 'fastify-plugin'
import underPressure from '@fastify/under-pressure'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { requestIdOf } from '../../lib/logging.js'
import { pressureBounds, pressureReason, shedError, TOO_MANY_IN_PROGRESS, writeShedAnswer } from '../../lib/overload.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** false: the route answers under pressure too (liveness, readiness, metrics: they must tell what is going on). */
    shed?: boolean
    /** true: the route may wait long (long polls, streams), so it does not count among the requests in progress. */
    longLived?: boolean
  }
  interface FastifyInstance {
    /** Whether requests are being shed now: a sample of the serving process is over an OVERLOAD_* bound. */
    overloaded: () => boolean
  }
}

type RequestListener = (request: IncomingMessage, response: ServerResponse) => void

/**
 * @fastify/under-pressure with the OVERLOAD_* bounds (lib/overload.ts): while the last sample of event-loop delay
 * or memory is over a bound, requests are refused with 503 overloaded and Retry-After before any work is done
 * for them. Samples start to count two intervals after the app is ready: until then they measure start-up
 * (schema compilation, migrations), which says nothing about serving.
 *
 * Requests from the network are refused in front of Fastify, by the HTTP server's request listener, with a fixed
 * answer that closes the connection (lib/overload.ts says why): at thousands of connections, a refusal that goes
 * through routing, hooks, the error handler and the access log costs several times more, and every refusal is
 * time the requests let in wait for. Those get no log line (the shed counter says how many there were).
 * under-pressure's own hook does the same for what reaches Fastify otherwise (inject). Beside the sampled bounds,
 * OVERLOAD_MAX_IN_FLIGHT caps the requests in progress.
 */
export default fp(async (fastify) => {
  const bounds = pressureBounds(fastify.config)
  let serving = false
  fastify.addHook('onReady', async () => {
    setTimeout(() => { serving = true }, 2 * bounds.sampleInterval).unref()
  })
  const overloaded = () => serving && fastify.isUnderPressure()
  fastify.decorate('overloaded', overloaded)

  // Routes that answer under pressure, and those not counted in progress; none has path parameters, so the
  // request's path finds them.
  const unshed = new Set<string>()
  const uncounted = new Set<string>()
  fastify.addHook('onRoute', (route) => {
    if (route.config?.shed === false) unshed.add(route.url)
    if (route.config?.longLived === true) uncounted.add(route.url)
  })
  // Requests let in and not yet answered. Binary shedding alone lets in everything that arrives between two
  // samples under the bound, a burst as large as the connection count that all waits together; this cap keeps
  // the work in progress, and so the time each let-in request waits for the others, bounded.
  const maxInFlight = fastify.config.OVERLOAD_MAX_IN_FLIGHT
  let inFlight = 0
  const [fastifyListener, ...others] = fastify.server.listeners('request') as RequestListener[]
  if (fastifyListener === undefined || others.length > 0) throw new Error('expected the HTTP server to have exactly one request listener, Fastify\'s')
  fastify.server.removeListener('request', fastifyListener)
  fastify.server.on('request', (request: IncomingMessage, response: ServerResponse) => {
    const path = (request.url ?? '').split('?', 1)[0] ?? ''
    if (unshed.has(path)) return fastifyListener(request, response)
    const counted = maxInFlight > 0 && !uncounted.has(path)
    const reason = overloaded() ? pressureReason(fastify.memoryUsage(), bounds) : counted && inFlight >= maxInFlight ? TOO_MANY_IN_PROGRESS : undefined
    if (reason !== undefined) {
      fastify.metrics.countShed()
      writeShedAnswer(response, requestIdOf(request.headers), bounds.retryAfter, reason)
      return
    }
    if (counted) {
      inFlight++
      response.once('close', () => { inFlight-- })
    }
    fastifyListener(request, response)
  })

  await fastify.register(underPressure, {
    ...bounds,
    pressureHandler: async (request) => {
      if (!serving || request.routeOptions.config.shed === false) return
      fastify.metrics.countShed()
      throw shedError(bounds.retryAfter, pressureReason(fastify.memoryUsage(), bounds))
    }
  })
}, { name: 'under-pressure', dependencies: ['config', 'errors', 'metrics'] })
