import fp from 'fastify-plugin'
import underPressure from '@fastify/under-pressure'
import type { IncomingMessage, ServerResponse } from 'node:http'
import { requestIdOf } from '../../lib/logging.js'
import { pressureBounds, pressureReason, shedError, writeShedAnswer } from '../../lib/overload.js'

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

type RequestListener = (request: IncomingMessage, response: ServerResponse) => void

/**
 * @fastify/under-pressure with the OVERLOAD_* bounds (lib/overload.ts): while the last sample of event-loop delay
 * or memory is over a bound, requests are refused with 503 overloaded and Retry-After before any work is done
 * for them. Samples start to count two intervals after the app is ready: until then they measure start-up
 * (schema compilation, migrations), which says nothing about serving.
 *
 * Requests from the network are refused in front of Fastify, by the HTTP server's request listener: at thousands
 * of connections, a refusal that goes through routing, hooks, the error handler and the access log costs several
 * times more than writing a fixed answer, and every refusal is time the requests let in wait for. Those get no
 * log line (the shed counter says how many there were). under-pressure's own hook does the same for what reaches
 * Fastify otherwise (inject).
 */
export default fp(async (fastify) => {
  const bounds = pressureBounds(fastify.config)
  let serving = false
  fastify.addHook('onReady', async () => {
    setTimeout(() => { serving = true }, 2 * bounds.sampleInterval).unref()
  })
  const overloaded = () => serving && fastify.isUnderPressure()
  fastify.decorate('overloaded', overloaded)

  // Routes that answer under pressure; none has path parameters, so the request's path finds them.
  const unshed = new Set<string>()
  fastify.addHook('onRoute', (route) => { if (route.config?.shed === false) unshed.add(route.url) })
  const [fastifyListener, ...others] = fastify.server.listeners('request') as RequestListener[]
  if (fastifyListener === undefined || others.length > 0) throw new Error('expected the HTTP server to have exactly one request listener, Fastify\'s')
  fastify.server.removeListener('request', fastifyListener)
  fastify.server.on('request', (request: IncomingMessage, response: ServerResponse) => {
    if (overloaded() && !unshed.has((request.url ?? '').split('?', 1)[0] ?? '')) {
      fastify.metrics.countShed()
      // Once the packet has been read (Node hands the request over before it parses the body that came with it),
      // so that only a body still on its way closes the connection.
      setImmediate(() => {
        writeShedAnswer(response, requestIdOf(request.headers), bounds.retryAfter, pressureReason(fastify.memoryUsage(), bounds), request.complete)
      })
      return
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
