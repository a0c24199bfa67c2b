import fp from 'fastify-plugin'
import underPressure from '@fastify/under-pressure'
import { createShedGate, guardRequestListener, pressureBounds, pressureReason, retryAfterOf, shedError, type ShedRouteConfig } from '../../lib/overload.js'

declare module 'fastify' {
  interface FastifyContextConfig extends ShedRouteConfig {}
  interface FastifyInstance {
    /** Whether requests are being shed now: a sample of the serving process is over an OVERLOAD_* bound. */
    overloaded: () => boolean
  }
}

/**
 * @fastify/under-pressure with the OVERLOAD_* bounds (lib/overload.ts): while the last sample of event-loop delay
 * or memory is over a bound, requests are refused with 503 overloaded and Retry-After before any work is done
 * for them. Samples start to count two intervals after the app is ready: until then they measure start-up
 * (schema compilation, migrations), which says nothing about serving.
 *
 * Requests from the network are refused in front of Fastify, by a gate on the HTTP server's request listener
 * (createShedGate says why), which also caps the requests in progress (OVERLOAD_MAX_IN_FLIGHT) and stops reading a
 * connection told to wait until it has. under-pressure's own hook refuses what reaches Fastify otherwise (inject).
 */
export default fp(async (fastify) => {
  const bounds = pressureBounds(fastify.config)
  let serving = false
  fastify.addHook('onReady', async () => {
    setTimeout(() => { serving = true }, 2 * bounds.sampleInterval).unref()
  })
  const overloaded = () => serving && fastify.isUnderPressure()
  fastify.decorate('overloaded', overloaded)
  const reason = () => pressureReason(fastify.memoryUsage(), bounds)

  const gate = createShedGate({
    overloaded,
    reason,
    maxInFlight: fastify.config.OVERLOAD_MAX_IN_FLIGHT,
    retryAfterSeconds: bounds.retryAfter,
    onShed: () => fastify.metrics.countShed()
  })
  fastify.addHook('onRoute', (route) => gate.addRoute(route.url, route.config))
  guardRequestListener(fastify.server, gate.guard)
  // The app's own 503s that ask the client to wait (a full ingest queue) hold their connection as the gate's do.
  fastify.addHook('onError', async (_request, reply, error) => {
    const seconds = retryAfterOf(error)
    if (error.statusCode === 503 && seconds > 0) gate.holdAfter(reply.raw, seconds)
  })

  await fastify.register(underPressure, {
    ...bounds,
    pressureHandler: async (request) => {
      if (!serving || request.routeOptions.config.shed === false) return
      fastify.metrics.countShed()
      throw shedError(bounds.retryAfter, reason())
    }
  })
}, { name: 'under-pressure', dependencies: ['config', 'errors', 'metrics'] })
