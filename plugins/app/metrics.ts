import fp from 'fastify-plugin'
import type { FastifyReply, FastifyRequest, HookHandlerDoneFunction, onResponseHookHandler } from 'fastify'
import { ApiMetrics, type RequestRecorder } from '../../lib/metrics.js'

declare module 'fastify' {
  interface FastifyInstance {
    metrics: ApiMetrics
  }
}

/** The route label of requests that matched no route: one value whatever the URL, so series stay bounded. */
export const UNMATCHED_ROUTE = 'unmatched'

const recorded = Symbol('records request metrics')

/** A callback-style onResponse hook (no promise per request) that records into `record`. */
function recordingHook (record: RequestRecorder): onResponseHookHandler {
  const hook = (request: FastifyRequest, reply: FastifyReply, done: HookHandlerDoneFunction) => {
    record(request.method, reply.statusCode, reply.elapsedTime / 1000)
    done()
  }
  return Object.assign(hook, { [recorded]: true })
}

/**
 * The process's metrics (lib/metrics.ts), and the request histogram: every route gets an onResponse hook of its
 * own that knows its pattern, so no request has to look its route up; requests that matched none are counted
 * under one fixed label. Registered before the plugins that count into it (rate limit, group commit) and every route.
 */
export default fp(async (fastify) => {
  const metrics = new ApiMetrics({ pool: fastify.pg.pool, wakeUps: fastify.wakeUps, log: fastify.log })
  fastify.decorate('metrics', metrics)
  fastify.addHook('onRoute', (route) => {
    const hooks = route.onResponse === undefined ? [] : Array.isArray(route.onResponse) ? route.onResponse : [route.onResponse]
    // A HEAD route made from a GET route arrives with the GET's hooks, ours included: one is enough.
    if (hooks.some((hook) => recorded in hook)) return
    route.onResponse = [...hooks, recordingHook(metrics.requestRecorder(route.url))]
  })
  const unmatched = metrics.requestRecorder(UNMATCHED_ROUTE)
  fastify.addHook('onResponse', (request, reply, done) => {
    if (request.is404) unmatched(request.method, reply.statusCode, reply.elapsedTime / 1000)
    done()
  })
}, { name: 'metrics', dependencies: ['postgres', 'wake-ups'] })
