import fp from 'fastify-plugin'
import underPressure from '@fastify/under-pressure'
import { pressureBounds, shedError } from '../../lib/overload.js'

declare module 'fastify' {
  interface FastifyContextConfig {
    /** false: the route answers under pressure too (liveness, readiness, metrics: they must tell what is going on). */
    shed?: boolean
  }
  interface FastifyInstance {
    /** Whether requests are being shed now: a sample of the serving process is over an OVERLOAD_* bound. */
    overloaded: () => boolean
  }
}

// @fastify/under-pressure names what is over its bound; the answer says it in words.
const WHAT: Record<string, string> = {
  eventLoopDelay: 'event loop behind',
  heapUsedBytes: 'heap too large',
  rssBytes: 'memory too large'
}

/**
 * @fastify/under-pressure with the OVERLOAD_* bounds (lib/overload.ts): while the last sample of event-loop delay
 * or memory is over a bound, requests are refused in its onRequest hook, before any other work (key lookup, body),
 * with 503 overloaded and Retry-After. Registered before the plugins whose hooks it must precede. Samples start
 * to count two intervals after the app is ready: until then they measure start-up (schema compilation, migrations),
 * which says nothing about serving.
 */
export default fp(async (fastify) => {
  const bounds = pressureBounds(fastify.config)
  let serving = false
  fastify.addHook('onReady', async () => {
    setTimeout(() => { serving = true }, 2 * bounds.sampleInterval).unref()
  })
  fastify.decorate('overloaded', () => serving && fastify.isUnderPressure())
  await fastify.register(underPressure, {
    ...bounds,
    pressureHandler: async (request, _reply, type) => {
      if (!serving || request.routeOptions.config.shed === false) return
      fastify.metrics.countShed()
      throw shedError(bounds.retryAfter, WHAT[type] ?? type)
    }
  })
}, { name: 'under-pressure', dependencies: ['config', 'errors', 'metrics'] })
